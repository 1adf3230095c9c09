"""`spec.training` of a ModelService, parsed into typed, validated settings.

The operator hands the trainer the spec's `training` object as JSON; a typo there must
fail before any data is read, naming the field and how to fix it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tfmaas.errors import UserError

ARCHITECTURES = ("bag-of-ngrams", "cnn", "transformer")
DATASET_FORMATS = ("auto", "csv", "jsonl")


@dataclass(frozen=True)
class DatasetConfig:
    uri: str
    format: str = "auto"
    text_field: str = "text"
    label_field: str = "label"


@dataclass(frozen=True)
class ModelConfig:
    architecture: str = "bag-of-ngrams"
    max_tokens: int = 20000
    sequence_length: int = 128
    ngrams: int = 2
    embedding_dim: int = 64


@dataclass(frozen=True)
class Hyperparameters:
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 0.001
    early_stopping_patience: int = 2
    seed: int = 42
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    max_examples: int = 0


@dataclass(frozen=True)
class Resources:
    gpu: int = 0
    cpu: str = "2"
    memory: str = "4Gi"


@dataclass(frozen=True)
class QualityGate:
    min_accuracy: float | None = None
    min_precision: float | None = None
    min_recall: float | None = None
    min_f1: float | None = None


@dataclass(frozen=True)
class TrainingConfig:
    dataset: DatasetConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    hyperparameters: Hyperparameters = field(default_factory=Hyperparameters)
    resources: Resources = field(default_factory=Resources)
    workers: int = 1
    quality_gate: QualityGate = field(default_factory=QualityGate)
    image: str | None = None

    @classmethod
    def from_dict(cls, training: Mapping[str, Any]) -> TrainingConfig:
        return parse_training(training)

    def to_dict(self) -> dict[str, Any]:
        """The camelCase form of the spec, defaults filled in (for the model card)."""
        return _to_camel_dict(self)


# --- parsing -------------------------------------------------------------------------------

T = TypeVar("T")
Check = Callable[[str, Any], Any]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _to_camel_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            _camel(f.name): _to_camel_dict(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if getattr(obj, f.name) is not None
        }
    return obj


def _kind(value: Any) -> str:
    return type(value).__name__ if value is not None else "null"


def _integer(minimum: int, maximum: int | None = None) -> Check:
    def check(path: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{path} must be an integer, got {_kind(value)} {value!r}")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise UserError(f"{path} must be {bound}, got {value}")
        return value

    return check


def _number(minimum: float, maximum: float, *, exclusive_min: bool = False) -> Check:
    def check(path: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"{path} must be a number, got {_kind(value)} {value!r}")
        number = float(value)
        too_low = number <= minimum if exclusive_min else number < minimum
        if not math.isfinite(number) or too_low or number > maximum:
            low = f"> {minimum}" if exclusive_min else f">= {minimum}"
            raise UserError(f"{path} must be {low} and <= {maximum}, got {value}")
        return number

    return check


def _text(*, choices: tuple[str, ...] = (), allow_int: bool = False) -> Check:
    def check(path: str, value: Any) -> str:
        if allow_int and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise UserError(f"{path} must be a non-empty string, got {_kind(value)} {value!r}")
        if choices and value not in choices:
            raise UserError(f"{path} must be one of {', '.join(choices)}; got {value!r}")
        return value

    return check


def _section(cls: type[T], checks: Mapping[str, Check], required: tuple[str, ...] = ()) -> Check:
    """A check for a nested object: only known camelCase keys, each value checked."""

    def check(path: str, value: Any) -> T:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise UserError(f"{path} must be an object, got {_kind(value)} {value!r}")
        unknown = sorted(set(value) - set(checks))
        if unknown:
            raise UserError(
                f"{path} has unknown field(s) {', '.join(map(repr, unknown))}; "
                f"known fields are {', '.join(checks)} — fix the spelling or remove them"
            )
        for key in required:
            if key not in value or value[key] is None:
                raise UserError(f"{path}.{key} is required; set it in the ModelService spec")
        kwargs = {}
        for key, sub_check in checks.items():
            if value.get(key) is not None:
                kwargs[_snake(key)] = sub_check(f"{path}.{key}", value[key])
            elif isinstance(sub_check, _SectionCheck):
                kwargs[_snake(key)] = sub_check(f"{path}.{key}", None)
        return cls(**kwargs)

    return _SectionCheck(check)


class _SectionCheck:
    """Marks nested sections, which get their defaults even when absent."""

    def __init__(self, check: Callable[[str, Any], Any]) -> None:
        self._check = check

    def __call__(self, path: str, value: Any) -> Any:
        return self._check(path, value)


def _snake(camel: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in camel)


_FRACTION = _number(0.0, 1.0)

_TRAINING = _section(
    TrainingConfig,
    {
        "dataset": _section(
            DatasetConfig,
            {
                "uri": _text(),
                "format": _text(choices=DATASET_FORMATS),
                "textField": _text(),
                "labelField": _text(),
            },
            required=("uri",),
        ),
        "model": _section(
            ModelConfig,
            {
                "architecture": _text(choices=ARCHITECTURES),
                "maxTokens": _integer(2, 10_000_000),
                "sequenceLength": _integer(1, 100_000),
                "ngrams": _integer(1, 3),
                "embeddingDim": _integer(1, 4096),
            },
        ),
        "hyperparameters": _section(
            Hyperparameters,
            {
                "epochs": _integer(1, 10_000),
                "batchSize": _integer(1, 1_000_000),
                "learningRate": _number(0.0, 10.0, exclusive_min=True),
                "earlyStoppingPatience": _integer(0),
                "seed": _integer(0, 2**31 - 1),
                "validationFraction": _number(0.0, 0.9),
                "testFraction": _number(0.0, 0.9),
                "maxExamples": _integer(0),
            },
        ),
        "resources": _section(
            Resources,
            {
                "gpu": _integer(0, 64),
                "cpu": _text(allow_int=True),
                "memory": _text(),
            },
        ),
        "workers": _integer(1, 1000),
        "qualityGate": _section(
            QualityGate,
            {
                "minAccuracy": _FRACTION,
                "minPrecision": _FRACTION,
                "minRecall": _FRACTION,
                "minF1": _FRACTION,
            },
        ),
        "image": _text(),
    },
    required=("dataset",),
)


def parse_training(training: Mapping[str, Any] | TrainingConfig) -> TrainingConfig:
    """Parse `spec.training` (camelCase) into a `TrainingConfig`; raise `UserError` if invalid."""
    if isinstance(training, TrainingConfig):
        return training
    config: TrainingConfig = _TRAINING("spec.training", training)
    hp = config.hyperparameters
    if hp.validation_fraction + hp.test_fraction >= 0.95:
        raise UserError(
            "spec.training.hyperparameters.validationFraction + testFraction must leave data to "
            f"train on (sum < 0.95), got {hp.validation_fraction} + {hp.test_fraction}"
        )
    return config
