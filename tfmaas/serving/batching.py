"""Server-side dynamic batching with TF Serving's BasicBatchScheduler semantics.

Concurrent requests to one signature of one version queue up; a batch closes when it holds
`max_batch_size` rows or `batch_timeout_micros` after its first request arrived, whichever comes
first, and runs as one model call on one of `num_batch_threads` threads. While every thread is
busy the open batch keeps filling, which is where the throughput comes from. A request larger than
`max_batch_size` is rejected (INVALID_ARGUMENT, as upstream does without large-batch splitting);
a full queue answers UNAVAILABLE.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np

from tfmaas.serving.config import BatchingOptions
from tfmaas.serving.errors import ServingError, invalid_argument, unavailable

log = logging.getLogger(__name__)

Tensors = dict[str, np.ndarray]


class _Task:
    __slots__ = ("arrived", "done", "error", "inputs", "result", "rows")

    def __init__(self, inputs: Tensors, rows: int) -> None:
        self.inputs = inputs
        self.rows = rows
        self.arrived = time.monotonic()
        self.done = threading.Event()
        self.result: Tensors | None = None
        self.error: ServingError | None = None


def batch_rows(inputs: Tensors) -> int:
    """The shared 0th dimension of the inputs, as TF Serving's batching session requires."""
    sizes = set()
    for array in inputs.values():
        if array.ndim == 0:
            raise invalid_argument("Batching input tensors must have at least one dimension")
        sizes.add(array.shape[0])
    if len(sizes) != 1:
        raise invalid_argument("Batching Run() input tensors must have equal 0th-dimension size")
    return sizes.pop()


def merge(tasks: list[_Task]) -> Tensors:
    if len(tasks) == 1:
        return tasks[0].inputs
    return {
        alias: np.concatenate([task.inputs[alias] for task in tasks], axis=0)
        for alias in tasks[0].inputs
    }


def split(outputs: Tensors, sizes: list[int]) -> list[Tensors]:
    total = sum(sizes)
    for alias, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"Batched output tensor '{alias}' has 0th dimension "
                f"{array.shape[0] if array.ndim else 'none'}, expected {total}: the model's "
                "outputs must keep the batch dimension to be served with batching",
            )
    bounds = np.cumsum([0, *sizes])
    return [
        {alias: array[bounds[i] : bounds[i + 1]] for alias, array in outputs.items()}
        for i in range(len(sizes))
    ]


class Batcher:
    """One queue, one batch-forming thread, `options.threads` model-call threads."""

    def __init__(
        self, run: Callable[[Tensors], Tensors], options: BatchingOptions, name: str = ""
    ) -> None:
        self._run = run
        self._options = options
        self._timeout_s = options.batch_timeout_micros / 1e6
        self._capacity_rows = options.max_batch_size * options.max_enqueued_batches
        self._cond = threading.Condition()
        self._pending: deque[_Task] = deque()
        self._pending_rows = 0
        self._closed = False
        self._free = threading.Semaphore(options.threads)
        self._pool = ThreadPoolExecutor(options.threads, thread_name_prefix=f"batch-{name}")
        self._name = name
        self.batches = 0
        self.rows = 0
        self._former = threading.Thread(target=self._form_batches, name=f"batcher-{name}")
        self._former.daemon = True
        self._former.start()

    def submit(self, inputs: Tensors) -> Tensors:
        """Blocks until this request's rows come back from a batched model call."""
        task = self._new_task(inputs)
        self._enqueue(task)
        task.done.wait()
        if task.error is not None:
            raise task.error
        assert task.result is not None
        return task.result

    def _new_task(self, inputs: Tensors) -> _Task:
        rows = batch_rows(inputs)
        if rows > self._options.max_batch_size:
            raise invalid_argument(
                f"Task size {rows} is larger than maximum input batch size "
                f"{self._options.max_batch_size}"
            )
        return _Task(inputs, rows)

    def _enqueue(self, task: _Task) -> None:
        with self._cond:
            if self._closed:
                raise unavailable("The servable is being unloaded; retry the request")
            if self._pending_rows + task.rows > self._capacity_rows:
                raise unavailable(
                    "The batch scheduling queue to which this task was submitted is full"
                )
            was_empty = not self._pending
            self._pending.append(task)
            self._pending_rows += task.rows
            # Wake the batch former only when it has something new to decide.
            if was_empty or self._pending_rows >= self._options.max_batch_size:
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._former.join(timeout=30)
        self._pool.shutdown(wait=True)
        if self.batches:
            log.info(
                "batcher %s ran %d batches, %.1f rows each on average",
                self._name,
                self.batches,
                self.rows / self.batches,
            )

    def _form_batches(self) -> None:
        limit = self._options.max_batch_size
        while True:
            self._free.acquire()
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:  # closed and drained
                    self._free.release()
                    return
                deadline = self._pending[0].arrived + self._timeout_s
                while self._pending_rows < limit and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                batch: list[_Task] = []
                rows = 0
                while self._pending and rows + self._pending[0].rows <= limit:
                    task = self._pending.popleft()
                    batch.append(task)
                    rows += task.rows
                self._pending_rows -= rows
            self._pool.submit(self._run_batch, batch)

    def _run_batch(self, batch: list[_Task]) -> None:
        self.batches += 1  # only batch threads write these; a torn read is harmless
        self.rows += sum(task.rows for task in batch)
        try:
            outputs = self._run(merge(batch))
            for task, result in zip(batch, split(outputs, [t.rows for t in batch]), strict=True):
                task.result = result
        except ServingError as exc:
            for task in batch:
                task.error = exc
        except Exception as exc:  # a model fault must reach every caller, never hang them
            error = ServingError(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
            for task in batch:
                task.error = error
        finally:
            self._free.release()
            for task in batch:
                task.done.set()
