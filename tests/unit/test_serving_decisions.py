"""One table of cases through both deciders, the operator's (training Jobs observed, results
recorded in status, then planned) and `tfmaas local run`'s (versions published to a real local
store, results recorded in the workdir, then planned): they must decide alike."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from tfmaas.api import QualityGate, ServingSpec, load_model_service
from tfmaas.cli.local_status import (
    plan,
    read_status,
    record_published,
    record_result,
    write_status,
)
from tfmaas.operator.versions import SUCCEEDED, JobObservation, merge_records
from tfmaas.serving_policy import plan_serving
from tfmaas.storage import open_store

LENIENT = QualityGate(min_accuracy=0.5)
STRICT = QualityGate(min_accuracy=0.85)


@dataclass(frozen=True)
class Case:
    name: str
    accuracies: dict[int, float]  # version -> accuracy, trained in order
    serving: dict[str, Any] = field(default_factory=dict)
    current: int | None = None  # serving before this decision
    gate_at_training: QualityGate = STRICT
    gate_now: QualityGate = STRICT
    # Versions no training of this decider recorded: judged when first seen, with gate_now.
    seen_later: frozenset[int] = frozenset()
    expected: tuple[int | None, int | None, tuple[str, ...]] = (None, None, ())


CASES = [
    Case("newest promoted", {1: 0.9, 2: 0.95}, expected=(2, None, ())),
    Case("refused version keeps the promoted one", {1: 0.9, 2: 0.6}, expected=(1, None, ())),
    Case("nothing promoted serves nothing", {1: 0.6}, expected=(None, None, ())),
    Case(
        "nothing promoted keeps the current one",
        {1: 0.6, 2: 0.7},
        current=1,
        expected=(1, None, ()),
    ),
    Case("pin wins over the gate", {1: 0.9, 2: 0.6}, {"version": 2}, expected=(2, None, ())),
    Case(
        "missing pin keeps the current version",
        {1: 0.9},
        {"version": 7},
        current=1,
        expected=(1, None, ("PinnedVersionUnavailable",)),
    ),
    Case(
        "missing pin with nothing serving",
        {1: 0.9},
        {"version": 7},
        expected=(None, None, ("PinnedVersionUnavailable",)),
    ),
    Case(
        "canary beside the stable one",
        {1: 0.9, 2: 0.6},
        {"canary": {"version": 2}},
        expected=(1, 2, ()),
    ),
    Case(
        "canary that is the stable one",
        {1: 0.9},
        {"canary": {"version": 1}},
        expected=(1, None, ("CanaryIsStable",)),
    ),
    Case(
        "missing canary",
        {1: 0.9},
        {"canary": {"version": 3}},
        expected=(1, None, ("CanaryVersionUnavailable",)),
    ),
    Case(
        "a stricter gate later re-judges nothing",
        {1: 0.8, 2: 0.9},
        gate_at_training=LENIENT,
        gate_now=QualityGate(min_accuracy=0.95),
        expected=(2, None, ()),
    ),
    Case(
        "a laxer gate later promotes nothing already refused",
        {1: 0.9, 2: 0.8},
        gate_at_training=STRICT,
        gate_now=LENIENT,
        expected=(1, None, ()),
    ),
    Case(
        "a version first seen later is judged with the gate then",
        {1: 0.9, 2: 0.8},
        gate_at_training=STRICT,
        gate_now=LENIENT,
        seen_later=frozenset({2}),
        expected=(2, None, ()),
    ),
]


def serving_spec(overrides: dict[str, Any]) -> ServingSpec:
    document = {
        "apiVersion": "tfmaas.io/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "x"},
        "spec": {
            "storage": {"uri": "s3://models/x"},
            "training": {"dataset": {"uri": "builtin:chinese-reviews"}},
            "serving": overrides,
        },
    }
    return load_model_service(document).spec.serving


def scores(accuracy: float) -> dict[str, float]:
    return {"accuracy": accuracy, "precision": 0.9, "recall": 0.9, "f1": 0.9}


def operator_decision(case: Case) -> tuple[int | None, int | None, tuple[str, ...]]:
    def finished(version: int) -> JobObservation:
        document = {"metrics": scores(case.accuracies[version]), "trainedAt": "T"}
        return JobObservation(version, f"x-train-{version}", "h", SUCCEEDED, json.dumps(document))

    trained_here = [finished(v) for v in sorted(case.accuracies) if v not in case.seen_later]
    records = merge_records([], trained_here, case.gate_at_training)
    # A later reconcile, with the spec's gate as it is now, sees every Job.
    records = merge_records(records, [finished(v) for v in case.accuracies], case.gate_now)
    decided = plan_serving(records, serving_spec(case.serving), case.current)
    return decided.stable, decided.canary, tuple(p.reason for p in decided.problems)


def local_decision(case: Case, workdir: Path) -> tuple[int | None, int | None, tuple[str, ...]]:
    store = open_store((workdir / "models").as_uri())
    status_file = workdir / "serving" / "status.json"
    status = read_status(status_file, store=store.uri)
    for version in sorted(case.accuracies):
        export = workdir / "export" / str(version)
        export.mkdir(parents=True)
        (export / "metrics.json").write_text(json.dumps(scores(case.accuracies[version])))
        (export / "saved_model.pb").write_bytes(b"")  # the store checks it is there, no more
        store.publish(version, export)
        if version not in case.seen_later:
            metrics = scores(case.accuracies[version])
            status = record_result(
                status, version=version, metrics=metrics, gate=case.gate_at_training
            )
    write_status(status_file, replace(status, serving_version=case.current))
    # A later run, with the spec's gate as it is now.
    status = record_published(
        read_status(status_file, store=store.uri),
        published=store.list_versions(),
        read_metrics=lambda version: store.read_json(version, "metrics.json"),
        gate=case.gate_now,
    )
    decided = plan(status, serving_spec(case.serving))
    return decided.stable, decided.canary, tuple(p.reason for p in decided.problems)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_operator_and_local_run_decide_alike(case: Case, tmp_path: Path) -> None:
    assert operator_decision(case) == case.expected
    assert local_decision(case, tmp_path) == case.expected


def test_a_version_gone_from_the_store_is_not_served(tmp_path: Path) -> None:
    """The operator's counterpart is a version that failed: recorded, never servable."""
    status = read_status(tmp_path / "status.json", store="file:///s")
    status = record_result(status, version=1, metrics=scores(0.9), gate=STRICT)
    status = record_result(status, version=2, metrics=scores(0.9), gate=STRICT)
    status = record_published(
        replace(status, serving_version=2),
        published=[1],
        read_metrics=lambda version: pytest.fail("recorded versions are not judged again"),
        gate=STRICT,
    )
    assert plan(status, serving_spec({})).stable == 1


def test_status_of_another_store_is_not_used(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    status = record_result(
        read_status(path, store="file:///a"), version=1, metrics=scores(0.9), gate=STRICT
    )
    write_status(path, replace(status, serving_version=1))
    assert read_status(path, store="file:///a") == status.__class__(
        store="file:///a", versions=status.versions, serving_version=1
    )
    assert read_status(path, store="file:///b").versions == ()


def test_a_damaged_or_huge_status_file_is_refused_by_name(tmp_path: Path) -> None:
    from tfmaas.cli.local_status import STATUS_FILE_LIMIT
    from tfmaas.errors import UserError

    path = tmp_path / "status.json"
    path.write_text('{"store": "file:///a", "versions": [{"version": "x"}]}')
    with pytest.raises(UserError, match=r"status\.json is not a local run status"):
        read_status(path, store="file:///a")
    path.write_bytes(b" " * (STATUS_FILE_LIMIT + 1))
    with pytest.raises(UserError, match="is over"):
        read_status(path, store="file:///a")
