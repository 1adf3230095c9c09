"""Prometheus (Debian's package) on the host, scraping the serving pods of a local node.

Debian builds Prometheus without Kubernetes service discovery, so the pods are discovered here:
a thread lists the tfmaas serving pods through the API server every few seconds and writes
the port each pod advertises for scraping (`prometheus.io/port`: TF Serving's REST port, or the
access gateway's metrics port in guarded pods) as file_sd targets, labelled with namespace and
pod as the chart's PodMonitor would. Prometheus scrapes TF Serving's metrics path there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tfmaas.dev import processes
from tfmaas.errors import UserError

METRICS_PATH = "/monitoring/prometheus/metrics"


SERVING_SELECTOR = "app.kubernetes.io/component=serving,app.kubernetes.io/part-of=tfmaas"
REST_PORT = 8501
# The chart's PodMonitor relabelings: pod label -> series label (the dashboard's and KEDA's
# trigger query's names).
POD_LABELS = {
    "tfmaas.io/model-service": "model_service",
    "tfmaas.io/version": "model_version",
    "tfmaas.io/track": "track",
}
# kubectl-style lister: label selector -> the pod objects of all namespaces
PodLister = Callable[[str], list[dict[str, Any]]]


def scrape_config(
    targets_file: Path, *, interval: str = "5s", rule_files: tuple[Path, ...] = ()
) -> dict[str, Any]:
    """One job: every serving pod's REST port, from the discovered targets file."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {
                "job_name": "tfmaas-serving",
                "metrics_path": METRICS_PATH,
                "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": interval}],
            }
        ],
    }


def file_sd_targets(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Running pods with an IP become targets at the port they advertise (TF Serving's REST
    port when they say none), labelled namespace/pod and, as the chart's PodMonitor does, with
    their ModelService, version and track."""
    targets = []
    for pod in pods:
        status = pod.get("status", {})
        if status.get("phase") != "Running" or not status.get("podIP"):
            continue
        annotations = pod["metadata"].get("annotations") or {}
        port = annotations.get("prometheus.io/port", str(REST_PORT))
        labels = {"namespace": pod["metadata"]["namespace"], "pod": pod["metadata"]["name"]}
        pod_labels = pod["metadata"].get("labels") or {}
        labels.update(
            {name: pod_labels[key] for key, name in POD_LABELS.items() if pod_labels.get(key)}
        )
        targets.append({"targets": [f"{status['podIP']}:{port}"], "labels": labels})
    return sorted(targets, key=lambda target: target["labels"]["pod"])


class LocalPrometheus:
    def __init__(self, directory: Path, list_pods: PodLister, *, every: float = 3.0) -> None:
        self.directory = directory
        self.list_pods = list_pods
        self.every = every
        self.targets_file = directory / "targets.json"
        self.port = 0
        self.process: processes.ManagedProcess | None = None
        self._stop = threading.Event()
        self._discovery = threading.Thread(target=self._discover_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalPrometheus:
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        if not Path(binary).exists():
            raise UserError("prometheus is not installed; run .ci/install-system-packages")
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "prometheus.yml"
        self.discover_once()
        config.write_text(yaml.safe_dump(scrape_config(self.targets_file)))
        self.port = processes.free_port()
        self.process = processes.start(
            "prometheus",
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=2h",
            ],
            log_path=self.directory / "prometheus.log",
        )
        processes.wait_until(
            self._ready, timeout=60, what="Prometheus to be ready", processes=[self.process]
        )
        self._discovery.start()
        return self

    def load_rules(self, rule_files: tuple[Path, ...], *, timeout: float = 30.0) -> None:
        """Evaluate these rule files (the chart's PrometheusRule groups) from now on: the
        config is rewritten and Prometheus reloads it on SIGHUP."""
        if self.process is None:
            raise UserError("Prometheus is not running")
        config = self.directory / "prometheus.yml"
        config.write_text(yaml.safe_dump(scrape_config(self.targets_file, rule_files=rule_files)))
        os.kill(self.process.pid, signal.SIGHUP)
        wanted = {
            group["name"]
            for path in rule_files
            for group in (yaml.safe_load(path.read_text()) or {}).get("groups", [])
        }
        processes.wait_until(
            lambda: wanted <= {group["name"] for group in self.rule_groups()},
            timeout=timeout,
            what="Prometheus to load the rules",
            processes=[self.process],
        )

    def rule_groups(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/api/v1/rules", timeout=10) as response:
            return list(json.load(response)["data"]["groups"])

    def alerts(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/api/v1/alerts", timeout=10) as response:
            return list(json.load(response)["data"]["alerts"])

    def discover_once(self) -> None:
        targets = file_sd_targets(self.list_pods(SERVING_SELECTOR))
        partial = self.targets_file.with_suffix(".partial")
        partial.write_text(json.dumps(targets))
        partial.replace(self.targets_file)

    def _discover_forever(self) -> None:
        while not self._stop.wait(self.every):
            with contextlib.suppress(Exception):
                self.discover_once()

    def _ready(self) -> bool:
        return processes.http_ok(f"{self.url}/-/ready")

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        return list(body["data"]["result"])

    def stop(self) -> None:
        self._stop.set()
        if self.process is not None:
            self.process.stop()
            self.process = None
