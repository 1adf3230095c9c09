"""tfmaas's own Go programs' tests, vet and formatting: the native gRPC front end
(tools/grpc-frontend) and the access gateway (tools/access-gateway)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tfmaas.dev import tools
from tfmaas.errors import UserError

pytestmark = pytest.mark.integration

OWN_MODULES = ("grpc-frontend", "access-gateway")


@pytest.fixture(scope="module")
def go() -> Path:
    try:
        return tools.find_go()
    except UserError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Go is required under CI: {exc}")
        pytest.skip(str(exc))


def run_go(go: Path, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(go), *args],
        cwd=tools.tools_modules_root() / module,
        env=tools.go_build_env(os.environ),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("module", OWN_MODULES)
def test_go_tests_pass(go: Path, module: str) -> None:
    result = run_go(go, module, "test", "-count=1", "-mod=readonly", "./...")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.parametrize("module", OWN_MODULES)
def test_go_vet_and_gofmt_are_clean(go: Path, module: str) -> None:
    vet = run_go(go, module, "vet", "-mod=readonly", "./...")
    assert vet.returncode == 0, vet.stderr[-3000:]
    unformatted = subprocess.run(
        [str(go.parent / "gofmt"), "-l", "."],
        cwd=tools.tools_modules_root() / module,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert not unformatted, f"run gofmt -w on {unformatted}"
