"""Loading a model version the way TF Serving's loader harness does: retried, then warmed up.

A version that fails to load is tried again `--max_num_load_retries` times,
`--load_retry_interval_micros` apart (TF Serving's defaults: 5 times, one minute apart), which
rides out a version folder still being written. A server that is stopping stops retrying.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def load_with_retries(
    load: Callable[[], T], *, retries: int, interval_s: float, stop: threading.Event, what: str
) -> T:
    attempt = 0
    while True:
        try:
            return load()
        except Exception as exc:
            if attempt >= retries or stop.is_set():
                raise
            attempt += 1
            log.warning(
                "Loading %s failed: %s; retry %d of %d in %g s (--max_num_load_retries, "
                "--load_retry_interval_micros)",
                what,
                exc,
                attempt,
                retries,
                interval_s,
            )
            if stop.wait(interval_s):
                raise
