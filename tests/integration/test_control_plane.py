"""The local control plane behaves as a real cluster: controllers, admission, CRD validation."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tfmaas.dev.cluster import LocalCluster

pytestmark = pytest.mark.integration


def _manifest(*documents: dict[str, Any]) -> str:
    return yaml.safe_dump_all(documents)


def _eventually(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.3)


@pytest.fixture
def namespace(cluster: LocalCluster) -> Iterator[str]:
    name = f"cp-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def _names(cluster: LocalCluster, kind: str, namespace: str, selector: str) -> list[str]:
    listing = cluster.kubectl_json("get", kind, "-n", namespace, "-l", selector)
    return [item["metadata"]["name"] for item in listing["items"]]


def test_apiserver_reports_the_pinned_release(cluster: LocalCluster) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == "v1.35.4"
    assert version["clientVersion"]["gitVersion"] == "v1.35.4"


def test_deployment_creates_pods_and_garbage_collection_removes_them(
    cluster: LocalCluster, namespace: str
) -> None:
    labels = {"app": "web"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]},
            },
        },
    }
    cluster.kubectl("apply", "-f", "-", input=_manifest(deployment))
    _eventually(
        lambda: len(_names(cluster, "replicasets", namespace, "app=web")) == 1,
        "the Deployment controller to create a ReplicaSet",
    )
    _eventually(
        lambda: len(_names(cluster, "pods", namespace, "app=web")) == 2,
        "the ReplicaSet controller to create two Pods",
    )
    replica_set = cluster.kubectl_json("get", "replicasets", "-n", namespace, "-l", "app=web")
    owner = replica_set["items"][0]["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("Deployment", "web")

    cluster.kubectl("delete", "deployment", "web", "-n", namespace, "--wait=false")
    _eventually(
        lambda: (
            not _names(cluster, "replicasets", namespace, "app=web")
            and not _names(cluster, "pods", namespace, "app=web")
        ),
        "the garbage collector to delete the ReplicaSet and its Pods",
    )


def test_restricted_namespace_rejects_a_privileged_pod(cluster: LocalCluster) -> None:
    name = f"restricted-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    try:
        cluster.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "root", "namespace": name},
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "image": "registry.invalid/c:1",
                        "securityContext": {"privileged": True},
                    }
                ]
            },
        }
        rejected = cluster.kubectl("apply", "-f", "-", input=_manifest(pod), check=False)
        assert rejected.returncode != 0
        assert 'violates PodSecurity "restricted:latest"' in rejected.stderr
        assert "privileged" in rejected.stderr
        assert cluster.kubectl_json("get", "pods", "-n", name)["items"] == []
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false")


def test_crd_structural_schema_rejects_an_invalid_object(
    cluster: LocalCluster, namespace: str
) -> None:
    group = f"t{uuid.uuid4().hex[:6]}.tfmaas.io"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["size"],
                                    "properties": {"size": {"type": "integer", "minimum": 1}},
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=_manifest(crd))
    try:
        cluster.kubectl(
            "wait", "--for=condition=Established", f"crd/widgets.{group}", "--timeout=60s"
        )

        def widget(name: str, size: object) -> str:
            return _manifest(
                {
                    "apiVersion": f"{group}/v1",
                    "kind": "Widget",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": {"size": size},
                }
            )

        wrong_type = cluster.kubectl("apply", "-f", "-", input=widget("a", "big"), check=False)
        assert wrong_type.returncode != 0
        assert "spec.size" in wrong_type.stderr
        assert "must be of type integer" in wrong_type.stderr

        too_small = cluster.kubectl("apply", "-f", "-", input=widget("b", 0), check=False)
        assert too_small.returncode != 0
        assert "should be greater than or equal to 1" in too_small.stderr

        cluster.kubectl("apply", "-f", "-", input=widget("c", 3))
        stored = cluster.kubectl_json("get", f"widgets.{group}", "c", "-n", namespace)
        assert stored["spec"] == {"size": 3}
    finally:
        cluster.kubectl("delete", "crd", f"widgets.{group}", "--wait=false")


def test_job_completes_when_its_pod_succeeds(cluster: LocalCluster, namespace: str) -> None:
    node = f"fake-{uuid.uuid4().hex[:8]}"
    cluster.register_fake_node(node)
    try:
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "train", "namespace": namespace},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "train", "image": "registry.invalid/t:1"}],
                    }
                },
            },
        }
        cluster.kubectl("apply", "-f", "-", input=_manifest(job))

        def bound_pod() -> str | None:
            pods = cluster.kubectl_json("get", "pods", "-n", namespace, "-l", "job-name=train")
            for pod in pods["items"]:
                if pod["spec"].get("nodeName") == node:
                    return str(pod["metadata"]["name"])
            return None

        _eventually(lambda: bound_pod() is not None, "the scheduler to bind the Job's Pod")
        pod_name = bound_pod()
        assert pod_name is not None
        message = json.dumps({"version": 1})
        cluster.finish_pod(namespace, pod_name, termination_message=message)

        cluster.kubectl(
            "wait", "--for=condition=Complete", "job/train", "-n", namespace, "--timeout=60s"
        )
        status = cluster.kubectl_json("get", "job", "train", "-n", namespace)["status"]
        assert status["succeeded"] == 1
        pod = cluster.kubectl_json("get", "pod", pod_name, "-n", namespace)
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert json.loads(terminated["message"]) == {"version": 1}
    finally:
        cluster.kubectl("delete", "node", node, "--wait=false")


def test_service_account_kubeconfig_is_held_to_its_rbac(
    cluster: LocalCluster, namespace: str
) -> None:
    cluster.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    cluster.kubectl(
        "create", "role", "read-pods", "--verb=get,list", "--resource=pods", "-n", namespace
    )
    cluster.kubectl(
        "create",
        "rolebinding",
        "reader",
        "--role=read-pods",
        f"--serviceaccount={namespace}:reader",
        "-n",
        namespace,
    )
    for config in (
        cluster.kubeconfig_for_service_account(namespace, "reader"),
        cluster.impersonating_kubeconfig(
            f"system:serviceaccount:{namespace}:reader",
            ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
        ),
    ):
        allowed = cluster.kubectl("get", "pods", "-n", namespace, kubeconfig_path=config)
        assert allowed.returncode == 0
        denied = cluster.kubectl(
            "get", "secrets", "-n", namespace, kubeconfig_path=config, check=False
        )
        assert denied.returncode != 0
        assert "forbidden" in denied.stderr


@pytest.mark.slow
def test_dev_cluster_up_status_down_leaves_nothing_running(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    # Depends on `cluster` only so its binaries are known to be built (or the test skips).
    state_dir = tmp_path / "state"

    def tfmaas(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tfmaas", "dev", "cluster", "--dir", str(state_dir), *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    up = tfmaas("up")
    try:
        assert up.returncode == 0, up.stderr
        kubeconfig = up.stdout.strip().removeprefix("export KUBECONFIG=")
        assert Path(kubeconfig).is_file()
        assert tfmaas("env").stdout == up.stdout
        again = tfmaas("up")
        assert again.returncode == 0 and "already running" in again.stderr

        status = tfmaas("status")
        assert status.returncode == 0, status.stdout
        pids = [int(line.split()[2]) for line in status.stdout.splitlines() if " pid " in line]
        assert len(pids) == 4 and "NOT RUNNING" not in status.stdout
        namespaces = cluster.kubectl(
            "get", "namespaces", "-o", "name", kubeconfig_path=Path(kubeconfig)
        )
        assert "namespace/default" in namespaces.stdout.split()
    finally:
        down = tfmaas("down")
    assert down.returncode == 0 and "stopped" in down.stdout
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), f"pid {pid} survived down"
    assert tfmaas("status").returncode == 3


def _is_zombie(pid: int) -> bool:
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
