"""KEDA's operator as a host process against a local cluster, with the CRDs of the pinned
module (tools/keda): what the local stack and tests need to see a ModelService's ScaledObject
become KEDA's own HPA. The module's source is read from Go's module cache, where the build
put it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tfmaas.dev import pki, processes, tools
from tfmaas.dev.cluster import LocalCluster

# The namespace KEDA keeps its cluster-wide objects in (its chart's default).
KEDA_NAMESPACE = "keda"
# Only what a ModelService's engine keda needs; the eventing CRDs are left out.
CRD_FILES = (
    "keda.sh_scaledobjects.yaml",
    "keda.sh_scaledjobs.yaml",
    "keda.sh_triggerauthentications.yaml",
    "keda.sh_clustertriggerauthentications.yaml",
)


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
    crds = module_dir() / "config" / "crd" / "bases"
    for name in CRD_FILES:
        cluster.kubectl("apply", "--server-side", "-f", str(crds / name))
    cluster.kubectl("wait", "--for=condition=Established", "crd/scaledobjects.keda.sh")


def write_certificates(cert_dir: Path) -> None:
    """The gRPC metrics service's key pair and CA, which KEDA's chart would mount from a Secret
    (its own rotation writes them into that Secret, which a host process has no use for)."""
    authority = pki.CertificateAuthority.create("keda-local-ca")
    certificate, key = authority.issue(
        pki.CertRequest(
            "keda-operator",
            dns_names=(f"keda-operator.{KEDA_NAMESPACE}.svc", "localhost"),
            ip_addresses=("127.0.0.1",),
            server=True,
        )
    )
    cert_dir.mkdir(parents=True, exist_ok=True)
    (cert_dir / "ca.crt").write_bytes(pki.certificate_pem(authority.certificate))
    (cert_dir / "tls.crt").write_bytes(pki.certificate_pem(certificate))
    (cert_dir / "tls.key").write_bytes(pki.private_key_pem(key))
    (cert_dir / "tls.key").chmod(0o600)


def start_operator(cluster: LocalCluster, directory: Path) -> processes.ManagedProcess:
    """KEDA's operator, watching every namespace, its probes and metrics on free loopback ports."""
    cluster.kubectl("create", "namespace", KEDA_NAMESPACE, check=False)
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "WATCH_NAMESPACE": "",
        "KEDA_CLUSTER_OBJECT_NAMESPACE": KEDA_NAMESPACE,
        "POD_NAMESPACE": KEDA_NAMESPACE,
    }
    write_certificates(directory / "certs")
    return processes.start(
        "keda-operator",
        [
            str(tools.ensure("keda-operator")),
            f"--metrics-bind-address=127.0.0.1:{processes.free_port()}",
            f"--health-probe-bind-address=127.0.0.1:{processes.free_port()}",
            f"--metrics-service-bind-address=127.0.0.1:{processes.free_port()}",
            f"--cert-dir={directory / 'certs'}",
            "--enable-cert-rotation=false",
            "--enable-webhook-patching=false",
            "--enable-apiservice-patching=false",
            "--leader-elect=false",
            f"--ca-dir={directory / 'ca'}",
        ],
        log_path=directory / "keda-operator.log",
        env=env,
    )
