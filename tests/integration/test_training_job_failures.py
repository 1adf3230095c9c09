"""The training Job's podFailurePolicy on the real control plane: a disrupted pod (preemption,
eviction) is replaced without counting against backoffLimit, so the replacement can resume
from the checkpoint; a trainer that exits with the user-error status fails the Job at once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import yaml

from tfmaas.dev.cluster import LocalCluster
from tfmaas.errors import USER_ERROR_EXIT_CODE

pytestmark = pytest.mark.integration


@pytest.fixture
def namespace(cluster: LocalCluster) -> Iterator[str]:
    name = f"jf-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    node = f"fake-{uuid.uuid4().hex[:8]}"
    cluster.register_fake_node(node)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")
    cluster.kubectl("delete", "node", node, "--wait=false")


def _apply_training_job(cluster: LocalCluster, namespace: str, *, backoff_limit: int) -> str:
    from tests.unit.test_operator_manifests import service
    from tfmaas.operator.config import OperatorConfig
    from tfmaas.operator.manifests.job import build_training_job

    config = OperatorConfig(
        trainer_image="registry.invalid/t:1", training_backoff_limit=backoff_limit
    )
    job = build_training_job(
        service(training={"resources": {"cpu": "1", "memory": "1Gi"}}), 1, config
    )
    job["metadata"]["namespace"] = namespace
    job["metadata"].pop("ownerReferences")  # no ModelService here for it to belong to
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(job))
    return str(job["metadata"]["name"])


def _pods(cluster: LocalCluster, namespace: str, job: str) -> list[dict]:
    listing = cluster.kubectl_json("get", "pods", "-n", namespace, "-l", f"job-name={job}")
    return [pod for pod in listing["items"] if pod["spec"].get("nodeName")]


def _wait(check, what: str, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.3)
    return found


def _job_status(cluster: LocalCluster, namespace: str, job: str) -> dict:
    return cluster.kubectl_json("get", "job", job, "-n", namespace).get("status") or {}


def test_a_disrupted_pod_is_replaced_without_counting(
    cluster: LocalCluster, namespace: str
) -> None:
    # backoffLimit 0: a counted failure would fail the Job.
    job = _apply_training_job(cluster, namespace, backoff_limit=0)
    first = _wait(lambda: _pods(cluster, namespace, job), "the Job's first pod")[0]
    cluster.finish_pod(
        namespace,
        first["metadata"]["name"],
        succeeded=False,
        exit_code=143,  # the trainer saved its checkpoint on SIGTERM and stopped
        conditions=[
            {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}
        ],
    )
    replacement = _wait(
        lambda: [
            p
            for p in _pods(cluster, namespace, job)
            if p["metadata"]["uid"] != first["metadata"]["uid"]
        ],
        "a replacement pod",
    )
    assert replacement
    status = _job_status(cluster, namespace, job)
    assert not status.get("failed")
    assert not any(c["type"] == "Failed" for c in status.get("conditions") or [])


def test_a_user_error_fails_the_job_at_once(cluster: LocalCluster, namespace: str) -> None:
    # backoffLimit 3 would retry any other failure three times.
    job = _apply_training_job(cluster, namespace, backoff_limit=3)
    pod = _wait(lambda: _pods(cluster, namespace, job), "the Job's first pod")[0]
    cluster.finish_pod(
        namespace, pod["metadata"]["name"], succeeded=False, exit_code=USER_ERROR_EXIT_CODE
    )

    def failed() -> dict | None:
        conditions = _job_status(cluster, namespace, job).get("conditions") or []
        return next((c for c in conditions if c["type"] == "Failed"), None)

    condition = _wait(failed, "the Job to fail")
    assert condition["reason"] == "PodFailurePolicy"
    assert len(_pods(cluster, namespace, job)) == 1  # no retry was started
