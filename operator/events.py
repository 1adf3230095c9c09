"""The Events that tell users about each transition of a ModelService's status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tfmaas.operator.search import search_summary
from tfmaas.operator.status import PHASE_FAILED, QUIET_REASONS, READY, RECOVERY_REASONS
from tfmaas.operator.versions import FAILED, SUCCEEDED


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str


def transitions(previous: Mapping[str, Any], current: Mapping[str, Any]) -> list[Event]:
    """An Event for each condition whose status or reason changed, and for a new phase that
    no condition's Event explains.

    Each Event is a write to the API server: at a thousand ModelServices, Events that repeat
    each other were a quarter of the operator's requests.
    """
    old = {c.get("type"): c for c in previous.get("conditions") or []}
    events = []
    for entry in current.get("conditions") or []:
        before = old.get(entry["type"])
        if before is not None and (before.get("status"), before.get("reason")) == (
            entry["status"],
            entry["reason"],
        ):
            continue
        if entry["reason"] in QUIET_REASONS:
            continue
        if entry["reason"] in RECOVERY_REASONS and before is None:
            continue
        kind = "Warning" if entry["status"] == "False" and entry["type"] != READY else "Normal"
        events.append(Event(kind, entry["reason"], entry["message"]))
    events.extend(_search_finished(previous.get("tuning"), current.get("tuning")))
    if previous.get("phase") != current.get("phase") and not events:
        events.append(
            Event(
                "Warning" if current.get("phase") == PHASE_FAILED else "Normal",
                f"Phase{current.get('phase')}",
                f"phase {previous.get('phase') or 'None'} -> {current.get('phase')}",
            )
        )
    return events


def _search_finished(previous: Any, current: Any) -> list[Event]:
    """One Event when a search ends: which configuration won (or that every trial failed)."""
    if not isinstance(current, Mapping) or current.get("phase") not in (SUCCEEDED, FAILED):
        return []
    before = previous if isinstance(previous, Mapping) else {}
    same_search = before.get("trainingHash") == current.get("trainingHash")
    if same_search and before.get("phase") == current.get("phase"):
        return []
    summary = search_summary(current)
    if current["phase"] == FAILED:
        return [Event("Warning", "SearchFailed", f"hyperparameter search failed: {summary}")]
    version = current.get("version")
    then = f"; training version {version} with it" if version is not None else ""
    return [Event("Normal", "SearchSucceeded", f"hyperparameter search done: {summary}{then}")]
