"""Typed ModelService spec: built only from a document that passed validation and defaulting,
so every field here is present and of its type. The defaults live in the CRD alone."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

LATEST = "latest"


@dataclass(frozen=True)
class CaBundleRef:
    """One key of a ConfigMap or Secret holding a PEM CA bundle."""

    kind: str  # "configMap" or "secret"
    name: str
    key: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CaBundleRef:
        kind = "configMap" if "configMapRef" in data else "secret"
        ref = data[f"{kind}Ref"]
        return cls(kind=kind, name=str(ref["name"]), key=str(ref["key"]))


@dataclass(frozen=True)
class StorageSpec:
    uri: str
    endpoint: str | None = None
    region: str | None = None
    secret_name: str | None = None
    encryption: str | None = None  # "sse-s3" or "sse-kms"
    kms_key_id: str | None = None
    ca_bundle: CaBundleRef | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StorageSpec:
        secret = data.get("secretRef") or {}
        ca_bundle = data.get("caBundle")
        return cls(
            uri=str(data["uri"]),
            endpoint=data.get("endpoint"),
            region=data.get("region"),
            secret_name=secret.get("name"),
            encryption=data.get("encryption"),
            kms_key_id=data.get("kmsKeyId"),
            ca_bundle=CaBundleRef.from_dict(ca_bundle) if ca_bundle else None,
        )


@dataclass(frozen=True)
class DatasetSpec:
    uri: str
    format: str
    text_field: str
    label_field: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetSpec:
        return cls(
            uri=str(data["uri"]),
            format=str(data["format"]),
            text_field=str(data["textField"]),
            label_field=str(data["labelField"]),
        )


@dataclass(frozen=True)
class ModelArchitectureSpec:
    architecture: str
    max_tokens: int
    sequence_length: int
    ngrams: int
    embedding_dim: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelArchitectureSpec:
        return cls(
            architecture=str(data["architecture"]),
            max_tokens=int(data["maxTokens"]),
            sequence_length=int(data["sequenceLength"]),
            ngrams=int(data["ngrams"]),
            embedding_dim=int(data["embeddingDim"]),
        )


@dataclass(frozen=True)
class Hyperparameters:
    epochs: int
    batch_size: int
    learning_rate: float
    early_stopping_patience: int
    seed: int
    validation_fraction: float
    test_fraction: float
    max_examples: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Hyperparameters:
        return cls(
            epochs=int(data["epochs"]),
            batch_size=int(data["batchSize"]),
            learning_rate=float(data["learningRate"]),
            early_stopping_patience=int(data["earlyStoppingPatience"]),
            seed=int(data["seed"]),
            validation_fraction=float(data["validationFraction"]),
            test_fraction=float(data["testFraction"]),
            max_examples=int(data["maxExamples"]),
        )


@dataclass(frozen=True)
class DistillationSpec:
    """Train as a student of `teacher_version`, a published version of the same ModelService."""

    teacher_version: int
    temperature: float
    alpha: float
    unlabelled_examples: int = 0
    """Left-out sentences of the dataset the teacher labels for the student (0: none)."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DistillationSpec:
        return cls(
            teacher_version=int(data["teacher"]["version"]),
            temperature=float(data["temperature"]),
            alpha=float(data["alpha"]),
            unlabelled_examples=int(data.get("unlabelledExamples", 0)),
        )


QUANTIZE_NONE = "none"


@dataclass(frozen=True)
class CompressionSpec:
    quantize: str = QUANTIZE_NONE  # "none", "float16" or "int8"
    prune_vocabulary: int | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CompressionSpec:
        prune = data.get("pruneVocabulary")
        return cls(
            quantize=str(data["quantize"]),
            prune_vocabulary=int(prune) if prune is not None else None,
        )


# Where each tunable parameter lives in spec.training: (section, field). One place decides it,
# so a trial's spec and the best configuration's spec are built the same way.
TUNABLE_PARAMETERS: dict[str, tuple[str, str]] = {
    "learningRate": ("hyperparameters", "learningRate"),
    "batchSize": ("hyperparameters", "batchSize"),
    "embeddingDim": ("model", "embeddingDim"),
    "ngrams": ("model", "ngrams"),
    "maxTokens": ("model", "maxTokens"),
}
FLOAT_PARAMETERS = frozenset({"learningRate"})
OBJECTIVES = {"valAccuracy": "accuracy", "valMacroF1": "f1"}
"""Each objective and the validation metric (as classification_metrics names it) it reads."""


