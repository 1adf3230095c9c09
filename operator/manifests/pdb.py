"""The PodDisruptionBudget of the stable track: voluntary evictions (node drains) take one
replica at a time; `maxUnavailable` rather than `minAvailable` so a single replica can
still be drained."""

from __future__ import annotations

from typing import Any

from tfmaas.api import ModelService
from tfmaas.operator.manifests.common import namespace_of, owner_of
from tfmaas.operator.manifests.deployment import selector
from tfmaas.operator.naming import SERVING_COMPONENT, STABLE, deployment_name, labels, metadata


def build_pdb(service: ModelService) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(
            deployment_name(service.name, STABLE),
            namespace_of(service),
            owner_of(service),
            labels(service.name, SERVING_COMPONENT),
        ),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(service.name, STABLE)}},
    }
