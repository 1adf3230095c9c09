"""The local node's pod network: one Linux bridge with a private subnet, and nothing else.

Pods get addresses from host-local IPAM on the bridge; the host reaches them directly and they
reach the host at the bridge's gateway address. No masquerade rule is added, so pod traffic can
never leave the machine. Host services that listen on loopback only (MinIO, the API server) are
relayed to pods from `gateway:port` (see `LocalNode.expose_host_port`): an address that exists
on the bridge only. `route_localnet` on the bridge lets kube-proxy send a Service's traffic to an
endpoint on 127.0.0.1 (the API server advertises loopback).
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfmaas.errors import UserError

NETWORK_NAME = "tfmaas"
CONFLIST_NAME = "10-tfmaas.conflist"


@dataclass(frozen=True)
class PodNetwork:
    bridge: str
    pod_cidr: str
    ipam_data_dir: Path

    @property
    def gateway(self) -> str:
        return str(ipaddress.ip_network(self.pod_cidr).network_address + 1)

    @property
    def prefix_length(self) -> int:
        return ipaddress.ip_network(self.pod_cidr).prefixlen


def conflist(network: PodNetwork) -> dict[str, Any]:
    """The CNI configuration list containerd's CRI plugin runs for every pod sandbox."""
    return {
        "cniVersion": "1.0.0",
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": network.bridge,
                "isGateway": True,
                # Off the machine is nowhere a pod should reach; so no masquerade.
                "ipMasq": False,
                # A pod calling its own Service is sent back to itself through the bridge.
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": network.pod_cidr, "gateway": network.gateway}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(network.ipam_data_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "loopback"},
        ],
    }


def write_conflist(network: PodNetwork, conf_dir: Path) -> Path:
    conf_dir.mkdir(parents=True, exist_ok=True)
    path = conf_dir / CONFLIST_NAME
    path.write_text(json.dumps(conflist(network), indent=2))
    return path


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(list(command), capture_output=True, text=True)
    if check and completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {completed.stderr.strip()}")
    return completed


def _sysctl(key: str, value: str) -> None:
    Path("/proc/sys", *key.split(".")).write_text(value)


def ensure_bridge(network: PodNetwork) -> None:
    """Create the bridge with the gateway address before the first pod, so host services can
    bind and DNAT to it from the start."""
    if _run("ip", "link", "show", network.bridge, check=False).returncode != 0:
        _run("ip", "link", "add", network.bridge, "type", "bridge")
    address = f"{network.gateway}/{network.prefix_length}"
    shown = _run("ip", "-o", "addr", "show", "dev", network.bridge).stdout
    if address not in shown:
        _run("ip", "addr", "add", address, "dev", network.bridge)
    _run("ip", "link", "set", network.bridge, "up")
    # Forwarding between the bridge and the host's Service DNAT, and bridged packets through
    # iptables so kube-proxy's rules see pod-to-Service traffic.
    if not Path("/proc/sys/net/bridge").exists():
        if shutil.which("modprobe") is None:
            raise UserError("the br_netfilter kernel module is not loaded and modprobe is missing")
        _run("modprobe", "br_netfilter")
    _sysctl("net.ipv4.ip_forward", "1")
    _sysctl("net.bridge.bridge-nf-call-iptables", "1")
    _sysctl(f"net.ipv4.conf.{network.bridge}.route_localnet", "1")


def delete_bridge(network: PodNetwork) -> None:
    _run("ip", "link", "delete", network.bridge, check=False)
