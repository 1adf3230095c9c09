"""Status computation: phase, conditions with stable transition times, Events on change."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tfmaas.operator.events import transitions
from tfmaas.operator.status import (
    DeploymentState,
    Observed,
    build_status,
    invalid_spec_status,
)
from tfmaas.operator.versions import (
    FAILED,
    SUCCEEDED,
    TRAINING,
    VersionStatus,
)
from tfmaas.serving_policy import Problem, ServingPlan

ENDPOINT = {"grpc": "m.ns.svc:8500", "rest": "http://m.ns.svc:8501"}


def deployment(version: int, ready: int = 1, updated: int = 1, total: int = 1) -> DeploymentState:
    return DeploymentState(
        version=version,
        desired=1,
        updated=updated,
        ready=ready,
        available=ready,
        total=total,
        generation=2,
        observed_generation=2,
    )


def ok(version: int, promoted: bool = True, accuracy: float = 0.9) -> VersionStatus:
    return VersionStatus(
        version,
        SUCCEEDED,
        f"h{version}",
        f"m-train-{version}",
        "2026-01-01T00:00:00Z",
        {"accuracy": accuracy},
        promoted,
        None if promoted else "below the gate",
    )


def status_of(records, plan, stable=None, previous=None, now="T1"):  # type: ignore[no-untyped-def]
    observed = Observed(3, records, plan, stable, None, ENDPOINT)
    return build_status(observed, previous or {}, now)


def conditions(status):  # type: ignore[no-untyped-def]
    return {c["type"]: c for c in status["conditions"]}


def test_training_first_version() -> None:
    status = status_of([VersionStatus(1, TRAINING, "h", "m-train-1")], ServingPlan(None, None))
    assert status["phase"] == "Training" and status["latestVersion"] == 1
    assert status["servingVersion"] is None and status["endpoint"] is None
    found = conditions(status)
    assert found["Trained"]["status"] == "Unknown" and "m-train-1" in found["Trained"]["message"]
    assert found["Ready"]["status"] == "False"
    assert all(c["observedGeneration"] == 3 for c in status["conditions"])


def test_serving_once_rolled_out() -> None:
    status = status_of([ok(1)], ServingPlan(1, None), deployment(1))
    assert status["phase"] == "Serving" and status["servingVersion"] == 1
    assert status["accuracy"] == 0.9 and status["readyReplicas"] == 1
    assert status["endpoint"] == ENDPOINT
    assert conditions(status)["Ready"]["status"] == "True"


def test_rollout_keeps_reporting_the_old_version_until_done() -> None:
    previous = {"servingVersion": 1}
    rolling = deployment(2, ready=1, updated=1, total=2)
    status = status_of([ok(1), ok(2)], ServingPlan(2, None), rolling, previous)
    assert status["phase"] == "RollingOut" and status["servingVersion"] == 1
    assert conditions(status)["Ready"]["reason"] == "RollingOut"
    done = status_of([ok(1), ok(2)], ServingPlan(2, None), deployment(2), previous)
    assert done["servingVersion"] == 2 and done["phase"] == "Serving"


def test_failed_training_and_refused_versions_explain_the_fix() -> None:
    records = [
        ok(1),
        ok(2, promoted=False),
        VersionStatus(3, FAILED, "h3", "m-train-3", message="OOM"),
    ]
    status = status_of(records, ServingPlan(1, None), deployment(1), {"servingVersion": 1})
    found = conditions(status)
    assert status["phase"] == "Serving" and status["servingVersion"] == 1
    assert found["Trained"]["status"] == "False" and "OOM" in found["Trained"]["message"]
    assert "change spec.training" in found["Trained"]["message"]
    assert found["QualityGatePassed"]["status"] == "False"
    assert "spec.serving.version: 2" in found["QualityGatePassed"]["message"]


def test_nothing_servable_after_failure_is_failed() -> None:
    status = status_of(
        [VersionStatus(1, FAILED, "h", "m-train-1", message="boom")], ServingPlan(None, None)
    )
    assert status["phase"] == "Failed"


def test_unresolved_pin_is_a_condition() -> None:
    plan = ServingPlan(1, None, (Problem("PinnedVersionUnavailable", "pin 9 unknown"),))
    found = conditions(status_of([ok(1)], plan, deployment(1)))
    assert found["VersionsResolved"]["status"] == "False"
    assert found["VersionsResolved"]["reason"] == "PinnedVersionUnavailable"


def test_transition_time_moves_only_with_status() -> None:
    first = status_of([ok(1)], ServingPlan(1, None), deployment(1), now="T1")
    same = status_of([ok(1)], ServingPlan(1, None), deployment(1), previous=first, now="T2")
    assert conditions(same)["Ready"]["lastTransitionTime"] == "T1"
    assert transitions(first, same) == []
    down = status_of([ok(1)], ServingPlan(1, None), deployment(1, ready=0), previous=same, now="T3")
    assert conditions(down)["Ready"]["lastTransitionTime"] == "T3"
    events = transitions(same, down)
    # The condition's Event says why; the phase it implies adds no Event of its own.
    assert [e.reason for e in events] == ["NoReadyReplicas"]


def test_events_on_first_status() -> None:
    status = status_of([VersionStatus(1, TRAINING, "h", "m-train-1")], ServingPlan(None, None))
    reasons = [event.reason for event in transitions({}, status)]
    # One Event says it all: nothing servable yet and no pin to resolve are not news.
    assert reasons == ["Training"]


def test_a_phase_change_no_condition_explains_is_an_event() -> None:
    status = status_of([ok(1)], ServingPlan(1, None), deployment(1))
    moved = {**status, "phase": "Degraded"}
    assert [e.reason for e in transitions(status, moved)] == ["PhaseDegraded"]


def test_a_pin_problem_and_its_recovery_are_events() -> None:
    fine = status_of([ok(1)], ServingPlan(1, None), deployment(1))
    pinned = ServingPlan(1, None, (Problem("PinnedVersionUnavailable", "pin 9 unknown"),))
    broken = status_of([ok(1)], pinned, deployment(1), previous=fine)
    assert [e.reason for e in transitions(fine, broken)] == ["PinnedVersionUnavailable"]
    again = status_of([ok(1)], ServingPlan(1, None), deployment(1), previous=broken)
    assert [e.reason for e in transitions(broken, again)] == ["Resolved"]


def test_invalid_spec_status_keeps_other_conditions() -> None:
    previous = {"conditions": [{"type": "Ready", "status": "True", "reason": "Serving"}]}
    status = invalid_spec_status("bad spec", 4, previous, "T")
    found = conditions(status)
    assert status["phase"] == "Failed" and found["SpecValid"]["status"] == "False"
    assert found["Ready"]["status"] == "True"


def test_the_serving_versions_size_is_in_status_and_absent_when_unknown() -> None:
    from dataclasses import replace

    sized = [replace(ok(1), size_bytes=1000), replace(ok(2), size_bytes=2000)]
    status = status_of(sized, ServingPlan(2, None), deployment(2))
    assert status["servingSizeBytes"] == 2000
    assert [v["sizeBytes"] for v in status["versions"]] == [1000, 2000]
    # A version the operator found in the store (no Job reported its size): no figure at all,
    # which the status merge patch turns into removing the old one.
    unknown = status_of([ok(1)], ServingPlan(1, None), deployment(1))
    assert unknown["servingSizeBytes"] is None and "sizeBytes" not in unknown["versions"][0]


def test_a_resumed_version_says_so_in_status_and_its_trained_event() -> None:
    from dataclasses import replace

    training = status_of([VersionStatus(1, TRAINING, "h1", "m-train-1")], ServingPlan(None, None))
    resumed = replace(ok(1), resumed_from_epoch=3)
    status = status_of([resumed], ServingPlan(1, None), deployment(1), previous=training)
    assert status["versions"][0]["resumedFromEpoch"] == 3
    trained = [e for e in transitions(training, status) if e.reason == "Succeeded"]
    assert len(trained) == 1 and "version 1 trained (resumed from epoch 3):" in trained[0].message
    assert (
        "resumed" not in conditions(status_of([ok(1)], ServingPlan(1, None)))["Trained"]["message"]
    )
    # The entry round-trips through status, as the next reconcile reads it back.
    assert VersionStatus.from_status(status["versions"][0]) == resumed


def exported(version: int, tensorflow: str | None) -> VersionStatus:
    return replace(ok(version), tensorflow_version=tensorflow)


def tensorflow_condition(records, plan, serving="2.20.0", previous=None):  # type: ignore[no-untyped-def]
    observed = Observed(3, records, plan, deployment(plan.stable or 1), None, ENDPOINT)
    observed = replace(observed, serving_tensorflow=serving)
    status = build_status(observed, previous or {}, "T1")
    return status, conditions(status)["ServingTensorFlowCompatible"]


def test_a_version_exported_by_a_newer_tensorflow_is_a_condition_and_a_warning() -> None:
    status, found = tensorflow_condition([exported(1, "2.21.0")], ServingPlan(1, None))
    assert (found["status"], found["reason"]) == ("False", "ExportedByNewerTensorFlow")
    assert "version 1" in found["message"] and "2.21.0" in found["message"]
    assert "2.20.0" in found["message"]
    # It warns, once; serving goes on (Ready is not this condition's to decide).
    assert conditions(status)["Ready"]["status"] == "True"
    warnings = [e for e in transitions({}, status) if e.reason == "ExportedByNewerTensorFlow"]
    assert [e.type for e in warnings] == ["Warning"]
    assert not [e for e in transitions(status, status) if e.reason == "ExportedByNewerTensorFlow"]


def test_the_canary_is_checked_too() -> None:
    records = [exported(1, "2.20.0"), exported(2, "2.22.0")]
    _, found = tensorflow_condition(records, ServingPlan(1, 2))
    assert found["reason"] == "ExportedByNewerTensorFlow" and "version 2" in found["message"]


@pytest.mark.parametrize(
    ("tensorflow", "serving", "status", "reason"),
    [
        ("2.20.0", "2.20.0", "True", "Compatible"),
        ("2.20.9", "2.20.0", "True", "Compatible"),
        ("2.18.0", "2.20.0", "True", "Compatible"),
        (None, "2.20.0", "Unknown", "ExportTensorFlowUnknown"),
        ("2.21.0", None, "Unknown", "ServingTensorFlowUnknown"),
    ],
)
def test_the_tensorflow_condition(
    tensorflow: str | None, serving: str | None, status: str, reason: str
) -> None:
    _, found = tensorflow_condition([exported(1, tensorflow)], ServingPlan(1, None), serving)
    assert (found["status"], found["reason"]) == (status, reason)


def test_nothing_to_serve_yet_says_nothing() -> None:
    status, found = tensorflow_condition([exported(1, "2.21.0")], ServingPlan(None, None))
    assert (found["status"], found["reason"]) == ("Unknown", "NoServedVersion")
    assert not [e for e in transitions({}, status) if e.reason == "NoServedVersion"]