@dataclass(frozen=True)
class ParameterSearch:
    """One searched parameter: a range (`low`..`high`, maybe on a log scale) or `choices`."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[float, ...] | None = None

    @property
    def is_float(self) -> bool:
        return self.name in FLOAT_PARAMETERS

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> ParameterSearch:
        number = float if name in FLOAT_PARAMETERS else int
        choices = data.get("choices")
        return cls(
            name=name,
            low=number(data["min"]) if "min" in data else None,
            high=number(data["max"]) if "max" in data else None,
            log=bool(data.get("log", False)),
            # Repeated choices would only weigh a value twice: the search keeps one of each.
            choices=tuple(sorted({number(c) for c in choices})) if choices else None,
        )


@dataclass(frozen=True)
class TuningSpec:
    objective: str
    max_trials: int
    parallel_trials: int
    parameters: tuple[ParameterSearch, ...]

    @property
    def metric(self) -> str:
        return OBJECTIVES[self.objective]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TuningSpec:
        parameters = data["parameters"]
        return cls(
            objective=str(data["objective"]),
            max_trials=int(data["maxTrials"]),
            parallel_trials=int(data["parallelTrials"]),
            parameters=tuple(
                ParameterSearch.from_dict(name, parameters[name])
                for name in TUNABLE_PARAMETERS
                if name in parameters
            ),
        )


@dataclass(frozen=True)
class ComputeResources:
    cpu: str
    memory: str
    gpu: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ComputeResources:
        return cls(cpu=str(data["cpu"]), memory=str(data["memory"]), gpu=int(data.get("gpu", 0)))


METRIC_NAMES = ("accuracy", "precision", "recall", "f1")


@dataclass(frozen=True)
class QualityGate:
    min_accuracy: float | None = None
    min_precision: float | None = None
    min_recall: float | None = None
    min_f1: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QualityGate:
        def optional(key: str) -> float | None:
            return float(data[key]) if data.get(key) is not None else None

        return cls(
            min_accuracy=optional("minAccuracy"),
            min_precision=optional("minPrecision"),
            min_recall=optional("minRecall"),
            min_f1=optional("minF1"),
        )

    def thresholds(self) -> dict[str, float]:
        values = (self.min_accuracy, self.min_precision, self.min_recall, self.min_f1)
        pairs = zip(METRIC_NAMES, values, strict=True)
        return {name: value for name, value in pairs if value is not None}

    def failures(self, metrics: Mapping[str, Any]) -> list[str]:
        """Why `metrics` fail the gate, one line per metric; empty when they pass."""
        problems = []
        for name, minimum in self.thresholds().items():
            score = metrics.get(name)
            if not isinstance(score, int | float):
                problems.append(f"{name} is missing from the metrics (the gate needs {minimum})")
            elif score < minimum:
                problems.append(f"{name} {score:.4f} < {minimum}")
        return problems


# spec.training.pod / spec.serving.pod: where the pods run and who they run as. It shapes no
# model, so the trainer never sees it and it is not hashed (see TrainingSpec.fingerprint).
POD = "pod"


def pod_settings(data: Mapping[str, Any]) -> dict[str, Any]:
    """The `pod` mapping of a spec.training or spec.serving document, as written (camelCase,
    the pod spec's own field names); empty when absent."""
    return copy.deepcopy(dict(data.get(POD) or {}))


@dataclass(frozen=True)
class TrainingSpec:
    dataset: DatasetSpec
    model: ModelArchitectureSpec
    hyperparameters: Hyperparameters
    resources: ComputeResources
    workers: int
    quality_gate: QualityGate
    image: str | None
    distillation: DistillationSpec | None = None
    compression: CompressionSpec = CompressionSpec()
    pod: Mapping[str, Any] = field(default_factory=dict)
    tuning: TuningSpec | None = None
    # The defaulted camelCase document; without `pod`, what the trainer receives and hashes.
    document: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingSpec:
        return cls(
            dataset=DatasetSpec.from_dict(data["dataset"]),
            model=ModelArchitectureSpec.from_dict(data["model"]),
            hyperparameters=Hyperparameters.from_dict(data["hyperparameters"]),
            resources=ComputeResources.from_dict(data["resources"]),
            workers=int(data["workers"]),
            quality_gate=QualityGate.from_dict(data["qualityGate"]),
            image=data.get("image"),
            distillation=(
                DistillationSpec.from_dict(data["distillation"])
                if data.get("distillation")
                else None
            ),
            compression=CompressionSpec.from_dict(data.get("compression") or {"quantize": "none"}),
            pod=pod_settings(data),
            tuning=TuningSpec.from_dict(data["tuning"]) if data.get("tuning") else None,
            document=copy.deepcopy(dict(data)),
        )

    def to_dict(self) -> dict[str, Any]:
        """What the trainer receives: everything but where its pods run."""
        return {key: copy.deepcopy(value) for key, value in self.document.items() if key != POD}

    def with_parameters(self, parameters: Mapping[str, float | int]) -> TrainingSpec:
        """This spec with `parameters` (tunable names, as a trial or the search's best
        configuration has them) set and no `tuning`: what one trial or the tuned version trains.
        KeyError for a name that is not tunable."""
        document = self.to_dict()
        document.pop("tuning", None)
        for name, value in parameters.items():
            section, key = TUNABLE_PARAMETERS[name]
            number = float if name in FLOAT_PARAMETERS else int
            document.setdefault(section, {})[key] = number(value)
        return TrainingSpec.from_dict(document)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def fingerprint(self) -> str:
        """A short stable hash of what determines a trained model; equal specs, equal hash.

        The quality gate judges a version but does not shape it, so changing the gate
        re-judges nothing and trains nothing; nor does `pod` (placement and identity): a new
        toleration must not retrain every model. Distillation, compression and tuning shape it:
        they are hashed with the rest (absent, they leave the hash of older specs as it was), so
        changing only `tuning` runs a new search and trains a new version."""
        shaping = {key: value for key, value in self.to_dict().items() if key != "qualityGate"}
        canonical = json.dumps(shaping, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CanarySpec:
    version: int
    replicas: int


# Which object scales the stable track: the operator's own HPA, or a KEDA ScaledObject (from
# which KEDA makes an HPA of its own).
AUTOSCALING_HPA = "hpa"
AUTOSCALING_KEDA = "keda"


@dataclass(frozen=True)
class AutoscalingSpec:
    enabled: bool
    min_replicas: int
    max_replicas: int
    target_requests_per_second: float
    engine: str = AUTOSCALING_HPA


@dataclass(frozen=True)
class BatchingSpec:
    enabled: bool
    max_batch_size: int
    batch_timeout_micros: int
    max_enqueued_batches: int
    num_batch_threads: int


ACCESS_NONE = "none"
ACCESS_KUBERNETES = "kubernetes"


@dataclass(frozen=True)
class AccessSpec:
    """Who may call the model: `mode` None leaves it to the operator's default."""

    mode: str | None
    tls_secret_name: str | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AccessSpec:
        tls = data.get("tls") or {}
        return cls(mode=data.get("mode"), tls_secret_name=tls.get("secretName"))


@dataclass(frozen=True)
class ServingSpec:
    version: int | str
    canary: CanarySpec | None
    replicas: int
    autoscaling: AutoscalingSpec
    batching: BatchingSpec
    resources: ComputeResources
    image: str | None
    access: AccessSpec = AccessSpec(mode=None, tls_secret_name=None)
    pod: Mapping[str, Any] = field(default_factory=dict)

    @property
    def pinned_version(self) -> int | None:
        """The version the user pinned, or None for `latest`."""
        return None if self.version == LATEST else int(self.version)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServingSpec:
        canary = data.get("canary")
        autoscaling, batching = data["autoscaling"], data["batching"]
        return cls(
            version=data["version"] if data["version"] == LATEST else int(data["version"]),
            canary=CanarySpec(int(canary["version"]), int(canary["replicas"])) if canary else None,
            replicas=int(data["replicas"]),
            autoscaling=AutoscalingSpec(
                enabled=bool(autoscaling["enabled"]),
                min_replicas=int(autoscaling["minReplicas"]),
                max_replicas=int(autoscaling["maxReplicas"]),
                target_requests_per_second=float(autoscaling["targetRequestsPerSecond"]),
                engine=str(autoscaling.get("engine", AUTOSCALING_HPA)),
            ),
            batching=BatchingSpec(
                enabled=bool(batching["enabled"]),
                max_batch_size=int(batching["maxBatchSize"]),
                batch_timeout_micros=int(batching["batchTimeoutMicros"]),
                max_enqueued_batches=int(batching["maxEnqueuedBatches"]),
                num_batch_threads=int(batching["numBatchThreads"]),
            ),
            resources=ComputeResources.from_dict(data["resources"]),
            image=data.get("image"),
            access=AccessSpec.from_dict(data.get("access") or {}),
            pod=pod_settings(data),
        )


@dataclass(frozen=True)
class ModelServiceSpec:
    storage: StorageSpec
    training: TrainingSpec
    serving: ServingSpec

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelServiceSpec:
        return cls(
            storage=StorageSpec.from_dict(data["storage"]),
            training=TrainingSpec.from_dict(data["training"]),
            serving=ServingSpec.from_dict(data["serving"]),
        )


@dataclass(frozen=True)
class ModelService:
    name: str
    namespace: str | None
    spec: ModelServiceSpec
    uid: str | None = None
    generation: int | None = None
    # The defaulted document, as the apiserver would store it.
    document: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelService:
        metadata = data.get("metadata") or {}
        return cls(
            name=str(metadata["name"]),
            namespace=metadata.get("namespace"),
            spec=ModelServiceSpec.from_dict(data["spec"]),
            uid=metadata.get("uid"),
            generation=metadata.get("generation"),
            document=copy.deepcopy(dict(data)),
        )
