"""Operator-wide defaults: images, commands, scheduling for GPUs. The Helm chart sets them
through environment variables or a mounted YAML file (TFMAAS_OPERATOR_CONFIG)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from tfmaas.api.loader import validate_pod_settings
from tfmaas.errors import UserError
from tfmaas.release import (
    ACCESS_GATEWAY_REPOSITORY,
    OPERATOR_REPOSITORY,
    SERVING_GPU_IMAGE,
    SERVING_IMAGE,
    SERVING_TENSORFLOW_VERSION,
    TRAINER_REPOSITORY,
    image_reference,
)
from tfmaas.tensorflow_versions import parse_version

CONFIG_FILE_ENV = "TFMAAS_OPERATOR_CONFIG"
_PROMQL_DURATION = re.compile(r"(?:[1-9][0-9]{0,5}(?:ms|s|m|h|d))+")
_HTTP_URL = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]{1,253}(?:/[A-Za-z0-9._~/\-]{0,200})?")


@dataclass(frozen=True)
class OperatorConfig:
    # Field names are the Helm chart's TFMAAS_* variables without the prefix.
    # The defaults are the chart's and deploy/'s (tfmaas.release names them once).
    trainer_image: str = image_reference(TRAINER_REPOSITORY)
    trainer_image_pull_policy: str = "IfNotPresent"
    # The image whose `tfmaas store pull` fills the serving pod's model volume.
    storage_initializer_image: str = image_reference(OPERATOR_REPOSITORY)
    serving_image: str = SERVING_IMAGE
    serving_image_pull_policy: str = "IfNotPresent"
    # For ModelServices with spec.serving.resources.gpu and no spec.serving.image.
    serving_gpu_image: str = SERVING_GPU_IMAGE
    # TF Serving's --per_process_gpu_memory_fraction for GPU replicas: the share of each of
    # the pod's GPUs the server may take. TF Serving otherwise takes nearly all of it, and
    # cuBLAS/cuDNN handles and workspaces, allocated outside TensorFlow's allocator, then
    # fail; 0.9 leaves them a tenth. The pod owns its GPU (one server per GPU pod), so it
    # gets the rest; where a device plugin time-slices a GPU into N, set it below 1/N.
    serving_gpu_memory_fraction: float = 0.9
    serving_command: tuple[str, ...] = ("tensorflow_model_server",)
    # The TensorFlow the default serving images (serving_image, serving_gpu_image) are built
    # on; a version exported by a newer one gets ServingTensorFlowCompatible=False. Empty:
    # unknown, no check.
    serving_tensorflow_version: str = SERVING_TENSORFLOW_VERSION
    # For specs that name no storage.endpoint / secretRef / region.
    default_store_endpoint: str | None = None
    default_store_secret: str | None = None
    default_store_region: str | None = None
    request_rate_metric: str = "tfserving_requests_per_second"
    # The rate() window of the adapter rule, used by the KEDA trigger's query as well.
    rate_window: str = "2m"
    # The Prometheus KEDA's trigger queries (spec.serving.autoscaling.engine keda).
    keda_prometheus_address: str = "http://prometheus-operated.monitoring.svc:9090"
    training_backoff_limit: int = 1
    training_deadline_seconds: int = 86400
    # What GPU pods (training or serving) add to their placement: the GPU pool's labels and
    # the tolerations of its taint (the chart's defaults.gpu).
    gpu_node_selector: Mapping[str, str] = field(default_factory=dict)
    gpu_tolerations: tuple[Mapping[str, Any], ...] = (
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    )
    # Every training / serving pod's placement and identity under its spec's `pod` (the
    # chart's defaults.training.pod / defaults.serving.pod), in spec.<part>.pod's form.
    training_pod: Mapping[str, Any] = field(default_factory=dict)
    serving_pod: Mapping[str, Any] = field(default_factory=dict)
    config_poll_seconds: int = 60
    grpc_max_connection_age_ms: int = 30000
    resync_seconds: float = 60.0
    # A ModelService whose last reconcile changed nothing, and about which no watch reported
    # a change since, skips its resyncs; this often it is reconciled in full all the same.
    drift_resync_seconds: float = 3600.0
    run_as_user: int = 10001
    # Image prefixes a ModelService may name in spec.training.image / spec.serving.image
    # besides the images above; empty: only those (see operator/images.py).
    allowed_images: tuple[str, ...] = ()
    # A stopping serving pod waits this long before the server gets SIGTERM, so endpoint
    # removal reaches every client and proxy first; then it has serving_drain_seconds to
    # finish in-flight calls before SIGKILL.
    serving_pre_stop_seconds: int = 5
    serving_drain_seconds: int = 30
    # status.versions keeps the served, canary, pinned, newest promoted and training versions
    # and the newest this many others; the store keeps every version.
    status_versions_kept: int = 10
    # Access control for ModelServices whose spec.serving.access.mode is unset: "none" or
    # "kubernetes" (the access gateway checks each call's token and RBAC).
    access_mode: str = "none"
    access_gateway_image: str = image_reference(ACCESS_GATEWAY_REPOSITORY)
    access_gateway_command: tuple[str, ...] = ("access-gateway",)
    # Namespaces whose pods may scrape serving metrics past the NetworkPolicy (Prometheus').
    metrics_namespaces: tuple[str, ...] = ("monitoring",)

    def __post_init__(self) -> None:
        # A mistyped mode must not quietly leave every model open.
        if self.access_mode not in ("none", "kubernetes"):
            raise UserError(
                f"operator config: access_mode must be none or kubernetes, not {self.access_mode!r}"
            )
        if (
            self.serving_tensorflow_version
            and parse_version(self.serving_tensorflow_version) is None
        ):
            raise UserError(
                "operator config: serving_tensorflow_version must be a TensorFlow version like "
                "2.20.0, or empty"
            )
        # Both go verbatim into every ScaledObject: a typo would only show as a blind scaler.
        if not _PROMQL_DURATION.fullmatch(self.rate_window):
            raise UserError(
                "operator config: rate_window must be a Prometheus duration such as 2m or 90s"
            )
        if not _HTTP_URL.fullmatch(self.keda_prometheus_address):
            raise UserError(
                "operator config: keda_prometheus_address must be an http:// or https:// URL"
            )
        # TF Serving reads 0 as "its default" (all the memory), the very thing this bounds.
        if not 0.0 < self.serving_gpu_memory_fraction <= 1.0:
            raise UserError(
                "operator config: serving_gpu_memory_fraction must be above 0 and at most 1"
            )

        # Held to the CRD's rules: a default reaches every pod, so it is checked at start.
        validate_pod_settings(self.training_pod, "training", "operator config trainingPod")
        validate_pod_settings(self.serving_pod, "serving", "operator config servingPod")
        gpu = {
            "nodeSelector": dict(self.gpu_node_selector),
            "tolerations": list(self.gpu_tolerations),
        }
        validate_pod_settings(gpu, "serving", "operator config gpuNodeSelector/gpuTolerations")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> OperatorConfig:
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            name = _snake(key)
            if name not in known:
                raise UserError(
                    f"operator config: unknown setting {key!r}; known: {', '.join(sorted(known))}"
                )
            kwargs[name] = _coerce(name, value, known[name].type)
        return cls(**kwargs)

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        """File settings first, then TFMAAS_<SETTING> environment variables over them."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        path = environ.get(CONFIG_FILE_ENV)
        if path:
            try:
                loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise UserError(f"operator config {path}: cannot read it: {exc}") from None
            if not isinstance(loaded, Mapping):
                raise UserError(f"operator config {path}: must be a mapping of settings")
            values.update(loaded)
        for f in fields(cls):
            raw = environ.get(f"TFMAAS_{f.name.upper()}")
            if raw is not None:
                values[f.name] = raw
        return cls.from_mapping(values)


def _snake(key: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key)


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    text = str(annotation)
    try:
        if text.startswith("int"):
            return int(value)
        if text.startswith("float"):
            return float(value)
        if text.startswith("tuple[str"):
            parsed = json.loads(value) if isinstance(value, str) and value[:1] == "[" else value
            return tuple(parsed.split()) if isinstance(parsed, str) else tuple(parsed)
        if text.startswith(("Mapping", "tuple[Mapping")):
            parsed = json.loads(value) if isinstance(value, str) else value
            return tuple(parsed) if text.startswith("tuple") else dict(parsed)
    except (TypeError, ValueError) as exc:
        raise UserError(f"operator config: {name} has the wrong form ({exc})") from None
    if "None" in text and value in ("", None):
        return None
    return value
