"""Version decisions: numbering, when to train, what the Jobs say, gate, pin, canary."""

from __future__ import annotations

import json

import pytest

from tfmaas.api import QualityGate, load_model_service
from tfmaas.operator.versions import (
    FAILED,
    SUCCEEDED,
    TRAINING,
    JobObservation,
    VersionStatus,
    finished_jobs,
    merge_records,
    needs_training,
    next_version,
    parse_termination_message,
    supersede,
    trim_history,
)
from tfmaas.serving_policy import plan_serving

GATE = QualityGate(min_accuracy=0.8)


def message(accuracy: float, f1: float = 0.5) -> str:
    return json.dumps(
        {
            "version": 1,
            "metrics": {"accuracy": accuracy, "precision": 0.5, "recall": 0.5, "f1": f1},
            "trainedAt": "2026-01-01T00:00:00Z",
            "examples": {"train": 8, "validation": 1, "test": 1},
            "uri": "s3://m/x/1/",
        }
    )


def ok(version: int, promoted: bool = True, training_hash: str = "h") -> VersionStatus:
    return VersionStatus(
        version,
        SUCCEEDED,
        training_hash,
        f"x-train-{version}",
        metrics={"accuracy": 0.9},
        promoted=promoted,
    )


def serving(**overrides: object):  # type: ignore[no-untyped-def]
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


def test_version_numbers_are_monotonic_and_never_reused() -> None:
    assert next_version([], None) == 1
    assert next_version([ok(1), VersionStatus(2, FAILED)], 2) == 3
    # status.latestVersion remembers numbers whose records are gone
    assert next_version([ok(1)], 5) == 6


def test_training_is_needed_once_per_training_spec() -> None:
    assert needs_training([], "a")
    assert not needs_training([ok(1, training_hash="a")], "a")
    assert needs_training([ok(1, training_hash="a")], "b")
    # a failed attempt of the same spec is not retried on its own
    assert not needs_training([VersionStatus(2, FAILED, "b")], "b")


def test_termination_message_parsing() -> None:
    result = parse_termination_message(message(0.91))
    assert result.metrics["accuracy"] == 0.91 and result.trained_at == "2026-01-01T00:00:00Z"
    for bad, says in [
        ("", "no termination message"),
        ("Traceback: boom", "not JSON"),
        ('{"version": 1}', "no metrics"),
        ('{"metrics": {"f1": 0.5}}', "accuracy"),
    ]:
        with pytest.raises(ValueError, match=says):
            parse_termination_message(bad)


def test_merge_judges_finished_jobs_against_the_gate() -> None:
    observed = [
        JobObservation(1, "x-train-1", "a", SUCCEEDED, message(0.9)),
        JobObservation(2, "x-train-2", "b", SUCCEEDED, message(0.7)),
        JobObservation(3, "x-train-3", "c", FAILED, failure="BackoffLimitExceeded: boom"),
        JobObservation(4, "x-train-4", "d", TRAINING),
        JobObservation(5, "x-train-5", "e", SUCCEEDED, "not json"),
    ]
    records = {r.version: r for r in merge_records([], observed, GATE)}
    assert records[1].promoted is True and records[1].trained_at == "2026-01-01T00:00:00Z"
    assert records[2].state == SUCCEEDED and records[2].promoted is False
    assert "accuracy 0.7000 < 0.8" in (records[2].message or "")
    assert records[3].state == FAILED and "boom" in (records[3].message or "")
    assert records[4].state == TRAINING
    assert records[5].state == FAILED and "not JSON" in (records[5].message or "")


def test_finished_records_are_final_and_vanished_training_fails() -> None:
    known = [ok(1), VersionStatus(2, TRAINING, "b", "x-train-2")]
    # version 1's Job was deleted: its record stays; version 2's Job vanished mid-training
    records = {r.version: r for r in merge_records(known, [], GATE)}
    assert records[1] == ok(1)
    assert records[2].state == FAILED and "deleted" in (records[2].message or "")
    # a stricter gate later re-judges nothing
    again = merge_records(known[:1], [JobObservation(1, "x", "h", SUCCEEDED, message(0.1))], GATE)
    assert again == [ok(1)]


