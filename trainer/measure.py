"""What a version costs to serve, measured where it is exported: its SavedModel's size on disk
and the median latency of one single-sentence `serving_default` call."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from tfmaas.storage import MANIFEST_NAME

# Files next to the SavedModel that serving never loads.
NOT_SERVED = {"metrics.json", "model_card.json", MANIFEST_NAME}
WARMUP_CALLS = 5
TIMED_CALLS = 50


def directory_bytes(directory: Path) -> int:
    """Bytes of the SavedModel under `directory` (its metrics and model card left out)."""
    return sum(
        path.stat().st_size
        for path in directory.rglob("*")
        if path.is_file() and path.name not in NOT_SERVED
    )


def p50_latency_ms(saved_model: Path, sentence: str) -> float:
    """Median milliseconds of one in-process `serving_default` call on one sentence (no
    network: it compares models, not servers)."""
    import tensorflow as tf

    serve = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    text = tf.constant([sentence], dtype=tf.string)
    for _ in range(WARMUP_CALLS):
        serve(text=text)
    timings = []
    for _ in range(TIMED_CALLS):
        started = time.perf_counter()
        serve(text=text)
        timings.append((time.perf_counter() - started) * 1000.0)
    return round(statistics.median(timings), 3)
