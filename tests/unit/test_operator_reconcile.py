"""The pure helpers of a reconcile: reading Job states and the trainer's messages."""

from __future__ import annotations

from tfmaas.operator.reconcile import parse
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
