"""The Events that tell users about each transition of a ModelService's status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tfmaas.operator.status import PHASE_FAILED, QUIET_REASONS, READY


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str


def transitions(previous: Mapping[str, Any], current: Mapping[str, Any]) -> list[Event]:
    """An Event for each condition whose status or reason changed, and for a new phase."""
    old = {c.get("type"): c for c in previous.get("conditions") or []}
    events = []
    for entry in current.get("conditions") or []:
        before = old.get(entry["type"]) or {}
        if (before.get("status"), before.get("reason")) == (entry["status"], entry["reason"]):
            continue
        if entry["reason"] in QUIET_REASONS:
            continue
        kind = "Warning" if entry["status"] == "False" and entry["type"] != READY else "Normal"
        events.append(Event(kind, entry["reason"], entry["message"]))
    if previous.get("phase") != current.get("phase"):
        events.append(
            Event(
                "Warning" if current.get("phase") == PHASE_FAILED else "Normal",
                f"Phase{current.get('phase')}",
                f"phase {previous.get('phase') or 'None'} -> {current.get('phase')}",
            )
        )
    return events
