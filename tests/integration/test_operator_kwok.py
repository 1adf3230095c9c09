"""The operator on nodes simulated by kwok: the path the scale benchmark drives, kept small.

A control plane of its own (kwok makes Ready whatever lands on its nodes, which would change
what other modules' pods do on the shared one), two kwok nodes and a handful of
ModelServices: the scheduler places every pod on a fake node, kwok ends the training pods
with the trainer's termination message and starts the serving pods, and each ModelService
must reach Ready with the reported version served — no test code plays the kubelet.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.cluster import _binaries_or_skip
from tests.integration.operator_harness import (
    OperatorProcess,
    create_restricted_namespace,
    install_crd,
    operator_kubeconfig,
    wait_for,
)
from tfmaas.dev import kwok, tools
from tfmaas.dev.cluster import LocalCluster

NAMESPACE = "kwok"
SERVICES = ("alpha", "beta", "gamma")
NODES = 2


@pytest.fixture(scope="module")
def kwok_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    binaries = _binaries_or_skip()
    binaries["kwok"] = tools.ensure("kwok")
    directory = tmp_path_factory.mktemp("kwok-cluster")
    cluster = LocalCluster(directory, binaries=binaries)
    cluster.start()
    try:
        with kwok.running(cluster, directory / "kwok", nodes=NODES):
            yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(directory / "etcd", ignore_errors=True)


def model_service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "tfmaas.io/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "storage": {"uri": f"s3://models/{name}", "secretRef": {"name": "model-store"}},
            "training": {
                "dataset": {"uri": "builtin:chinese-reviews"},
                "qualityGate": {"minAccuracy": 0.8},
            },
        },
    }


def _ready(item: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (item.get("status") or {}).get("conditions") or []
    )


def test_model_services_train_and_serve_on_kwok_nodes(
    kwok_cluster: LocalCluster, tmp_path: Path
) -> None:
    cluster = kwok_cluster
    install_crd(cluster)
    create_restricted_namespace(cluster, NAMESPACE)
    operator = OperatorProcess(
        operator_kubeconfig(cluster, NAMESPACE), NAMESPACE, tmp_path / "operator.log"
    )
    operator.start()
    try:
        documents = "\n---\n".join(json.dumps(model_service(n)) for n in SERVICES)
        cluster.kubectl("apply", "-f", "-", input=documents)

        def all_ready() -> list[dict[str, Any]] | None:
            items = cluster.kubectl_json("get", "modelservices", "-n", NAMESPACE)["items"]
            return items if len(items) == len(SERVICES) and all(map(_ready, items)) else None

        try:
            services = wait_for(all_ready, "every ModelService Ready on kwok nodes", timeout=90)
        except AssertionError:
            print(operator.log_tail())
            raise
    finally:
        operator.stop()

    for item in services:
        status = item["status"]
        assert status["servingVersion"] == 1, status
        version = next(v for v in status["versions"] if v["version"] == 1)
        # The accuracy kwok's Stage reported in the trainer's termination message.
        assert version["metrics"]["accuracy"] == pytest.approx(kwok.SIMULATED_ACCURACY)
    pods = cluster.kubectl_json(
        "get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=serving"
    )["items"]
    assert len(pods) >= len(SERVICES)
    nodes = {pod["spec"]["nodeName"] for pod in pods}
    assert nodes <= set(kwok.node_names(NODES)), nodes
    assert all(pod["status"]["phase"] == "Running" for pod in pods)
