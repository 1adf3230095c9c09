"""At most N holders at once, the waiting ones let in by priority, then in arrival order.

The operator's reconciles block on API calls in a fixed pool of threads. When a thousand
ModelServices arrive together, a first pass (which creates a training Job) should not wait
behind follow-ups of the ones already started (a Job's pod is running, a Deployment has one
more ready replica): those can wait a little, a ModelService without its Job cannot start.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class PriorityGate:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a gate needs room for at least one holder")
        self._free = limit
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for *_, future in self._waiting if not future.done())

    @asynccontextmanager
    async def hold(self, priority: int) -> AsyncIterator[None]:
        """Wait for a place (lower `priority` first) and keep it for the block."""
        if self._free > 0 and not self.waiting:
            self._free -= 1
        else:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (priority, next(self._arrivals), future))
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self._release()  # let in, then cancelled: pass the place on
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiting:
            *_, future = heapq.heappop(self._waiting)
            if not future.done():
                future.set_result(None)
                return
        self._free += 1
