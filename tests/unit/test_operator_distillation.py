"""A distilled ModelService's teacher must be published before its Job starts: the pure
decision, and a reconcile that says why and creates nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tfmaas.operator.config import OperatorConfig
from tfmaas.operator.events import transitions
from tfmaas.operator.reconcile import reconcile
from tfmaas.operator.versions import FAILED, SUCCEEDED, TRAINING, VersionStatus, teacher_problem


def _records(*states: str) -> list[VersionStatus]:
    return [VersionStatus(version=i + 1, state=s) for i, s in enumerate(states)]


def test_a_published_teacher_teaches() -> None:
    assert teacher_problem(_records(SUCCEEDED, FAILED), 1, 2) is None


@pytest.mark.parametrize(
    ("records", "teacher", "latest", "fragment"),
    [
        ([], 7, None, "does not exist"),
        (_records(SUCCEEDED), 2, 1, "does not exist"),
        (_records(SUCCEEDED), 10**17, 1, "does not exist"),
        (_records(SUCCEEDED, FAILED), 2, 2, "is not published (its training failed)"),
        (_records(SUCCEEDED, TRAINING), 2, 2, "still training"),
    ],
)
def test_a_teacher_that_cannot_teach_is_named(
    records: list[VersionStatus], teacher: int, latest: int | None, fragment: str
) -> None:
    problem = teacher_problem(records, teacher, latest)
    assert problem is not None and fragment in problem
    assert problem.startswith("spec.training.distillation.teacher.version")


def test_a_version_trimmed_from_status_is_left_to_the_trainer_to_find_in_the_store() -> None:
    assert teacher_problem(_records(SUCCEEDED), 1, 40) is None


class NoJobKube:
    """Lists nothing, records status; creating anything fails the test."""

    def __init__(self) -> None:
        self.statuses: list[dict[str, Any]] = []

    def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[Any]:
        return []

    def patch_status(self, *args: Any) -> dict[str, Any]:
        self.statuses.append(args[-1])
        return {}

    def apply(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"nothing may be created: {args}")

    create_or_apply = apply


def test_a_missing_teacher_gets_a_condition_an_event_and_no_job() -> None:
    kube = NoJobKube()
    body = {
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {
            "storage": {"uri": "s3://models/m"},
            "training": {
                "dataset": {"uri": "builtin:chinese-reviews"},
                "distillation": {"teacher": {"version": 7}},
            },
        },
    }
    outcome = reconcile(kube, body, OperatorConfig())  # type: ignore[arg-type]
    assert outcome.started_training is None
    status = outcome.status
    assert status["phase"] == "Failed" and status["versions"] == []
    trained = next(c for c in status["conditions"] if c["type"] == "Trained")
    assert (trained["status"], trained["reason"]) == ("False", "TeacherNotPublished")
    assert "teacher.version 7 does not exist" in trained["message"]
    events = transitions({}, status)
    assert any(e.type == "Warning" and e.reason == "TeacherNotPublished" for e in events)
