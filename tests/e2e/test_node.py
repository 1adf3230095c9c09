"""The local node runs real pods: locally built images, readiness, Services, cluster DNS, and
the advertised (fake) GPU capacity that lets GPU-requesting training Jobs schedule."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.e2e.conftest import NodeCluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NAMESPACE = "node-e2e"


def _apply(env: NodeCluster, manifest: dict[str, Any]) -> None:
    env.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def _pod(name: str, image: str, command: list[str], **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main",
        "image": image,
        "imagePullPolicy": "Never",
        "command": command,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": name}},
        "spec": {"containers": [container], **spec},
    }


def _wait_for(env: NodeCluster, what: str, predicate: Any, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(1)
    events = env.kubectl("get", "events", "-n", NAMESPACE, check=False).stdout
    pytest.fail(f"timed out waiting for {what}; events:\n{events}")


def _pod_json(env: NodeCluster, name: str) -> dict[str, Any]:
    return env.cluster.kubectl_json("get", "pod", name, "-n", NAMESPACE)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def namespace(node_cluster: NodeCluster) -> str:
    manifest = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": NAMESPACE,
            # The operator's pods must pass the restricted standard, so these tests do too.
            "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
        },
    }
    _apply(node_cluster, manifest)
    _wait_for(
        node_cluster,
        "the namespace's default ServiceAccount",
        lambda: (
            node_cluster.kubectl("get", "sa", "default", "-n", NAMESPACE, check=False).returncode
            == 0
        ),
    )
    return NAMESPACE


@pytest.fixture(scope="module")
def web_service(node_cluster: NodeCluster, namespace: str) -> str:
    """A pod serving HTTP from the locally built base image, behind a ClusterIP Service."""
    pod = _pod(
        "web",
        node_cluster.base.reference,
        ["python3", "-m", "http.server", "8080", "--directory", "/etc"],
        container={
            "ports": [{"containerPort": 8080, "name": "http"}],
            "readinessProbe": {
                "httpGet": {"path": "/hostname", "port": 8080},
                "periodSeconds": 1,
            },
        },
    )
    _apply(node_cluster, pod)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }
    _apply(node_cluster, service)
    return "web"


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_pod_running_a_locally_built_image_becomes_ready(
    node_cluster: NodeCluster, web_service: str
) -> None:
    pod = _wait_for(
        node_cluster,
        "pod web to be Ready",
        lambda: (p := _pod_json(node_cluster, "web")) and _ready(p) and p,
    )
    assert pod["spec"]["nodeName"] == node_cluster.node.name
    assert pod["status"]["podIP"].startswith(node_cluster.node.address.rsplit(".", 1)[0])


def _run_to_completion(env: NodeCluster, name: str, script: str) -> tuple[str, str]:
    _apply(
        env,
        _pod(
            name,
            env.base.reference,
            ["python3", "-c", script],
            restartPolicy="Never",
        ),
    )
    pod = _wait_for(
        env,
        f"pod {name} to finish",
        lambda: (
            (p := _pod_json(env, name))
            and p.get("status", {}).get("phase") in ("Succeeded", "Failed")
            and p
        ),
    )
    logs = env.kubectl("logs", name, "-n", NAMESPACE)
    return pod["status"]["phase"], logs.stdout


def test_a_service_resolves_by_dns_and_answers_from_another_pod(
    node_cluster: NodeCluster, web_service: str
) -> None:
    _wait_for(node_cluster, "pod web to be Ready", lambda: _ready(_pod_json(node_cluster, "web")))
    service_ip = node_cluster.cluster.kubectl_json("get", "svc", "web", "-n", NAMESPACE)["spec"][
        "clusterIP"
    ]
    script = (
        "import socket, urllib.request\n"
        f"print('resolved', socket.gethostbyname('web.{NAMESPACE}.svc.cluster.local'))\n"
        "print('short', socket.gethostbyname('web'))\n"
        "print('body', urllib.request.urlopen('http://web/hostname', timeout=10).read())\n"
    )
    phase, logs = _run_to_completion(node_cluster, "dns-client", script)
    assert phase == "Succeeded", logs
    assert f"resolved {service_ip}" in logs
    assert f"short {service_ip}" in logs
    assert "body b'" in logs


def test_pods_reach_the_api_server_through_the_kubernetes_service(
    node_cluster: NodeCluster, namespace: str
) -> None:
    script = (
        "import ssl, urllib.request\n"
        "ctx = ssl.create_default_context(cafile="
        "'/var/run/secrets/kubernetes.io/serviceaccount/ca.crt')\n"
        "token = open('/var/run/secrets/kubernetes.io/serviceaccount/token').read()\n"
        "request = urllib.request.Request('https://kubernetes.default.svc/version',"
        " headers={'Authorization': 'Bearer ' + token})\n"
        "print(urllib.request.urlopen(request, context=ctx, timeout=10).read().decode())\n"
    )
    phase, logs = _run_to_completion(node_cluster, "api-client", script)
    assert phase == "Succeeded", logs
    assert '"gitVersion"' in logs


def test_a_gpu_requesting_pod_schedules_on_the_advertised_capacity(
    node_cluster: NodeCluster, namespace: str
) -> None:
    node = node_cluster.cluster.kubectl_json("get", "node", node_cluster.node.name)
    assert node["status"]["allocatable"].get("nvidia.com/gpu") == "1"
    pod = _pod(
        "gpu-job",
        node_cluster.base.reference,
        ["python3", "-c", "print('trained')"],
        restartPolicy="Never",
        container={"resources": {"limits": {"nvidia.com/gpu": "1"}}},
    )
    _apply(node_cluster, pod)
    finished = _wait_for(
        node_cluster,
        "the GPU pod to finish",
        lambda: (
            (p := _pod_json(node_cluster, "gpu-job"))
            and p.get("status", {}).get("phase") == "Succeeded"
            and p
        ),
    )
    assert finished["spec"]["nodeName"] == node_cluster.node.name
