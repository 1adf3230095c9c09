"""The prometheus-adapter rule the chart ships, evaluated by a real Prometheus.

The rule's PromQL is expanded the way prometheus-adapter expands it for a per-pod custom
metric query, and run against series Prometheus scraped from a real `tfmaas serve` driven by
a bounded number of gRPC Predict calls at a steady rate, next to a synthetic second pod
whose counter grows at a known rate and a third pod in another namespace.
"""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.chart import CHART_DIR
from tests.fixtures.prometheus import SCRAPE_INTERVAL_S, Prometheus, ScrapeTarget
from tfmaas.dev.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

METRICS_PATH = "/monitoring/prometheus/metrics"
NAMESPACE = "models"
SERVING_POD = "sentiment-7d9f-abcde"
SYNTHETIC_POD = "sentiment-7d9f-fghij"
SYNTHETIC_RATE = 3.0
# A window short enough for a test to fill; the shipped rule's 2m is checked to be the only
# thing replaced.
TEST_WINDOW = "10s"
LOAD_RATE = 8.0
LOAD_SECONDS = 20.0


def adapter_rule() -> dict[str, Any]:
    snippet = yaml.safe_load((CHART_DIR / "files" / "prometheus-adapter-values.yaml").read_text())
    (rule,) = snippet["rules"]["custom"]
    return dict(rule)


def expand(metrics_query: str, series: str, matchers: dict[str, str], group_by: str) -> str:
    """What prometheus-adapter makes of a metricsQuery for one namespace's pods."""
    label_matchers = ",".join(
        f'{key}=~"{value}"' if "|" in value else f'{key}="{value}"'
        for key, value in matchers.items()
    )
    return (
        metrics_query.replace("<<.Series>>", series)
        .replace("<<.LabelMatchers>>", label_matchers)
        .replace("<<.GroupBy>>", group_by)
    )


class SyntheticExporter:
    """A TF Serving-shaped counter that grows at exactly `rate` per second since start."""

    def __init__(self, rate: float) -> None:
        started = time.time()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                count = int((time.time() - started) * rate)
                body = (
                    "# TYPE :tensorflow:serving:request_count counter\n"
                    ':tensorflow:serving:request_count{model_name="sentiment",status="OK"} '
                    f"{count}\n"
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def serving(exported_model: Any, tmp_path: Path) -> Iterator[tuple[int, int]]:
    """`tfmaas serve` on loopback: (grpc port, rest port), once the model is AVAILABLE."""
    grpc_port, rest_port = free_port(), free_port()
    # As in the operator's ConfigMap: TF Serving serves metrics only when this enables them.
    monitoring = tmp_path / "monitoring_config.txt"
    monitoring.write_text(f'prometheus_config {{ enable: true, path: "{METRICS_PATH}" }}\n')
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tfmaas",
            "serve",
            f"--port={grpc_port}",
            f"--rest_api_port={rest_port}",
            "--bind_address=127.0.0.1",
            f"--monitoring_config_file={monitoring}",
            f"--model_name={exported_model.name}",
            f"--model_base_path={exported_model.base_path}",
            "--tensorflow_intra_op_parallelism=1",
            "--tensorflow_inter_op_parallelism=1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        status_url = f"http://127.0.0.1:{rest_port}/v1/models/{exported_model.name}"
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "tfmaas serve did not load the model in 120s"
            try:
                with urllib.request.urlopen(status_url, timeout=2) as response:
                    states = [v["state"] for v in json.load(response)["model_version_status"]]
                if "AVAILABLE" in states:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        yield grpc_port, rest_port
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def drive_predict(grpc_port: int, model_name: str, rate: float, seconds: float) -> int:
    """Send Predict calls at a steady `rate` for `seconds`; returns how many were sent."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from tfmaas.client.tensors import strings_proto

    total = int(rate * seconds)
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = "serving_default"
        request.inputs["text"].CopyFrom(strings_proto(["这个手机很好用"]))
        started = time.monotonic()
        for i in range(total):
            pause = started + i / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            stub.Predict(request, timeout=10)
    return total


def per_pod(result: list[dict[str, Any]]) -> dict[str, float]:
    return {r["metric"]["pod"]: float(r["value"][1]) for r in result}


def test_adapter_rule_gives_each_pods_request_rate(
    prometheus: Prometheus, serving: tuple[int, int], exported_model: Any
) -> None:
    rule = adapter_rule()
    assert rule["name"]["as"] == "tfserving_requests_per_second"
    assert "[2m]" in rule["metricsQuery"]
    grpc_port, rest_port = serving
    synthetic = SyntheticExporter(SYNTHETIC_RATE)
    try:
        prometheus.scrape(
            ScrapeTarget(
                f"127.0.0.1:{rest_port}",
                METRICS_PATH,
                {"namespace": NAMESPACE, "pod": SERVING_POD},
            ),
            ScrapeTarget(
                synthetic.address, "/metrics", {"namespace": NAMESPACE, "pod": SYNTHETIC_POD}
            ),
            ScrapeTarget(synthetic.address, "/metrics", {"namespace": "other", "pod": "other-0"}),
        )
        sent = drive_predict(grpc_port, exported_model.name, LOAD_RATE, LOAD_SECONDS)
        assert sent == int(LOAD_RATE * LOAD_SECONDS)
        load_ended = time.time()
        # Let the last requests be scraped; evaluate at a time inside the steady period.
        time.sleep(3 * SCRAPE_INTERVAL_S)
        evaluated_at = load_ended - 2 * SCRAPE_INTERVAL_S

        # Discovery: the rule's seriesQuery finds the series and its name maps to the metric.
        series = prometheus.query(rule["seriesQuery"])
        names = {s["metric"]["__name__"] for s in series}
        assert names == {":tensorflow:serving:request_count"}
        assert {s["metric"]["pod"] for s in series} >= {SERVING_POD, SYNTHETIC_POD, "other-0"}
        assert all(re.search(rule["name"]["matches"], name) for name in names)

        query = expand(
            rule["metricsQuery"].replace("[2m]", f"[{TEST_WINDOW}]"),
            ":tensorflow:serving:request_count",
            {"namespace": NAMESPACE, "pod": f"{SERVING_POD}|{SYNTHETIC_POD}"},
            "pod",
        )
        rates = per_pod(prometheus.query(query, at=evaluated_at))
        print(f"\nper-pod request rate over {TEST_WINDOW}: {rates}")
        assert set(rates) == {SERVING_POD, SYNTHETIC_POD}, rates
        assert rates[SERVING_POD] == pytest.approx(LOAD_RATE, rel=0.25), rates
        assert rates[SYNTHETIC_POD] == pytest.approx(SYNTHETIC_RATE, rel=0.25), rates

        # The shipped 2m window averages over two minutes: this pod's requests, spread over 120s.
        shipped = expand(
            rule["metricsQuery"], ":tensorflow:serving:request_count", {"pod": SERVING_POD}, "pod"
        )
        (averaged,) = prometheus.query(shipped, at=evaluated_at)
        counted = sent - LOAD_RATE * 2 * SCRAPE_INTERVAL_S
        assert float(averaged["value"][1]) == pytest.approx(counted / 120, rel=0.35)

    finally:
        prometheus.scrape()
        synthetic.close()
