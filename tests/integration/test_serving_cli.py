"""`tfmaas serve` and `tfmaas predict` as processes, the way a serving pod and a user run them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tfmaas.dev.processes import free_port
from tfmaas.serving.testing import child_pids, write_demo_model

pytestmark = pytest.mark.integration


def tfmaas(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tfmaas", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


def wait_for_port(port: int, process: subprocess.Popen[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited early: {process.communicate()[1][-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    pytest.fail(f"nothing listened on {port} within {timeout}s")


def serve_demo(
    base: Path, port: int, *flags: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """`tfmaas serve` of the demo model under `base` on 127.0.0.1:`port`."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tfmaas",
            "serve",
            f"--port={port}",
            "--bind_address=127.0.0.1",
            "--model_name=demo",
            f"--model_base_path={base}",
            *flags,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
    )


def test_serve_and_predict_processes(tmp_path: Path) -> None:
    write_demo_model(tmp_path / "demo", 1)
    grpc_port, rest_port = free_port(), free_port()
    server = serve_demo(
        tmp_path / "demo",
        grpc_port,
        f"--rest_api_port={rest_port}",
        "--enable_batching=true",
        "--grpc_channel_arguments=grpc.max_connection_age_ms=30000",
        "--tensorflow_intra_op_parallelism=1",
        "--tensorflow_inter_op_parallelism=1",
    )
    try:
        wait_for_port(grpc_port, server)
        answer = tfmaas(
            "predict", "--target", f"127.0.0.1:{grpc_port}", "--model", "demo", "很好", "一般"
        )
        assert answer.returncode == 0, answer.stderr
        lines = answer.stdout.strip().splitlines()
        assert len(lines) == 2 and '"label": "negative"' in lines[0]
        rest = tfmaas("predict", "--rest", f"127.0.0.1:{rest_port}", "--model", "demo", "很好")
        assert rest.returncode == 0, rest.stderr
        missing = tfmaas(
            "predict", "--target", f"127.0.0.1:{grpc_port}", "--model", "demo", "--version=5", "x"
        )
        assert missing.returncode == 1
        assert "NOT_FOUND: Servable not found for request: Specific(demo, 5)" in missing.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=30)
    assert server.returncode == 0, stderr[-2000:]


def test_serve_refuses_a_bad_command_line() -> None:
    answer = tfmaas("serve", "--port=8500")
    assert answer.returncode == 2
    assert "nothing to serve" in answer.stderr


def test_serve_exits_with_an_error_when_its_native_front_end_dies(
    tmp_path: Path, grpc_frontend_binary: Path
) -> None:
    """A server whose gRPC port is gone must not look alive: the pod restarts it."""
    write_demo_model(tmp_path / "demo", 1)
    port = free_port()
    server = serve_demo(
        tmp_path / "demo",
        port,
        "--grpc_frontend=native",
        env={"TFMAAS_GRPC_FRONTEND": str(grpc_frontend_binary)},
    )
    try:
        wait_for_port(port, server)
        children = child_pids(server.pid)
        front_ends = [
            pid
            for pid in children
            if Path(f"/proc/{pid}/exe").resolve() == grpc_frontend_binary.resolve()
        ]
        assert len(front_ends) == 1, children
        os.kill(front_ends[0], signal.SIGKILL)
        _, stderr = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == 1
    assert "tfmaas serve: the native gRPC front end exited" in stderr


def test_serve_logs_one_json_object_per_line(tmp_path: Path) -> None:
    """What a log collector reads from a serving pod: every stdout line is a JSON object
    (stderr keeps what TensorFlow's C++ runtime writes itself)."""
    write_demo_model(tmp_path / "demo", 1)
    port = free_port()
    server = serve_demo(tmp_path / "demo", port, "--log-format", "json")
    try:
        wait_for_port(port, server)
    finally:
        server.send_signal(signal.SIGTERM)
        stdout, stderr = server.communicate(timeout=30)
    assert server.returncode == 0, stderr[-2000:]
    records = [json.loads(line) for line in stdout.splitlines()]
    messages = [record["message"] for record in records]
    assert any(m.startswith("Loading servable: {name: demo version: 1}") for m in messages)
    assert "Got SIGTERM; shutting down" in messages
    assert {record["level"] for record in records} <= {"debug", "info", "warning", "error"}
