"""Where a request's model call runs when it comes from the gRPC event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import numpy as np

from tfmaas.serving.config import BatchingOptions
from tfmaas.serving.runner import INLINE_BUDGET_S, ServedVersion


class ThreadRecordingServable:
    """Stands in for a loaded model: doubles `x` and notes which thread ran each call."""

    name = "fake"
    version = 1

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.threads: list[str] = []
        self.batch_sizes: list[int] = []

    def run(self, signature: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.threads.append(threading.current_thread().name)
        self.batch_sizes.append(len(inputs["x"]))
        time.sleep(self.seconds)
        return {"y": inputs["x"] * 2}


SIGNATURE: Any = SimpleNamespace(name="serving_default")


def run_on_loop(served: ServedVersion, calls: list[tuple[int, bool]]) -> list[Any]:
    """Run (value, alone) calls concurrently on a loop whose thread is named 'loop'."""
    results: list[Any] = []

    def main() -> None:
        async def everything() -> list[Any]:
            with ThreadPoolExecutor(4, thread_name_prefix="model") as executor:
                return await asyncio.gather(
                    *(
                        served.run_async(SIGNATURE, {"x": np.array([v])}, executor, alone=alone)
                        for v, alone in calls
                    )
                )

        results.extend(asyncio.run(everything()))

    thread = threading.Thread(target=main, name="loop")
    thread.start()
    thread.join(30)
    return results


def test_a_lone_quick_call_runs_on_the_loop_once_its_speed_is_known() -> None:
    servable = ThreadRecordingServable()
    served = ServedVersion(servable, batching=None)  # type: ignore[arg-type]
    run_on_loop(served, [(1, True)])
    run_on_loop(served, [(2, True)])
    # Unknown speed counts as slow: the first call measures on a thread, the next runs inline.
    assert servable.threads[0].startswith("model")
    assert servable.threads[1] == "loop"


def test_concurrent_calls_run_on_executor_threads() -> None:
    servable = ThreadRecordingServable()
    served = ServedVersion(servable, batching=None)  # type: ignore[arg-type]
    run_on_loop(served, [(1, True)])  # learn that the model is quick
    results = run_on_loop(served, [(v, False) for v in range(4)])
    assert [r["y"].tolist() for r in results] == [[0], [2], [4], [6]]
    assert all(name.startswith("model") for name in servable.threads[1:])


def test_a_slow_model_never_runs_on_the_loop() -> None:
    servable = ThreadRecordingServable(seconds=INLINE_BUDGET_S * 2)
    served = ServedVersion(servable, batching=None)  # type: ignore[arg-type]
    for value in range(3):
        run_on_loop(served, [(value, True)])
    assert all(name.startswith("model") for name in servable.threads)


def test_batched_calls_from_the_loop_share_one_model_call() -> None:
    servable = ThreadRecordingServable()
    options = BatchingOptions(max_batch_size=8, batch_timeout_micros=200_000, num_batch_threads=1)
    served = ServedVersion(servable, batching=options)  # type: ignore[arg-type]
    try:
        results = run_on_loop(served, [(v, False) for v in range(8)])
    finally:
        served.close()
    assert [r["y"].tolist() for r in results] == [[2 * v] for v in range(8)]
    assert servable.batch_sizes == [8]
    assert servable.threads[0].startswith("batch-")
