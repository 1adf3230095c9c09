"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler, built from their upstream Go modules (see `tfmaas.dev.tools`).

It has no node, so nothing runs a pod's containers; everything else is the real thing: RBAC,
admission (Pod Security included), the structural-schema checks of CRDs, garbage collection,
and the Deployment, ReplicaSet, Job and HPA controllers. Tests that need a pod to "run" act as
the kubelet by patching its status.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import os
import shutil
import ssl
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tfmaas.dev import pki as pki_module
from tfmaas.dev import processes, tools
from tfmaas.timestamps import now_rfc3339

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
ADMISSION_PLUGINS = ("NodeRestriction", "PodSecurity")
PORT_ATTEMPTS = 3


class KubectlError(subprocess.CalledProcessError):
    """kubectl exited non-zero; str() carries its stderr so a failing test says why."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr or ''}".rstrip()


@dataclasses.dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int

    @classmethod
    def pick(cls) -> Ports:
        chosen: list[int] = []
        while len(chosen) < 5:
            port = processes.free_port()
            if port not in chosen:
                chosen.append(port)
        return cls(*chosen)

    def all_free(self) -> bool:
        return all(processes.port_is_free(port) for port in dataclasses.astuple(self))


def kubeconfig(
    *,
    server: str,
    ca_pem: bytes,
    user: str,
    credentials: Mapping[str, Any],
    cluster_name: str = "tfmaas-local",
) -> dict[str, Any]:
    """A one-context kubeconfig; certificates are embedded so the file works anywhere."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster_name,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": dict(credentials)}],
        "contexts": [{"name": user, "context": {"cluster": cluster_name, "user": user}}],
        "current-context": user,
        "preferences": {},
    }


def client_cert_credentials(cert_pem: bytes, key_pem: bytes) -> dict[str, str]:
    return {
        "client-certificate-data": base64.b64encode(cert_pem).decode(),
        "client-key-data": base64.b64encode(key_pem).decode(),
    }


def service_account_user(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def service_account_groups(namespace: str) -> list[str]:
    return ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"]


def etcd_args(data_dir: Path, ports: Ports) -> list[str]:
    client = f"http://127.0.0.1:{ports.etcd_client}"
    peer = f"http://127.0.0.1:{ports.etcd_peer}"
    return [
        "--name=tfmaas",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=tfmaas={peer}",
        # A throwaway test store: durability on power loss is worth nothing, speed is.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def apiserver_args(
    pki: pki_module.Pki, ports: Ports, service_cidr: str, advertise_address: str = "127.0.0.1"
) -> list[str]:
    return [
        f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
        "--bind-address=127.0.0.1",
        # The `kubernetes` Service's endpoint. Loopback cannot be one (EndpointSlices refuse it),
        # so a cluster with a node advertises the node's bridge address, relayed to loopback.
        f"--advertise-address={advertise_address}",
        f"--secure-port={ports.apiserver}",
        f"--tls-cert-file={pki.cert('apiserver')}",
        f"--tls-private-key-file={pki.key('apiserver')}",
        f"--client-ca-file={pki.ca_cert}",
        f"--service-cluster-ip-range={service_cidr}",
        "--authorization-mode=Node,RBAC",
        f"--enable-admission-plugins={','.join(ADMISSION_PLUGINS)}",
        # Privileged pods must be refused by Pod Security per namespace, not cluster-wide.
        "--allow-privileged=true",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki.service_account_public_key}",
        f"--service-account-signing-key-file={pki.service_account_key}",
        # A local node's name resolves nowhere; its InternalIP is the bridge address.
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        f"--kubelet-client-certificate={pki.cert('apiserver-kubelet-client')}",
        f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
        # The aggregation layer, so prometheus-adapter can serve custom.metrics.k8s.io.
        f"--requestheader-client-ca-file={pki.cert('front-proxy-ca')}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki.cert('front-proxy-client')}",
        f"--proxy-client-key-file={pki.key('front-proxy-client')}",
        # No kube-proxy routes ClusterIPs here; reach aggregated APIs at their endpoints.
        "--enable-aggregator-routing=true",
        "--profiling=false",
    ]


