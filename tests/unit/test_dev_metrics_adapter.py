"""The local custom-metrics API: discovery, per-pod values in milli-units, the chart's query."""

from __future__ import annotations

import datetime
import json
import ssl
import urllib.request
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from tfmaas.dev import pki
from tfmaas.dev.metrics_adapter import CustomMetricsServer, quantity, rate_query


def _server(tmp_path: Path, rates: dict[str, float], queries: list[str]) -> CustomMetricsServer:
    ca = pki.CertificateAuthority.create("test-ca")
    cert, key = ca.issue(pki.CertRequest("adapter", ip_addresses=("127.0.0.1",), server=True))
    (tmp_path / "a.crt").write_bytes(pki.certificate_pem(cert))
    (tmp_path / "a.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )

    def list_pods(namespace: str, selector: str) -> list[str]:
        assert (namespace, selector) == ("ml", "app=x")
        return ["x-1", "x-2"]

    def query(expr: str) -> dict[str, float]:
        queries.append(expr)
        return rates

    return CustomMetricsServer(
        list_pods=list_pods, query_rates=query, cert=tmp_path / "a.crt", key=tmp_path / "a.key"
    )


def test_rate_query_is_the_charts_adapter_rule_for_the_listed_pods() -> None:
    assert rate_query("ml", ["a-1", "a.2"], "2m") == (
        'sum by (pod) (rate(:tensorflow:serving:request_count{namespace="ml",pod=~"a-1|a\\\\.2"}'
        "[2m]))"
    )
    assert quantity(12.3456) == "12346m"


def test_pod_metrics_list_every_selected_pod_with_zero_when_unscraped(tmp_path: Path) -> None:
    queries: list[str] = []
    server = _server(tmp_path, {"x-1": 2.5}, queries)
    try:
        code, body = server.answer(
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/ml/pods/*/tfserving_requests_per_second",
            {"labelSelector": ["app=x"]},
        )
    finally:
        server.stop()
    assert code == 200
    assert body["kind"] == "MetricValueList"
    values = {item["describedObject"]["name"]: item["value"] for item in body["items"]}
    assert values == {"x-1": "2500m", "x-2": "0m"}
    assert queries and 'pod=~"x-1|x-2"' in queries[0]
    stamp = body["items"][0]["timestamp"]
    assert datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")


def test_discovery_over_tls_and_unknown_metrics_are_404(tmp_path: Path) -> None:
    server = _server(tmp_path, {}, []).start()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        base = f"https://127.0.0.1:{server.port}"
        with urllib.request.urlopen(
            f"{base}/apis/custom.metrics.k8s.io/v1beta2", context=context, timeout=5
        ) as response:
            assert b"pods/tfserving_requests_per_second" in response.read()
        # The API server sends the wildcard pod name percent-encoded.
        url = (
            f"{base}/apis/custom.metrics.k8s.io/v1beta2/namespaces/ml/pods/%2A/"
            "tfserving_requests_per_second?labelSelector=app%3Dx"
        )
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            body = json.load(response)
        assert [item["describedObject"]["name"] for item in body["items"]] == ["x-1", "x-2"]
        code, _ = server.answer(
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/ml/pods/*/other", {}
        )
        assert code == 404
    finally:
        server.stop()
