"""How fast the local node is: control plane + node start-up, and pod start latency.

Prints figures; asserts nothing. Needs root and the packages of .ci/install-node-packages.
Run: .venv/bin/python benchmarks/node_benchmark.py [--pods N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from tfmaas.dev import images
from tfmaas.dev.stack import running_node


def _pod(name: str, image: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-c", "print('ok')"],
                }
            ],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, default=5, help="pods started one after another")
    args = parser.parse_args()

    base = images.base_image()
    with tempfile.TemporaryDirectory(prefix="tfmaas-node-bench-") as scratch:
        started = time.monotonic()
        with running_node(Path(scratch) / "cluster", [base]) as (cluster, node):
            print(f"control plane start      {cluster.startup_seconds:7.1f} s")
            print(f"node start (to Ready)    {node.startup_seconds:7.1f} s")
            print(f"both, with image import  {time.monotonic() - started:7.1f} s")
            latencies = []
            for index in range(args.pods):
                name = f"bench-{index}"
                created = time.monotonic()
                cluster.kubectl("apply", "-f", "-", input=json.dumps(_pod(name, base.reference)))
                while True:
                    phase = cluster.kubectl(
                        "get", "pod", name, "-o", "jsonpath={.status.phase}"
                    ).stdout
                    if phase in ("Succeeded", "Failed"):
                        break
                    time.sleep(0.2)
                latencies.append(time.monotonic() - created)
            print(
                f"pod create -> completed  median {statistics.median(latencies):.2f} s, "
                f"max {max(latencies):.2f} s over {len(latencies)} pods"
            )


if __name__ == "__main__":
    main()
