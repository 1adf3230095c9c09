"""Access gateway benchmark: what checking every call against Kubernetes RBAC costs.

Prints, for gRPC Predict in front of two upstreams: the model server users meet (`tfmaas serve`
with the sample's bag-of-ngrams model and batching), and grpc's Python server answering without
a model (the "echo" of serving_benchmark.py, so the gateway's share is as large as it can be):
  c=1    p50 direct and through the gateway, and the p50 the gateway adds (warm caches)
  c=32   throughput direct and through the gateway, and their ratio
  cpu    the gateway's own CPU time per call at c=32
  reviews TokenReviews and SubjectAccessReviews the gateway sent for all those calls (one
         token): the decision caches at work

The gateway (tools/access-gateway) asks a real local control plane (tfmaas.dev.cluster) with a
real ServiceAccount token bound by a RoleBinding; the load comes from ghz (tools/ghz) with the
token as metadata. Everything runs on 127.0.0.1; each phase is bounded in requests and seconds.

    python benchmarks/access_gateway_benchmark.py [--requests 2000] [--seconds 120]
        [--upstream model|echo|both] [--gateway-binary PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import serving_benchmark as sb

from tfmaas.dev import tools
from tfmaas.dev.cluster import COMPONENTS, LocalCluster

NAMESPACE = "default"
MODEL_SERVICE = "bench"


def grant_caller(cluster: LocalCluster) -> str:
    """A ServiceAccount allowed to call the ModelService, and a token of it."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "bench-caller", "namespace": NAMESPACE},
        "rules": [
            {
                "apiGroups": ["tfmaas.io"],
                "resources": ["modelservices/predict"],
                "resourceNames": [MODEL_SERVICE],
                "verbs": ["create"],
            }
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "bench-caller", "namespace": NAMESPACE},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "bench-caller",
        },
        "subjects": [{"kind": "ServiceAccount", "name": "bench-caller", "namespace": NAMESPACE}],
    }
    cluster.kubectl("create", "serviceaccount", "bench-caller", "-n", NAMESPACE)
    documents = "\n---\n".join(json.dumps(d) for d in (role, binding))
    cluster.kubectl("apply", "-f", "-", input=documents)
    return cluster.kubectl("create", "token", "bench-caller", "-n", NAMESPACE).stdout.strip()


def start_gateway(
    cluster: LocalCluster, upstream: str, binary: Path
) -> tuple[subprocess.Popen[str], dict[str, int]]:
    process = subprocess.Popen(
        [
            str(binary),
            "--grpc-listen-address=127.0.0.1:0",
            "--rest-listen-address=127.0.0.1:0",
            "--metrics-listen-address=127.0.0.1:0",
            f"--grpc-upstream={upstream}",
            f"--namespace={NAMESPACE}",
            f"--model-service={MODEL_SERVICE}",
            f"--kubeconfig={cluster.kubeconfig}",
        ],
        stdout=subprocess.PIPE,
        text=True,
        # As in its pod: Go sizes GOMAXPROCS from the container's CPU limit, which the operator
        # sets to 1 for the gateway.
        env={**os.environ, "GOMAXPROCS": "1"},
    )
    assert process.stdout is not None
    banner = process.stdout.readline().split()
    if not banner or banner[0] != "listening":
        raise SystemExit(f"the gateway did not start: {banner}")
    return process, {name: int(port) for name, port in (w.split("=") for w in banner[1:])}


@dataclass
class Figures:
    p50_direct: float
    p50_gateway: float
    rps_direct: float
    rps_gateway: float
    cpu_per_call: float
    calls: int
    token_reviews: int
    access_reviews: int

    def print(self, title: str) -> None:
        print(f"{title}")
        print(f"{'':8}{'direct':>12}{'gateway':>12}")
        print(f"{'c=1 p50':8}{self.p50_direct * 1000:>10.3f}ms{self.p50_gateway * 1000:>10.3f}ms")
        print(f"{'c=32':8}{self.rps_direct:>8.0f} rps{self.rps_gateway:>8.0f} rps")
        print(
            f"gateway adds {(self.p50_gateway - self.p50_direct) * 1000:.3f} ms at c=1 p50 "
            f"(target < 0.3); c=32 throughput {self.rps_gateway / self.rps_direct:.0%} of direct "
            "(target >= 80%)"
        )
        print(f"gateway CPU per call at c=32: {self.cpu_per_call * 1e6:.0f} us")
        print(
            f"{self.calls} calls with one token cost {self.token_reviews} TokenReviews and "
            f"{self.access_reviews} SubjectAccessReviews"
        )


