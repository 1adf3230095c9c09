"""The Prometheus exposition text carries TF Serving's metric names and labels."""

from __future__ import annotations

from tfmaas.serving.metrics import LATENCY_BOUNDS, ServingMetrics


def _samples(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_request_count_and_latency_use_upstream_names() -> None:
    metrics = ServingMetrics()
    for status, latency in (("OK", 5.0), ("OK", 150.0), ("NOT_FOUND", 1e12)):
        metrics.record(
            model_name="m", api="predict", entrypoint="GRPC", status=status, latency_us=latency
        )
    text = metrics.exposition()
    samples = _samples(text)
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert "# TYPE :tensorflow:serving:request_latency histogram" in text
    assert samples[':tensorflow:serving:request_count{model_name="m",status="OK"}'] == 2
    assert samples[':tensorflow:serving:request_count{model_name="m",status="NOT_FOUND"}'] == 1
    labels = 'model_name="m",API="predict",entrypoint="GRPC"'
    assert samples[f":tensorflow:serving:request_latency_count{{{labels}}}"] == 3
    assert samples[f':tensorflow:serving:request_latency_bucket{{{labels},le="10"}}'] == 1
    assert samples[f':tensorflow:serving:request_latency_bucket{{{labels},le="+Inf"}}'] == 3
    buckets = [v for k, v in samples.items() if "_bucket" in k]
    assert buckets == sorted(buckets)  # cumulative
    assert len(buckets) == len(LATENCY_BOUNDS) + 1


def test_label_values_are_escaped() -> None:
    metrics = ServingMetrics()
    metrics.record(model_name='a"b', api="predict", entrypoint="REST", status="OK", latency_us=1)
    assert 'model_name="a\\"b"' in metrics.exposition()
