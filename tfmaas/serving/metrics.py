"""TF Serving's request metrics, in its Prometheus exposition names.

TF Serving exports `/tensorflow/serving/request_count` as `:tensorflow:serving:request_count`;
prometheus-client refuses names that begin with ':', and the HPA's adapter rules match these exact
names, so the exposition text is written here. Latency buckets are upstream's: exponential,
scale 10 microseconds, growth 1.8, 33 buckets.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BOUNDS: tuple[float, ...] = tuple(10 * 1.8**i for i in range(33))
# The model_name label of requests for a model the server does not serve: request names are
# the client's to choose, and one series each would let any client grow every scrape unbounded.
UNKNOWN_MODEL = "__unknown__"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    return ",".join(f'{key}="{_escape(value)}"' for key, value in pairs)


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class _Histogram:
    __slots__ = ("buckets", "count", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BOUNDS) + 1)
        self.count = 0
        self.total = 0.0


class ServingMetrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = defaultdict(int)
        self._latency: dict[tuple[str, str, str], _Histogram] = defaultdict(_Histogram)

    def record(
        self, *, model_name: str, api: str, entrypoint: str, status: str, latency_us: float
    ) -> None:
        """`status` is the gRPC code name ("OK", "NOT_FOUND", ...), as upstream labels it."""
        index = bisect.bisect_left(LATENCY_BOUNDS, latency_us)
        with self._lock:
            self._counts[(model_name, status)] += 1
            histogram = self._latency[(model_name, api, entrypoint)]
            histogram.buckets[index] += 1
            histogram.count += 1
            histogram.total += latency_us

    def exposition(self) -> str:
        with self._lock:
            counts = sorted(self._counts.items())
            latency = sorted(
                (key, list(h.buckets), h.count, h.total) for key, h in self._latency.items()
            )
        lines = [
            f"# HELP {REQUEST_COUNT} The total number of requests.",
            f"# TYPE {REQUEST_COUNT} counter",
        ]
        for (model_name, status), value in counts:
            labels = _labels((("model_name", model_name), ("status", status)))
            lines.append(f"{REQUEST_COUNT}{{{labels}}} {value}")
        lines += [
            f"# HELP {REQUEST_LATENCY} Distribution of wall time (in microseconds) for "
            "Tensorflow Serving request.",
            f"# TYPE {REQUEST_LATENCY} histogram",
        ]
        for (model_name, api, entrypoint), buckets, count, total in latency:
            base = (("model_name", model_name), ("API", api), ("entrypoint", entrypoint))
            cumulative = 0
            for bound, value in zip((*LATENCY_BOUNDS, float("inf")), buckets, strict=True):
                cumulative += value
                le = "+Inf" if bound == float("inf") else _number(bound)
                lines.append(
                    f"{REQUEST_LATENCY}_bucket{{{_labels((*base, ('le', le)))}}} {cumulative}"
                )
            lines.append(f"{REQUEST_LATENCY}_sum{{{_labels(base)}}} {_number(total)}")
            lines.append(f"{REQUEST_LATENCY}_count{{{_labels(base)}}} {count}")
        return "\n".join(lines) + "\n"
