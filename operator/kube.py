"""A small typed client for exactly what the operator does with the API server: server-side
apply with one field manager, list, get, delete, and status merge patches. Objects stay
plain dicts (what the manifest builders produce), not generated model classes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from tfmaas.operator.naming import FIELD_MANAGER

# (apiVersion, kind) -> plural; the path prefix follows from the apiVersion.
PLURALS: dict[tuple[str, str], str] = {
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Service"): "services",
    ("v1", "Pod"): "pods",
    ("apps/v1", "Deployment"): "deployments",
    ("batch/v1", "Job"): "jobs",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("v1", "ServiceAccount"): "serviceaccounts",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicies",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "clusterrolebindings",
    ("tfmaas.io/v1alpha1", "ModelService"): "modelservices",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobjects",
}


class KubeError(Exception):
    """An API call failed; `status` is the HTTP status (0 when the server was not reached)."""

    def __init__(self, status: int, reason: str, body: str = "") -> None:
        self.status = status
        self.reason = reason
        self.body = body
        super().__init__(f"{status} {reason}: {_message_of(body)}")

    @property
    def transient(self) -> bool:
        """Worth retrying: the server was unreachable, overloaded, or a write raced."""
        return self.status in (0, 409, 429) or self.status >= 500


def _message_of(body: str) -> str:
    try:
        return str(json.loads(body).get("message", body))
    except (ValueError, AttributeError):
        return body[:500]


def collection_path(api_version: str, kind: str, namespace: str) -> str:
    plural = PLURALS[(api_version, kind)]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if not namespace:  # a cluster-scoped kind
        return f"{prefix}/{plural}"
    return f"{prefix}/namespaces/{quote(namespace)}/{plural}"


def object_path(api_version: str, kind: str, namespace: str, name: str) -> str:
    return f"{collection_path(api_version, kind, namespace)}/{quote(name)}"


@dataclass
class Kube:
    """Wraps a kubernetes.client.ApiClient (thread-safe: its urllib3 pool is)."""

    api_client: Any

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> Any:
        from urllib3.exceptions import HTTPError

        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            method, url, headers, payload, _ = self.api_client.param_serialize(
                method=method,
                resource_path=path,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self.api_client.call_api(
                method, url, header_params=headers, body=payload, _request_timeout=30
            )
            data = response.read()
        except (HTTPError, OSError) as exc:
            raise KubeError(0, type(exc).__name__, str(exc)) from None
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data or "")
        if not 200 <= response.status < 300:
            raise KubeError(int(response.status), str(response.reason), text)
        return json.loads(text) if text else None

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply: creates or converges the fields this operator owns; `force`
        takes them back from anyone who edited them by hand."""
        meta = manifest["metadata"]
        path = object_path(
            manifest["apiVersion"], manifest["kind"], meta.get("namespace", ""), meta["name"]
        )
        return dict(
            self._call(
                "PATCH",
                path,
                query={"fieldManager": FIELD_MANAGER, "force": "true"},
                # JSON is YAML; sent as text so no client-side serializer second-guesses it.
                body=json.dumps(manifest),
                content_type="application/apply-patch+yaml",
            )
        )

    def create_or_apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create with a plain POST; where the object exists already, server-side apply.

        For an object this operator creates once and never changes (a training Job: its pod
        template is immutable), a POST costs the API server half of what an apply does (no
        merge of managed fields; measured on this project's control plane), and a burst of
        new ModelServices is a burst of Job creations. The name can exist already only after
        a crash between creating it and recording it: then apply converges it as before."""
        meta = manifest["metadata"]
        path = collection_path(manifest["apiVersion"], manifest["kind"], meta.get("namespace", ""))
        try:
            return dict(
                self._call(
                    "POST",
                    path,
                    query={"fieldManager": FIELD_MANAGER},
                    body=dict(manifest),
                    content_type="application/json",
                )
            )
        except KubeError as exc:
            if exc.status != 409:
                raise
        return self.apply(manifest)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return dict(self._call("GET", object_path(api_version, kind, namespace, name)))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def list(
        self, api_version: str, kind: str, namespace: str, label_selector: str
    ) -> list[dict[str, Any]]:
        result = self._call(
            "GET",
            collection_path(api_version, kind, namespace),
            query={"labelSelector": label_selector},
        )
        return list(result.get("items") or [])

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """True if something was deleted; absence is not an error."""
        try:
            self._call(
                "DELETE",
                object_path(api_version, kind, namespace, name),
                body={"propagationPolicy": "Background"},
                content_type="application/json",
            )
            return True
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise

    def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        path = object_path(api_version, kind, namespace, name) + "/status"
        return dict(
            self._call(
                "PATCH",
                path,
                body={"status": status},
                content_type="application/merge-patch+json",
            )
        )


def connect() -> Kube:
    """A client from the kubeconfig ($KUBECONFIG or ~/.kube/config) or, inside a pod, the
    service account."""
    import kubernetes

    try:
        kubernetes.config.load_kube_config()
    except (kubernetes.config.ConfigException, FileNotFoundError, TypeError):
        kubernetes.config.load_incluster_config()
    configuration = kubernetes.client.Configuration.get_default_copy()
    # Reconciles of many ModelServices run in parallel threads sharing this pool.
    configuration.connection_pool_maxsize = 32
    return Kube(kubernetes.client.ApiClient(configuration))
