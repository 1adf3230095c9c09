"""A loaded version as the request path sees it: one call, batched or direct, blocking or from
an event loop."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Executor

from tfmaas.serving.batching import Batcher, Notify, Task, Tensors
from tfmaas.serving.config import BatchingOptions
from tfmaas.serving.limits import InFlightLimit
from tfmaas.serving.servable import Servable, Signature

# A lone request runs on the event loop only while its model answers within this; a longer call
# would hold up every other RPC (health checks included) for as long as it runs.
INLINE_BUDGET_S = 0.005


class ServedVersion:
    def __init__(
        self,
        servable: Servable,
        batching: BatchingOptions | None,
        in_flight: InFlightLimit | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.servable = servable
        self._batching = batching
        self._on_batch = on_batch
        # Unbatched calls of every version share the server's one limit; callers that queue
        # a call on a thread pool hold a slot from before it is queued until it has run.
        self.in_flight = in_flight or InFlightLimit(2**31 - 1, flag="no limit")
        self._batchers: dict[str, Batcher] = {}
        self._lock = threading.Lock()
        # Recent unbatched call time per signature (a moving average); unknown counts as slow.
        self._recent_seconds: dict[str, float] = {}

    @property
    def version(self) -> int:
        return self.servable.version

    def signature(self, name: str) -> Signature:
        return self.servable.signature(name)

    def run(self, signature: Signature, inputs: Tensors) -> Tensors:
        if self._batching is None:
            with self.in_flight.held():
                return self.servable.run(signature, inputs)
        return self._batcher(signature).submit(inputs)

    @property
    def batched(self) -> bool:
        return self._batching is not None

    def is_quick(self, signature: Signature) -> bool:
        """Whether recent unbatched calls answered within INLINE_BUDGET_S; unknown is slow."""
        return self._recent_seconds.get(signature.name, INLINE_BUDGET_S) < INLINE_BUDGET_S

    def enqueue(
        self, signature: Signature, inputs: Tensors, notify: Notify, waiter: object
    ) -> Task:
        """Queue a batched call; a batch thread calls `notify` with the batch's finished tasks."""
        return self._batcher(signature).enqueue(inputs, notify, waiter)

    async def run_async(
        self, signature: Signature, inputs: Tensors, executor: Executor, *, alone: bool = False
    ) -> Tensors:
        """`run` for an event loop. Batched calls wait on a future that the batch thread
        resolves, waking the loop once per batch. An unbatched call runs on `executor`, so
        concurrent requests use every core, except a request that is `alone` on a model whose
        calls are quick: that one runs right on the loop, sparing the two thread switches
        that would otherwise be most of its overhead."""
        loop = asyncio.get_running_loop()
        if self._batching is None:
            with self.in_flight.held():
                if alone and self.is_quick(signature):
                    return self.timed_run(signature, inputs)
                return await loop.run_in_executor(executor, self.timed_run, signature, inputs)
        future = loop.create_future()
        task = self.enqueue(signature, inputs, _loop_notifier(loop), future)
        await future
        return task.outcome()

    def timed_run(self, signature: Signature, inputs: Tensors) -> Tensors:
        """An unbatched call that also keeps the moving average `is_quick` reads."""
        started = time.perf_counter()
        try:
            return self.servable.run(signature, inputs)
        finally:
            elapsed = time.perf_counter() - started
            recent = self._recent_seconds.get(signature.name, elapsed)
            self._recent_seconds[signature.name] = 0.8 * recent + 0.2 * elapsed

    def _batcher(self, signature: Signature) -> Batcher:
        batcher = self._batchers.get(signature.name)
        if batcher is None:
            with self._lock:
                batcher = self._batchers.get(signature.name)
                if batcher is None:
                    assert self._batching is not None
                    batcher = Batcher(
                        lambda inputs: self.servable.run(signature, inputs),
                        self._batching,
                        name=f"{self.servable.name}-{self.version}-{signature.name}",
                        on_batch=self._on_batch,
                    )
                    self._batchers[signature.name] = batcher
        return batcher

    def close(self) -> None:
        with self._lock:
            batchers, self._batchers = list(self._batchers.values()), {}
        for batcher in batchers:
            batcher.close()


_notifiers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Notify] = (
    weakref.WeakKeyDictionary()
)


def _loop_notifier(loop: asyncio.AbstractEventLoop) -> Notify:
    """One notify callable per loop, so a batch's tasks from one loop share a single wake-up."""
    notifier = _notifiers.get(loop)
    if notifier is None:
        loop_ref = weakref.ref(loop)  # a strong one here would keep the loop's entry forever

        def notify(tasks: list[Task]) -> None:
            target = loop_ref()
            if target is not None:
                with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                    target.call_soon_threadsafe(_resolve, tasks)

        notifier = _notifiers.setdefault(loop, notify)
    return notifier


def _resolve(tasks: list[Task]) -> None:
    for task in tasks:
        future = task.waiter
        if isinstance(future, asyncio.Future) and not future.done():  # a cancelled RPC
            future.set_result(None)
