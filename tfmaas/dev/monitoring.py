"""Prometheus (Debian's package) on the host, scraping the serving pods of a local node.

It discovers pods through the API server (kubernetes_sd with the admin kubeconfig), keeps the
tfmaas serving containers' REST port and scrapes TF Serving's metrics path there, labelling each
series with its namespace and pod as the chart's PodMonitor would.
"""

from __future__ import annotations

import json
import shutil
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tfmaas.dev import processes
from tfmaas.errors import UserError

METRICS_PATH = "/monitoring/prometheus/metrics"
SERVING_PORT_NAME = "http"


def scrape_config(kubeconfig: Path, *, interval: str = "5s") -> dict[str, Any]:
    """One job: the REST port of every pod labelled as a tfmaas serving pod."""
    component = "__meta_kubernetes_pod_label_app_kubernetes_io_component"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": "tfmaas-serving",
                "metrics_path": METRICS_PATH,
                "kubernetes_sd_configs": [{"role": "pod", "kubeconfig_file": str(kubeconfig)}],
                "relabel_configs": [
                    {"source_labels": [component], "regex": "serving", "action": "keep"},
                    {
                        "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                        "regex": SERVING_PORT_NAME,
                        "action": "keep",
                    },
                    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                ],
            }
        ],
    }


class LocalPrometheus:
    def __init__(self, directory: Path, kubeconfig: Path) -> None:
        self.directory = directory
        self.kubeconfig = kubeconfig
        self.port = 0
        self.process: processes.ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalPrometheus:
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        if not Path(binary).exists():
            raise UserError("prometheus is not installed; run .ci/install-system-packages")
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "prometheus.yml"
        config.write_text(yaml.safe_dump(scrape_config(self.kubeconfig)))
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
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        return list(body["data"]["result"])

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
