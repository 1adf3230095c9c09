"""How fast the operator turns many ModelServices into training Jobs and then into serving.

Starts the local control plane and the operator (as its tests do), applies N ModelServices at
once, and prints: time until every training Job exists, time from "training done" until
every ModelService is Ready, the per-object medians, and the operator's peak memory. The
script plays the kubelet: it reports training pods finished and serving pods ready.

    .venv/bin/python benchmarks/operator_benchmark.py --count 100
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.operator_harness import (  # noqa: E402
    OperatorProcess,
    create_restricted_namespace,
    install_crd,
    now,
    operator_kubeconfig,
    termination_message,
)
from tfmaas.dev import tools  # noqa: E402
from tfmaas.dev.cluster import COMPONENTS, LocalCluster  # noqa: E402


def model_service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "tfmaas.io/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": name},
        "spec": {
            "storage": {"uri": f"s3://models/{name}", "secretRef": {"name": "model-store"}},
            "training": {"dataset": {"uri": "builtin:chinese-reviews"}},
        },
    }


class Kubelet:
    """Status writes through the admin client, in parallel threads."""

    def __init__(self, cluster: LocalCluster, namespace: str) -> None:
        import kubernetes

        self.namespace = namespace
        client = kubernetes.config.new_client_from_config(str(cluster.kubeconfig))
        client.configuration.connection_pool_maxsize = 16
        self.core = kubernetes.client.CoreV1Api(client)
        self.batch = kubernetes.client.BatchV1Api(client)
        self.apps = kubernetes.client.AppsV1Api(client)
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)

    def create(self, document: dict[str, Any]) -> None:
        self.custom.create_namespaced_custom_object(
            "tfmaas.io", "v1alpha1", self.namespace, "modelservices", document
        )

    def pods(self, selector: str) -> list[Any]:
        return list(self.core.list_namespaced_pod(self.namespace, label_selector=selector).items)

    def finish(self, pod: Any) -> None:
        version = int(pod.metadata.labels["tfmaas.io/version"])
        stamp = now()
        body = {
            "status": {
                "phase": "Succeeded",
                "containerStatuses": [
                    {
                        "name": "trainer",
                        "image": pod.spec.containers[0].image,
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {
                            "terminated": {
                                "exitCode": 0,
                                "reason": "Completed",
                                "message": termination_message(version, 0.9),
                                "startedAt": stamp,
                                "finishedAt": stamp,
                            }
                        },
                    }
                ],
            }
        }
        self.core.patch_namespaced_pod_status(pod.metadata.name, self.namespace, body)

    def ready(self, pod: Any) -> None:
        stamp = now()
        body = {
            "status": {
                "phase": "Running",
                "conditions": [
                    {"type": t, "status": "True", "lastTransitionTime": stamp}
                    for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
                ],
                "containerStatuses": [
                    {
                        "name": c.name,
                        "image": c.image,
                        "imageID": "",
                        "ready": True,
                        "started": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": stamp}},
                    }
                    for c in pod.spec.containers
                ],
            }
        }
        self.core.patch_namespaced_pod_status(pod.metadata.name, self.namespace, body)

    def run_all(self, action: Any, pods: list[Any]) -> None:
        list(self.pool.map(action, pods))

    def ready_services(self) -> set[str]:
        found = self.custom.list_namespaced_custom_object(
            "tfmaas.io", "v1alpha1", self.namespace, "modelservices"
        )
        return {
            item["metadata"]["name"]
            for item in found["items"]
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (item.get("status") or {}).get("conditions") or []
            )
        }


def summary(label: str, start: float, seen: dict[str, float]) -> None:
    latencies = sorted(t - start for t in seen.values())
    print(
        f"{label}: all {len(latencies)} in {latencies[-1]:.2f}s; "
        f"median {statistics.median(latencies):.2f}s, "
        f"p90 {latencies[int(0.9 * (len(latencies) - 1))]:.2f}s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100, help="ModelServices to apply at once")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after (seconds)")
    args = parser.parse_args()

    binaries = {name: tools.ensure(name) for name in (*COMPONENTS, "kubectl")}
    with tempfile.TemporaryDirectory(prefix="tfmaas-bench-") as scratch:
        cluster = LocalCluster(Path(scratch) / "cluster", binaries=binaries)
        cluster.start()
        try:
            return run(cluster, Path(scratch), args.count, args.timeout)
        finally:
            cluster.stop()


def run(cluster: LocalCluster, scratch: Path, count: int, timeout: float) -> int:
    namespace = "bench"
    install_crd(cluster)
    create_restricted_namespace(cluster, namespace)
    # The operator's default periodic resync, not the tests' fast one.
    operator = OperatorProcess(
        operator_kubeconfig(cluster, namespace),
        namespace,
        scratch / "operator.log",
        extra_env={"TFMAAS_RESYNC_SECONDS": "60"},
    )
    operator.start()
    kubelet = Kubelet(cluster, namespace)
    names = [f"bench-{index:03d}" for index in range(count)]
    try:
        start = time.monotonic()
        kubelet.run_all(kubelet.create, [model_service(n) for n in names])
        applied = time.monotonic()
        print(f"created {count} ModelServices (8 parallel clients) in {applied - start:.2f}s")

        jobs_seen: dict[str, float] = {}
        deadline = start + timeout
        while len(jobs_seen) < count and time.monotonic() < deadline:
            for job in kubelet.batch.list_namespaced_job(namespace).items:
                jobs_seen.setdefault(
                    job.metadata.labels["tfmaas.io/model-service"], time.monotonic()
                )
            time.sleep(0.2)
        summary("training Jobs exist, from the first create", start, jobs_seen)

        training = []
        while len(training) < count and time.monotonic() < deadline:
            training = kubelet.pods("app.kubernetes.io/component=training")
            time.sleep(0.2)
        finished = time.monotonic()
        kubelet.run_all(kubelet.finish, training)
        print(
            f"reported {len(training)} training pods finished in {time.monotonic() - finished:.2f}s"
        )

        ready_seen: dict[str, float] = {}
        completed_seen: dict[str, float] = {}
        deployed_seen: dict[str, float] = {}
        marked: set[str] = set()
        while len(ready_seen) < count and time.monotonic() < deadline:
            for job in kubelet.batch.list_namespaced_job(namespace).items:
                if job.status.succeeded:
                    completed_seen.setdefault(job.metadata.name, time.monotonic())
            for deployment in kubelet.apps.list_namespaced_deployment(namespace).items:
                deployed_seen.setdefault(deployment.metadata.name, time.monotonic())
            pending = [
                pod
                for pod in kubelet.pods("app.kubernetes.io/component=serving")
                if pod.metadata.name not in marked
            ]
            kubelet.run_all(kubelet.ready, pending)
            marked.update(pod.metadata.name for pod in pending)
            for name in kubelet.ready_services():
                ready_seen.setdefault(name, time.monotonic())
            time.sleep(0.2)
        summary("  Jobs complete (Job controller)", finished, completed_seen)
        summary("  serving Deployments exist", finished, deployed_seen)
        summary("Ready after training finished", finished, ready_seen)
        with urllib.request.urlopen(
            f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5
        ) as response:
            text = response.read().decode()
        for line in text.splitlines():
            if line.startswith(
                (
                    "tfmaas_operator_reconciles_total",
                    "tfmaas_operator_reconcile_triggers_total",
                    "tfmaas_operator_reconcile_duration_seconds_sum",
                    "tfmaas_operator_reconcile_duration_seconds_count",
                )
            ):
                print(f"  operator metric {line}")
        rss = operator.peak_rss_kib()
        print(f"operator peak RSS: {rss / 1024:.1f} MiB" if rss else "operator peak RSS: unknown")
        load = os.getloadavg()
        print(f"load average during the run: {load[0]:.1f} on {os.cpu_count()} CPUs")
        return 0 if len(ready_seen) == count else 1
    finally:
        operator.stop()


if __name__ == "__main__":
    sys.exit(main())
