"""The serving benchmark's schema for ghz: every file PredictionService needs, imports first."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from google.protobuf import descriptor_pb2

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "serving_benchmark.py"


def load_benchmark():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("serving_benchmark", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_protoset_holds_the_prediction_service_after_all_its_imports() -> None:
    files = descriptor_pb2.FileDescriptorSet.FromString(
        load_benchmark().prediction_service_protoset()
    )
    names = [f.name for f in files.file]
    assert len(names) == len(set(names))
    position = {name: i for i, name in enumerate(names)}
    for file in files.file:
        for dependency in file.dependency:
            assert position[dependency] < position[file.name], (dependency, file.name)
    services = {
        f"{file.package}.{service.name}": [method.name for method in service.method]
        for file in files.file
        for service in file.service
    }
    assert "Predict" in services["tensorflow.serving.PredictionService"]


def test_batching_file_is_the_spec_rendered_by_the_serving_policy() -> None:
    from tfmaas.serving.config import parse_batching_parameters
    from tfmaas.serving_policy import batching_config_text

    benchmark = load_benchmark()
    text = batching_config_text(benchmark.BENCH_BATCHING, num_batch_threads=2)
    options = parse_batching_parameters(text)
    assert (options.max_batch_size, options.batch_timeout_micros) == (64, 2000)
    assert (options.max_enqueued_batches, options.num_batch_threads) == (100, 2)
