"""The native gRPC front end's process: found, started on a private Unix socket, stopped.

The binary comes from `$TFMAAS_GRPC_FRONTEND`, then `tfmaas-grpc-frontend` on PATH (the serving
image installs it there), then this Python environment's scripts folder, where
`tfmaas dev tools build grpc-frontend` links a source checkout's build. Nothing here depends on
the development harness.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sysconfig
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from tfmaas.errors import UserError

log = logging.getLogger(__name__)

BINARY_NAME = "tfmaas-grpc-frontend"
_START_TIMEOUT_S = 30.0


def find_binary() -> Path | None:
    configured = os.environ.get("TFMAAS_GRPC_FRONTEND")
    if configured:
        return Path(configured) if Path(configured).is_file() else None
    on_path = shutil.which(BINARY_NAME)
    if on_path:
        return Path(on_path)
    installed = Path(sysconfig.get_path("scripts")) / BINARY_NAME
    return installed if installed.is_file() else None


class FrontendProcess:
    """The Go program, connected to this process through one Unix socket it dials back on."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self.private_dir = tempfile.mkdtemp(prefix="tfmaas-grpc-")
        self._process: subprocess.Popen[str] | None = None
        self._log_thread: threading.Thread | None = None

    def start(self, flags: Sequence[str], *, address: str) -> tuple[socket.socket, int]:
        """Run the binary with `flags`; returns the socket it relays calls over and the port it
        listens on for gRPC."""
        path = os.path.join(self.private_dir, "server.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(path)
            listener.listen(1)
            self._process = subprocess.Popen(
                [str(self.binary), f"-listen={address}", f"-backend={path}", *flags],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            connection = self._accept(listener)
        finally:
            listener.close()
        port = self._read_port(address)
        self._log_thread = threading.Thread(
            target=self._forward_log, name="grpc-frontend-log", daemon=True
        )
        self._log_thread.start()
        return connection, port

    def write_private_file(self, name: str, text: str) -> Path:
        """A file only this user can read, in the directory only this user can list: for keys,
        which on a command line any local user could read."""
        file = Path(self.private_dir, name)
        file.touch(mode=0o600)
        file.write_text(text, encoding="utf-8")
        return file

    def _accept(self, listener: socket.socket) -> socket.socket:
        assert self._process is not None
        deadline = time.monotonic() + _START_TIMEOUT_S
        listener.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                if self._process.poll() is not None:
                    break
                continue
            connection.settimeout(None)
            return connection
        raise UserError(f"the gRPC front end {self.binary} did not start: {self._exit_message()}")

    def _read_port(self, address: str) -> int:
        assert self._process is not None and self._process.stdout is not None
        line = self._process.stdout.readline().split()
        if len(line) == 2 and line[0] == "listening" and line[1].isdigit():
            return int(line[1])
        raise UserError(f"cannot listen on {address} for gRPC: {self._exit_message()}")

    def _exit_message(self) -> str:
        assert self._process is not None
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            return "it did not answer in time"
        assert self._process.stderr is not None
        lines = self._process.stderr.read().strip().splitlines()
        if not lines:
            return f"it exited with status {self._process.returncode}"
        return lines[-1].removeprefix("grpc-frontend: ")  # the fatal one comes last

    def _forward_log(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        for line in self._process.stderr:
            log.warning("%s", line.rstrip())

    def stop(self, grace: float) -> None:
        """SIGTERM: the front end stops taking calls and gives those in flight `grace` seconds;
        then it is killed."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.terminate()
            try:
                self._process.wait(timeout=grace + 1)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._log_thread is not None:
            self._log_thread.join(timeout=10)

    def remove_private_dir(self) -> None:
        shutil.rmtree(self.private_dir, ignore_errors=True)