def test_latest_serves_the_newest_promoted_version() -> None:
    records = [ok(1), ok(2), ok(3, promoted=False), VersionStatus(4, TRAINING)]
    plan = plan_serving(records, serving(), current_stable=1)
    assert (plan.stable, plan.canary, plan.problems) == (2, None, ())


def test_nothing_promoted_keeps_the_current_version() -> None:
    records = [ok(1, promoted=False), VersionStatus(2, FAILED)]
    assert plan_serving(records, serving(), current_stable=1).stable == 1
    assert plan_serving(records, serving(), current_stable=None).stable is None


def test_a_pin_wins_over_promotion_even_below_the_gate() -> None:
    records = [ok(1), ok(2), ok(3, promoted=False)]
    assert plan_serving(records, serving(version=1), current_stable=2).stable == 1
    assert plan_serving(records, serving(version=3), current_stable=2).stable == 3


def test_an_unavailable_pin_keeps_serving_and_says_why() -> None:
    records = [ok(1), VersionStatus(2, FAILED)]
    plan = plan_serving(records, serving(version=2), current_stable=1)
    assert plan.stable == 1
    (problem,) = plan.problems
    assert problem.reason == "PinnedVersionUnavailable" and "servable: 1" in problem.message


def test_canary_serves_a_second_version_or_explains() -> None:
    records = [ok(1), ok(2), VersionStatus(3, FAILED)]
    plan = plan_serving(records, serving(version=1, canary={"version": 2}), current_stable=1)
    assert (plan.stable, plan.canary) == (1, 2)
    plan = plan_serving(records, serving(canary={"version": 3}), current_stable=2)
    assert plan.canary is None and plan.problems[0].reason == "CanaryVersionUnavailable"
    plan = plan_serving(records, serving(canary={"version": 2}), current_stable=2)
    assert plan.canary is None and plan.problems[0].reason == "CanaryIsStable"


def test_a_version_number_taken_in_the_store_is_trained_again_under_the_next() -> None:
    failure = "BackoffLimitExceeded; the trainer said: version 1 is already published in s3://m/x"
    observed = [JobObservation(1, "x-train-1", "a", FAILED, failure=failure)]
    (record,) = merge_records([], observed, GATE)
    assert record.state == FAILED and record.training_hash is None
    assert needs_training([record], "a") and next_version([record], 1) == 2


def test_a_new_training_supersedes_older_ones_still_running() -> None:
    records = [ok(1), VersionStatus(2, TRAINING, "b", "x-train-2")]
    stopped = supersede(records, 3)
    assert stopped[0] == ok(1)
    assert stopped[1].state == FAILED and "superseded by version 3" in (stopped[1].message or "")


def failed(version: int) -> VersionStatus:
    return VersionStatus(version, FAILED, f"h{version}", f"x-train-{version}", message="no")


def test_status_keeps_what_serving_depends_on_and_the_newest_few() -> None:
    # 1 served (pinned), 3 the newest promoted, 5 below the gate, 2 the canary, then a run of
    # failures, and a version still training.
    records = [ok(1), ok(2), ok(3), failed(4), ok(5, promoted=False)]
    records += [failed(v) for v in range(6, 30)] + [VersionStatus(30, TRAINING, "h30", "j")]
    spec = serving(version=1, canary={"version": 2, "replicas": 1})
    plan = plan_serving(records, spec, current_stable=1)
    previous = {"servingVersion": 1, "canaryVersion": 2, "latestVersion": 30}
    kept = trim_history(records, plan=plan, serving=spec, previous=previous, keep=3)
    assert [r.version for r in kept] == [1, 2, 3, 5, 28, 29, 30]
    # The next reconcile, reading the trimmed status, decides the same.
    assert plan_serving(kept, spec, current_stable=1) == plan
    assert next_version(kept, None) == next_version(records, None) == 31
    latest = serving()
    assert plan_serving(kept, latest, 1).stable == plan_serving(records, latest, 1).stable == 3
    assert needs_training(kept, "h30") is False


