"""How long a training Job ran, from what the API server says about it (any shape)."""

from __future__ import annotations

from typing import Any

import pytest

from tfmaas.operator import metrics
from tfmaas.operator.model_metrics import remove, training_finished
from tfmaas.operator.training import job_seconds


def job(**status: Any) -> dict[str, Any]:
    return {"kind": "Job", "status": status}


@pytest.mark.parametrize(
    "status",
    [
        {},
        {"startTime": "2026-01-02T03:04:05Z"},  # still running
        {"startTime": "yesterday", "completionTime": "2026-01-02T03:04:05Z"},
        {"startTime": 1767322800, "completionTime": "2026-01-02T03:04:05Z"},
        {"startTime": "2026-01-02T03:04:05", "completionTime": "2026-01-02T03:05:05"},  # no zone
        {"startTime": "2026-01-02T03:04:05Z", "completionTime": "2026-01-02T03:00:00Z"},
        {"startTime": "2026-01-02T03:04:05Z", "completionTime": "2" * 10_000},
        {
            "startTime": "2026-01-02T03:04:05Z",
            "conditions": [{"type": "Failed", "status": "False", "lastTransitionTime": "x"}],
        },
    ],
)
def test_no_duration_from_missing_malformed_or_backwards_times(status: dict[str, Any]) -> None:
    assert job_seconds(job(**status)) is None


def test_a_completed_job_runs_start_to_completion_and_a_failed_one_to_its_condition() -> None:
    done = job(startTime="2026-01-02T03:04:05Z", completionTime="2026-01-02T04:04:05.5Z")
    assert job_seconds(done) == 3600.5
    failed = job(
        startTime="2026-01-02T03:04:05Z",
        conditions=[
            {
                "type": "FailureTarget",
                "status": "True",
                "lastTransitionTime": "2026-01-02T03:04:06Z",
            },
            {"type": "Failed", "status": "True", "lastTransitionTime": "2026-01-02T03:05:05Z"},
        ],
    )
    assert job_seconds(failed) == 60.0


def test_the_last_training_gauge_goes_with_the_model_service() -> None:
    training_finished(namespace="ml", name="t", seconds=42.0)
    assert (
        metrics.REGISTRY.get_sample_value(
            "tfmaas_modelservice_last_training_seconds", {"namespace": "ml", "modelservice": "t"}
        )
        == 42.0
    )
    remove(namespace="ml", name="t")
    assert (
        metrics.REGISTRY.get_sample_value(
            "tfmaas_modelservice_last_training_seconds", {"namespace": "ml", "modelservice": "t"}
        )
        is None
    )