def controller_manager_args(
    pki: pki_module.Pki, ports: Ports, kubeconfig_path: Path, cert_dir: Path, service_cidr: str
) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig_path}",
        f"--authentication-kubeconfig={kubeconfig_path}",
        f"--authorization-kubeconfig={kubeconfig_path}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.controller_manager}",
        f"--cert-dir={cert_dir}",
        "--controllers=*",
        "--use-service-account-credentials=true",
        f"--root-ca-file={pki.ca_cert}",
        f"--service-account-private-key-file={pki.service_account_key}",
        f"--cluster-signing-cert-file={pki.ca_cert}",
        f"--cluster-signing-key-file={pki.key('ca')}",
        f"--service-cluster-ip-range={service_cidr}",
        "--allocate-node-cidrs=false",
        "--leader-elect=false",
        "--profiling=false",
    ]


def scheduler_args(ports: Ports, kubeconfig_path: Path, cert_dir: Path) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig_path}",
        f"--authentication-kubeconfig={kubeconfig_path}",
        f"--authorization-kubeconfig={kubeconfig_path}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.scheduler}",
        f"--cert-dir={cert_dir}",
        "--leader-elect=false",
        "--profiling=false",
    ]


class LocalCluster:
    """One control plane whose state (certificates, etcd data, logs) lives in `directory`.

    Usage: `with LocalCluster(tmp_path) as cluster: cluster.kubectl("get", "ns")`.
    """

    def __init__(
        self,
        directory: Path,
        *,
        service_cidr: str = pki_module.DEFAULT_SERVICE_CIDR,
        binaries: Mapping[str, Path] | None = None,
        extra_args: Mapping[str, Sequence[str]] | None = None,
        ports: Ports | None = None,
        advertise_address: str = "127.0.0.1",
    ) -> None:
        self.directory = Path(directory).resolve()
        self.service_cidr = service_cidr
        self.advertise_address = advertise_address
        self._binaries = dict(binaries or {})
        # Per component, appended last so they override: e.g. a faster HPA sync period.
        self.extra_args = {name: list(args) for name, args in (extra_args or {}).items()}
        unknown = set(self.extra_args) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"extra_args for unknown components {sorted(unknown)}")
        self._ports_fixed = ports is not None
        self.ports = ports or Ports.pick()
        self.pki = pki_module.Pki(self.directory / "pki")
        self.kubeconfig = self.directory / "admin.kubeconfig"
        self.logs_dir = self.directory / "logs"
        self.startup_seconds: float | None = None
        self._processes: dict[str, processes.ManagedProcess] = {}

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @property
    def components(self) -> Mapping[str, processes.ManagedProcess]:
        return dict(self._processes)

    def binary(self, name: str) -> Path:
        if name not in self._binaries:
            self._binaries[name] = tools.ensure(name)
        return self._binaries[name]

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> None:
        started = time.monotonic()
        for name in (*COMPONENTS, "kubectl"):
            self.binary(name)
        self.directory.mkdir(parents=True, exist_ok=True)
        pki_module.generate(self.pki.root, service_cidr=self.service_cidr)
        fresh_store = not (self.directory / "etcd").exists()
        for attempt in range(PORT_ATTEMPTS):
            self._write_component_kubeconfigs()
            try:
                self._start_components(timeout)
                break
            except RuntimeError as exc:
                self.stop()
                # A free port can be taken by someone else between picking and listening.
                if self._ports_fixed or attempt + 1 == PORT_ATTEMPTS or not _port_clash(exc):
                    raise
                if fresh_store:
                    shutil.rmtree(self.directory / "etcd", ignore_errors=True)
                self.ports = Ports.pick()
            except BaseException:
                self.stop()
                raise
        self.startup_seconds = time.monotonic() - started

    def _start_components(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(1.0, deadline - time.monotonic())

        etcd = self._launch("etcd", etcd_args(self.directory / "etcd", self.ports))
        processes.wait_until(
            lambda: processes.http_ok(f"http://127.0.0.1:{self.ports.etcd_client}/health"),
            timeout=left(),
            what="etcd to be healthy",
            processes=[etcd],
        )
        apiserver = self._launch(
            "kube-apiserver",
            apiserver_args(self.pki, self.ports, self.service_cidr, self.advertise_address),
        )
        admin_context = self.admin_ssl_context()
        processes.wait_until(
            lambda: processes.http_ok(f"{self.server}/readyz", admin_context),
            timeout=left(),
            what="kube-apiserver /readyz",
            processes=[etcd, apiserver],
        )
        controller_manager = self._launch(
            "kube-controller-manager",
            controller_manager_args(
                self.pki,
                self.ports,
                self.directory / "controller-manager.kubeconfig",
                self.directory / "serving-certs",
                self.service_cidr,
            ),
        )
        scheduler = self._launch(
            "kube-scheduler",
            scheduler_args(
                self.ports,
                self.directory / "scheduler.kubeconfig",
                self.directory / "serving-certs",
            ),
        )
        everything = [etcd, apiserver, controller_manager, scheduler]
        # Their /healthz is open to anonymous callers; their serving certs are self-signed.
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        for name, port in (
            ("kube-controller-manager", self.ports.controller_manager),
            ("kube-scheduler", self.ports.scheduler),
        ):
            processes.wait_until(
                functools.partial(processes.http_ok, f"https://127.0.0.1:{port}/healthz", insecure),
                timeout=left(),
                what=f"{name} /healthz",
                processes=everything,
            )
        # Workloads need the default ServiceAccount, which the controller-manager creates.
        processes.wait_until(
            lambda: processes.http_ok(
                f"{self.server}/api/v1/namespaces/default/serviceaccounts/default", admin_context
            ),
            timeout=left(),
            what="the default ServiceAccount",
            processes=everything,
        )

    def _launch(self, name: str, args: Sequence[str]) -> processes.ManagedProcess:
        process = processes.start(
            name,
            [str(self.binary(name)), *args, *self.extra_args.get(name, ())],
            log_path=self.logs_dir / f"{name}.log",
            env=_component_env(),
            cwd=self.directory,
        )
        self._processes[name] = process
        return process

    def stop(self) -> None:
        # Reverse order: controllers first, etcd last, so nothing logs a storm of lost connections.
        for name in reversed(list(self._processes)):
            self._processes[name].stop()
        self._processes.clear()

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def running(self) -> dict[str, bool]:
        return {name: process.running() for name, process in self._processes.items()}

    def rss_kib(self) -> dict[str, int | None]:
        return {name: processes.rss_kib(p.pid) for name, p in self._processes.items()}

    # -- credentials -----------------------------------------------------------------------

    def admin_ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(str(self.pki.cert("admin")), str(self.pki.key("admin")))
        return context

    def _client_kubeconfig(self, pki_name: str, user: str, **extra: Any) -> dict[str, Any]:
        credentials: dict[str, Any] = client_cert_credentials(
            self.pki.cert(pki_name).read_bytes(), self.pki.key(pki_name).read_bytes()
        )
        credentials.update(extra)
        return kubeconfig(
            server=self.server,
            ca_pem=self.pki.ca_cert.read_bytes(),
            user=user,
            credentials=credentials,
        )

    def _write_component_kubeconfigs(self) -> None:
        _write_yaml(self.kubeconfig, self._client_kubeconfig("admin", "admin"))
        _write_yaml(
            self.directory / "controller-manager.kubeconfig",
            self._client_kubeconfig("controller-manager", "system:kube-controller-manager"),
        )
        _write_yaml(
            self.directory / "scheduler.kubeconfig",
            self._client_kubeconfig("scheduler", "system:kube-scheduler"),
        )

    def impersonating_kubeconfig(
        self, user: str, groups: Sequence[str] = (), *, path: Path | None = None
    ) -> Path:
        """A kubeconfig that acts as `user`/`groups` through the admin's impersonation right.

        kubectl and client-go honour it; Python clients that ignore `as` should use
        `kubeconfig_for_service_account` instead.
        """
        safe = user.replace(":", "-")
        target = path or self.directory / "kubeconfigs" / f"as-{safe}.kubeconfig"
        extra: dict[str, Any] = {"as": user}
        if groups:
            extra["as-groups"] = list(groups)
        _write_yaml(target, self._client_kubeconfig("admin", user, **extra))
        return target

    def kubeconfig_for_service_account(
        self, namespace: str, name: str, *, duration: str = "24h", path: Path | None = None
    ) -> Path:
        """A kubeconfig holding a real token of ServiceAccount `namespace/name` (TokenRequest),
        so any client is held to exactly that ServiceAccount's RBAC. The account must exist."""
        token = self.kubectl(
            "create", "token", name, "-n", namespace, f"--duration={duration}"
        ).stdout.strip()
        target = path or self.directory / "kubeconfigs" / f"sa-{namespace}-{name}.kubeconfig"
        config = kubeconfig(
            server=self.server,
            ca_pem=self.pki.ca_cert.read_bytes(),
            user=service_account_user(namespace, name),
            credentials={"token": token},
        )
        _write_yaml(target, config)
        return target

    # -- kubectl ---------------------------------------------------------------------------

    def kubectl_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        # Discovery caches are keyed by host:port; a fresh cluster per run would pile them up.
        env["KUBECACHEDIR"] = str(self.directory / "kubectl-cache")
        return env

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120.0,
        kubeconfig_path: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster as admin (or as `kubeconfig_path`'s user).

        Raises `KubectlError` (with kubectl's stderr) on failure unless `check=False`.
        """
        env = self.kubectl_env()
        if kubeconfig_path is not None:
            env["KUBECONFIG"] = str(kubeconfig_path)
        completed = subprocess.run(
            [str(self.binary("kubectl")), *args],
            input=input,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if check and completed.returncode != 0:
            raise KubectlError(
                completed.returncode, completed.args, completed.stdout, completed.stderr
            )
        return completed

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def env(self) -> dict[str, str]:
        return {"KUBECONFIG": str(self.kubeconfig)}

    # -- acting as the kubelet (there is no node that runs containers) ---------------------

    def register_fake_node(
        self, name: str, *, cpu: str = "8", memory: str = "32Gi", gpus: int = 0
    ) -> None:
        """A Ready Node the scheduler can bind pods to; nothing ever runs them.

        Pods bound to it stay Pending until a test moves them on with `finish_pod` or
        `mark_pod_ready`. Its heartbeat is never renewed, so after the node-monitor grace
        period (about a minute) the node lifecycle controller marks it unreachable; register
        it right before use. `gpus` advertises that many `nvidia.com/gpu`, as a device plugin
        would.
        """
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(node))
        now = now_rfc3339()
        capacity = {"cpu": cpu, "memory": memory, "pods": "110"}
        if gpus:
            capacity["nvidia.com/gpu"] = str(gpus)
        status = {
            "status": {
                "capacity": capacity,
                "allocatable": capacity,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "fake node registered by the test harness",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ],
            }
        }
        self.kubectl(
            "patch", "node", name, "--subresource=status", "--type=merge", "-p", json.dumps(status)
        )

    def finish_pod(
        self,
        namespace: str,
        name: str,
        *,
        succeeded: bool = True,
        termination_message: str = "",
        exit_code: int | None = None,
        conditions: list[dict[str, Any]] | None = None,
    ) -> None:
        """Report the pod's containers as terminated (exit 0 or 1, or `exit_code`), as its
        kubelet would; `conditions` adds pod conditions (DisruptionTarget of an evicted pod)."""
        pod = self.kubectl_json("get", "pod", name, "-n", namespace)
        now = now_rfc3339()
        terminated = {
            "terminated": {
                "exitCode": exit_code if exit_code is not None else (0 if succeeded else 1),
                "reason": "Completed" if succeeded else "Error",
                "message": termination_message,
                "startedAt": now,
                "finishedAt": now,
            }
        }
        status = {
            "phase": "Succeeded" if succeeded else "Failed",
            "startTime": now,
            "containerStatuses": [
                _container_status(container, terminated, ready=False, started=False)
                for container in pod["spec"]["containers"]
            ],
        }
        if conditions:
            status["conditions"] = [{"lastTransitionTime": now, **c} for c in conditions]
        self._patch_pod_status(namespace, name, status)

    def mark_pod_ready(self, namespace: str, name: str) -> None:
        """Report the pod's init containers done and its containers running and ready, as its
        kubelet would."""
        pod = self.kubectl_json("get", "pod", name, "-n", namespace)
        now = now_rfc3339()
        completed = {
            "terminated": {
                "exitCode": 0,
                "reason": "Completed",
                "startedAt": now,
                "finishedAt": now,
            }
        }
        running = {"running": {"startedAt": now}}
        status = {
            "phase": "Running",
            "startTime": now,
            "conditions": [
                {"type": kind, "status": "True", "lastTransitionTime": now}
                for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
            ],
            "initContainerStatuses": [
                _container_status(container, completed, ready=True)
                for container in pod["spec"].get("initContainers", [])
            ],
            "containerStatuses": [
                _container_status(container, running, ready=True, started=True)
                for container in pod["spec"]["containers"]
            ],
        }
        self._patch_pod_status(namespace, name, status)

    def _patch_pod_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.kubectl(
            "patch",
            "pod",
            name,
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
        )


def _container_status(
    container: Mapping[str, Any],
    state: Mapping[str, Any],
    *,
    ready: bool,
    started: bool | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": "",
        "ready": ready,
        "restartCount": 0,
        "state": state,
    }
    if started is not None:
        status["started"] = started
    return status


def _port_clash(error: Exception) -> bool:
    return "address already in use" in str(error)


def _component_env() -> dict[str, str]:
    # The components read nothing from the caller's environment that they need, and a stray
    # KUBECONFIG or proxy variable would only point them somewhere else.
    keep = ("PATH", "HOME", "TMPDIR", "TZ", "LANG")
    return {key: os.environ[key] for key in keep if key in os.environ}


def _write_yaml(path: Path, document: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(document), sort_keys=False))
    path.chmod(0o600)


# -- `tfmaas dev cluster up`: one control plane kept running in the background -------------

STATE_FILE = "state.json"
PID_FILE = "supervisor.pid"
PORTS_FILE = "ports.json"


def _saved_ports(directory: Path) -> Ports | None:
    try:
        saved = Ports(**json.loads((directory / PORTS_FILE).read_text()))
    except (FileNotFoundError, TypeError, ValueError):
        return None
    return saved if saved.all_free() else None


def supervise(directory: Path) -> int:
    """Run a control plane until SIGTERM/SIGINT; the state file says when it is ready."""
    import signal
    import threading

    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / STATE_FILE).unlink(missing_ok=True)
    # Keep the ports across restarts so an exported KUBECONFIG stays valid.
    cluster = LocalCluster(directory, ports=_saved_ports(directory))
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    try:
        cluster.start()
        (directory / PORTS_FILE).write_text(json.dumps(dataclasses.asdict(cluster.ports)))
        state = {
            "server": cluster.server,
            "kubeconfig": str(cluster.kubeconfig),
            "startupSeconds": round(cluster.startup_seconds or 0.0, 1),
            "pids": {name: p.pid for name, p in cluster.components.items()},
        }
        (directory / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
        print(f"control plane ready in {state['startupSeconds']}s at {cluster.server}", flush=True)
        while not stopping.wait(1.0):
            dead = [name for name, alive in cluster.running().items() if not alive]
            if dead:
                print(f"stopping: {', '.join(dead)} exited; see {cluster.logs_dir}", flush=True)
                return 1
        return 0
    finally:
        cluster.stop()
        (directory / STATE_FILE).unlink(missing_ok=True)
        (directory / PID_FILE).unlink(missing_ok=True)


if __name__ == "__main__":
    import sys

    raise SystemExit(supervise(Path(sys.argv[1])))