def measure(
    cluster: LocalCluster,
    ghz: sb.Ghz,
    direct: str,
    token: str,
    requests: int,
    binary: Path,
) -> Figures:
    """Direct and through a gateway in front of `direct`, alternating phases so both see the
    same machine."""
    gateway, ports = start_gateway(cluster, direct, binary)
    try:
        guarded = f"127.0.0.1:{ports['grpc']}"
        bearer = {"authorization": f"Bearer {token}"}
        ghz.run(guarded, 1, 20, bearer)  # warm both caches and the connections
        ghz.run(direct, 1, 20)
        before = review_counts(ports["metrics"])
        c1_direct, _ = ghz.run(direct, 1, requests)
        c1_gateway, _ = ghz.run(guarded, 1, requests, bearer)
        _, rps_direct = ghz.run(direct, 32, requests * 4)
        cpu_before = sb.cpu_seconds(gateway.pid)
        _, rps_gateway = ghz.run(guarded, 32, requests * 4, bearer)
        # The gateway's own CPU per call: on shared cores it is what it takes from the server.
        cpu_per_call = (sb.cpu_seconds(gateway.pid) - cpu_before) / (requests * 4)
        after = review_counts(ports["metrics"])
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)
    return Figures(
        p50_direct=sb.percentile(c1_direct, 50),
        p50_gateway=sb.percentile(c1_gateway, 50),
        rps_direct=rps_direct,
        rps_gateway=rps_gateway,
        cpu_per_call=cpu_per_call,
        calls=after["allowed"] - before["allowed"],
        token_reviews=after["TokenReview"] - before["TokenReview"],
        access_reviews=after["SubjectAccessReview"] - before["SubjectAccessReview"],
    )


def review_counts(metrics_port: int) -> dict[str, int]:
    url = f"http://127.0.0.1:{metrics_port}/gateway/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {m[1]: int(m[2]) for m in re.finditer(r'\{\w+="(\w+)"\} (\d+)$', text, re.MULTILINE)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per phase")
    parser.add_argument("--seconds", type=float, default=120.0, help="time bound per phase")
    parser.add_argument(
        "--upstream",
        choices=("model", "echo", "both"),
        default="both",
        help="the model server (tfmaas serve with the sample's model), the echo, or both",
    )
    parser.add_argument(
        "--gateway-binary", type=Path, help="a gateway build to measure (default: the pinned one)"
    )
    args = parser.parse_args()
    binary = args.gateway_binary or tools.ensure("access-gateway")
    with tempfile.TemporaryDirectory(prefix="tfmaas-gateway-bench-") as tmp:
        workdir = Path(tmp)
        binaries = {name: tools.ensure(name) for name in (*COMPONENTS, "kubectl")}
        cluster = LocalCluster(workdir / "cluster", binaries=binaries)
        cluster.start()
        try:
            token = grant_caller(cluster)
            ghz = sb.Ghz(workdir, args.seconds)
            if args.upstream in ("model", "both"):
                base = sb.train_small_model(workdir / "model", "bag-of-ngrams")
                server, direct = sb.start_tfmaas(
                    base, batching=True, workdir=workdir, tf_threads=1, frontend="auto"
                )
                try:
                    sb.wait_until_serving(direct, server)
                    figures = measure(cluster, ghz, direct, token, args.requests, binary)
                finally:
                    sb.stop(server)
                figures.print("in front of the model server (tfmaas serve, sample model, batching)")
            if args.upstream in ("echo", "both"):
                echo, direct = sb.start_helper("echo")
                try:
                    sb.wait_until_serving(direct, echo)
                    figures = measure(cluster, ghz, direct, token, args.requests, binary)
                finally:
                    sb.stop(echo)
                figures.print("in front of an echo server (no model: the gateway's largest share)")
        finally:
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
