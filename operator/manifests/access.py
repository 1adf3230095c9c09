"""Access control of one ModelService (spec.serving.access): the access gateway container in
front of TF Serving, its ServiceAccount and the cluster-wide review rights it needs, and the
NetworkPolicy that keeps callers off TF Serving's own ports.

TF Serving cannot bind loopback only (its gRPC server listens on 0.0.0.0 and the REST one on
every interface), so with access control on it moves to UPSTREAM_* ports and the NetworkPolicy
admits ingress only on the gateway's ports (plus its metrics port from the monitoring
namespaces)."""

from __future__ import annotations

from typing import Any

from tfmaas.api import ModelService
from tfmaas.api.spec import ACCESS_KUBERNETES
from tfmaas.operator.config import OperatorConfig
from tfmaas.operator.manifests.common import container_security_context, namespace_of, owner_of
from tfmaas.operator.naming import (
    COMPONENT_LABEL,
    GATEWAY_CONTAINER,
    GATEWAY_METRICS_PORT,
    GRPC_PORT,
    MODEL_SERVICE_LABEL,
    REST_PORT,
    SERVING_COMPONENT,
    UPSTREAM_GRPC_PORT,
    UPSTREAM_REST_PORT,
    gateway_cluster_role_binding_name,
    gateway_service_account_name,
    labels,
    metadata,
    network_policy_name,
)

# The ClusterRole the chart ships for gateways: create tokenreviews and subjectaccessreviews.
GATEWAY_CLUSTER_ROLE = "tfmaas-access-gateway"
TLS_DIR = "/etc/tfmaas/tls"
# Where client-go's in-cluster config looks; only the gateway container mounts it.
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_EXPIRATION_SECONDS = 3607


def access_mode(service: ModelService, operator_config: OperatorConfig) -> str:
    """The one place that decides whether a ModelService is guarded: its own mode, else TLS
    (which only the gateway can terminate) implies kubernetes, else the operator's default."""
    access = service.spec.serving.access
    if access.mode is not None:
        return access.mode
    if access.tls_secret_name is not None:
        return ACCESS_KUBERNETES
    return operator_config.access_mode


def guarded(service: ModelService, operator_config: OperatorConfig) -> bool:
    return access_mode(service, operator_config) == ACCESS_KUBERNETES


def gateway_args(service: ModelService, track: str) -> list[str]:
    args = [
        f"--grpc-listen-address=:{GRPC_PORT}",
        f"--rest-listen-address=:{REST_PORT}",
        f"--metrics-listen-address=:{GATEWAY_METRICS_PORT}",
        f"--grpc-upstream=127.0.0.1:{UPSTREAM_GRPC_PORT}",
        f"--rest-upstream=127.0.0.1:{UPSTREAM_REST_PORT}",
        f"--namespace={namespace_of(service)}",
        f"--model-service={service.name}",
        f"--upstream-readiness-path=/v1/models/{service.name}/labels/{track}",
    ]
    if service.spec.serving.access.tls_secret_name is not None:
        args += [
            f"--tls-cert-file={TLS_DIR}/tls.crt",
            f"--tls-private-key-file={TLS_DIR}/tls.key",
        ]
    return args


def gateway_container(
    service: ModelService, track: str, operator_config: OperatorConfig
) -> dict[str, Any]:
    mounts = [{"name": "gateway-token", "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": True}]
    if service.spec.serving.access.tls_secret_name is not None:
        mounts.append({"name": "gateway-tls", "mountPath": TLS_DIR, "readOnly": True})
    return {
        "name": GATEWAY_CONTAINER,
        "image": operator_config.access_gateway_image,
        "imagePullPolicy": operator_config.serving_image_pull_policy,
        "command": list(operator_config.access_gateway_command),
        "args": gateway_args(service, track),
        "ports": [
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "http", "containerPort": REST_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": GATEWAY_METRICS_PORT, "protocol": "TCP"},
        ],
        "resources": {
            "requests": {"cpu": "100m", "memory": "64Mi"},
            "limits": {"cpu": "1", "memory": "256Mi"},
        },
        "securityContext": container_security_context(),
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "metrics"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        # /readyz reports TF Serving's answer for this track's label (see deployment.py).
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "metrics"},
            "periodSeconds": 5,
            "failureThreshold": 2,
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }


def gateway_volumes(service: ModelService) -> list[dict[str, Any]]:
    """The gateway's own short-lived token (the pod mounts none by default, so TF Serving never
    holds one) and, with TLS, the Secret's key pair."""
    volumes: list[dict[str, Any]] = [
        {
            "name": "gateway-token",
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "path": "token",
                            "expirationSeconds": TOKEN_EXPIRATION_SECONDS,
                        }
                    },
                    {
                        "configMap": {
                            "name": "kube-root-ca.crt",
                            "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        }
                    },
                    {
                        "downwardAPI": {
                            "items": [
                                {
                                    "path": "namespace",
                                    "fieldRef": {"fieldPath": "metadata.namespace"},
                                }
                            ]
                        }
                    },
                ]
            },
        }
    ]
    secret = service.spec.serving.access.tls_secret_name
    if secret is not None:
        volumes.append({"name": "gateway-tls", "secret": {"secretName": secret}})
    return volumes


def build_gateway_service_account(service: ModelService) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(
            gateway_service_account_name(service.name),
            namespace_of(service),
            owner_of(service),
            labels(service.name, SERVING_COMPONENT),
        ),
        "automountServiceAccountToken": False,
    }


def build_gateway_cluster_role_binding(service: ModelService) -> dict[str, Any]:
    """Cluster-scoped, so it can have no namespaced owner: the operator deletes it with the
    ModelService."""
    namespace = namespace_of(service)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": gateway_cluster_role_binding_name(namespace, service.name),
            "labels": labels(service.name, SERVING_COMPONENT),
        },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": GATEWAY_CLUSTER_ROLE,
        },
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": gateway_service_account_name(service.name),
                "namespace": namespace,
            }
        ],
    }


def _ports(*numbers: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": number} for number in numbers]


def build_network_policy(service: ModelService, operator_config: OperatorConfig) -> dict[str, Any]:
    """Ingress to a guarded ModelService's serving pods: the API ports from anywhere (the
    gateway decides who), the metrics port from the monitoring namespaces; nothing reaches TF
    Serving's own ports. Kubelet probes come from the node, which NetworkPolicy does not cover."""
    rules: list[dict[str, Any]] = [{"ports": _ports(GRPC_PORT, REST_PORT)}]
    if operator_config.metrics_namespaces:
        rules.append(
            {
                "from": [
                    {
                        "namespaceSelector": {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/metadata.name",
                                    "operator": "In",
                                    "values": list(operator_config.metrics_namespaces),
                                }
                            ]
                        }
                    }
                ],
                "ports": _ports(GATEWAY_METRICS_PORT),
            }
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(
            network_policy_name(service.name),
            namespace_of(service),
            owner_of(service),
            labels(service.name, SERVING_COMPONENT),
        ),
        "spec": {
            "podSelector": {
                "matchLabels": {
                    MODEL_SERVICE_LABEL: service.name,
                    COMPONENT_LABEL: SERVING_COMPONENT,
                }
            },
            "policyTypes": ["Ingress"],
            "ingress": rules,
        },
    }
