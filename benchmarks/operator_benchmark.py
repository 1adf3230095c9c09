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
import json
import statistics
import sys
import tempfile
import time
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
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)

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
    operator = OperatorProcess(
        operator_kubeconfig(cluster, namespace), namespace, scratch / "operator.log"
    )
    operator.start()
    kubelet = Kubelet(cluster, namespace)
    names = [f"bench-{index:03d}" for index in range(count)]
    listing = {"apiVersion": "v1", "kind": "List", "items": [model_service(n) for n in names]}
    try:
        start = time.monotonic()
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(listing))
        applied = time.monotonic()
        print(f"applied {count} ModelServices in {applied - start:.2f}s")

        jobs_seen: dict[str, float] = {}
        deadline = start + timeout
        while len(jobs_seen) < count and time.monotonic() < deadline:
            for job in kubelet.batch.list_namespaced_job(namespace).items:
                jobs_seen.setdefault(
                    job.metadata.labels["tfmaas.io/model-service"], time.monotonic()
                )
            time.sleep(0.2)
        summary("training Jobs exist", start, jobs_seen)

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
        marked: set[str] = set()
        while len(ready_seen) < count and time.monotonic() < deadline:
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
        summary("Ready after training finished", finished, ready_seen)
        rss = operator.peak_rss_kib()
        print(f"operator peak RSS: {rss / 1024:.1f} MiB" if rss else "operator peak RSS: unknown")
        return 0 if len(ready_seen) == count else 1
    finally:
        operator.stop()


if __name__ == "__main__":
    sys.exit(main())
