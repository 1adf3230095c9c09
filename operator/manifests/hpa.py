"""The HorizontalPodAutoscaler of the stable track, on the per-pod request rate that
prometheus-adapter serves as the Pods metric `tfserving_requests_per_second`."""

from __future__ import annotations

import copy
from typing import Any

from tfmaas.api import ModelService
from tfmaas.operator.manifests.common import (
    namespace_of,
    owner_of,
    requests_per_second_quantity,
)
from tfmaas.operator.naming import SERVING_COMPONENT, STABLE, deployment_name, labels, metadata

REQUEST_RATE_METRIC = "tfserving_requests_per_second"

# A model server takes a while to load; scale up at once, down slowly. KEDA's HPA gets the same.
SCALING_BEHAVIOR: dict[str, Any] = {
    "scaleUp": {"stabilizationWindowSeconds": 0},
    "scaleDown": {"stabilizationWindowSeconds": 300},
}


def build_hpa(service: ModelService, metric: str = REQUEST_RATE_METRIC) -> dict[str, Any]:
    autoscaling = service.spec.serving.autoscaling
    target = deployment_name(service.name, STABLE)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(
            target,
            namespace_of(service),
            owner_of(service),
            labels(service.name, SERVING_COMPONENT),
        ),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": autoscaling.min_replicas,
            "maxReplicas": autoscaling.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": metric},
                        "target": {
                            "type": "AverageValue",
                            "averageValue": requests_per_second_quantity(
                                autoscaling.target_requests_per_second
                            ),
                        },
                    },
                }
            ],
            "behavior": copy.deepcopy(SCALING_BEHAVIOR),
        },
    }
