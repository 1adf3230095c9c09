"""How the operator copes with many ModelServices on many (simulated) nodes.

Starts the local control plane, kwok with fake nodes (`tfmaas.dev.kwok`), and the operator
(under its shipped namespaced Role, as its tests run it), applies N ModelServices at once, and
prints: time until every training Job exists, until every ModelService is Ready, the
operator's peak RSS and CPU time, and the API requests the operator makes per ModelService per
minute once everything has converged, counted from the API server's audit log (only the
operator's ServiceAccount is audited).

Simulated: the nodes (kwok), the training (kwok's Stage ends each Job pod with exit 0 and the
trainer's termination message, which is what the operator reads a finished training from) and
the serving pods' readiness. Real: the control plane, the scheduler placing every pod on the
fake nodes, the Job/ReplicaSet/Deployment controllers, and every request of the operator.

    .venv/bin/python benchmarks/operator_benchmark.py               # 100 on 10 nodes
    .venv/bin/python benchmarks/operator_benchmark.py --count 1000  # the README's figure
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import http.client
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.operator_harness import (  # noqa: E402
    OPERATOR_ACCOUNT,
    OperatorProcess,
    create_restricted_namespace,
    install_crd,
    operator_kubeconfig,
)
from tfmaas.dev import kwok, tools  # noqa: E402
from tfmaas.dev.cluster import COMPONENTS, LocalCluster, service_account_user  # noqa: E402

NAMESPACE = "bench"
MAX_COUNT = 1000
POLL_SECONDS = 1.0
# The operator's default periodic resync, not the tests' fast one.
RESYNC_SECONDS = 60
# Client-side rate limits of the Job, ReplicaSet and Deployment controllers and the scheduler
# (20 and 50 requests/s by default): at 1,000 ModelServices they, not the operator, would set
# the pace, so they are raised as a cluster of that size raises them.
CONTROLLER_QPS = {
    name: ["--kube-api-qps=200", "--kube-api-burst=400"]
    for name in ("kube-controller-manager", "kube-scheduler")
}
# The audit log is read once per phase; a line is a few hundred bytes, so this bounds a run
# far above what even a misbehaving operator writes in one.
AUDIT_MAX_MB = 500


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


def audit_policy(user: str) -> dict[str, Any]:
    """Metadata of every request `user` makes, nothing of anyone else's."""
    return {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived", "ResponseStarted"],
        "rules": [{"level": "Metadata", "users": [user]}, {"level": "None"}],
    }


def audit_args(directory: Path, user: str) -> list[str]:
    policy = directory / "audit-policy.json"
    policy.parent.mkdir(parents=True, exist_ok=True)
    policy.write_text(json.dumps(audit_policy(user)))
    return [
        f"--audit-policy-file={policy}",
        f"--audit-log-path={directory / 'audit.log'}",
        f"--audit-log-maxsize={AUDIT_MAX_MB}",
        "--audit-log-maxbackup=1",
    ]


def print_commonest(counts: collections.Counter[str], most: int) -> None:
    """The `most` commonest requests of `counts`, a line each under the line that sums them."""
    for key, value in counts.most_common(most):
        print(f"  {value:7d} {key}")


def count_requests(path: Path, offset: int) -> tuple[collections.Counter[str], int]:
    """Requests logged after byte `offset`, by "verb resource"; and the new end offset."""
    counts: collections.Counter[str] = collections.Counter()
    if not path.exists():  # nothing audited yet
        return counts, 0
    with path.open("rb") as log:
        log.seek(offset)
        for line in log:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            ref = event.get("objectRef") or {}
            sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
            counts[f"{event.get('verb')} {ref.get('resource', '?')}{sub}"] += 1
        return counts, log.tell()


class Cpu:
    """The operator's CPU seconds (user + system) from /proc, for per-phase figures."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.tick = os.sysconf("SC_CLK_TCK")

    def seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.tick


class Client:
    """The benchmark's own writes, as admin (not audited)."""

    def __init__(self, cluster: LocalCluster, namespace: str) -> None:
        import kubernetes

        self.namespace = namespace
        client = kubernetes.config.new_client_from_config(str(cluster.kubeconfig))
        client.configuration.connection_pool_maxsize = 8
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)

    def create_all(self, documents: list[dict[str, Any]]) -> None:
        def create(document: dict[str, Any]) -> None:
            self.custom.create_namespaced_custom_object(
                "tfmaas.io", "v1alpha1", self.namespace, "modelservices", document
            )

        list(self.pool.map(create, documents))


def job_owner(job: dict[str, Any]) -> str | None:
    labels = (job.get("metadata") or {}).get("labels") or {}
    owner = labels.get("tfmaas.io/model-service")
    return str(owner) if owner else None


