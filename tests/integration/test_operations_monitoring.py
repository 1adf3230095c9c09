"""The chart's alerts and dashboard against a real Prometheus fed by a real `tfmaas serve` and
the operator's own metrics exporter.

Prometheus scrapes the server with the labels the chart's PodMonitor gives serving pods and
the operator's registry (the gauges published by model_metrics, as a reconcile does) with the
ServiceMonitor's honorLabels; it loads the rules `helm template` renders. One alert is made to
fire and is read back from /api/v1/alerts; every dashboard query is run, must parse, and the
key ones must return series. With TFMAAS_SCREENSHOT_DIR set (and chromium installed) it also
takes screenshots of Prometheus' graph page for two of them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import start_http_server

from tests.fixtures.chart import CHART_DIR, helm_binary, one, render
from tests.fixtures.prometheus import Prometheus, ScrapeTarget
from tfmaas.dev.processes import free_port
from tfmaas.operator import metrics, model_metrics
from tfmaas.serving.testing import write_demo_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]

METRICS_PATH = "/monitoring/prometheus/metrics"
MODEL = "sentiment"
SERVING_LABELS = {
    "namespace": "ml",
    "pod": f"{MODEL}-7d9f-abcde",
    "model_service": MODEL,
    "track": "stable",
    "model_version": "1",
}
OPERATOR_LABELS = {"namespace": "tfmaas-system", "pod": "tfmaas-5c8d-xyz12"}
# Dashboard queries that must return series here: everything but kube-state-metrics' (not
# run here) and what this stack never produces (failed loads, a canary's version).
KEY_QUERIES = {
    ("Request rate by track and version", "A"),
    ("Request rate by track and version", "B"),
    ("Error ratio by track", "A"),
    ("Error ratio by track", "B"),
    ("Latency p50 / p99 by track and version", "A"),
    ("Latency p50 / p99 by track and version", "B"),
    ("Replicas vs desired", "A"),
    ("Batch size p50 / p99", "A"),
    ("Batch size p50 / p99", "B"),
    ("Model load time", "A"),
    ("Versions", "A"),
    ("Versions", "C"),
    ("Test metrics of the served version", "A"),
    ("Test metrics of the served version", "B"),
    ("Training", "A"),
    ("Training", "B"),
    ("Training", "C"),
    ("Training", "D"),
    ("Operator reconciles", "A"),
    ("Operator reconciles", "B"),
    ("Operator reconciles", "C"),
}


def served(version: int, accuracy: float) -> dict[str, Any]:
    return {
        "servingVersion": version,
        "latestVersion": version,
        "versions": [
            {
                "version": version,
                "state": "Succeeded",
                "promoted": True,
                "metrics": {"accuracy": accuracy, "f1": accuracy - 0.01},
            }
        ],
        "conditions": [{"type": "Ready", "status": "True"}],
    }


def failed_training() -> dict[str, Any]:
    status = served(1, 0.9)
    status["latestVersion"] = 2
    status["versions"].append({"version": 2, "state": "Failed", "message": "OOMKilled"})
    return status


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """`tfmaas serve` of a demo model with batching and metrics on; its REST port."""
    workdir = tmp_path_factory.mktemp("serving")
    write_demo_model(workdir / MODEL, 1)
    monitoring = workdir / "monitoring_config.txt"
    monitoring.write_text(f'prometheus_config {{ enable: true, path: "{METRICS_PATH}" }}\n')
    batching = workdir / "batching.txt"
    batching.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 20000 }\n")
    rest_port = free_port()
    log = open(workdir / "serve.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tfmaas",
            "serve",
            f"--port={free_port()}",
            f"--rest_api_port={rest_port}",
            "--bind_address=127.0.0.1",
            f"--monitoring_config_file={monitoring}",
            "--enable_batching=true",
            f"--batching_parameters_file={batching}",
            f"--model_name={MODEL}",
            f"--model_base_path={workdir / MODEL}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (workdir / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "tfmaas serve did not load the model in 120s"
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{rest_port}/v1/models/{MODEL}", timeout=2
                ) as response:
                    states = [v["state"] for v in json.load(response)["model_version_status"]]
                if "AVAILABLE" in states:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        yield rest_port
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def operator_metrics() -> Iterator[int]:
    """The operator's registry served as `tfmaas operator run --metrics-port` serves it, with
    the gauges two ModelServices' reconciles would publish."""
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=metrics.REGISTRY)
    model_metrics.publish(namespace="ml", name=MODEL, status=served(1, 0.91))
    model_metrics.publish(namespace="ml", name="broken", status=failed_training())
    model_metrics.training_finished(namespace="ml", name=MODEL, seconds=312.0)
    metrics.RECONCILES.labels("ok").inc(3)
    metrics.TRIGGERS.labels("create").inc()
    metrics.RECONCILE_SECONDS.observe(0.04)
    try:
        yield port
    finally:
        model_metrics.remove(namespace="ml", name=MODEL)
        model_metrics.remove(namespace="ml", name="broken")
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def stack(
    prometheus: Prometheus,
    serving: int,
    operator_metrics: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Prometheus:
    api = ["monitoring.coreos.com/v1", "monitoring.coreos.com/v1/PrometheusRule"]
    rule = one(render(helm_binary(), api_versions=api), "PrometheusRule")
    rules = tmp_path_factory.mktemp("rules") / "tfmaas-rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    prometheus.scrape(
        ScrapeTarget(f"127.0.0.1:{serving}", METRICS_PATH, SERVING_LABELS),
        ScrapeTarget(f"127.0.0.1:{operator_metrics}", "/metrics", OPERATOR_LABELS, True),
        rule_files=(rules,),
    )
    drive(serving, seconds=8)
    return prometheus


