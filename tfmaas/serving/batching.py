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

import grpc
import numpy as np

from tfmaas.serving.config import BatchingOptions
from tfmaas.serving.errors import ServingError, invalid_argument, unavailable

log = logging.getLogger(__name__)

Tensors = dict[str, np.ndarray]


Notify = Callable[[list["Task"]], None]


class Task:
    """One request's rows. Its `notify` is called once, from a batch thread, with every task of
    the batch that shares it, so an event loop is woken once per batch rather than per request.
    `waiter` is the caller's to keep (an asyncio future, say)."""

    __slots__ = ("arrived", "error", "inputs", "notify", "result", "rows", "waiter")

    def __init__(self, inputs: Tensors, rows: int, notify: Notify, waiter: object = None) -> None:
        self.inputs = inputs
        self.rows = rows
        self.notify = notify
        self.waiter = waiter
        self.arrived = time.monotonic()
        self.result: Tensors | None = None
        self.error: ServingError | None = None

    def outcome(self) -> Tensors:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


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


def merge(tasks: list[Task]) -> Tensors:
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
    """One queue; `options.threads` batch threads that each close a batch and run it.

    A thread that finds the queue empty sleeps; the first request wakes one, which then waits
    out the timeout (or a full batch) and runs the model. No thread hands a batch to another,
    so a batch costs no extra wake-up on its way to the model.
    """

    def __init__(
        self,
        run: Callable[[Tensors], Tensors],
        options: BatchingOptions,
        name: str = "",
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._run = run
        # Told each batch's rows (the batch-size metric).
        self._on_batch = on_batch
        self._options = options
        self._timeout_s = options.batch_timeout_micros / 1e6
        self._capacity_rows = options.max_batch_size * options.max_enqueued_batches
        self._cond = threading.Condition()
        self._pending: deque[Task] = deque()
        self._pending_rows = 0
        self._forming = False  # a thread is waiting out the open batch's timeout
        self._closed = False
        self._name = name
        self.batches = 0
        self.rows = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"batch-{name}-{i}", daemon=True)
            for i in range(options.threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, inputs: Tensors) -> Tensors:
        """Blocks until this request's rows come back from a batched model call."""
        done = threading.Event()
        task = self.enqueue(inputs, lambda _tasks: done.set())
        done.wait()
        return task.outcome()

    def enqueue(self, inputs: Tensors, notify: Notify, waiter: object = None) -> Task:
        """Queue `inputs` without blocking; once its batch has run, `notify` gets the finished
        tasks that share it, and `task.outcome()` gives each its rows (or raises its error)."""
        rows = batch_rows(inputs)
        if rows > self._options.max_batch_size:
            raise invalid_argument(
                f"Task size {rows} is larger than maximum input batch size "
                f"{self._options.max_batch_size}"
            )
        task = Task(inputs, rows, notify, waiter)
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
            # Wake a thread only when it has something new to decide: a first request, or
            # a batch that just became full.
            if was_empty or self._pending_rows >= self._options.max_batch_size:
                self._cond.notify()
        return task

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)
        if self.batches:
            log.info(
                "batcher %s ran %d batches, %.1f rows each on average",
                self._name,
                self.batches,
                self.rows / self.batches,
            )

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run_batch(batch)

    def _next_batch(self) -> list[Task] | None:
        limit = self._options.max_batch_size
        with self._cond:
            while True:
                while (not self._pending or self._forming) and not self._closed:
                    self._cond.wait()
                if not self._pending:  # closed and drained
                    return None
                # This thread owns the open batch until it closes it.
                self._forming = True
                deadline = self._pending[0].arrived + self._timeout_s
                while self._pending_rows < limit and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                batch: list[Task] = []
                rows = 0
                while self._pending and rows + self._pending[0].rows <= limit:
                    task = self._pending.popleft()
                    batch.append(task)
                    rows += task.rows
                self._pending_rows -= rows
                self._forming = False
                if self._pending:  # the next batch has begun: let an idle thread form it
                    self._cond.notify()
                if batch:  # empty only when another thread drained the queue at close
                    return batch

    def _run_batch(self, batch: list[Task]) -> None:
        rows = sum(task.rows for task in batch)
        self.batches += 1  # only batch threads write these; a torn read is harmless
        self.rows += rows
        if self._on_batch is not None:
            self._on_batch(rows)
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
        by_notify: dict[int, list[Task]] = {}
        for task in batch:
            by_notify.setdefault(id(task.notify), []).append(task)
        for tasks in by_notify.values():
            tasks[0].notify(tasks)
