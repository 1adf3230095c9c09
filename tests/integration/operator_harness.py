"""Run the real operator against the local control plane, and play the kubelet's part.

The operator runs as a subprocess under a real ServiceAccount token bound to the namespaced
Role from deploy/rbac/, so RBAC holds it to exactly what it ships with. There is no node
that runs containers: tests report training pods finished and serving pods ready through
the pods' status, as a kubelet would, and the real Job, ReplicaSet and garbage collector
controllers take it from there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tfmaas.dev.cluster import LocalCluster
from tfmaas.dev.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "tfmaas" / "api" / "crd.yaml"
ROLE = ROOT / "deploy" / "rbac" / "role.yaml"
OPERATOR_ACCOUNT = "tfmaas-operator"

T = TypeVar("T")


def wait_for(check: Callable[[], T], what: str, timeout: float = 60.0, interval: float = 0.3) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # the object may not exist yet
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last saw: {last!r}")


def install_crd(cluster: LocalCluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))

    # Not `kubectl wait`: just after the apply a new CRD may have no conditions at all yet,
    # which that command reports as an error instead of waiting.
    def established() -> bool:
        crd = cluster.kubectl_json("get", "crd", "modelservices.tfmaas.io")
        conditions = crd.get("status", {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    wait_for(established, "the ModelService CRD to be Established")


def create_restricted_namespace(cluster: LocalCluster, name: str) -> None:
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            },
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(namespace))
    # The ServiceAccount admission controller gives each namespace a default account.
    wait_for(
        lambda: cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
        f"namespace {name}'s default ServiceAccount",
    )


def operator_kubeconfig(cluster: LocalCluster, namespace: str) -> Path:
    """A token of a ServiceAccount bound to deploy/rbac/role.yaml in `namespace` only."""
    role = yaml.safe_load(ROLE.read_text())
    role["metadata"]["namespace"] = namespace
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": OPERATOR_ACCOUNT, "namespace": namespace},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        },
        "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_ACCOUNT, "namespace": namespace}],
    }
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": OPERATOR_ACCOUNT, "namespace": namespace},
    }
    documents = "\n---\n".join(json.dumps(doc) for doc in (account, role, binding))
    cluster.kubectl("apply", "-f", "-", input=documents)
    return cluster.kubeconfig_for_service_account(namespace, OPERATOR_ACCOUNT)


class OperatorProcess:
    """`tfmaas operator run --namespace NS` (or, with no namespace, --all-namespaces) in a
    subprocess, logging to a file."""

    def __init__(
        self,
        kubeconfig: Path,
        namespace: str,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.kubeconfig = kubeconfig
        self.extra_args = extra_args
        self.namespace = namespace
        self.log_path = log_path
        self.extra_env = extra_env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.health_port = 0
        self.metrics_port = 0

    def start(self, timeout: float = 60.0) -> None:
        self.health_port, self.metrics_port = free_port(), free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "TFMAAS_TRAINER_IMAGE": "tfmaas/trainer:test",
            "TFMAAS_STORAGE_INITIALIZER_IMAGE": "tfmaas/operator:test",
            "TFMAAS_SERVING_IMAGE": "tfmaas/serving:test",
            "TFMAAS_TRAINING_BACKOFF_LIMIT": "0",
            "TFMAAS_RESYNC_SECONDS": "10",
            **self.extra_env,
        }
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tfmaas",
                "operator",
                "run",
                *(["--namespace", self.namespace] if self.namespace else ["--all-namespaces"]),
                "--standalone",
                "--liveness",
                f"http://127.0.0.1:{self.health_port}/healthz",
                "--metrics-port",
                str(self.metrics_port),
                "--metrics-address",
                "127.0.0.1",
                *self.extra_args,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

        def healthy() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"operator exited; see {self.log_path}:\n{self.log_tail()}")
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/healthz", timeout=2
            ) as response:
                return bool(response.status == 200)

        deadline = time.monotonic() + timeout
        while True:
            try:
                if healthy():
                    return
            except RuntimeError:
                raise
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"operator not healthy in {timeout}s:\n{self.log_tail()}")
            time.sleep(0.3)

    def model_service_gauges(self, namespace: str, name: str) -> dict[str, float]:
        """The tfmaas_modelservice_* samples of one ModelService on the operator's /metrics."""
        from prometheus_client.parser import text_string_to_metric_families

        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        labels = {"namespace": namespace, "modelservice": name}
        return {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name.startswith("tfmaas_modelservice_") and sample.labels == labels
        }

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> None:
        """A crash: no shutdown handlers run."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def peak_rss_kib(self) -> int | None:
        if self.process is None:
            return None
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return None


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def termination_message(version: int, accuracy: float) -> str:
    return json.dumps(
        {
            "version": version,
            "metrics": {
                "accuracy": accuracy,
                "precision": accuracy,
                "recall": accuracy,
                "f1": accuracy,
            },
            "trainedAt": now(),
            "examples": {"train": 80, "validation": 10, "test": 10},
            "uri": f"s3://models/x/{version}/",
        },
        separators=(",", ":"),
    )
