"""End-to-end fixtures: a control plane of its own with a real node whose pods run.

The e2e session gets its own cluster (not the shared `cluster` fixture), because other suites
register fake nodes there and the scheduler would place real pods on them. Everything here
needs root, the packages of .ci/install-node-packages and the Go-built binaries; without them
the e2e tests skip and say which is missing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tfmaas.dev import images, tools
from tfmaas.dev.cluster import COMPONENTS, LocalCluster
from tfmaas.dev.node import LocalNode, check_prerequisites
from tfmaas.dev.stack import running_node
from tfmaas.errors import TfmaasError

NODE_TOOLS = ("kubelet", "kube-proxy", "coredns")

# Figures the e2e tests measure (seconds to scale out, failed requests in a rollout, ...),
# printed at the end of the run for the README's benchmark section.
FIGURES: dict[str, str] = {}


@pytest.fixture(scope="session")
def figures() -> dict[str, str]:
    return FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("e2e figures")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")


@dataclass
class NodeCluster:
    cluster: LocalCluster
    node: LocalNode
    base: images.BuiltImage

    def kubectl(self, *args: str, **kwargs: object):  # type: ignore[no-untyped-def]
        return self.cluster.kubectl(*args, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeCluster]:
    if os.environ.get("TFMAAS_E2E") == "0":
        pytest.skip("TFMAAS_E2E=0 turns the e2e tests off")
    try:
        check_prerequisites()
        binaries = {name: tools.ensure(name) for name in (*COMPONENTS, "kubectl")}
        for name in NODE_TOOLS:
            tools.ensure(name)
        base = images.base_image()
    except (TfmaasError, OSError, RuntimeError) as exc:
        # CI installs everything a node needs (make test), so there a missing piece is a failure.
        if os.environ.get("CI"):
            pytest.fail(f"cannot run a local node: {exc}")
        pytest.skip(f"cannot run a local node here: {exc}")
    directory = tmp_path_factory.mktemp("e2e-cluster")
    try:
        with running_node(directory, [base], binaries=binaries) as (cluster, node):
            print(f"\nnode {node.name} Ready in {node.startup_seconds:.1f}s at {node.address}")
            yield NodeCluster(cluster=cluster, node=node, base=base)
    finally:
        shutil.rmtree(Path(directory) / "etcd", ignore_errors=True)


# Whether a test's call phase failed, for fixtures that clean up only after a failure.
CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report
