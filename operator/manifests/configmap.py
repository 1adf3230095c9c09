"""The serving configuration of one track (stable or canary): TF Serving's model config,
monitoring config and batching parameters, in an immutable ConfigMap named by its hash.

A new configuration is a new ConfigMap, and the Deployment's pod template names it, so a
change rolls out as new pods that start from the complete new state. Editing a mounted
ConfigMap in place would instead make running servers reload it, and TF Serving refuses to
point a label at a version it has not loaded yet, so a version change cannot be one push.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from tfmaas.api import ModelService
from tfmaas.operator.config import OperatorConfig
from tfmaas.operator.manifests.common import namespace_of, owner_of, whole_cpus
from tfmaas.operator.naming import (
    SERVING_COMPONENT,
    TRACK_LABEL,
    VERSION_LABEL,
    config_map_name,
    labels,
    metadata,
)
from tfmaas.serving_policy import (
    BATCHING_CONFIG_FILE,
    MODEL_CONFIG_FILE,
    MONITORING_CONFIG_FILE,
    batching_config_text,
    model_config_text,
    monitoring_config_text,
)

CONFIG_DIR = "/etc/tfmaas"
MODELS_DIR = "/models"


def model_base_path(service_name: str) -> str:
    return f"{MODELS_DIR}/{service_name}"


@dataclass(frozen=True)
class ServingConfig:
    track: str
    version: int
    files: dict[str, str]

    @property
    def digest(self) -> str:
        canonical = json.dumps(
            {"track": self.track, "version": self.version, "files": self.files}, sort_keys=True
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def serving_config(service: ModelService, track: str, version: int) -> ServingConfig:
    files = {
        MODEL_CONFIG_FILE: model_config_text(
            name=service.name, base_path=model_base_path(service.name), labels={track: version}
        ),
        MONITORING_CONFIG_FILE: monitoring_config_text(),
    }
    batching = service.spec.serving.batching
    if batching.enabled:
        threads = batching.num_batch_threads or whole_cpus(service.spec.serving.resources.cpu)
        files[BATCHING_CONFIG_FILE] = batching_config_text(batching, num_batch_threads=threads)
    return ServingConfig(track=track, version=version, files=files)


def build_config_map(
    service: ModelService, config: ServingConfig, operator_config: OperatorConfig
) -> dict[str, Any]:
    del operator_config  # the same for every operator; kept for a uniform builder signature
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(
            config_map_name(service.name, config.track, config.digest),
            namespace_of(service),
            owner_of(service),
            labels(
                service.name,
                SERVING_COMPONENT,
                **{TRACK_LABEL: config.track, VERSION_LABEL: str(config.version)},
            ),
        ),
        "immutable": True,
        "data": dict(config.files),
    }
