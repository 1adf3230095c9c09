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
# TensorFlow's SavedModel loader (tensorflow/cc/saved_model/loader.cc), which TF Serving runs:
# attempts by export directory and status "success" or "fail", and the microseconds spent on
# the successful ones.
LOAD_ATTEMPTS = ":tensorflow:cc:saved_model:load_attempt_count"
LOAD_LATENCY = ":tensorflow:cc:saved_model:load_latency"
# tfmaas's own: rows per batched model call. TF Serving's batching session keeps batch sizes as
# percentile samplers, which its Prometheus exporter writes as plain scalars without their
# percentiles (prometheus_exporter.cc serializes every non-histogram as an int64 value).
BATCH_SIZE = "tfmaas_serving_batch_size"
BATCH_SIZE_BOUNDS: tuple[float, ...] = tuple(float(2**i) for i in range(17))
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

    def __init__(self, bounds: int = len(LATENCY_BOUNDS)) -> None:
        self.buckets = [0] * (bounds + 1)
        self.count = 0
        self.total = 0.0


class ServingMetrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = defaultdict(int)
        self._latency: dict[tuple[str, str, str], _Histogram] = defaultdict(_Histogram)
        self._load_attempts: dict[tuple[str, str], int] = defaultdict(int)
        self._load_latency: dict[str, float] = defaultdict(float)
        self._batch_sizes: dict[str, _Histogram] = defaultdict(
            lambda: _Histogram(len(BATCH_SIZE_BOUNDS))
        )

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

    def record_load(self, *, model_path: str, seconds: float, ok: bool) -> None:
        """One attempt to load a version from `model_path` (a path the server's config names,
        never a client's)."""
        with self._lock:
            self._load_attempts[(model_path, "success" if ok else "fail")] += 1
            if ok:
                self._load_latency[model_path] += seconds * 1e6

    def record_batch(self, *, model_name: str, rows: int) -> None:
        index = bisect.bisect_left(BATCH_SIZE_BOUNDS, rows)
        with self._lock:
            histogram = self._batch_sizes[model_name]
            histogram.buckets[index] += 1
            histogram.count += 1
            histogram.total += rows

    def exposition(self) -> str:
        with self._lock:
            counts = sorted(self._counts.items())
            latency = sorted(
                (key, list(h.buckets), h.count, h.total) for key, h in self._latency.items()
            )
            attempts = sorted(self._load_attempts.items())
            load_latency = sorted(self._load_latency.items())
            batch_sizes = sorted(
                (key, list(h.buckets), h.count, h.total) for key, h in self._batch_sizes.items()
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
            lines += _histogram_lines(
                REQUEST_LATENCY, base, LATENCY_BOUNDS, buckets, count=count, total=total
            )
        lines += [
            f"# HELP {LOAD_ATTEMPTS} The number of times a SavedModel was successfully loaded.",
            f"# TYPE {LOAD_ATTEMPTS} counter",
        ]
        for (model_path, status), value in attempts:
            labels = _labels((("model_path", model_path), ("status", status)))
            lines.append(f"{LOAD_ATTEMPTS}{{{labels}}} {value}")
        lines += [
            f"# HELP {LOAD_LATENCY} Latency in microseconds for SavedModels that were "
            "successfully loaded.",
            f"# TYPE {LOAD_LATENCY} counter",
        ]
        for model_path, micros in load_latency:
            lines.append(f"{LOAD_LATENCY}{{{_labels((('model_path', model_path),))}}} {micros:.0f}")
        lines += [
            f"# HELP {BATCH_SIZE} Rows per batched model call.",
            f"# TYPE {BATCH_SIZE} histogram",
        ]
        for model_name, buckets, count, total in batch_sizes:
            model = (("model_name", model_name),)
            lines += _histogram_lines(
                BATCH_SIZE, model, BATCH_SIZE_BOUNDS, buckets, count=count, total=total
            )
        return "\n".join(lines) + "\n"


def _histogram_lines(
    name: str,
    labels: tuple[tuple[str, str], ...],
    bounds: tuple[float, ...],
    buckets: list[int],
    *,
    count: int,
    total: float,
) -> list[str]:
    """One histogram series in the text format: cumulative buckets ending at +Inf, then sum
    and count."""
    lines = []
    cumulative = 0
    for bound, value in zip((*bounds, float("inf")), buckets, strict=True):
        cumulative += value
        le = "+Inf" if bound == float("inf") else _number(bound)
        lines.append(f"{name}_bucket{{{_labels((*labels, ('le', le)))}}} {cumulative}")
    lines.append(f"{name}_sum{{{_labels(labels)}}} {_number(total)}")
    lines.append(f"{name}_count{{{_labels(labels)}}} {count}")
    return lines
