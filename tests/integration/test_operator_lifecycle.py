"""The operator on a real control plane, one version's life end to end.

The operator runs as a subprocess with its own ServiceAccount's (namespaced) RBAC, in a
namespace enforcing the restricted Pod Security profile; the test plays the kubelet.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.integration.operator_harness import (
    OperatorProcess,
    create_restricted_namespace,
    install_crd,
    operator_kubeconfig,
    termination_message,
    wait_for,
)
from tfmaas.dev.cluster import LocalCluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

TIMEOUT = 90.0


class Harness:
    def __init__(self, cluster: LocalCluster, namespace: str, operator: OperatorProcess) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.operator = operator

    def kubectl(self, *args: str, **kwargs: Any):  # type: ignore[no-untyped-def]
        return self.cluster.kubectl(*args, "-n", self.namespace, **kwargs)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        found = self.kubectl("get", kind, name, "-o", "json", check=False)
        return json.loads(found.stdout) if found.returncode == 0 else None

    def items(self, kind: str, selector: str) -> list[dict[str, Any]]:
        return list(
            json.loads(self.kubectl("get", kind, "-l", selector, "-o", "json").stdout)["items"]
        )

    def apply(self, document: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps(document))

    def patch_spec(self, name: str, spec_patch: dict[str, Any]) -> None:
        self.kubectl(
            "patch", "modelservice", name, "--type=merge", "-p", json.dumps({"spec": spec_patch})
        )

    def status(self, name: str) -> dict[str, Any]:
        found = self.get("modelservice", name)
        return dict((found or {}).get("status") or {})

    def condition(self, name: str, kind: str) -> dict[str, Any]:
        for entry in self.status(name).get("conditions") or []:
            if entry["type"] == kind:
                return dict(entry)
        return {}

    def wait_status(self, name: str, what: str, check, timeout: float = TIMEOUT):  # type: ignore[no-untyped-def]
        def probe() -> dict[str, Any] | None:
            status = self.status(name)
            return status if check(status) else None

        try:
            return wait_for(probe, what, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\noperator log:\n{self.operator.log_tail()}") from None

    def training_pod(self, name: str, version: int) -> str:
        job = f"{name}-train-{version}"
        pods = wait_for(
            lambda: self.items("pods", f"batch.kubernetes.io/job-name={job}"),
            f"the pod of Job {job}",
            TIMEOUT,
        )
        return str(pods[0]["metadata"]["name"])

    def finish_training(self, name: str, version: int, accuracy: float | None) -> None:
        """accuracy None: the trainer crashed."""
        pod = self.training_pod(name, version)
        if accuracy is None:
            self.cluster.finish_pod(
                self.namespace, pod, succeeded=False, termination_message="MemoryError: boom"
            )
        else:
            self.cluster.finish_pod(
                self.namespace, pod, termination_message=termination_message(version, accuracy)
            )

    def ready_serving_pods(self, name: str, track: str, version: int) -> int:
        selector = (
            f"tfmaas.io/model-service={name},tfmaas.io/track={track},tfmaas.io/version={version}"
        )
        pods = wait_for(
            lambda: self.items("pods", selector), f"{track} pods of v{version}", TIMEOUT
        )
        for pod in pods:
            if pod["status"].get("phase") != "Running":
                self.cluster.mark_pod_ready(self.namespace, pod["metadata"]["name"])
        return len(pods)

    def gauges(self, name: str, what: str, check) -> dict[str, float]:  # type: ignore[no-untyped-def]
        """The ModelService's gauges once `check` accepts them (a reconcile publishes them
        just after it writes status)."""

        def probe() -> dict[str, float] | None:
            found = self.operator.model_service_gauges(self.namespace, name)
            return found if check(found) else None

        try:
            return wait_for(probe, what, 30)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\noperator log:\n{self.operator.log_tail()}") from None

    def serve(self, name: str, version: int, track: str = "stable") -> None:
        """Play the kubelet until the rollout of `version` is complete."""

        def done() -> bool:
            self.ready_serving_pods(name, track, version)
            status = self.status(name)
            if track == "canary":
                return status.get("canaryVersion") == version and _ready(status)
            return status.get("servingVersion") == version and _ready(status)

        try:
            wait_for(done, f"{name} serving v{version} on {track}", TIMEOUT, interval=1.0)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\noperator log:\n{self.operator.log_tail()}") from None


def _ready(status: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or []
    )


def model_service(name: str, **serving: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tfmaas.io/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": name},
        "spec": {
            "storage": {
                "uri": f"s3://models/{name}",
                "endpoint": "http://minio.tfmaas-system:9000",
                "secretRef": {"name": "model-store"},
            },
            "training": {
                "dataset": {"uri": "builtin:chinese-reviews"},
                "hyperparameters": {"epochs": 2},
                "qualityGate": {"minAccuracy": 0.8},
            },
            "serving": {"autoscaling": {"minReplicas": 1, "maxReplicas": 3}, **serving},
        },
    }


@contextmanager
def operator_harness(
    cluster: LocalCluster,
    tmp_path_factory: pytest.TempPathFactory,
    prefix: str,
    *,
    before_start: Callable[[str], object] = lambda namespace: None,
    extra_env: dict[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
) -> Iterator[Harness]:
    """The operator watching a new restricted namespace `<prefix>-…` of its own, under its
    namespaced Role; `before_start(namespace)` prepares the namespace first. The namespace goes
    with the operator."""
    install_crd(cluster)
    namespace = f"{prefix}-{uuid.uuid4().hex[:6]}"
    create_restricted_namespace(cluster, namespace)
    before_start(namespace)
    kubeconfig = operator_kubeconfig(cluster, namespace)
    log_path = Path(tmp_path_factory.mktemp("operator")) / "operator.log"
    operator = OperatorProcess(
        kubeconfig, namespace, log_path, extra_env=extra_env, extra_args=extra_args
    )
    operator.start()
    try:
        yield Harness(cluster, namespace, operator)
    finally:
        operator.stop()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def harness(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    # JSON logs here, so the last test can read what a log collector would.
    with operator_harness(
        cluster, tmp_path_factory, "ms", extra_args=("--log-format", "json")
    ) as harness:
        yield harness


def test_training_job_is_created_as_specified(harness: Harness) -> None:
    harness.apply(model_service("first"))
    job = wait_for(lambda: harness.get("job", "first-train-1"), "Job first-train-1", TIMEOUT)
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("ModelService", "first", True)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:8] == [
        "tfmaas",
        "train",
        "--name",
        "first",
        "--version",
        "1",
        "--store",
        "s3://models/first",
    ]
    secret_refs = [e for e in container["env"] if "valueFrom" in e]
    assert {e["valueFrom"]["secretKeyRef"]["name"] for e in secret_refs} == {"model-store"}
    # the Job controller's pod was admitted under the restricted profile
    harness.training_pod("first", 1)
    status = harness.wait_status("first", "phase Training", lambda s: s.get("phase") == "Training")
    assert status["latestVersion"] == 1 and status["versions"][0]["state"] == "Training"


def test_completed_training_is_promoted_and_served(harness: Harness) -> None:
    harness.finish_training("first", 1, accuracy=0.9)
    status = harness.wait_status(
        "first", "version 1 promoted", lambda s: (s.get("versions") or [{}])[0].get("promoted")
    )
    assert status["versions"][0]["metrics"]["accuracy"] == 0.9
    for kind, name in [
        ("deployment", "first"),
        ("service", "first"),
        ("service", "first-pods"),
        ("hpa", "first"),
        ("pdb", "first"),
    ]:
        wait_for(lambda k=kind, n=name: harness.get(k, n), f"{kind} {name}", TIMEOUT)
    config_maps = harness.items("configmaps", "tfmaas.io/model-service=first")
    assert len(config_maps) == 1
    assert 'version_labels { key: "stable" value: 1 }' in config_maps[0]["data"]["models.config"]
    harness.serve("first", 1)
    status = harness.status("first")
    assert status["phase"] == "Serving" and status["servingVersion"] == 1
    assert status["endpoint"]["grpc"] == f"first.{harness.namespace}.svc:8500"
    assert status["accuracy"] == 0.9 and status["readyReplicas"] >= 1
    gauges = harness.gauges("first", "Ready gauge", lambda g: g.get("tfmaas_modelservice_ready"))
    # The real Job controller's start and completion times of the Job the test finished.
    assert 0 <= gauges.pop("tfmaas_modelservice_last_training_seconds") < TIMEOUT * 3
    assert gauges == {
        "tfmaas_modelservice_served_version": 1.0,
        "tfmaas_modelservice_latest_version": 1.0,
        "tfmaas_modelservice_served_accuracy": 0.9,
        "tfmaas_modelservice_served_f1": 0.9,
        "tfmaas_modelservice_ready": 1.0,
        "tfmaas_modelservice_training_running": 0.0,
        "tfmaas_modelservice_training_failed": 0.0,
        "tfmaas_modelservice_below_quality_gate": 0.0,
    }


def test_retrain_below_the_gate_is_kept_but_not_promoted(harness: Harness) -> None:
    harness.patch_spec("first", {"training": {"hyperparameters": {"epochs": 3}}})
    wait_for(lambda: harness.get("job", "first-train-2"), "Job first-train-2", TIMEOUT)
    harness.finish_training("first", 2, accuracy=0.5)
    harness.wait_status(
        "first",
        "gate refused v2",
        lambda s: any(
            c["type"] == "QualityGatePassed" and c["status"] == "False" for c in s["conditions"]
        ),
    )
    status = harness.status("first")
    assert status["servingVersion"] == 1 and status["latestVersion"] == 2
    assert status["versions"][1]["promoted"] is False
    deployment = harness.get("deployment", "first")
    assert deployment["spec"]["template"]["metadata"]["labels"]["tfmaas.io/version"] == "1"
    gauges = harness.gauges(
        "first", "below-gate gauge", lambda g: g.get("tfmaas_modelservice_below_quality_gate")
    )
    assert gauges["tfmaas_modelservice_latest_version"] == 2.0
    assert gauges["tfmaas_modelservice_served_version"] == 1.0
    assert gauges["tfmaas_modelservice_served_accuracy"] == 0.9  # v1's, the served one
    assert "minAccuracy" in harness.condition("first", "QualityGatePassed")["message"] or (
        "qualityGate" in harness.condition("first", "QualityGatePassed")["message"]
    )


def test_serving_only_changes_do_not_retrain(harness: Harness) -> None:
    harness.patch_spec("first", {"serving": {"batching": {"maxBatchSize": 8}}})
    harness.serve("first", 1)
    # No new Job; v1's finished Job was deleted once v2 started (its result is in status).
    jobs = harness.items("jobs", "tfmaas.io/model-service=first")
    assert [job["metadata"]["name"] for job in jobs] == ["first-train-2"]
    assert harness.status("first")["latestVersion"] == 2


def test_pinning_rolls_out_the_pinned_version_and_back(harness: Harness) -> None:
    harness.patch_spec("first", {"serving": {"version": 2}})
    harness.serve("first", 2)
    assert harness.status("first")["accuracy"] == 0.5
    harness.patch_spec("first", {"serving": {"version": "latest"}})
    harness.serve("first", 1)


def test_canary_on_and_off(harness: Harness) -> None:
    harness.patch_spec("first", {"serving": {"canary": {"version": 2, "replicas": 1}}})
    harness.serve("first", 2, track="canary")
    canary = harness.get("deployment", "first-canary")
    assert canary["spec"]["replicas"] == 1
    assert harness.status("first")["servingVersion"] == 1
    harness.kubectl(
        "patch",
        "modelservice",
        "first",
        "--type=json",
        "-p",
        json.dumps([{"op": "remove", "path": "/spec/serving/canary"}]),
    )
    wait_for(lambda: harness.get("deployment", "first-canary") is None, "canary removed", TIMEOUT)
    harness.wait_status("first", "no canary", lambda s: s.get("canaryVersion") is None)


def test_failed_training_keeps_the_old_version_serving(harness: Harness) -> None:
    harness.patch_spec("first", {"training": {"hyperparameters": {"epochs": 4}}})
    wait_for(lambda: harness.get("job", "first-train-3"), "Job first-train-3", TIMEOUT)
    harness.finish_training("first", 3, accuracy=None)
    status = harness.wait_status(
        "first",
        "training failure reported",
        lambda s: any(c["type"] == "Trained" and c["status"] == "False" for c in s["conditions"]),
    )
    trained = harness.condition("first", "Trained")
    assert trained["reason"] == "TrainingFailed" and "MemoryError: boom" in trained["message"]
    assert status["servingVersion"] == 1 and status["versions"][2]["state"] == "Failed"
    events = harness.kubectl(
        "get", "events", "--field-selector", "involvedObject.name=first", "-o", "json"
    ).stdout
    assert "TrainingFailed" in events


def test_a_newer_training_supersedes_and_its_version_rolls_out(harness: Harness) -> None:
    harness.patch_spec("first", {"training": {"hyperparameters": {"epochs": 5}}})
    wait_for(lambda: harness.get("job", "first-train-4"), "Job first-train-4", TIMEOUT)
    harness.patch_spec("first", {"training": {"hyperparameters": {"epochs": 6}}})
    wait_for(lambda: harness.get("job", "first-train-5"), "Job first-train-5", TIMEOUT)
    wait_for(lambda: harness.get("job", "first-train-4") is None, "v4 stopped", TIMEOUT)
    harness.finish_training("first", 5, accuracy=0.85)
    harness.serve("first", 5)
    versions = {v["version"]: v for v in harness.status("first")["versions"]}
    assert versions[4]["state"] == "Failed" and "superseded" in versions[4]["message"]
    assert versions[5]["promoted"] is True


def test_fixed_replicas_replace_the_autoscaler(harness: Harness) -> None:
    harness.patch_spec("first", {"serving": {"replicas": 2, "autoscaling": {"enabled": False}}})
    wait_for(lambda: harness.get("hpa", "first") is None, "HPA removed", TIMEOUT)
    deployment = wait_for(
        lambda: (d := harness.get("deployment", "first")) and d["spec"]["replicas"] == 2 and d,
        "two fixed replicas",
        TIMEOUT,
    )
    assert deployment["spec"]["replicas"] == 2
    harness.patch_spec("first", {"serving": {"autoscaling": {"enabled": True}}})
    wait_for(lambda: harness.get("hpa", "first"), "HPA back", TIMEOUT)


def test_kubectl_scale_resizes_the_fixed_replicas(harness: Harness) -> None:
    harness.patch_spec("first", {"serving": {"replicas": 1, "autoscaling": {"enabled": False}}})
    version = harness.status("first")["servingVersion"]
    harness.kubectl("scale", "ms", "first", "--replicas=3")
    assert harness.get("modelservice", "first")["spec"]["serving"]["replicas"] == 3  # type: ignore[index]
    wait_for(
        lambda: (d := harness.get("deployment", "first")) and d["spec"]["replicas"] == 3,
        "three replicas after kubectl scale",
        TIMEOUT,
    )

    def scaled() -> dict[str, Any] | None:
        harness.ready_serving_pods("first", "stable", version)
        scale = json.loads(
            harness.kubectl("get", "ms", "first", "--subresource=scale", "-o", "json").stdout
        )
        return scale if scale["status"].get("replicas") == 3 else None

    # The operator reports the Deployment's count back, which kubectl scale shows as current.
    scale = wait_for(scaled, "status.replicas 3 through the scale subresource", TIMEOUT)
    assert scale["spec"]["replicas"] == 3
    harness.patch_spec("first", {"serving": {"autoscaling": {"enabled": True}}})
    wait_for(lambda: harness.get("hpa", "first"), "HPA back", TIMEOUT)


def test_multi_worker_training_reads_the_chief(harness: Harness) -> None:
    document = model_service("workers")
    document["spec"]["training"]["workers"] = 2
    harness.apply(document)
    job = wait_for(lambda: harness.get("job", "workers-train-1"), "Job workers-train-1", TIMEOUT)
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2
    service = harness.get("service", "workers-train-1")
    assert service is not None and service["spec"]["clusterIP"] == "None"
    pods = wait_for(
        lambda: (
            len(p := harness.items("pods", "batch.kubernetes.io/job-name=workers-train-1")) == 2
            and p
        ),
        "two worker pods",
        TIMEOUT,
    )
    by_index = {
        pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]: pod
        for pod in pods
    }
    assert by_index["1"]["spec"]["hostname"] == "workers-train-1-1"
    # only the chief reports metrics; the other worker's message must not be mistaken for it
    harness.cluster.finish_pod(
        harness.namespace, by_index["1"]["metadata"]["name"], termination_message="worker done"
    )
    harness.cluster.finish_pod(
        harness.namespace,
        by_index["0"]["metadata"]["name"],
        termination_message=termination_message(1, 0.93),
    )
    status = harness.wait_status(
        "workers", "chief metrics", lambda s: (s.get("versions") or [{}])[0].get("promoted")
    )
    assert status["versions"][0]["metrics"]["accuracy"] == 0.93
    harness.kubectl("delete", "modelservice", "workers", "--wait=false")


def test_restart_mid_rollout_converges_without_duplicates(harness: Harness) -> None:
    harness.apply(model_service("restart"))
    wait_for(lambda: harness.get("job", "restart-train-1"), "Job restart-train-1", TIMEOUT)
    harness.finish_training("restart", 1, accuracy=0.95)
    wait_for(lambda: harness.get("deployment", "restart"), "Deployment restart", TIMEOUT)
    harness.operator.kill()
    harness.ready_serving_pods("restart", "stable", 1)
    harness.operator.start()
    harness.serve("restart", 1)
    assert len(harness.items("jobs", "tfmaas.io/model-service=restart")) == 1
    assert len(harness.items("deployments", "tfmaas.io/model-service=restart")) == 1
    assert harness.status("restart")["latestVersion"] == 1


def test_delete_garbage_collects_everything_owned(harness: Harness) -> None:
    harness.kubectl("delete", "modelservice", "restart", "--wait=true", "--timeout=60s")
    selector = "tfmaas.io/model-service=restart"

    def gone() -> bool:
        return all(
            not harness.items(kind, selector)
            for kind in ("jobs", "deployments", "services", "configmaps", "hpa", "pdb")
        )

    wait_for(gone, "owned objects garbage-collected", TIMEOUT)
    wait_for(
        lambda: harness.operator.model_service_gauges(harness.namespace, "restart") == {},
        "restart's gauges removed",
        30,
    )
    assert harness.operator.model_service_gauges(harness.namespace, "first")


def test_operator_log_is_one_json_object_per_line_naming_the_model_service(
    harness: Harness,
) -> None:
    lines = harness.operator.log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # stdout and stderr: nothing but JSON
    about_first = [
        r for r in records if r.get("namespace") == harness.namespace and r.get("name") == "first"
    ]
    # kopf's handler lines and the operator's own (one per Event it posts) both name it.
    assert {r["logger"] for r in about_first} >= {
        "kopf.objects",
        "tfmaas.operator.reconcile_runner",
    }
    passed = "Passed: version 1 passed the quality gate"
    assert any(r["message"] == passed for r in about_first), about_first[-5:]
    assert all(r["level"] in ("debug", "info", "warning", "error") for r in records)