def ready_name(service: dict[str, Any]) -> str | None:
    conditions = (service.get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    return str(service["metadata"]["name"]) if ready else None


class FirstSeen:
    """When a watch first showed each object for which `name_of` gives a name.

    A watch rather than a poll: listing 1,000 Jobs or ModelServices every second would have
    the API server serialise a thousand objects a second for the benchmark, load charged to
    the operator's figures on these shared cores."""

    WATCH_SECONDS = 300

    def __init__(
        self,
        cluster: LocalCluster,
        path: str,
        name_of: Callable[[dict[str, Any]], str | None],
        start: float,
    ) -> None:
        self.host, self.port = "127.0.0.1", int(cluster.server.rsplit(":", 1)[1])
        self.context = cluster.admin_ssl_context()
        self.path, self.name_of, self.start = path, name_of, start
        self.seen: dict[str, float] = {}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._watch_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()

    def _watch_forever(self) -> None:
        resource_version = ""
        while not self.stopped.is_set():
            try:
                resource_version = self._watch(resource_version)
            except (OSError, http.client.HTTPException, ValueError):
                time.sleep(POLL_SECONDS)

    def _watch(self, resource_version: str) -> str:
        query = {"watch": "1", "timeoutSeconds": str(self.WATCH_SECONDS)}
        if resource_version:
            query["resourceVersion"] = resource_version
        connection = http.client.HTTPSConnection(
            self.host, self.port, context=self.context, timeout=self.WATCH_SECONDS + 30
        )
        try:
            connection.request("GET", f"{self.path}?{urllib.parse.urlencode(query)}")
            response = connection.getresponse()
            if response.status != 200:
                raise ValueError(f"watch {self.path}: HTTP {response.status}")
            while not self.stopped.is_set():
                line = response.readline()
                if not line:
                    return resource_version
                event = json.loads(line)
                if event.get("type") == "ERROR":  # expired: start again from now
                    return ""
                item = event.get("object") or {}
                resource_version = (item.get("metadata") or {}).get(
                    "resourceVersion", resource_version
                )
                name = self.name_of(item) if event.get("type") != "DELETED" else None
                if name is not None:
                    self.seen.setdefault(name, time.monotonic() - self.start)
            return resource_version
        finally:
            connection.close()


def wait_all(
    watcher: FirstSeen, count: int, deadline: float, operator: OperatorProcess
) -> dict[str, float]:
    """What `watcher` has seen once it has seen all `count`, or at the deadline."""
    while len(watcher.seen) < count and time.monotonic() < deadline:
        if operator.process is None or operator.process.poll() is not None:
            raise RuntimeError(f"the operator exited:\n{operator.log_tail()}")
        time.sleep(POLL_SECONDS)
    return dict(watcher.seen)


def summary(label: str, seen: dict[str, float], count: int) -> None:
    if not seen:
        print(f"{label}: none of {count}")
        return
    latencies = sorted(seen.values())
    head = f"all {count}" if len(latencies) == count else f"only {len(latencies)} of {count}"
    print(
        f"{label}: {head} in {latencies[-1]:.1f}s; median {statistics.median(latencies):.1f}s, "
        f"p90 {latencies[int(0.9 * (len(latencies) - 1))]:.1f}s"
    )


def operator_metrics(port: int) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    wanted = (
        "tfmaas_operator_reconciles_total",
        "tfmaas_operator_reconcile_triggers_total",
        "tfmaas_operator_reconcile_duration_seconds_sum",
        "tfmaas_operator_reconcile_duration_seconds_count",
    )
    return [line for line in text.splitlines() if line.startswith(wanted)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100, help="ModelServices to apply at once")
    parser.add_argument("--nodes", type=int, help="kwok nodes (default: count / 10)")
    parser.add_argument(
        "--steady-seconds",
        type=float,
        default=180.0,
        help="how long to count the operator's requests once all are Ready",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after (seconds)")
    args = parser.parse_args()
    if not 1 <= args.count <= MAX_COUNT:
        parser.error(f"--count must be within 1..{MAX_COUNT}")
    nodes = args.nodes or max(1, args.count // 10)
    if not 1 <= nodes <= kwok.MAX_NODES:
        parser.error(f"--nodes must be within 1..{kwok.MAX_NODES}")
    if not 10.0 <= args.steady_seconds <= 3600.0:
        parser.error("--steady-seconds must be within 10..3600")

    # A run stopped with SIGTERM (a timeout, a background kill) still stops what it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    binaries = {name: tools.ensure(name) for name in (*COMPONENTS, "kubectl", "kwok")}
    with tempfile.TemporaryDirectory(prefix="tfmaas-bench-") as scratch:
        directory = Path(scratch)
        user = service_account_user(NAMESPACE, OPERATOR_ACCOUNT)
        cluster = LocalCluster(
            directory / "cluster",
            binaries=binaries,
            extra_args={
                "kube-apiserver": audit_args(directory / "audit", user),
                **CONTROLLER_QPS,
            },
        )
        cluster.start()
        try:
            with kwok.running(cluster, directory / "kwok", nodes=nodes):
                print(f"{nodes} kwok nodes Ready")
                return run(cluster, directory, args.count, args.steady_seconds, args.timeout)
        finally:
            cluster.stop()


def run(cluster: LocalCluster, scratch: Path, count: int, steady: float, timeout: float) -> int:
    install_crd(cluster)
    create_restricted_namespace(cluster, NAMESPACE)
    operator = OperatorProcess(
        operator_kubeconfig(cluster, NAMESPACE),
        NAMESPACE,
        scratch / "operator.log",
        extra_env={"TFMAAS_RESYNC_SECONDS": str(RESYNC_SECONDS)},
    )
    audit_log = scratch / "audit" / "audit.log"
    operator.start()
    cpu = Cpu(operator.process.pid if operator.process else 0)
    client = Client(cluster, NAMESPACE)
    names = [f"bench-{index:04d}" for index in range(count)]
    watchers: list[FirstSeen] = []
    try:
        _, offset = count_requests(audit_log, 0)
        cpu_start = cpu.seconds()
        start = time.monotonic()
        deadline = start + timeout
        base = f"/namespaces/{NAMESPACE}"
        job_watch = FirstSeen(cluster, f"/apis/batch/v1{base}/jobs", job_owner, start)
        ready_watch = FirstSeen(
            cluster, f"/apis/tfmaas.io/v1alpha1{base}/modelservices", ready_name, start
        )
        watchers.extend([job_watch, ready_watch])
        client.create_all([model_service(n) for n in names])
        print(
            f"created {count} ModelServices (8 parallel clients) in {time.monotonic() - start:.1f}s"
        )

        jobs = wait_all(job_watch, count, deadline, operator)
        summary("training Jobs exist, from the first create", jobs, count)
        print(
            f"  operator CPU until then: {cpu.seconds() - cpu_start:.1f}s in "
            f"{time.monotonic() - start:.0f}s"
        )
        # What the operator asked while the Jobs were being created: the part of its load
        # that competes with the creations for the API server.
        burst, _ = count_requests(audit_log, offset)
        print(
            f"  operator requests until then: {sum(burst.values())} "
            f"({sum(burst.values()) / count:.1f} per ModelService)"
        )
        print_commonest(burst, 6)
        ready = wait_all(ready_watch, count, deadline, operator)
        summary("ModelServices Ready, from the first create", ready, count)
        converged = time.monotonic()
        cpu_converged = cpu.seconds()
        during, offset = count_requests(audit_log, offset)
        print(
            f"until converged: operator CPU {cpu_converged - cpu_start:.1f}s in "
            f"{converged - start:.0f}s; {sum(during.values())} API requests "
            f"({sum(during.values()) / count:.1f} per ModelService)"
        )
        print_commonest(during, 8)

        # The reconcile that found each one Ready wrote its status; the next resync finds
        # nothing to change. What it asks for until then is the cost of settling.
        time.sleep(RESYNC_SECONDS + 15)
        settling, offset = count_requests(audit_log, offset)
        print(
            f"settling (the first {RESYNC_SECONDS + 15}s after all Ready): "
            f"{sum(settling.values())} API requests"
        )
        print_commonest(settling, 5)
        cpu_converged = cpu.seconds()
        # Converged: nothing changes from here on, so whatever the operator asks now is its
        # steady-state cost.
        time.sleep(steady)
        quiet, offset = count_requests(audit_log, offset)
        cpu_steady = cpu.seconds() - cpu_converged
        total = sum(quiet.values())
        print(
            f"steady state (the {steady:.0f}s after that): {total} API requests, "
            f"{total / count / (steady / 60):.3f} per ModelService per minute; "
            f"operator CPU {cpu_steady:.1f}s ({100 * cpu_steady / steady:.1f}% of a core)"
        )
        print_commonest(quiet, 8)
        for line in operator_metrics(operator.metrics_port):
            print(f"  operator metric {line}")
        rss = operator.peak_rss_kib()
        print(f"operator peak RSS: {rss / 1024:.1f} MiB" if rss else "operator peak RSS: unknown")
        load = os.getloadavg()
        print(f"load average at the end: {load[0]:.1f} on {os.cpu_count()} CPUs")
        return 0 if len(ready) == count else 1
    finally:
        for watcher in watchers:
            watcher.stop()
        operator.stop()


if __name__ == "__main__":
    sys.exit(main())
