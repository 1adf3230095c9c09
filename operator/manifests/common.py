"""Pieces every pod the operator creates shares: the restricted Pod Security profile,
storage credentials by secretKeyRef (or none, for a pod with its own identity), and
quantity arithmetic."""

from __future__ import annotations

import math
from typing import Any

from tfmaas.api import ModelService
from tfmaas.operator.config import OperatorConfig
from tfmaas.operator.images import is_own_image
from tfmaas.operator.naming import owner_reference
from tfmaas.storage.encryption import ENCRYPTION_ENV, KMS_KEY_ID_ENV

# The NVIDIA device plugin's extended resource: what GPU pods ask for, and the usual taint.
GPU_RESOURCE = "nvidia.com/gpu"
STORE_CA_VOLUME = "store-ca"
STORE_CA_DIR = "/etc/tfmaas/store-ca"
STORE_CA_FILE = "ca.crt"


def owner_of(service: ModelService) -> dict[str, Any]:
    if not service.uid:
        raise ValueError(f"ModelService {service.name} has no uid; read it from the cluster first")
    return owner_reference(service.name, service.uid)


def namespace_of(service: ModelService) -> str:
    return service.namespace or "default"


def pod_security_context(config: OperatorConfig) -> dict[str, Any]:
    # The restricted Pod Security Standard: admitted in a namespace that enforces it.
    return {
        "runAsNonRoot": True,
        "runAsUser": config.run_as_user,
        "runAsGroup": config.run_as_user,
        "fsGroup": config.run_as_user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def storage_env(
    service: ModelService, config: OperatorConfig, *, image: str, service_account: str | None
) -> list[dict[str, Any]]:
    """What a container running `image` needs to reach the model store; the secret's values
    never leave the Secret. The operator's default store secret goes only to its own images.
    A pod running as `service_account` gets no static keys at all: its identity (IRSA,
    Workload Identity) is the credential, and boto3's default chain finds it; a key in the
    environment would win over that chain and hide a misconfigured identity."""
    storage = service.spec.storage
    env: list[dict[str, Any]] = []
    secret = storage.secret_name or (
        config.default_store_secret if is_own_image(image, config) else None
    )
    if secret and storage.uri.startswith("s3://") and not service_account:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
    endpoint = storage.endpoint or config.default_store_endpoint
    if endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": endpoint})
    region = storage.region or config.default_store_region
    if region:
        env.append({"name": "AWS_REGION", "value": region})
    if storage.encryption:
        env.append({"name": ENCRYPTION_ENV, "value": storage.encryption})
    if storage.kms_key_id:
        env.append({"name": KMS_KEY_ID_ENV, "value": storage.kms_key_id})
    if storage.ca_bundle:
        # boto3 reads it itself, so any S3 client in the image trusts the same CA.
        env.append({"name": "AWS_CA_BUNDLE", "value": f"{STORE_CA_DIR}/{STORE_CA_FILE}"})
    return env


def store_ca_volumes(service: ModelService) -> list[dict[str, Any]]:
    """The volume of spec.storage.caBundle (none without one), its key renamed to ca.crt."""
    ref = service.spec.storage.ca_bundle
    if ref is None:
        return []
    items = [{"key": ref.key, "path": STORE_CA_FILE}]
    if ref.kind == "configMap":
        return [{"name": STORE_CA_VOLUME, "configMap": {"name": ref.name, "items": items}}]
    return [{"name": STORE_CA_VOLUME, "secret": {"secretName": ref.name, "items": items}}]


def store_ca_mounts(service: ModelService) -> list[dict[str, Any]]:
    if service.spec.storage.ca_bundle is None:
        return []
    return [{"name": STORE_CA_VOLUME, "mountPath": STORE_CA_DIR, "readOnly": True}]


def scratch_env() -> list[dict[str, Any]]:
    # The root filesystem is read-only; libraries that write caches get /tmp instead.
    return [{"name": "HOME", "value": "/tmp"}, {"name": "TMPDIR", "value": "/tmp"}]


def cpu_cores(quantity: str) -> float:
    """CPU quantity ("2", "1.5", "500m") in cores."""
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def whole_cpus(quantity: str) -> int:
    """Threads to give a pod's servers: its CPUs rounded up, at least one, because their
    defaults count the node's cores, not the container's limit."""
    return max(1, math.ceil(cpu_cores(quantity)))


def requests_per_second_quantity(value: float) -> str:
    """A float as a Kubernetes quantity: whole numbers plain, fractions in milli-units."""
    return str(int(value)) if float(value).is_integer() else f"{round(value * 1000)}m"
