"""Dynamic batching: merged model calls, each caller gets exactly its own rows back."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from tfmaas.serving.batching import Batcher, batch_rows
from tfmaas.serving.config import BatchingOptions
from tfmaas.serving.errors import ServingError


class RecordingModel:
    """Doubles its input and remembers each batch size it was called with."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batch_sizes: list[int] = []
        self.delay = delay
        self._lock = threading.Lock()

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            self.batch_sizes.append(len(inputs["x"]))
        time.sleep(self.delay)
        return {
            "y": inputs["x"] * 2,
            "tag": np.array([f"row{v}" for v in inputs["x"]], dtype=object),
        }


def test_concurrent_callers_get_their_own_rows_from_merged_calls() -> None:
    model = RecordingModel(delay=0.01)
    batcher = Batcher(
        model, BatchingOptions(max_batch_size=16, batch_timeout_micros=5000, num_batch_threads=1)
    )
    try:

        def call(i: int) -> tuple[int, dict[str, np.ndarray]]:
            rows = np.arange(i * 10, i * 10 + 1 + i % 3)
            return i, batcher.submit({"x": rows})

        with ThreadPoolExecutor(32) as pool:
            results = list(pool.map(call, range(64)))
    finally:
        batcher.close()
    for i, result in results:
        expected = np.arange(i * 10, i * 10 + 1 + i % 3)
        np.testing.assert_array_equal(result["y"], expected * 2)
        assert list(result["tag"]) == [f"row{v}" for v in expected]
    assert sum(model.batch_sizes) == sum(1 + i % 3 for i in range(64))
    assert len(model.batch_sizes) < 64  # requests were merged
    assert max(model.batch_sizes) <= 16


def test_a_lone_request_waits_no_longer_than_the_timeout() -> None:
    batcher = Batcher(
        RecordingModel(), BatchingOptions(max_batch_size=64, batch_timeout_micros=20000)
    )
    try:
        started = time.monotonic()
        batcher.submit({"x": np.array([1])})
        assert time.monotonic() - started < 1.0
    finally:
        batcher.close()


def test_request_larger_than_max_batch_size_is_invalid_argument() -> None:
    batcher = Batcher(RecordingModel(), BatchingOptions(max_batch_size=4))
    try:
        with pytest.raises(ServingError) as error:
            batcher.submit({"x": np.arange(5)})
        assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "Task size 5 is larger than maximum input batch size 4" in error.value.message
    finally:
        batcher.close()


def test_full_queue_answers_unavailable() -> None:
    release = threading.Event()

    def stuck(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        release.wait(5)
        return {"y": inputs["x"]}

    batcher = Batcher(
        stuck, BatchingOptions(max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1)
    )
    pool = ThreadPoolExecutor(4)
    try:
        running = pool.submit(batcher.submit, {"x": np.array([1])})
        time.sleep(0.1)  # first one is in the model; the next one fills the queue
        queued = pool.submit(batcher.submit, {"x": np.array([2])})
        time.sleep(0.1)
        with pytest.raises(ServingError) as error:
            batcher.submit({"x": np.array([3])})
        assert error.value.code == grpc.StatusCode.UNAVAILABLE
        release.set()
        assert running.result(5)["y"].tolist() == [1]
        assert queued.result(5)["y"].tolist() == [2]
    finally:
        release.set()
        pool.shutdown()
        batcher.close()


def test_a_model_failure_reaches_every_caller_of_the_batch() -> None:
    def broken(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise RuntimeError("kernel exploded")

    batcher = Batcher(broken, BatchingOptions(max_batch_size=8, batch_timeout_micros=10000))
    try:
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(batcher.submit, {"x": np.array([i])}) for i in range(4)]
            for future in futures:
                with pytest.raises(ServingError, match="kernel exploded") as error:
                    future.result(5)
                assert error.value.code == grpc.StatusCode.INTERNAL
    finally:
        batcher.close()


def test_inputs_must_share_the_batch_dimension() -> None:
    assert batch_rows({"a": np.zeros(3), "b": np.zeros((3, 2))}) == 3
    with pytest.raises(ServingError, match="equal 0th-dimension"):
        batch_rows({"a": np.zeros(3), "b": np.zeros(2)})
    with pytest.raises(ServingError, match="at least one dimension"):
        batch_rows({"a": np.array(1.0)})
