"""Command lines and kubeconfigs of the local control plane (pure; nothing is started)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tfmaas.dev import cluster, pki, processes

PORTS = cluster.Ports(
    etcd_client=2379, etcd_peer=2380, apiserver=6443, controller_manager=10257, scheduler=10259
)


def _flags(args: list[str]) -> dict[str, str]:
    parsed = {}
    for arg in args:
        assert arg.startswith("--"), arg
        name, _, value = arg[2:].partition("=")
        assert name not in parsed, f"--{name} given twice"
        parsed[name] = value
    return parsed


def test_apiserver_listens_on_loopback_with_rbac_and_pod_security(tmp_path: Path) -> None:
    flags = _flags(cluster.apiserver_args(pki.Pki(tmp_path), PORTS, "10.96.0.0/16"))
    assert flags["bind-address"] == "127.0.0.1"
    assert flags["advertise-address"] == "127.0.0.1"
    assert flags["secure-port"] == "6443"
    assert flags["etcd-servers"] == "http://127.0.0.1:2379"
    assert flags["authorization-mode"] == "Node,RBAC"
    assert "PodSecurity" in flags["enable-admission-plugins"].split(",")
    assert flags["service-cluster-ip-range"] == "10.96.0.0/16"
    assert flags["service-account-signing-key-file"].endswith("sa.key")
    assert flags["service-account-key-file"].endswith("sa.pub")
    assert flags["service-account-issuer"] == cluster.SERVICE_ACCOUNT_ISSUER


def test_controller_manager_signs_tokens_and_runs_every_controller(tmp_path: Path) -> None:
    flags = _flags(
        cluster.controller_manager_args(
            pki.Pki(tmp_path), PORTS, tmp_path / "cm.kubeconfig", tmp_path / "certs", "10.96.0.0/16"
        )
    )
    assert flags["controllers"] == "*"
    assert flags["use-service-account-credentials"] == "true"
    assert flags["leader-elect"] == "false"
    assert flags["root-ca-file"].endswith("ca.crt")
    assert flags["service-account-private-key-file"].endswith("sa.key")
    assert flags["bind-address"] == "127.0.0.1" and flags["secure-port"] == "10257"


def test_scheduler_uses_its_own_kubeconfig(tmp_path: Path) -> None:
    flags = _flags(cluster.scheduler_args(PORTS, tmp_path / "s.kubeconfig", tmp_path / "c"))
    assert flags["kubeconfig"] == str(tmp_path / "s.kubeconfig")
    assert flags["secure-port"] == "10259" and flags["leader-elect"] == "false"


def test_etcd_is_a_single_loopback_member(tmp_path: Path) -> None:
    flags = _flags(cluster.etcd_args(tmp_path / "etcd", PORTS))
    assert flags["listen-client-urls"] == "http://127.0.0.1:2379"
    assert flags["initial-cluster"] == "tfmaas=http://127.0.0.1:2380"
    assert flags["data-dir"] == str(tmp_path / "etcd")


def test_kubeconfig_embeds_ca_and_credentials() -> None:
    config = cluster.kubeconfig(
        server="https://127.0.0.1:6443",
        ca_pem=b"CA",
        user="u",
        credentials={"token": "t", "as": "system:serviceaccount:ns:op"},
    )
    assert config["current-context"] == "u"
    entry = config["clusters"][0]["cluster"]
    assert base64.b64decode(entry["certificate-authority-data"]) == b"CA"
    assert entry["server"] == "https://127.0.0.1:6443"
    assert config["users"][0]["user"] == {"token": "t", "as": "system:serviceaccount:ns:op"}


def test_service_account_identity() -> None:
    assert cluster.service_account_user("tfmaas-system", "op") == (
        "system:serviceaccount:tfmaas-system:op"
    )
    assert "system:serviceaccounts:tfmaas-system" in cluster.service_account_groups("tfmaas-system")


def test_picked_ports_are_distinct() -> None:
    ports = cluster.Ports.pick()
    values = [ports.etcd_client, ports.etcd_peer, ports.apiserver]
    values += [ports.controller_manager, ports.scheduler]
    assert len(set(values)) == 5


def test_kubectl_error_carries_stderr() -> None:
    error = cluster.KubectlError(1, ["kubectl", "apply"], "", "field is immutable")
    assert "field is immutable" in str(error)


def test_wait_until_reports_a_process_that_died(tmp_path: Path) -> None:
    process = processes.start(
        "quitter", ["sh", "-c", "echo boom; exit 3"], log_path=tmp_path / "q.log"
    )
    with pytest.raises(RuntimeError, match=r"quitter exited with status 3(.|\n)*boom"):
        processes.wait_until(lambda: False, timeout=10, what="never", processes=[process])


def test_stop_takes_the_whole_process_group(tmp_path: Path) -> None:
    # A shell whose child ignores nothing: stopping the leader must not orphan the child.
    pid_file = tmp_path / "child.pid"
    process = processes.start(
        "parent",
        ["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"],
        log_path=tmp_path / "p.log",
    )
    processes.wait_until(pid_file.exists, timeout=10, what="the child pid")
    processes.wait_until(lambda: pid_file.read_text().strip() != "", timeout=10, what="pid")
    child = int(pid_file.read_text())
    process.stop(grace_seconds=5)
    processes.wait_until(
        lambda: processes.rss_kib(child) is None or _is_zombie(child), timeout=10, what="exit"
    )


def _is_zombie(pid: int) -> bool:
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


def test_children_die_when_their_parent_is_killed(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    pid_file = tmp_path / "server.pid"
    script = (
        "import sys, time; from pathlib import Path; from tfmaas.dev import processes\n"
        f"log = Path({str(tmp_path)!r}) / 's.log'\n"
        "p = processes.start('server', ['sleep', '60'], log_path=log)\n"
        f"Path({str(pid_file)!r}).write_text(str(p.pid)); time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        processes.wait_until(
            lambda: pid_file.exists() and pid_file.read_text() != "", timeout=20, what="start"
        )
        server = int(pid_file.read_text())
        assert processes.rss_kib(server) is not None
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        processes.wait_until(
            lambda: processes.rss_kib(server) is None or _is_zombie(server),
            timeout=10,
            what="the orphaned server to die",
        )
    finally:
        parent.kill()
        parent.wait()


def test_port_is_free_sees_a_listener() -> None:
    import socket

    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not processes.port_is_free(port)
    assert processes.port_is_free(port)


def test_extra_args_only_for_known_components(tmp_path: Path) -> None:
    flags = ["--horizontal-pod-autoscaler-sync-period=2s"]
    local = cluster.LocalCluster(tmp_path, extra_args={"kube-controller-manager": flags})
    assert local.extra_args == {"kube-controller-manager": flags}
    with pytest.raises(ValueError, match="kubelet"):
        cluster.LocalCluster(tmp_path, extra_args={"kubelet": ["--v=2"]})
