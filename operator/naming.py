"""Deterministic names and labels of everything a ModelService owns: a second reconcile
(or one after a crash) computes the same names and so creates nothing twice."""

from __future__ import annotations

from typing import Any

from tfmaas.api import API_VERSION, KIND

FIELD_MANAGER = "tfmaas-operator"
MODEL_SERVICE_LABEL = "tfmaas.io/model-service"
VERSION_LABEL = "tfmaas.io/version"
TRACK_LABEL = "tfmaas.io/track"
TRAINING_HASH_ANNOTATION = "tfmaas.io/training-hash"
CONFIG_HASH_ANNOTATION = "tfmaas.io/config-hash"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
# A hyperparameter search's trial Jobs: which search (spec.training's hash) and trial number,
# and the configuration the trial trains (what the operator reads back, not the command).
SEARCH_LABEL = "tfmaas.io/search"
TRIAL_LABEL = "tfmaas.io/trial"
TRIAL_PARAMETERS_ANNOTATION = "tfmaas.io/trial-parameters"

STABLE = "stable"
CANARY = "canary"
TRAINING_COMPONENT = "training"
TUNING_COMPONENT = "tuning"
SERVING_COMPONENT = "serving"
TRAINER_CONTAINER = "trainer"
SERVING_CONTAINER = "tfserving"
GRPC_PORT = 8500
REST_PORT = 8501
# With access control on, the gateway takes the public ports and TF Serving moves to these;
# it cannot bind loopback only, so the NetworkPolicy is what keeps callers off them.
GATEWAY_CONTAINER = "access-gateway"
GATEWAY_METRICS_PORT = 8502
UPSTREAM_GRPC_PORT = 9000
UPSTREAM_REST_PORT = 9001
WORKER_PORT = 2222


def job_name(service: str, version: int) -> str:
    return f"{service}-train-{version}"


def trial_job_name(service: str, training_hash: str, trial: int) -> str:
    """Each search (spec.training's hash) names its trials apart, so a new search never
    meets an old one's Job. A 40-character service name leaves this under 63."""
    return f"{service}-tune-{training_hash[:6]}-{trial}"


def deployment_name(service: str, track: str) -> str:
    return service if track == STABLE else f"{service}-{track}"


def config_map_name(service: str, track: str, config_hash: str) -> str:
    return f"{deployment_name(service, track)}-config-{config_hash[:10]}"


def gateway_service_account_name(service: str) -> str:
    return f"{service}-access-gateway"


def gateway_cluster_role_binding_name(namespace: str, service: str) -> str:
    return f"tfmaas-access-gateway:{namespace}:{service}"


def network_policy_name(service: str) -> str:
    return f"{service}-serving"


def headless_service_name(service: str) -> str:
    return f"{service}-pods"


def labels(service: str, component: str, **extra: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "tfmaas",
        "app.kubernetes.io/instance": service,
        COMPONENT_LABEL: component,
        "app.kubernetes.io/part-of": "tfmaas",
        MANAGED_BY_LABEL: FIELD_MANAGER,
        MODEL_SERVICE_LABEL: service,
        **extra,
    }


def owner_reference(name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(
    name: str,
    namespace: str,
    owner: dict[str, Any],
    object_labels: dict[str, str],
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": object_labels,
        "ownerReferences": [owner],
    }
    if annotations:
        meta["annotations"] = annotations
    return meta
