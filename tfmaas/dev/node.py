"""A real node for the local control plane: containerd, kubelet, kube-proxy and cluster DNS.

Pods on it really run: containerd (Debian's, private instance) starts their containers with
runc, a bridge gives them addresses on a private subnet that never routes off the machine,
kube-proxy (iptables mode) implements Services, and CoreDNS answers `*.svc.cluster.local`.
Images are never pulled: they are built here (`tfmaas.dev.images`) and imported.

Needs root, cgroup v1 or v2 mounted read-write, and the packages of .ci/install-node-packages.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tfmaas.dev import cni, images, pki, processes, tools
from tfmaas.dev.containerd import Containerd, ContainerdPaths
from tfmaas.errors import UserError

if TYPE_CHECKING:
    from tfmaas.dev.cluster import LocalCluster

DEFAULT_NODE_NAME = "tfmaas-node"
DEFAULT_POD_CIDR = "10.244.0.0/24"
DEFAULT_BRIDGE = "tfmaas0"
GPU_RESOURCE = "nvidia.com/gpu"
RUN_ROOT = Path("/run/tfmaas-node")


def default_node_address(pod_cidr: str = DEFAULT_POD_CIDR) -> str:
    """The address a node on `pod_cidr` will have: give it to `LocalCluster(advertise_address=)`
    so the `kubernetes` Service points at the node's relay of the API server."""
    return str(ipaddress.ip_network(pod_cidr).network_address + 1)


def kubelet_config(
    *,
    address: str,
    port: int,
    healthz_port: int,
    ca_file: Path,
    tls_cert: Path,
    tls_key: Path,
    runtime_endpoint: str,
    cluster_dns: str,
    resolv_conf: Path,
    pod_logs_dir: Path,
) -> dict[str, Any]:
    """KubeletConfiguration for a sandboxed node (cgroupfs, cgroup v1 tolerated, no image GC)."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": address,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(tls_cert),
        "tlsPrivateKeyFile": str(tls_key),
        "containerRuntimeEndpoint": runtime_endpoint,
        "cgroupDriver": "cgroupfs",
        # The machines this runs on mount cgroup v1; 1.35 refuses it unless told otherwise.
        "failCgroupV1": False,
        "failSwapOn": False,
        # Lowering an OOM score needs CAP_SYS_RESOURCE, which sandboxed machines often lack.
        "oomScoreAdj": 0,
        # Images cannot be pulled again here, so the kubelet must never delete one.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # A shared development disk is often fuller than a node's; evict on real shortage only.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "clusterDNS": [cluster_dns],
        "clusterDomain": pki.CLUSTER_DOMAIN,
        "resolvConf": str(resolv_conf),
        "podLogsDir": str(pod_logs_dir),
        "serializeImagePulls": False,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "maxPods": 110,
        "nodeStatusReportFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
    }


def kube_proxy_config(
    *,
    kubeconfig: Path,
    node_name: str,
    pod_cidr: str,
    node_address: str,
    healthz_port: int,
    metrics_port: int,
) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "hostnameOverride": node_name,
        "clusterCIDR": pod_cidr,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        # NodePorts open on the bridge only, never on the machine's outside interfaces.
        "nodePortAddresses": [f"{node_address}/32"],
        # Leave the host's conntrack table size alone.
        "conntrack": {"maxPerCore": 0, "min": 0},
        "iptables": {"localhostNodePorts": False},
        "oomScoreAdj": 0,
    }


def corefile(*, bind: str, kubeconfig: Path, ready_port: int) -> str:
    """Cluster DNS only: names outside cluster.local get no answer, as nothing routes out."""
    return f"""\
