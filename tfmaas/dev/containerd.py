"""A private containerd for the local node: its own config, root, state and socket.

The host's containerd service (if any) is left alone; this instance keeps every image,
snapshot and sandbox under the node's directory, uses the overlayfs snapshotter and the
cgroupfs driver (the kubelet's), and runs pod sandboxes from the locally built pause image.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tfmaas.dev import processes
from tfmaas.errors import UserError

CRI_NAMESPACE = "k8s.io"
CNI_BIN_DIR = Path("/usr/lib/cni")


@dataclass(frozen=True)
class ContainerdPaths:
    root: Path
    state: Path
    socket: Path
    cni_conf_dir: Path
    config: Path

    @classmethod
    def under(cls, directory: Path, run_directory: Path) -> ContainerdPaths:
        return cls(
            root=directory / "root",
            # State holds sockets and mounts: on a short path so unix socket names fit.
            state=run_directory / "state",
            socket=run_directory / "containerd.sock",
            cni_conf_dir=directory / "cni" / "net.d",
            config=directory / "config.toml",
        )


def config_toml(
    paths: ContainerdPaths, *, sandbox_image: str, cni_bin_dir: Path, runc: str = ""
) -> str:
    """containerd 1.6 configuration (version 2 schema) for one private instance."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    # TFMAAS_RUNC swaps in another runc (e.g. a wrapper adding --debug) to diagnose a node.
    binary_name = f'\n        BinaryName = "{runc}"' if runc else ""
    return f"""\
version = 2
root = "{paths.root}"
state = "{paths.state}"
# Snapshotters this sandbox cannot use only log errors at start.
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "{paths.socket}"

[ttrpc]
  address = "{paths.socket}.ttrpc"

[debug]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{paths.root}/opt"

[{cri}]
  sandbox_image = "{sandbox_image}"
  # Pod network namespaces live under the state dir, so tearing the node down finds them all.
  netns_mounts_under_state_dir = true
  enable_unprivileged_ports = false
  # Sandboxes like this one lack CAP_SYS_RESOURCE, so runc cannot lower a container's
  # oom_score_adj (guaranteed pods and sandboxes ask for -998); cap it at containerd's own.
  restrict_oom_score_adj = true
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false{binary_name}
  [{cri}.cni]
    bin_dir = "{cni_bin_dir}"
    conf_dir = "{paths.cni_conf_dir}"
"""


class Containerd:
    """One running private containerd; `ctr()` talks to it."""

    def __init__(self, paths: ContainerdPaths, logs_dir: Path) -> None:
        self.paths = paths
        self.logs_dir = logs_dir
        self.process: processes.ManagedProcess | None = None

    @property
    def endpoint(self) -> str:
        return f"unix://{self.paths.socket}"

    def start(self, *, sandbox_image: str, timeout: float = 60.0) -> None:
        binary = shutil.which("containerd")
        if binary is None:
            raise UserError(
                "containerd is not installed; run .ci/install-node-packages to install the "
                "node's Debian packages"
            )
        for directory in (self.paths.root, self.paths.state, self.paths.cni_conf_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.paths.config.write_text(
            config_toml(
                self.paths,
                sandbox_image=sandbox_image,
                cni_bin_dir=CNI_BIN_DIR,
                runc=os.environ.get("TFMAAS_RUNC", ""),
            )
        )
        self.process = processes.start(
            "containerd",
            [binary, "--config", str(self.paths.config)],
            log_path=self.logs_dir / "containerd.log",
        )
        processes.wait_until(
            lambda: self.paths.socket.exists() and self.ctr("version", check=False).returncode == 0,
            timeout=timeout,
            what="containerd to answer on its socket",
            processes=[self.process],
        )

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run(
            ["ctr", "-a", str(self.paths.socket), "-n", CRI_NAMESPACE, *args],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if check and completed.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed: {completed.stderr.strip()}")
        return completed

    def remove_all_containers(self) -> None:
        """Kill every task and delete every container: the kubelet leaves them running."""
        tasks = self.ctr("tasks", "ls", "-q", check=False).stdout.split()
        for task in tasks:
            self.ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
        deadline = time.monotonic() + 20
        while tasks and time.monotonic() < deadline:
            for task in list(tasks):
                if self.ctr("tasks", "delete", task, check=False).returncode == 0:
                    tasks.remove(task)
            if tasks:
                time.sleep(0.5)
        for container in self.ctr("containers", "ls", "-q", check=False).stdout.split():
            self.ctr("containers", "delete", container, check=False)

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(Exception):
            self.remove_all_containers()
        self.process.stop()
        self.process = None