def test_a_short_history_is_kept_whole() -> None:
    records = [ok(1), failed(2)]
    plan = plan_serving(records, serving(), current_stable=1)
    assert trim_history(records, plan=plan, serving=serving(), previous={}, keep=10) == records


def test_a_finished_job_goes_once_its_result_is_recorded_except_the_newest() -> None:
    # Version 1 is the newest: its Job stays (its logs are what the Trained condition points
    # at) until version 2 starts.
    one = [ok(1)]
    assert finished_jobs([], one) == []
    started = [ok(1), VersionStatus(2, TRAINING, "h2", "x-train-2")]
    assert finished_jobs(one, started) == ["x-train-1"]
    assert finished_jobs(started, started) == []
    # Version 2 finishes: it is the newest, its Job stays; nothing is deleted twice.
    done = [ok(1), ok(2)]
    assert finished_jobs(started, done) == []
    assert finished_jobs(done, done) == []
    # Finished, recorded and never the newest (a superseded run): goes with this write.
    assert finished_jobs([], [failed(4), VersionStatus(5, TRAINING, "h5", "x-train-5")]) == [
        "x-train-4"
    ]


def test_size_is_taken_only_when_it_is_a_plausible_byte_count_and_survives_status() -> None:
    for reported, recorded in [
        (2_718_281, 2_718_281),
        (0, None),
        (-5, None),
        ("2718281", None),
        (True, None),
        (2.5, None),
        (1 << 41, None),
        (None, None),
    ]:
        document = json.loads(message(0.9))
        document["sizeBytes"] = reported
        observed = [JobObservation(1, "x-train-1", "a", SUCCEEDED, json.dumps(document))]
        (record,) = merge_records([], observed, GATE)
        assert record.size_bytes == recorded, reported
        entry = record.to_status()
        assert entry.get("sizeBytes") == recorded
        assert VersionStatus.from_status(entry).size_bytes == recorded
    # A status edited by hand cannot put a string or a negative size into the record.
    assert VersionStatus.from_status({"version": 1, "sizeBytes": "1 GiB"}).size_bytes is None
    assert VersionStatus.from_status({"version": 1, "sizeBytes": -1}).size_bytes is None


@pytest.mark.parametrize(
    ("reported", "recorded"),
    [(2, 2), (0, 0), (-1, None), ("3", None), (True, None), (10**12, None), (None, None)],
)
def test_resumed_from_epoch_is_taken_only_when_it_is_a_plausible_count(
    reported: object, recorded: int | None
) -> None:
    document = json.loads(message(0.9))
    document["resumedFromEpoch"] = reported
    observed = [JobObservation(1, "x-train-1", "a", SUCCEEDED, json.dumps(document))]
    (record,) = merge_records([], observed, GATE)
    assert record.resumed_from_epoch == recorded
    assert ("resumedFromEpoch" in record.to_status()) == (recorded is not None)


@pytest.mark.parametrize(
    ("reported", "recorded"),
    [
        ("2.21.0", "2.21.0"),
        ("2.21", None),
        (2.21, None),
        ("2.21.0\x1b[31m", None),
        ("x" * 5000, None),
        (None, None),
    ],
)
def test_the_exporting_tensorflow_is_recorded_only_when_it_is_a_version(
    reported: object, recorded: str | None
) -> None:
    document = json.loads(message(0.9))
    document["tensorflowVersion"] = reported
    observed = [JobObservation(1, "x-train-1", "a", SUCCEEDED, json.dumps(document))]
    (record,) = merge_records([], observed, GATE)
    assert record.tensorflow_version == recorded
    assert record.to_status().get("tensorflowVersion") == recorded
    assert VersionStatus.from_status(record.to_status()) == record
