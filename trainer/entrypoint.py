"""One training Job's work: train, export, publish a version, report it as the termination message.

The termination message lets the operator read a version's metrics from the pod status, so
the operator itself needs no storage credentials.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tfmaas.api.loader import load_training_spec
from tfmaas.api.spec import TrainingSpec
from tfmaas.errors import UserError

if TYPE_CHECKING:
    from tfmaas.storage.encryption import StoreEncryption
from tfmaas.redact import safe_message

DEFAULT_TERMINATION_LOG = "/dev/termination-log"
TERMINATION_MESSAGE_LIMIT = 4096
# With control characters gone a character of the error takes at most 4 bytes as UTF-8 JSON,
# so this many fit in 4 KiB with room for {"error":""}.
TERMINATION_ERROR_CHARS = 1000
# "2.21.0", or a local build's "2.22.0-dev20260101": bounded so the message stays small.
TENSORFLOW_VERSION_CHARS = 40


@dataclass(frozen=True)
class TrainResult:
    version: int
    uri: str
    """`<store>/<version>/`, where the version was published ("" on a non-chief worker)."""
    metrics: dict[str, Any]
    export_dir: Path
    """The local copy of the version directory (a temporary folder the caller may delete)."""
    trained_at: str = ""
    examples: dict[str, int] | None = None
    published: bool = True
    resumed_from_epoch: int | None = None
    """The epochs the run's checkpoint had done when this process resumed it."""
    tensorflow_version: str = ""
    """The TensorFlow that exported the version: a server built on an older one may lack an op."""
    size_bytes: int | None = None
    """The published SavedModel's size on disk (what `kubectl get ms -o wide` shows)."""

    def termination_message(self) -> str:
        message = {
            "version": self.version,
            "metrics": {k: round(float(self.metrics[k]), 6) for k in _HEADLINE},
            "trainedAt": self.trained_at,
            "examples": dict(self.examples or {}),
            "uri": self.uri,
        }
        if self.resumed_from_epoch is not None:
            message["resumedFromEpoch"] = self.resumed_from_epoch
        if self.tensorflow_version:
            message["tensorflowVersion"] = self.tensorflow_version[:TENSORFLOW_VERSION_CHARS]
        if self.size_bytes is not None:
            message["sizeBytes"] = self.size_bytes
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
        if len(text.encode("utf-8")) >= TERMINATION_MESSAGE_LIMIT:
            raise ValueError("termination message exceeds 4 KiB; the store URI is too long")
        return text


_HEADLINE = ("accuracy", "precision", "recall", "f1")


