"""Per-ModelService gauges, derived from the status a reconcile computed (pure), published
after each reconcile and removed with the ModelService."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from prometheus_client import Gauge

from tfmaas.operator import metrics
from tfmaas.operator.versions import FAILED, SUCCEEDED, TRAINING


def _number(value: Any) -> float | None:
    # bool is an int to Python but never a version or a score here.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _flag(condition: bool) -> float:
    return 1.0 if condition else 0.0


def gauge_values(status: Mapping[str, Any]) -> dict[str, float | None]:
    """Each gauge's value for this status; None: no series (e.g. no canary). Tolerates any
    shape, as status is read back from the API server."""
    versions = [
        entry
        for entry in _list(status.get("versions"))
        if isinstance(entry, Mapping) and _number(entry.get("version")) is not None
    ]
    conditions = _list(status.get("conditions"))
    ready = next(
        (
            c.get("status")
            for c in conditions
            if isinstance(c, Mapping) and c.get("type") == "Ready"
        ),
        None,
    )
    served = _number(status.get("servingVersion"))
    served_entry = next((e for e in versions if _number(e.get("version")) == served), None)
    served_scores = served_entry.get("metrics") if served_entry else None
    scores = served_scores if isinstance(served_scores, Mapping) else {}
    newest = max(versions, key=lambda e: float(e["version"]), default=None)
    finished = [e for e in versions if e.get("state") in (SUCCEEDED, FAILED)]
    newest_finished = max(finished, key=lambda e: float(e["version"]), default=None)
    return {
        "served_version": served,
        "canary_version": _number(status.get("canaryVersion")),
        "latest_version": _number(status.get("latestVersion")),
        "served_accuracy": _number(scores.get("accuracy")),
        "served_f1": _number(scores.get("f1")),
        "ready": _flag(ready == "True"),
        "training_running": _flag(newest is not None and newest.get("state") == TRAINING),
        "training_failed": _flag(
            newest_finished is not None and newest_finished["state"] == FAILED
        ),
        "below_quality_gate": _flag(
            newest_finished is not None
            and newest_finished["state"] == SUCCEEDED
            and newest_finished.get("promoted") is False
        ),
    }


def publish(*, namespace: str, name: str, status: Mapping[str, Any]) -> None:
    for key, value in gauge_values(status).items():
        gauge = metrics.MODEL_GAUGES[key]
        if value is None:
            _remove(gauge, namespace, name)
        else:
            gauge.labels(namespace, name).set(value)


def training_finished(*, namespace: str, name: str, seconds: float) -> None:
    metrics.LAST_TRAINING_SECONDS.labels(namespace, name).set(seconds)


def remove(*, namespace: str, name: str) -> None:
    """The ModelService is gone: so are its series."""
    for gauge in (*metrics.MODEL_GAUGES.values(), metrics.LAST_TRAINING_SECONDS):
        _remove(gauge, namespace, name)


def _remove(gauge: Gauge, namespace: str, name: str) -> None:
    with contextlib.suppress(KeyError):  # never published
        gauge.remove(namespace, name)
