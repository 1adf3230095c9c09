"""A signal stops `wait` even when it lands while the main thread holds the lock `wait` waits
on: the window right after "serving until interrupted", where a SIGTERM once hung a local run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_CHILD = """
import logging, os, signal
logging.basicConfig(level=logging.INFO)
from tfmaas.serving.flags import ServerFlags
from tfmaas.serving.server import ModelServer

server = ModelServer(ServerFlags(model_base_path="/no/models", port=0))
server.stop_on_signals()
# Hold the lock of the Event that `wait` blocks on, as the main thread does inside Event.wait,
# and take the signal right there: its handler runs in this thread, before the lock is released.
with server._stop._cond:
    os.kill(os.getpid(), signal.{name})
server.wait()
print("stopped")
"""


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_signal_taken_while_the_wait_lock_is_held_still_stops_the_server(name: str) -> None:
    try:
        completed = subprocess.run(
            [sys.executable, "-c", _CHILD.format(name=name)],
            capture_output=True,
            text=True,
            cwd="/",
            timeout=120,
            env={**os.environ, "PYTHONSAFEPATH": "1"},
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name} deadlocked the server's signal handling")
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip() == "stopped"
    assert f"Got {name}; shutting down" in completed.stderr