def train_and_publish(
    training: Mapping[str, Any] | TrainingSpec,
    *,
    name: str,
    store_uri: str,
    version: int | None = None,
    endpoint: str | None = None,
    encryption: StoreEncryption | None = None,
    log: Callable[[str], Any] = print,
    tuning: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train `training` (the spec's `training` object) and publish it as `version` of the store.

    `tuning` is the search that chose this configuration, for the model card.
    `version=None` takes the store's latest + 1. Everything that can be checked before
    training (spec, store, version) is checked first, so a mistake costs seconds, not a run.
    """
    config = load_training_spec(training)
    if not name or not name.strip():
        raise UserError("the model name is empty; pass --name (the ModelService's name)")
    from tfmaas.storage import VersionExistsError, open_store

    store = open_store(store_uri, endpoint=endpoint, encryption=encryption)
    published_versions = store.list_versions()
    if version is None:
        version = (published_versions[-1] if published_versions else 0) + 1
    elif version < 1:
        raise UserError(f"--version must be a positive integer, got {version}")
    elif version in published_versions:
        # A pod killed after publishing leaves its checkpoint; the version is done with it.
        from tfmaas.trainer.checkpointing import discard_checkpoint

        discard_checkpoint(store, version, log)
        raise VersionExistsError(
            f"version {version} is already published in {store_uri}; published versions are "
            "never overwritten — train a new version number"
        )
    teacher = None
    if config.distillation is not None:
        from tfmaas.trainer.distill import pull_teacher

        teacher = pull_teacher(store, config.distillation.teacher_version)
        log(f"distilling from {name} version {teacher.version} ({teacher.architecture})")
    log(f"training {name} version {version} into {store_uri}")

    from tfmaas.trainer.exporting import MODEL_CARD_FILE, export
    from tfmaas.trainer.training import CheckpointTarget, train

    trained = train(
        config,
        endpoint=endpoint,
        checkpoints=CheckpointTarget(store, version),
        log=log,
        teacher=teacher,
    )
    if tuning is not None:
        trained.tuning = dict(tuning)
    export_root = Path(tempfile.mkdtemp(prefix=f"tfmaas-{name}-{version}-"))
    export_dir = export(trained, export_root / str(version), name=name, version=version)
    if trained.is_chief:
        uri = store.publish(version, export_dir)
        log(f"published {name} version {version} at {uri}")
    else:
        # Every worker must save (the save runs collectives); only the chief's copy counts.
        uri = ""
        log(f"not the chief worker: version {version} exported to {export_dir}, not published")
    if trained.checkpointer is not None:
        trained.checkpointer.discard()  # the chief's deletes the store's copy too
    return TrainResult(
        version=version,
        uri=uri,
        metrics=trained.metrics,
        export_dir=export_dir,
        trained_at=trained.trained_at,
        examples=dict(trained.examples),
        published=trained.is_chief,
        resumed_from_epoch=trained.resumed_from_epoch,
        tensorflow_version=_tensorflow_version(),
        # The model card's figure, so status and `tfmaas store list` say the same size.
        size_bytes=int(json.loads((export_dir / MODEL_CARD_FILE).read_text("utf-8"))["sizeBytes"]),
    )


def _tensorflow_version() -> str:
    import tensorflow as tf

    return str(tf.__version__)


@dataclass(frozen=True)
class TrialResult:
    """One trial of a hyperparameter search: its scores on the validation split."""

    trial: int
    metrics: dict[str, Any]
    epochs: int

    def termination_message(self) -> str:
        return json.dumps(
            {
                "trial": self.trial,
                "evaluatedOn": "validation",
                "metrics": {k: round(float(self.metrics[k]), 6) for k in _HEADLINE},
                "epochs": self.epochs,
            },
            separators=(",", ":"),
        )


MAX_TRIAL = 1000


def run_trial(
    training: Mapping[str, Any] | TrainingSpec,
    *,
    trial: int,
    endpoint: str | None = None,
    log: Callable[[str], Any] = print,
) -> TrialResult:
    """Train one trial's configuration and score it on the validation split. Nothing is
    published and no checkpoint is kept: a trial is small, and one that dies is retried from
    its start or counted as failed, which does not fail the search."""
    config = load_training_spec(training)
    if not 0 <= trial < MAX_TRIAL:
        raise UserError(f"--trial must be 0 to {MAX_TRIAL - 1}, got {trial}")
    if config.tuning is not None or config.distillation is not None:
        raise UserError(
            "a trial trains one configuration: its spec.training has no tuning or distillation"
        )
    from tfmaas.trainer.training import train

    log(f"trial {trial}: training on the training split, scoring on the validation split")
    trained = train(config, endpoint=endpoint, log=log, trial=True)
    return TrialResult(trial=trial, metrics=trained.metrics, epochs=trained.epochs_run)


# 50 trials of five parameters take a few KiB; anything far larger was not the operator's.
TUNING_TABLE_LIMIT = 64 * 1024


def parse_tuning_table(text: str | None) -> dict[str, Any] | None:
    """--tuning-json: the search the operator ran, a JSON object for the model card."""
    if text is None:
        return None
    if len(text) > TUNING_TABLE_LIMIT:
        raise UserError(f"--tuning-json is over {TUNING_TABLE_LIMIT} characters")
    try:
        table = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"--tuning-json is not JSON: {exc.msg} at character {exc.pos}") from None
    if not isinstance(table, dict):
        raise UserError("--tuning-json must be a JSON object")
    return table


def write_termination_message(path: str | Path, message: str) -> bool:
    """Write `message` to `path` when running where it is read; say whether it was written.

    Kubernetes mounts the default path as a file, so outside a pod (where /dev exists but
    the file does not) nothing is written; an explicit path needs only its directory.
    """
    target = Path(path)
    if str(target) == DEFAULT_TERMINATION_LOG and not target.exists():
        return False
    if not target.parent.is_dir():
        return False
    target.write_text(message, encoding="utf-8")
    return True


def failure_message(error: BaseException) -> str:
    """A compact JSON termination message for a failed run (the operator shows `error`):
    credentials redacted, control characters out, under Kubernetes' 4 KiB."""
    return json.dumps(
        {"error": safe_message(describe_error(error), limit=TERMINATION_ERROR_CHARS)},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def describe_error(error: BaseException) -> str:
    return str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
