"""The pure helpers of a reconcile: reading Job states and the trainer's messages."""

from __future__ import annotations

import pytest

from tfmaas.operator.config import OperatorConfig
from tfmaas.operator.reconcile import InvalidModelService, parse, reconcile
from tfmaas.operator.training import job_state, trainer_error
from tfmaas.operator.versions import FAILED, SUCCEEDED, TRAINING


def test_trainer_errors_are_unwrapped_and_crash_logs_kept() -> None:
    assert trainer_error('{"error":"dataset s3://d/x.csv: no such key"}') == (
        "dataset s3://d/x.csv: no such key"
    )
    assert trainer_error("Traceback ...\nMemoryError") == "Traceback ...\nMemoryError"
    assert trainer_error(None) is None and trainer_error("") is None


def test_job_states_from_conditions() -> None:
    def job(*conditions: tuple[str, str]) -> dict:  # type: ignore[type-arg]
        return {
            "status": {
                "conditions": [
                    {"type": kind, "status": status, "reason": "R", "message": "m"}
                    for kind, status in conditions
                ]
            }
        }

    assert job_state({}) == (TRAINING, None)
    assert job_state(job(("SuccessCriteriaMet", "True"), ("Complete", "True")))[0] == SUCCEEDED
    assert job_state(job(("Failed", "True"))) == (FAILED, "R: m")
    assert job_state(job(("Failed", "False"))) == (TRAINING, None)


def test_parse_keeps_metadata_and_applies_defaults() -> None:
    body = {
        "apiVersion": "tfmaas.io/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 3, "labels": {}},
        "spec": {
            "storage": {"uri": "s3://b/m"},
            "training": {"dataset": {"uri": "builtin:chinese-reviews"}},
        },
        "status": {"phase": "Serving", "kopf": {"anything": 1}},
    }
    service = parse(body)
    assert (service.uid, service.generation, service.namespace) == ("u", 3, "ns")
    assert service.spec.serving.autoscaling.max_replicas == 10


class StatusOnlyKube:
    """Records status writes; any other call would mean the reconcile went on regardless."""

    def __init__(self) -> None:
        self.statuses: list[dict] = []  # type: ignore[type-arg]

    def patch_status(self, api_version, kind, namespace, name, status):  # type: ignore[no-untyped-def]
        self.statuses.append(status)
        return {}


def test_a_stored_spec_that_fails_validation_is_reported_and_not_acted_on() -> None:
    kube = StatusOnlyKube()
    body = {
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 2},
        "spec": {
            "storage": {"uri": "gs://bucket/m"},
            "training": {"dataset": {"uri": "builtin:chinese-reviews"}},
        },
    }
    with pytest.raises(InvalidModelService, match=r"storage\.uri must start with s3://"):
        reconcile(kube, body, OperatorConfig())  # type: ignore[arg-type]
    (status,) = kube.statuses
    assert status["phase"] == "Failed"
    (condition,) = status["conditions"]
    assert (condition["type"], condition["status"]) == ("SpecValid", "False")
