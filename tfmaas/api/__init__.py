"""The ModelService resource: its CRD (the contract), typed spec, defaults and validation."""

from tfmaas.api.loader import (
    load_model_service,
    load_training_spec,
    validate_model_service,
    validate_training,
)
from tfmaas.api.schema import API_VERSION, CRD_NAME, GROUP, KIND, PLURAL, VERSION, crd, crd_text
from tfmaas.api.spec import (
    LATEST,
    AutoscalingSpec,
    BatchingSpec,
    CanarySpec,
    ComputeResources,
    DatasetSpec,
    Hyperparameters,
    ModelArchitectureSpec,
    ModelService,
    ModelServiceSpec,
    QualityGate,
    ServingSpec,
    StorageSpec,
    TrainingSpec,
)
from tfmaas.api.validation import FieldError, SpecError

__all__ = [
    "API_VERSION",
    "CRD_NAME",
    "GROUP",
    "KIND",
    "LATEST",
    "PLURAL",
    "VERSION",
    "AutoscalingSpec",
    "BatchingSpec",
    "CanarySpec",
    "ComputeResources",
    "DatasetSpec",
    "FieldError",
    "Hyperparameters",
    "ModelArchitectureSpec",
    "ModelService",
    "ModelServiceSpec",
    "QualityGate",
    "ServingSpec",
    "SpecError",
    "StorageSpec",
    "TrainingSpec",
    "crd",
    "crd_text",
    "load_model_service",
    "load_training_spec",
    "validate_model_service",
    "validate_training",
]