.:53 {{
    bind {bind}
    errors
    ready 127.0.0.1:{ready_port}
    kubernetes {pki.CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
"""


def _load_ca(cluster_pki: pki.Pki) -> pki.CertificateAuthority:
    certificate = x509.load_pem_x509_certificate(cluster_pki.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(cluster_pki.key("ca").read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise RuntimeError("the cluster CA key is not an EC key; tfmaas.dev.pki writes EC keys")
    return pki.CertificateAuthority(certificate, key)


def _write_yaml(path: Path, document: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def check_prerequisites() -> None:
    """Fail early, saying how to fix it, when this machine cannot run a node."""
    if os.geteuid() != 0:
        raise UserError("a local node needs root (it runs containerd, kubelet and iptables)")
    missing = [p for p in ("containerd", "runc", "ctr", "iptables", "ip") if not shutil.which(p)]
    if not (Path(cni.__file__).exists() and Path("/usr/lib/cni/bridge").exists()):
        missing.append("containernetworking-plugins")
    if missing:
        raise UserError(
            f"missing for the local node: {', '.join(missing)}; run .ci/install-node-packages"
        )


class LocalNode:
    """One node joined to a `LocalCluster`; state and logs live in `directory`."""

    def __init__(
        self,
        cluster: LocalCluster,
        directory: Path | None = None,
        *,
        name: str = DEFAULT_NODE_NAME,
        pod_cidr: str = DEFAULT_POD_CIDR,
        bridge: str = DEFAULT_BRIDGE,
        gpus: int = 1,
    ) -> None:
        self.cluster = cluster
        self.directory = Path(directory or cluster.directory / "node").resolve()
        self.name = name
        self.gpus = gpus
        digest = hashlib.sha256(str(self.directory).encode()).hexdigest()[:10]
        self.run_directory = RUN_ROOT / digest
        self.network = cni.PodNetwork(
            bridge=bridge, pod_cidr=pod_cidr, ipam_data_dir=self.run_directory / "ipam"
        )
        self.logs_dir = self.directory / "logs"
        self.pod_logs_dir = self.directory / "pod-logs"
        self.containerd = Containerd(
            ContainerdPaths.under(self.directory / "containerd", self.run_directory),
            self.logs_dir,
        )
        self._processes: dict[str, processes.ManagedProcess] = {}
        self.kubelet_port = processes.free_port()
        self.startup_seconds: float | None = None

    @property
    def address(self) -> str:
        """The node's InternalIP: the bridge gateway, reachable from the host and from pods."""
        return self.network.gateway

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 240.0) -> None:
        check_prerequisites()
        started = time.monotonic()
        kubelet = tools.ensure("kubelet")
        kube_proxy = tools.ensure("kube-proxy")
        coredns = tools.ensure("coredns")
        pause = images.pause_image()
        try:
            self._prepare_host()
            if self.cluster.advertise_address == self.address:
                self.expose_host_port(self.cluster.ports.apiserver)
            self.containerd.start(sandbox_image=pause.reference)
            images.import_into_containerd(pause, address=str(self.containerd.paths.socket))
            self._start_kubelet(kubelet)
            self._wait_node_ready(timeout)
            self.advertise_gpus(self.gpus)
            self._start_kube_proxy(kube_proxy)
            self._start_coredns(coredns)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def _prepare_host(self) -> None:
        # A previous run killed before its teardown leaves shims (and their containers).
        _kill_shims_of(self.containerd.paths.socket)
        # Volume mounts made by the kubelet must propagate into containers.
        subprocess.run(["mount", "--make-rshared", "/"], check=True)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.run_directory.mkdir(parents=True, exist_ok=True)
        cni.ensure_bridge(self.network)
        cni.write_conflist(self.network, self.containerd.paths.cni_conf_dir)

    def issue_certificate(self, stem: str, request: pki.CertRequest) -> tuple[Path, Path]:
        """A certificate from the cluster's CA, written under the node's pki/ folder."""
        ca = _load_ca(self.cluster.pki)
        certificate, key = ca.issue(request)
        cert_path = self.directory / "pki" / f"{stem}.crt"
        key_path = self.directory / "pki" / f"{stem}.key"
        cert_path.parent.mkdir(parents=True, exist_ok=True)
        cert_path.write_bytes(pki.certificate_pem(certificate))
        key_path.write_bytes(pki.private_key_pem(key))
        key_path.chmod(0o600)
        return cert_path, key_path

    def _client_kubeconfig(self, stem: str, request: pki.CertRequest) -> Path:
        from tfmaas.dev.cluster import client_cert_credentials, kubeconfig

        cert_path, key_path = self.issue_certificate(stem, request)
        config = kubeconfig(
            server=self.cluster.server,
            ca_pem=self.cluster.pki.ca_cert.read_bytes(),
            user=request.common_name,
            credentials=client_cert_credentials(cert_path.read_bytes(), key_path.read_bytes()),
        )
        return _write_yaml(self.directory / f"{stem}.kubeconfig", config)

    def _launch(self, name: str, args: list[str]) -> processes.ManagedProcess:
        process = processes.start(name, args, log_path=self.logs_dir / f"{name}.log")
        self._processes[name] = process
        return process

    def _start_kubelet(self, binary: Path) -> None:
        kubeconfig = self._client_kubeconfig(
            "kubelet",
            pki.CertRequest(
                f"system:node:{self.name}", organizations=("system:nodes",), client=True
            ),
        )
        serving_cert, serving_key = self.issue_certificate(
            "kubelet-serving",
            pki.CertRequest(
                f"system:node:{self.name}",
                dns_names=(self.name, "localhost"),
                ip_addresses=(self.address, "127.0.0.1"),
                server=True,
            ),
        )
        # Pods resolve cluster names only; nothing outside the machine answers anyway.
        resolv_conf = self.directory / "resolv.conf"
        resolv_conf.write_text("")
        config = kubelet_config(
            address=self.address,
            port=self.kubelet_port,
            healthz_port=processes.free_port(),
            ca_file=self.cluster.pki.ca_cert,
            tls_cert=serving_cert,
            tls_key=serving_key,
            runtime_endpoint=self.containerd.endpoint,
            cluster_dns=self.address,
            resolv_conf=resolv_conf,
            pod_logs_dir=self.pod_logs_dir,
        )
        config_path = _write_yaml(self.directory / "kubelet-config.yaml", config)
        self._launch(
            "kubelet",
            [
                str(binary),
                f"--config={config_path}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.directory / 'kubelet'}",
                f"--cert-dir={self.directory / 'pki'}",
                f"--hostname-override={self.name}",
                f"--node-ip={self.address}",
                "--v=1",
            ],
        )

    def _node(self) -> dict[str, Any] | None:
        completed = self.cluster.kubectl("get", "node", self.name, "-o", "json", check=False)
        return json.loads(completed.stdout) if completed.returncode == 0 else None

    def ready(self) -> bool:
        node = self._node()
        if node is None:
            return False
        conditions = node.get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _wait_node_ready(self, timeout: float) -> None:
        processes.wait_until(
            self.ready,
            timeout=timeout,
            what=f"node {self.name} to be Ready",
            processes=[self.containerd.process, *self._processes.values()]
            if self.containerd.process
            else list(self._processes.values()),
            interval=1.0,
        )

    def advertise_gpus(self, count: int) -> None:
        """Patch an extended `nvidia.com/gpu` capacity into the node's status, as a device
        plugin would, so GPU-requesting Jobs schedule here (their containers get no GPU)."""
        if count <= 0:
            return
        path = "/status/capacity/" + GPU_RESOURCE.replace("/", "~1")
        patch = [{"op": "add", "path": path, "value": str(count)}]
        self.cluster.kubectl(
            "patch",
            "node",
            self.name,
            "--subresource=status",
            "--type=json",
            "-p",
            json.dumps(patch),
        )

    def _start_kube_proxy(self, binary: Path) -> None:
        kubeconfig = self._client_kubeconfig(
            "kube-proxy", pki.CertRequest("system:kube-proxy", client=True)
        )
        config = kube_proxy_config(
            kubeconfig=kubeconfig,
            node_name=self.name,
            pod_cidr=self.network.pod_cidr,
            node_address=self.address,
            healthz_port=processes.free_port(),
            metrics_port=processes.free_port(),
        )
        config_path = _write_yaml(self.directory / "kube-proxy-config.yaml", config)
        self._launch("kube-proxy", [str(binary), f"--config={config_path}", "--v=1"])

    def _start_coredns(self, binary: Path) -> None:
        ready_port = processes.free_port()
        conf = self.directory / "Corefile"
        conf.write_text(
            corefile(bind=self.address, kubeconfig=self.cluster.kubeconfig, ready_port=ready_port)
        )
        process = self._launch("coredns", [str(binary), "-conf", str(conf)])
        processes.wait_until(
            lambda: processes.http_ok(f"http://127.0.0.1:{ready_port}/ready"),
            timeout=60,
            what="CoreDNS to be ready",
            processes=[process],
        )

    def expose_host_port(self, port: int) -> str:
        """`host:port` at which pods reach a host service that listens on 127.0.0.1:port.

        A relay rather than a DNAT, because traffic that kube-proxy already DNATed to a
        Service endpoint is not NATed again; so a selector-less Service can point at it too.
        """
        name = f"relay-{port}"
        if name not in self._processes:
            socat = shutil.which("socat")
            if socat is None:
                raise UserError("socat is not installed; run .ci/install-node-packages")
            listen = f"TCP-LISTEN:{port},bind={self.address},fork,reuseaddr"
            self._launch(name, [socat, listen, f"TCP:127.0.0.1:{port}"])
            processes.wait_until(
                lambda: _port_open(self.address, port),
                timeout=10,
                what=f"the relay of port {port}",
                processes=[self._processes[name]],
            )
        return f"{self.address}:{port}"

    def import_image(self, image: images.BuiltImage) -> None:
        images.import_into_containerd(image, address=str(self.containerd.paths.socket))

    def stop(self) -> None:
        for name in ("coredns", "kube-proxy", "kubelet", *self._processes):
            process = self._processes.pop(name, None)
            if process is not None:
                process.stop()
        self.containerd.stop()
        _kill_shims_of(self.containerd.paths.socket)
        with contextlib.suppress(Exception):
            kube_proxy = tools.binary_path("kube-proxy")
            if kube_proxy.exists():
                subprocess.run(
                    [str(kube_proxy), "--cleanup"], capture_output=True, timeout=60, check=False
                )
        _remove_kubelet_chains()
        _remove_container_log_links(self.pod_logs_dir)
        _unmount_under(self.directory, self.run_directory)
        cni.delete_bridge(self.network)
        shutil.rmtree(self.run_directory, ignore_errors=True)
        # Unpacked images are gigabytes per run; the archives stay cached for the next node.
        shutil.rmtree(self.containerd.paths.root, ignore_errors=True)
        shutil.rmtree(self.directory / "kubelet", ignore_errors=True)

    def __enter__(self) -> LocalNode:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def running(self) -> dict[str, bool]:
        state = {name: p.running() for name, p in self._processes.items()}
        if self.containerd.process is not None:
            state["containerd"] = self.containerd.process.running()
        return state


def _kill_shims_of(socket_path: Path) -> None:
    """SIGKILL the containerd shims serving `socket_path`, with the containers they run.

    Shims outlive containerd by design; these belong to this node's private instance only.
    """
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0].endswith(b"containerd-shim-runc-v2"):
            continue
        if str(socket_path).encode() not in argv:
            continue
        shim = int(proc.name)
        children = subprocess.run(
            ["pgrep", "-P", str(shim)], capture_output=True, text=True, check=False
        ).stdout.split()
        for pid in [*map(int, children), shim]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _remove_container_log_links(pod_logs_dir: Path) -> None:
    """The kubelet links every container log into the fixed /var/log/containers; drop ours."""
    links = Path("/var/log/containers")
    if not links.is_dir():
        return
    for link in links.iterdir():
        with contextlib.suppress(OSError):
            if link.is_symlink() and str(link.readlink()).startswith(str(pod_logs_dir)):
                link.unlink()


def _remove_kubelet_chains() -> None:
    """The kubelet's own iptables chains, which `kube-proxy --cleanup` leaves behind."""

    def iptables(*args: str) -> None:
        subprocess.run(["iptables", *args], capture_output=True, check=False)

    for chain in ("INPUT", "OUTPUT"):
        iptables("-D", chain, "-j", "KUBE-FIREWALL")
    iptables("-F", "KUBE-FIREWALL")
    iptables("-X", "KUBE-FIREWALL")
    for table in ("nat", "filter", "mangle"):
        iptables("-t", table, "-X", "KUBE-KUBELET-CANARY")
        iptables("-t", table, "-X", "KUBE-IPTABLES-HINT")


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((host, port)) == 0


def _unmount_under(*roots: Path) -> None:
    """Lazily unmount everything the kubelet and containerd mounted below the node's dirs,
    deepest first, so the directories can be removed and nothing stays pinned."""
    prefixes = tuple(str(root) for root in roots)
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split()[4].replace("\\040", " ")
        if mount_point.startswith(prefixes):
            mounts.append(mount_point)
    for mount_point in sorted(set(mounts), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount_point], capture_output=True, check=False)
