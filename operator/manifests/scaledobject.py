"""The KEDA ScaledObject of the stable track (spec.serving.autoscaling.engine keda): KEDA
makes an HPA from it whose external metric is the same per-pod request rate our own HPA
targets, queried from Prometheus by KEDA instead of served by prometheus-adapter."""

from __future__ import annotations

import copy
from typing import Any

from tfmaas.api import ModelService
from tfmaas.operator.config import OperatorConfig
from tfmaas.operator.manifests.common import namespace_of, owner_of
from tfmaas.operator.manifests.hpa import SCALING_BEHAVIOR
from tfmaas.operator.naming import SERVING_COMPONENT, STABLE, deployment_name, labels, metadata

SCALED_OBJECT_API = "keda.sh/v1alpha1"
SCALED_OBJECT = "ScaledObject"
# The series the chart's adapter rule rates, and the labels its PodMonitor puts on it.
REQUEST_COUNT_SERIES = ":tensorflow:serving:request_count"


def request_rate_query(*, namespace: str, name: str, window: str) -> str:
    """Requests per second to the stable track's pods, summed: with metricType AverageValue
    the HPA divides it by the replica count, which is the adapter rule's per-pod average."""
    # Namespace and ModelService names are DNS labels/subdomains (the API server checks them):
    # nothing in them can close the PromQL string.
    selector = f'namespace="{namespace}",model_service="{name}",track="{STABLE}"'
    return f"sum(rate({REQUEST_COUNT_SERIES}{{{selector}}}[{window}]))"


def threshold(value: float) -> str:
    """KEDA's threshold is a string it parses as a float; no exponent, no trailing zeros."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text or "0"


def build_scaled_object(service: ModelService, config: OperatorConfig) -> dict[str, Any]:
    autoscaling = service.spec.serving.autoscaling
    namespace = namespace_of(service)
    target = deployment_name(service.name, STABLE)
    return {
        "apiVersion": SCALED_OBJECT_API,
        "kind": SCALED_OBJECT,
        "metadata": metadata(
            target, namespace, owner_of(service), labels(service.name, SERVING_COMPONENT)
        ),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            # minReplicas is at least 1 (the CRD's minimum): KEDA never scales the model to zero.
            "minReplicaCount": autoscaling.min_replicas,
            "maxReplicaCount": autoscaling.max_replicas,
            "pollingInterval": 15,
            "advanced": {
                "horizontalPodAutoscalerConfig": {"behavior": copy.deepcopy(SCALING_BEHAVIOR)}
            },
            "triggers": [
                {
                    "type": "prometheus",
                    "metricType": "AverageValue",
                    "metadata": {
                        "serverAddress": config.keda_prometheus_address,
                        "query": request_rate_query(
                            namespace=namespace, name=service.name, window=config.rate_window
                        ),
                        "threshold": threshold(autoscaling.target_requests_per_second),
                        # No series yet (no traffic since the pods started) reads as 0 req/s.
                        "ignoreNullValues": "true",
                    },
                }
            ],
        },
    }
