"""Retrying a request that failed for a passing reason (a server restarting), with backoff."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def with_backoff(
    call: Callable[[], T],
    *,
    retries: int,
    backoff: float,
    transient: Callable[[Exception], bool],
) -> T:
    """`call()`, tried again up to `retries` times while it raises an error `transient` accepts,
    waiting `backoff` seconds before the first retry and twice as long before each next one.
    Any other error, or the last one, propagates for the caller to translate."""
    delay = backoff
    for _ in range(retries):
        try:
            return call()
        except Exception as exc:
            if not transient(exc):
                raise
        time.sleep(delay)
        delay *= 2
    return call()
