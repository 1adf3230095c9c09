"""spec.<part>.pod through the operator on a real control plane: what the Job and the serving
pods carry, a serving.pod change rolling out once (then nothing more is written), and a
training.pod change training nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.test_operator_lifecycle import Harness, model_service, operator_harness
from tfmaas.dev.cluster import LocalCluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

NAME = "placed"
IDENTITY = "models-reader"
SPOT = {"key": "pool", "operator": "Equal", "value": "spot", "effect": "NoSchedule"}
GPU_POOL = {"key": "pool", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}
POD = {
    "serviceAccountName": IDENTITY,
    "nodeSelector": {"pool": "spot"},
    "tolerations": [SPOT],
    "labels": {"kueue.x-k8s.io/queue-name": "team-a"},
    "annotations": {"example.com/owner": "team a"},
}


@pytest.fixture(scope="module")
def harness(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    def create_identity(namespace: str) -> None:
        # Pods naming a ServiceAccount are admitted only once it exists.
        cluster.kubectl("create", "serviceaccount", IDENTITY, "-n", namespace)

    with operator_harness(
        cluster, tmp_path_factory, "pod", before_start=create_identity
    ) as harness:
        yield harness


def _env(pod: dict[str, Any]) -> set[str]:
    containers = pod["spec"].get("initContainers", []) + pod["spec"]["containers"]
    return {entry["name"] for c in containers for entry in c.get("env", [])}


def _versions(harness: Harness, kind: str, name: str) -> tuple[str, int]:
    found = harness.get(kind, name) or {}
    meta = found.get("metadata") or {}
    return str(meta.get("resourceVersion")), int(meta.get("generation") or 0)


def test_the_job_and_serving_pods_carry_the_pod_settings(harness: Harness) -> None:
    document = model_service(NAME, pod=POD)
    document["spec"]["training"]["pod"] = POD
    harness.apply(document)
    trainer = harness.get("pod", harness.training_pod(NAME, 1)) or {}
    assert trainer["spec"]["serviceAccountName"] == IDENTITY
    assert trainer["spec"]["nodeSelector"] == {"pool": "spot"}
    assert SPOT in trainer["spec"]["tolerations"]
    assert trainer["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert not _env(trainer) & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    job = harness.get("job", f"{NAME}-train-1") or {}
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    harness.finish_training(NAME, 1, 0.9)
    harness.serve(NAME, 1)
    (replica, *_) = harness.items("pods", f"tfmaas.io/model-service={NAME},tfmaas.io/track=stable")
    assert replica["spec"]["serviceAccountName"] == IDENTITY
    assert replica["metadata"]["annotations"]["example.com/owner"] == "team a"
    assert not _env(replica) & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def test_a_serving_pod_change_rolls_out_once_and_then_nothing_is_written(
    harness: Harness,
) -> None:
    _, generation = _versions(harness, "deployment", NAME)
    harness.patch_spec(NAME, {"serving": {"pod": {"tolerations": [SPOT, GPU_POOL]}}})

    def rolled() -> bool:
        found = harness.get("deployment", NAME) or {}
        template = found["spec"]["template"]["spec"]
        return GPU_POOL in (template.get("tolerations") or [])

    deadline = time.monotonic() + 90
    while not rolled():
        assert time.monotonic() < deadline, harness.operator.log_tail()
        time.sleep(0.5)
    harness.serve(NAME, 1)
    settled = _versions(harness, "deployment", NAME)
    assert settled[1] == generation + 1
    service = _versions(harness, "modelservice", NAME)
    # Converged: neither the Deployment nor the ModelService's status changes again.
    time.sleep(10)
    assert _versions(harness, "deployment", NAME) == settled
    assert _versions(harness, "modelservice", NAME) == service


def test_a_training_pod_change_trains_nothing(harness: Harness) -> None:
    latest = harness.status(NAME)["latestVersion"]
    harness.patch_spec(NAME, {"training": {"pod": {"labels": {"cost-centre": "7"}}}})
    time.sleep(5)
    jobs = harness.items("jobs", f"tfmaas.io/model-service={NAME}")
    assert not [j for j in jobs if j["metadata"]["name"] != f"{NAME}-train-1"]
    assert harness.status(NAME)["latestVersion"] == latest
    assert harness.status(NAME).get("servingVersion") == 1
