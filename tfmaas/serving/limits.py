"""A bound on calls in flight that refuses the one over it at once instead of queueing it.

A queue without a bound turns an overload into unbounded memory and latency for everyone; a
refusal with RESOURCE_EXHAUSTED (HTTP 429) tells a client to back off or try another replica.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from tfmaas.serving.errors import ServingError


class InFlightLimit:
    def __init__(self, limit: int, *, flag: str) -> None:
        if limit < 1:
            raise ValueError(f"an in-flight limit must be >= 1, got {limit}")
        self.limit = limit
        self._flag = flag
        self._slots = threading.BoundedSemaphore(limit)

    def acquire(self) -> None:
        """Take a slot, or raise RESOURCE_EXHAUSTED without waiting for one."""
        if not self._slots.acquire(blocking=False):
            raise ServingError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the server already runs its limit of {self.limit} unbatched requests "
                f"(--{self._flag}); retry later or on another replica",
            )

    def release(self) -> None:
        self._slots.release()

    @contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()
