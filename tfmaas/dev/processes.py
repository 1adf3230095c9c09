"""Child processes of the local test environment that never outlive the process that started them.

Each server runs in its own session (so stopping it takes its whole process group) and is
asked by the kernel (PR_SET_PDEATHSIG) to die when its parent does, so even a test run killed
with SIGKILL leaves no etcd or kube-apiserver behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:`port` now.

    Go servers listen with SO_REUSEADDR, so connections of a stopped server still in
    TIME_WAIT do not make its port unusable; the check does the same.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died before prctl took effect; then nobody would ever stop us.
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


@dataclasses.dataclass
class ManagedProcess:
    """One running server: its command line, log file and process handle."""

    name: str
    args: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace_seconds: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.popen.wait(timeout=grace_seconds)

    def _signal_group(self, sig: signal.Signals) -> None:
        # The child leads its own session, so its process group id is its pid.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)


def start(
    name: str,
    args: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ManagedProcess:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        popen = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()),
        )
    return ManagedProcess(name=name, args=list(args), log_path=log_path, popen=popen)


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    processes: Sequence[ManagedProcess] = (),
    interval: float = 0.2,
) -> None:
    """Poll `condition` until it holds; fail early, with its log, if a watched process exits."""
    deadline = time.monotonic() + timeout
    while True:
        for process in processes:
            if not process.running():
                raise RuntimeError(
                    f"{process.name} exited with status {process.popen.returncode} while waiting "
                    f"for {what}; its log ({process.log_path}) ends with:\n{process.log_tail()}"
                )
        if condition():
            return
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name} ({p.log_path}):\n{p.log_tail(10)}" for p in processes)
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}\n{tails}")
        time.sleep(interval)


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    """Whether `url` answers 200 within two seconds: the readiness check of every local server."""
    try:
        with urllib.request.urlopen(url, context=context, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:  # URLError, refused or reset connections, timeouts and TLS errors alike
        return False


def rss_kib(pid: int) -> int | None:
    """Resident memory of a live process, or None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None
