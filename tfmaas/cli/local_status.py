"""What `tfmaas local run` records between runs, as the operator records it in a ModelService's
status: each version's quality-gate verdict, judged once, and the version serving now.

A version is judged when the local run trains it, against the gate the spec has then, as the
operator judges a Job's result when it sees it finish. A version in the store that no run of
this workdir recorded (published by the cluster, another workdir, or before this file existed)
is judged when first seen, with the gate of that run; later gate changes re-judge nothing.
The serving version keeps a model up when a pin or a canary names a version the store lacks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tfmaas.api import QualityGate, ServingSpec
from tfmaas.errors import UserError
from tfmaas.serving_policy import ServingPlan, judge_gate, plan_serving

STATUS_FILE = "status.json"
# Dozens of bytes a version; far more versions than a store holds locally.
STATUS_FILE_LIMIT = 4 * 1024 * 1024


@dataclass(frozen=True)
class RecordedVersion:
    version: int
    promoted: bool
    message: str | None = None
    # Recorded versions that have left the store are kept (their verdict stands should they
    # come back) but are not servable.
    servable: bool = True


@dataclass(frozen=True)
class LocalStatus:
    store: str
    versions: tuple[RecordedVersion, ...] = ()
    serving_version: int | None = None

    def recorded(self, version: int) -> bool:
        return any(record.version == version for record in self.versions)


def read_status(path: Path, *, store: str) -> LocalStatus:
    """The recorded status for `store`; empty when none was recorded, or for another store
    (the same workdir may serve a folder today and an s3:// store tomorrow)."""
    try:
        with path.open("rb") as file:
            raw = file.read(STATUS_FILE_LIMIT + 1)
    except FileNotFoundError:
        return LocalStatus(store=store)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from exc
    if len(raw) > STATUS_FILE_LIMIT:
        raise UserError(f"{path} is over {STATUS_FILE_LIMIT} bytes; delete it to start afresh")
    try:
        return _status_from_json(json.loads(raw), store=store)
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(
            f"{path} is not a local run status ({exc}); delete it to start afresh"
        ) from None


def _status_from_json(document: Any, *, store: str) -> LocalStatus:
    if not isinstance(document, dict):
        raise TypeError("not a JSON object")
    if document.get("store") != store:
        return LocalStatus(store=store)
    versions = tuple(
        RecordedVersion(
            version=int(entry["version"]),
            promoted=bool(entry["promoted"]),
            message=str(entry["message"]) if entry.get("message") is not None else None,
        )
        for entry in document.get("versions") or []
    )
    serving = document.get("servingVersion")
    return LocalStatus(
        store=store, versions=versions, serving_version=int(serving) if serving else None
    )


def write_status(path: Path, status: LocalStatus) -> None:
    document = {
        "store": status.store,
        "versions": [
            {"version": r.version, "promoted": r.promoted, "message": r.message}
            for r in status.versions
        ],
        "servingVersion": status.serving_version,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # Per process: a run serving and a run training the next version may both write.
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    partial.replace(path)


def record_result(
    status: LocalStatus, *, version: int, metrics: Mapping[str, float], gate: QualityGate
) -> LocalStatus:
    """`version`'s verdict, judged now unless it was recorded before (a verdict is final)."""
    if status.recorded(version):
        return status
    promoted, message = judge_gate(version, metrics, gate)
    record = RecordedVersion(version=version, promoted=promoted, message=message)
    versions = sorted((*status.versions, record), key=lambda r: r.version)
    return replace(status, versions=tuple(versions))


def record_published(
    status: LocalStatus,
    *,
    published: Iterable[int],
    read_metrics: Callable[[int], Mapping[str, float]],
    gate: QualityGate,
) -> LocalStatus:
    """Every published version recorded (the new ones judged now), each marked servable
    only while the store holds it."""
    published = set(published)
    for version in sorted(published):
        if not status.recorded(version):
            metrics = read_metrics(version)
            status = record_result(status, version=version, metrics=metrics, gate=gate)
    versions = tuple(replace(r, servable=r.version in published) for r in status.versions)
    return replace(status, versions=versions)


def plan(status: LocalStatus, serving: ServingSpec) -> ServingPlan:
    return plan_serving(status.versions, serving, status.serving_version)