def drive(rest_port: int, *, seconds: float) -> None:
    """Predicts (some batched together), and calls for a version that does not exist."""
    base = f"http://127.0.0.1:{rest_port}/v1/models/{MODEL}"
    body = json.dumps({"instances": ["很好", "太差了"]}).encode()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for url in (f"{base}:predict", f"{base}/versions/9:predict"):
            request = urllib.request.Request(url, data=body, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    response.read()
            except urllib.error.HTTPError as exc:
                assert exc.code == 404, exc.read()
        time.sleep(0.1)


def test_a_rendered_alert_fires_on_the_real_prometheus(stack: Prometheus) -> None:
    deadline = time.monotonic() + 60
    firing: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not firing:
        firing = [a for a in stack.alerts() if a["state"] == "firing"]
        time.sleep(1)
    names = {(a["labels"]["alertname"], a["labels"].get("modelservice")) for a in firing}
    assert ("TfmaasTrainingFailed", "broken") in names, stack.alerts()
    (alert,) = [a for a in firing if a["labels"]["alertname"] == "TfmaasTrainingFailed"]
    assert alert["labels"]["namespace"] == "ml"  # the ModelService's, kept by honor_labels
    assert alert["annotations"]["summary"] == ("Training of the newest version of ml/broken failed")
    # The healthy model, serving and Ready, raises nothing.
    assert not [a for a in stack.alerts() if a["labels"].get("modelservice") == MODEL]


def dashboard_queries() -> list[tuple[str, str, str]]:
    dashboard = json.loads((CHART_DIR / "files" / "grafana-dashboard.json").read_text())
    return [
        (panel["title"], target["refId"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def as_grafana_sends(expr: str) -> str:
    """The query with the dashboard's variables as Grafana fills them for "All"."""
    return (
        expr.replace("$__rate_interval", "15s").replace("$namespace", ".*").replace("$model", ".*")
    )


def test_every_dashboard_query_parses_and_the_key_ones_return_series(stack: Prometheus) -> None:
    queries = dashboard_queries()
    assert {(title, ref) for title, ref, _ in queries} >= KEY_QUERIES
    empty = []
    deadline = time.monotonic() + 60
    for title, ref, expr in queries:
        query = as_grafana_sends(expr)
        while True:
            try:
                result = stack.query(query)
            except urllib.error.HTTPError as exc:
                pytest.fail(f"{title} {ref} does not parse: {exc.read().decode()}\n{query}")
            if result or (title, ref) not in KEY_QUERIES or time.monotonic() > deadline:
                break
            time.sleep(1)
        if (title, ref) in KEY_QUERIES and not result:
            empty.append(f"{title} {ref}: {query}")
        if title.startswith(("Request rate", "Latency")):
            assert all(float(r["value"][1]) > 0 for r in result), (query, result)
    assert not empty, "key dashboard queries returned no series:\n" + "\n".join(empty)
    by_key = {(title, ref): expr for title, ref, expr in queries}
    accuracy = as_grafana_sends(by_key[("Test metrics of the served version", "A")])
    served_accuracy = stack.query(accuracy)
    assert {s["metric"]["modelservice"]: float(s["value"][1]) for s in served_accuracy} == {
        MODEL: 0.91,
        "broken": 0.9,
    }


def test_screenshots_of_two_key_queries(stack: Prometheus, serving: int) -> None:
    """Prometheus' own graph page for two dashboard queries (Grafana is not available here);
    only with TFMAAS_SCREENSHOT_DIR, as it needs chromium."""
    out = os.environ.get("TFMAAS_SCREENSHOT_DIR")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not out or not chromium:
        pytest.skip("set TFMAAS_SCREENSHOT_DIR and install chromium to take screenshots")
    drive(serving, seconds=90)  # a minute and a half of lines to look at
    by_key = {(title, ref): expr for title, ref, expr in dashboard_queries()}
    shots = {
        "prometheus-request-rate.png": by_key[("Request rate by track and version", "A")],
        "prometheus-latency-p99.png": by_key[("Latency p50 / p99 by track and version", "B")],
    }
    for name, expr in shots.items():
        query = as_grafana_sends(expr).replace("15s", "30s")
        params = urllib.parse.urlencode(
            {"g0.expr": query, "g0.tab": "0", "g0.range_input": "2m", "g0.stacked": "0"}
        )
        target = Path(out) / name
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--window-size=1400,900",
                "--virtual-time-budget=10000",
                f"--screenshot={target}",
                f"{stack.url}/graph?{params}",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        assert target.stat().st_size > 10_000
