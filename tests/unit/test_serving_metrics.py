"""The Prometheus exposition text carries TF Serving's metric names and labels."""

from __future__ import annotations

import time

from tfmaas.serving.config import single_model_config
from tfmaas.serving.core import ServingCore
from tfmaas.serving.metrics import LATENCY_BOUNDS, UNKNOWN_MODEL, ServingMetrics
from tfmaas.serving.registry import Registry


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


def test_only_configured_models_get_a_label_of_their_own(tmp_path) -> None:
    registry = Registry(lambda name, version, path: None)  # type: ignore[arg-type,return-value]
    registry.apply_config(single_model_config("demo", str(tmp_path)))
    metrics = ServingMetrics()
    core = ServingCore(registry, metrics)
    core.observe("demo", "predict", "GRPC", "NOT_FOUND", time.perf_counter())
    for index in range(100):
        core.observe(f"name-{index}", "predict", "GRPC", "NOT_FOUND", time.perf_counter())
    samples = _samples(metrics.exposition())
    count = ':tensorflow:serving:request_count{{model_name={},status="NOT_FOUND"}}'
    assert samples[count.format('"demo"')] == 1
    assert samples[count.format(f'"{UNKNOWN_MODEL}"')] == 100
    assert not [name for name in samples if "name-" in name]


def test_loads_and_batch_sizes_use_tensorflows_names_and_parse_as_prometheus_text() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    metrics = ServingMetrics()
    metrics.record_load(model_path="/models/m/1", seconds=1.5, ok=True)
    metrics.record_load(model_path="/models/m/2", seconds=0.2, ok=False)
    for rows in (1, 3, 64, 100_000):  # past the last bound lands in +Inf
        metrics.record_batch(model_name="m", rows=rows)
    text = metrics.exposition()
    samples = _samples(text)
    attempts = ":tensorflow:cc:saved_model:load_attempt_count"
    assert samples[f'{attempts}{{model_path="/models/m/1",status="success"}}'] == 1
    assert samples[f'{attempts}{{model_path="/models/m/2",status="fail"}}'] == 1
    # Only successful loads add latency, in microseconds, as TensorFlow's loader counts it.
    assert samples[':tensorflow:cc:saved_model:load_latency{model_path="/models/m/1"}'] == 1.5e6
    assert not [name for name in samples if "load_latency" in name and "/2" in name]
    assert samples['tfmaas_serving_batch_size_bucket{model_name="m",le="1"}'] == 1
    assert samples['tfmaas_serving_batch_size_bucket{model_name="m",le="4"}'] == 2
    assert samples['tfmaas_serving_batch_size_bucket{model_name="m",le="65536"}'] == 3
    assert samples['tfmaas_serving_batch_size_bucket{model_name="m",le="+Inf"}'] == 4
    assert samples['tfmaas_serving_batch_size_sum{model_name="m"}'] == 100_068
    kinds = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert kinds["tfmaas_serving_batch_size"] == "histogram"
    assert kinds[":tensorflow:serving:request_latency"] == "histogram"
