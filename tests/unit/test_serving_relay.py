"""The native front end's pieces that need no process: its frames, and where its binary is
found (never through the development harness)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from tfmaas.serving import frontend_process
from tfmaas.serving.relay_frames import PREDICT, Call, answer, encode_call, split_calls


def test_calls_are_taken_whole_and_a_partial_one_waits_for_its_rest() -> None:
    calls = [
        Call(1, PREDICT, b"\x0a\x03abc"),
        Call(2**40, "/tensorflow.serving.ModelService/GetModelStatus", b""),
        Call(3, "", b""),  # a cancel
    ]
    wire = b"".join(encode_call(call) for call in calls)
    buffer = bytearray(wire[:-3])
    assert list(split_calls(buffer)) == calls[:2]
    assert bytes(buffer) == encode_call(calls[2])[:-3]
    buffer += wire[-3:]
    assert list(split_calls(buffer)) == calls[2:]
    assert buffer == bytearray()


def test_an_answer_carries_its_id_code_and_payload() -> None:
    frame = answer(7, grpc.StatusCode.NOT_FOUND, b"no such model")
    size = int.from_bytes(frame[:4], "little")
    assert size == len(frame) - 4
    assert int.from_bytes(frame[4:12], "little") == 7
    assert frame[12] == grpc.StatusCode.NOT_FOUND.value[0]
    assert frame[13:] == b"no such model"


def _executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_the_binary_is_found_in_the_documented_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripts, on_path = tmp_path / "scripts", tmp_path / "path"
    scripts.mkdir()
    on_path.mkdir()
    monkeypatch.setattr(frontend_process.sysconfig, "get_path", lambda name: str(scripts))
    monkeypatch.setenv("PATH", str(on_path))
    monkeypatch.delenv("TFMAAS_GRPC_FRONTEND", raising=False)
    assert frontend_process.find_binary() is None
    installed = _executable(scripts / frontend_process.BINARY_NAME)
    assert frontend_process.find_binary() == installed
    path_one = _executable(on_path / frontend_process.BINARY_NAME)
    assert frontend_process.find_binary() == path_one
    configured = _executable(tmp_path / "elsewhere")
    monkeypatch.setenv("TFMAAS_GRPC_FRONTEND", str(configured))
    assert frontend_process.find_binary() == configured
    monkeypatch.setenv("TFMAAS_GRPC_FRONTEND", str(tmp_path / "missing"))
    assert frontend_process.find_binary() is None  # what is configured is not second-guessed


def test_a_build_is_linked_where_the_server_looks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tfmaas.dev import tools

    monkeypatch.setattr(tools.sysconfig, "get_path", lambda name: str(tmp_path))
    old, new = _executable(tmp_path / "old"), _executable(tmp_path / "new")
    tools._link_command(old, "tfmaas-grpc-frontend")
    tools._link_command(new, "tfmaas-grpc-frontend")  # a rebuild replaces the link
    assert (tmp_path / "tfmaas-grpc-frontend").resolve() == new
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "old", "tfmaas-grpc-frontend"]


def test_serving_does_not_depend_on_the_development_harness(tmp_path: Path) -> None:
    """Looking for the binary where none is (no variable, nothing on PATH) loads nothing of
    tfmaas.dev: shipped serving code must not need the harness that builds the binary."""
    code = (
        "import sys; import tfmaas.serving.server as server; server.find_binary(); "
        "print([m for m in sys.modules if m.startswith('tfmaas.dev')])"
    )
    env = {k: v for k, v in os.environ.items() if k != "TFMAAS_GRPC_FRONTEND"}
    env.update(PATH=str(tmp_path), PYTHONSAFEPATH="1")
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120, env=env
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip() == "[]"
