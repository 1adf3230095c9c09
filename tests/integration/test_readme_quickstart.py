"""The README's cluster quickstart, run word for word (only the registry replaced) against the
real local control plane: a clean `helm install` with the demo store, the sample applied, and
the operator (on the host, with the chart's ServiceAccount and defaults) starting its training
Job. The lines that need running pods (rollout status, wait, port-forward, predict) are the
e2e's; this checks everything up to them."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.chart import adopt_crds, helm_binary
from tests.fixtures.quickstart import Command, Shell, quickstart_commands, substituted
from tests.integration.test_helm_install import eventually
from tfmaas.dev.cluster import LocalCluster

pytestmark = pytest.mark.integration

RELEASE = "tfmaas"
NAMESPACE = "tfmaas-system"
REGISTRY = "registry.invalid/team"


@pytest.fixture(scope="module")
def quickstart(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("quickstart")
    shell = Shell(cluster, home, helm_binary())
    # The namespace helm creates, made first only to enforce the restricted Pod Security
    # Standard on everything the chart runs (`--create-namespace` takes an existing one).
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": NAMESPACE,
                    "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
                },
            }
        ),
    )
    adopt_crds(cluster.kubectl, release=RELEASE, namespace=NAMESPACE)
    outputs: dict[str, str] = {}
    skipped: list[Command] = []
    operator = None
    log_path = home / "operator.log"
    try:
        for command in quickstart_commands():
            command = substituted(command, registry=REGISTRY)
            if command.argv[:2] == ("make", "images"):
                skipped.append(command)  # no node pulls images here; test_release checks it
                continue
            if command.needs_pods:
                skipped.append(command)
                continue
            if command.argv[:2] == ("kubectl", "apply"):
                operator = _start_operator(cluster, log_path)
            outputs[" ".join(command.argv)] = shell.run(command)
        yield {
            "outputs": outputs,
            "skipped": skipped,
            "shell": shell,
            "operator": operator,
            "log": log_path,
        }
    finally:
        if operator is not None:
            os.killpg(operator.pid, signal.SIGTERM)
            try:
                operator.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(operator.pid, signal.SIGKILL)
                operator.wait()
        cluster.kubectl("delete", "modelservice", "sentiment", "--wait=false", check=False)
        cluster.kubectl("delete", "jobs", "--all", "-n", "default", check=False)
        shell.run(Command(("helm", "uninstall", RELEASE, "-n", NAMESPACE, "--wait")), check=False)


def _start_operator(cluster: LocalCluster, log_path: Path) -> subprocess.Popen[bytes]:
    """The operator as the chart would run it: its ServiceAccount's RBAC, its defaults."""
    kubeconfig = cluster.kubeconfig_for_service_account(NAMESPACE, RELEASE)
    defaults = cluster.kubectl_json("get", "configmap", "tfmaas-defaults", "-n", NAMESPACE)
    env = {
        **os.environ,
        **defaults["data"],
        "KUBECONFIG": str(kubeconfig),
        "POD_NAMESPACE": NAMESPACE,
    }
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tfmaas",
                "operator",
                "run",
                "--standalone",
                "--namespace=default",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def _decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def test_every_line_that_needs_no_pod_ran(quickstart: dict[str, Any]) -> None:
    ran = {" ".join(c.split()[:2]) for c in quickstart["outputs"]}
    assert {"helm install", "kubectl apply", "kubectl get"} <= ran
    skipped = [" ".join(c.argv[:2]) for c in quickstart["skipped"]]
    assert skipped[0] == "make images"
    assert "kubectl wait" in skipped and ".venv/bin/tfmaas predict" in skipped
    listed = quickstart["outputs"]["kubectl get modelservices"].splitlines()
    assert listed[0].split() == ["NAME", "PHASE", "SERVING", "LATEST", "ACCURACY", "READY", "AGE"]
    assert listed[1].split()[0] == "sentiment"


def test_the_demo_store_is_installed_and_its_key_never_printed(
    cluster: LocalCluster, quickstart: dict[str, Any]
) -> None:
    root = _decoded(cluster.kubectl_json("get", "secret", "tfmaas-demo-store", "-n", NAMESPACE))
    models = _decoded(cluster.kubectl_json("get", "secret", "model-store", "-n", "default"))
    assert models == {
        "AWS_ACCESS_KEY_ID": root["MINIO_ROOT_USER"],
        "AWS_SECRET_ACCESS_KEY": root["MINIO_ROOT_PASSWORD"],
    }
    (notes,) = [v for k, v in quickstart["outputs"].items() if k.startswith("helm install")]
    assert "NOT FOR PRODUCTION" in notes and "model-store" in notes
    for value in root.values():
        assert value not in notes
        assert value not in quickstart["log"].read_text()
    service = cluster.kubectl_json("get", "service", "minio", "-n", NAMESPACE)
    assert service["spec"]["ports"][0]["port"] == 9000

    # Its pod passes Pod Security admission at `restricted` (no node runs it here).
    def pods() -> list[dict[str, Any]]:
        selector = "app.kubernetes.io/component=demo-store"
        return cluster.kubectl_json("get", "pods", "-n", NAMESPACE, "-l", selector)["items"]

    (pod,) = eventually(pods, "the demo store pod to be admitted")
    (container,) = pod["spec"]["containers"]
    assert container["image"] == f"{REGISTRY}/tfmaas/demo-store:0.1.0"
    events = cluster.kubectl_json("get", "events", "-n", NAMESPACE)["items"]
    assert not [e["message"] for e in events if e.get("reason") == "FailedCreate"]


def test_the_operator_trains_the_sample_on_the_demo_store(
    cluster: LocalCluster, quickstart: dict[str, Any]
) -> None:
    operator = quickstart["operator"]

    def job() -> dict[str, Any] | None:
        assert operator.poll() is None, quickstart["log"].read_text()[-4000:]
        jobs = cluster.kubectl_json("get", "jobs", "-n", "default")["items"]
        return jobs[0] if jobs else None

    created = eventually(job, "the operator to create the training Job", timeout=120)
    assert created["metadata"]["name"] == "sentiment-train-1"
    pod = created["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == f"{REGISTRY}/tfmaas/trainer:0.1.0"
    # CPU only: the quickstart runs on any cluster.
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "model-store"
    assert "http://minio.tfmaas-system:9000" in str(container)


def test_an_upgrade_keeps_the_demo_store_key(
    cluster: LocalCluster, quickstart: dict[str, Any]
) -> None:
    before = cluster.kubectl_json("get", "secret", "tfmaas-demo-store", "-n", NAMESPACE)["data"]
    shell = quickstart["shell"]
    shell.run(
        Command(("helm", "upgrade", RELEASE, "charts/tfmaas", "-n", NAMESPACE, "--reuse-values"))
    )
    after = cluster.kubectl_json("get", "secret", "tfmaas-demo-store", "-n", NAMESPACE)["data"]
    assert after == before
    models = cluster.kubectl_json("get", "secret", "model-store", "-n", "default")["data"]
    assert models["AWS_SECRET_ACCESS_KEY"] == before["MINIO_ROOT_PASSWORD"]
