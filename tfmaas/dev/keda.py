"""KEDA's operator and metrics server (keda-adapter) as host processes against a local
cluster, with the CRDs of the pinned module (tools/keda): what the local stack and tests need
to see a ModelService's ScaledObject become KEDA's own HPA, and that HPA read its external
metric. The module's source is read from Go's module cache, where the build put it.

The two talk as in KEDA's chart: the adapter asks the operator's gRPC metrics service for each
ScaledObject's value, over mutual TLS with one key pair and CA in a shared certificate folder
(the chart mounts it from a Secret). Registering the adapter as the cluster's
`external.metrics.k8s.io` needs the node's relay of a host port: `tfmaas.dev.stack.install_keda`
does that."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from tfmaas.dev import pki, processes, tools
from tfmaas.dev.cluster import LocalCluster

# The namespace KEDA keeps its cluster-wide objects in (its chart's default).
KEDA_NAMESPACE = "keda"
# The Service the external metrics APIService names (KEDA's chart calls it the same).
ADAPTER_SERVICE = "keda-metrics-apiserver"
# The API KEDA's metrics server answers: the External metric of each HPA KEDA makes.
EXTERNAL_METRICS_GROUP = "external.metrics.k8s.io"
EXTERNAL_METRICS_VERSION = "v1beta1"


def module_dir() -> Path:
    """The pinned KEDA module's source in Go's module cache."""
    completed = subprocess.run(
        [str(tools.find_go()), "list", "-m", "-f", "{{.Dir}}", "github.com/kedacore/keda/v2"],
        cwd=tools.tools_modules_root() / "keda",
        env=tools.go_build_env(os.environ),
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(completed.stdout.strip())


def install_crds(cluster: LocalCluster) -> None:
    """Every CRD of the module, as KEDA's chart installs them. Its operator runs a controller
    for each kind, the eventing ones (CloudEventSource) included: with one CRD missing, that
    controller's cache never syncs and, after controller-runtime's sync timeout, the whole
    operator exits, its gRPC metrics service with it."""
    crds = sorted((module_dir() / "config" / "crd" / "bases").glob("*.yaml"))
    if not crds:
        raise RuntimeError(f"no CRDs in KEDA's module at {module_dir()}")
    names = []
    for crd in crds:
        cluster.kubectl("apply", "--server-side", "-f", str(crd))
        names.append(yaml.safe_load(crd.read_text())["metadata"]["name"])

    # Polled, not `kubectl wait`: a CRD just applied may have no conditions yet, which that
    # command reports as an error.
    def established() -> bool:
        listed = cluster.kubectl_json("get", "crd", *names)
        return all(
            any(c["type"] == "Established" and c["status"] == "True" for c in conditions)
            for conditions in (
                (item.get("status") or {}).get("conditions") or [] for item in listed["items"]
            )
        )

    processes.wait_until(established, timeout=60, what="KEDA's CRDs to be Established")


def write_certificates(cert_dir: Path) -> None:
    """The key pair and CA KEDA's chart would mount from a Secret (its own rotation writes them
    into that Secret, which a host process has no use for). Like the one KEDA generates, the
    certificate serves the operator's gRPC metrics service and the metrics server's API, and is
    the client certificate the metrics server presents to that gRPC service (mutual TLS)."""
    authority = pki.CertificateAuthority.create("keda-local-ca")
    certificate, key = authority.issue(
        pki.CertRequest(
            "keda-operator",
            dns_names=(
                f"keda-operator.{KEDA_NAMESPACE}.svc",
                f"{ADAPTER_SERVICE}.{KEDA_NAMESPACE}.svc",
                "localhost",
            ),
            ip_addresses=("127.0.0.1",),
            server=True,
            client=True,
        )
    )
    cert_dir.mkdir(parents=True, exist_ok=True)
    (cert_dir / "ca.crt").write_bytes(pki.certificate_pem(authority.certificate))
    (cert_dir / "tls.crt").write_bytes(pki.certificate_pem(certificate))
    (cert_dir / "tls.key").write_bytes(pki.private_key_pem(key))
    (cert_dir / "tls.key").chmod(0o600)


def _env(cluster: LocalCluster) -> dict[str, str]:
    return {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "WATCH_NAMESPACE": "",
        "KEDA_CLUSTER_OBJECT_NAMESPACE": KEDA_NAMESPACE,
        "POD_NAMESPACE": KEDA_NAMESPACE,
    }


def start_operator(
    cluster: LocalCluster, directory: Path, *, metrics_service_port: int | None = None
) -> processes.ManagedProcess:
    """KEDA's operator, watching every namespace, its probes and metrics on free loopback ports;
    its gRPC metrics service (what the metrics server asks) on `metrics_service_port`."""
    cluster.kubectl("create", "namespace", KEDA_NAMESPACE, check=False)
    write_certificates(directory / "certs")
    grpc_port = metrics_service_port or processes.free_port()
    return processes.start(
        "keda-operator",
        [
            str(tools.ensure("keda-operator")),
            f"--metrics-bind-address=127.0.0.1:{processes.free_port()}",
            f"--health-probe-bind-address=127.0.0.1:{processes.free_port()}",
            f"--metrics-service-bind-address=127.0.0.1:{grpc_port}",
            f"--cert-dir={directory / 'certs'}",
            "--enable-cert-rotation=false",
            "--enable-webhook-patching=false",
            "--enable-apiservice-patching=false",
            "--leader-elect=false",
            f"--ca-dir={directory / 'ca'}",
        ],
        log_path=directory / "keda-operator.log",
        env=_env(cluster),
    )


def start_adapter(
    cluster: LocalCluster, directory: Path, *, metrics_service_port: int, secure_port: int
) -> processes.ManagedProcess:
    """KEDA's metrics server on 127.0.0.1:`secure_port`, run with the flags of KEDA's own
    Deployment (config/metrics-server): the certificates `start_operator` wrote serve its API
    and authenticate it to the operator's gRPC metrics service on `metrics_service_port`.
    A host process has no in-cluster config: the kubeconfig (flags, and KUBECONFIG for its
    cache) stands in for it wherever the API server is read."""
    certs = directory / "certs"
    kubeconfig = str(cluster.kubeconfig)
    return processes.start(
        "keda-adapter",
        [
            str(tools.ensure("keda-adapter")),
            "--bind-address=127.0.0.1",
            f"--secure-port={secure_port}",
            f"--cert-dir={certs}",
            f"--tls-cert-file={certs / 'tls.crt'}",
            f"--tls-private-key-file={certs / 'tls.key'}",
            f"--metrics-service-address=127.0.0.1:{metrics_service_port}",
            # Its own /metrics listens on every interface at this port (no bind flag).
            f"--port={processes.free_port()}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--lister-kubeconfig={kubeconfig}",
        ],
        log_path=directory / "keda-adapter.log",
        env=_env(cluster),
    )


@dataclass
class LocalKeda:
    """KEDA's two host processes; `tfmaas.dev.stack.install_keda` starts and registers them."""

    operator: processes.ManagedProcess
    adapter: processes.ManagedProcess

    def exited(self) -> str | None:
        """Which of the two has exited, with its log's end; None while both run. The metrics
        server only waits on the operator's gRPC service, so an operator that died shows up
        as metrics that time out, not as an error."""
        for process in (self.operator, self.adapter):
            if not process.running():
                return (
                    f"{process.name} exited with status {process.popen.returncode}; "
                    f"its log ends with:\n{process.log_tail(10)}"
                )
        return None

    def log_tails(self, lines: int = 20) -> str:
        return "\n".join(
            f"--- {process.name} ---\n{process.log_tail(lines)}"
            for process in (self.operator, self.adapter)
        )

    def stop(self) -> None:
        self.adapter.stop()
        self.operator.stop()
