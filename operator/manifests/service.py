"""The Services in front of both tracks: one ClusterIP for plain clients, and a headless
`<name>-pods` whose per-pod DNS records let gRPC clients balance across replicas."""

from __future__ import annotations

from typing import Any

from tfmaas.api import ModelService
from tfmaas.operator.manifests.common import namespace_of, owner_of
from tfmaas.operator.naming import (
    COMPONENT_LABEL,
    GRPC_PORT,
    MODEL_SERVICE_LABEL,
    REST_PORT,
    SERVING_COMPONENT,
    headless_service_name,
    labels,
    metadata,
)

PORTS = [
    {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "appProtocol": "grpc"},
    {"name": "http", "port": REST_PORT, "targetPort": "http", "appProtocol": "http"},
]


def serving_selector(service_name: str) -> dict[str, str]:
    # Both tracks: the canary takes its share of requests by its share of replicas.
    return {MODEL_SERVICE_LABEL: service_name, COMPONENT_LABEL: SERVING_COMPONENT}


def build_service(service: ModelService) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(
            service.name,
            namespace_of(service),
            owner_of(service),
            labels(service.name, SERVING_COMPONENT),
        ),
        "spec": {
            "type": "ClusterIP",
            "selector": serving_selector(service.name),
            "ports": [dict(port) for port in PORTS],
        },
    }


def build_headless_service(service: ModelService) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(
            headless_service_name(service.name),
            namespace_of(service),
            owner_of(service),
            labels(service.name, SERVING_COMPONENT),
        ),
        "spec": {
            "clusterIP": "None",
            "selector": serving_selector(service.name),
            "ports": [dict(port) for port in PORTS],
        },
    }


def endpoint(service: ModelService) -> dict[str, str]:
    host = f"{service.name}.{namespace_of(service)}.svc"
    # Only the access gateway terminates TLS, and it does so on both ports.
    scheme = "https" if service.spec.serving.access.tls_secret_name is not None else "http"
    return {"grpc": f"{host}:{GRPC_PORT}", "rest": f"{scheme}://{host}:{REST_PORT}"}
