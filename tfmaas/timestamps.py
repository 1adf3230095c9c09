"""The one timestamp format tfmaas writes (status, manifests, model cards, Kubernetes objects)."""

from __future__ import annotations

from datetime import datetime, timezone


def now_rfc3339() -> str:
    """UTC now to the second, as Kubernetes writes times: 2026-01-02T03:04:05Z."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
