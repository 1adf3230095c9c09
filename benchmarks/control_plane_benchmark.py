"""What the local control plane costs: start-up time, memory per component, API latency.

Starts `LocalCluster` (binaries must be built: `.ci/build-tools`) a few times in a fresh
directory, and prints for each start the seconds until it is usable, then the resident memory
of each component once settled, and the median/p95 of N `GET /api/v1/namespaces/default` and N
ConfigMap creations through the apiserver (admin certificate, one HTTPS connection each).

    .venv/bin/python benchmarks/control_plane_benchmark.py --starts 2 --requests 200
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

from tfmaas.dev.cluster import LocalCluster


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _latencies_ms(cluster: LocalCluster, requests: int) -> dict[str, list[float]]:
    url = urlparse(cluster.server)
    connection = http.client.HTTPSConnection(
        url.hostname or "127.0.0.1", url.port, context=cluster.admin_ssl_context(), timeout=30
    )
    results: dict[str, list[float]] = {"get namespace": [], "create configmap": []}
    try:
        for index in range(requests):
            started = time.perf_counter()
            connection.request("GET", "/api/v1/namespaces/default")
            response = connection.getresponse()
            response.read()
            results["get namespace"].append((time.perf_counter() - started) * 1000)
            assert response.status == 200, response.status

            body = json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": f"bench-{index}"},
                    "data": {"k": "v"},
                }
            )
            started = time.perf_counter()
            connection.request(
                "POST",
                "/api/v1/namespaces/default/configmaps",
                body=body,
                headers={"Content-Type": "application/json"},
            )
            response = connection.getresponse()
            response.read()
            results["create configmap"].append((time.perf_counter() - started) * 1000)
            assert response.status == 201, response.status
    finally:
        connection.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=2, help="fresh starts to time")
    parser.add_argument("--requests", type=int, default=200, help="API calls per kind")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds before reading RSS")
    args = parser.parse_args()

    for attempt in range(1, args.starts + 1):
        with tempfile.TemporaryDirectory(prefix="tfmaas-cp-bench-") as directory:
            cluster = LocalCluster(Path(directory))
            cluster.start()
            try:
                print(f"start {attempt}: usable after {cluster.startup_seconds:.1f}s")
                if attempt < args.starts:
                    continue
                time.sleep(args.settle)
                for name, rss in cluster.rss_kib().items():
                    shown = f"{rss / 1024:.0f} MiB" if rss is not None else "exited"
                    print(f"  RSS {name:<24} {shown}")
                for kind, samples in _latencies_ms(cluster, args.requests).items():
                    print(
                        f"  {kind:<17} n={len(samples)} median {statistics.median(samples):.2f} ms"
                        f"  p95 {_percentile(samples, 0.95):.2f} ms"
                    )
            finally:
                cluster.stop()


if __name__ == "__main__":
    main()
