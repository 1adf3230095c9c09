"""The one timestamp format tfmaas writes (status, manifests, model cards, Kubernetes objects)."""

from __future__ import annotations

from datetime import datetime, timezone


def now_rfc3339() -> str:
    """UTC now to the second, as Kubernetes writes times: 2026-01-02T03:04:05Z."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: object) -> datetime | None:
    """A Kubernetes timestamp (2026-01-02T03:04:05Z, maybe with fractions or an offset) as an
    aware datetime; None for anything else."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
