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
            "storage": {"uri": "s3://models/m"},
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


class PodsKube:
    """Answers the one listing observe_job makes: the Job's pods."""

    def __init__(self, pods: list[dict]) -> None:  # type: ignore[type-arg]
        self.pods = pods

    def list(self, api_version, kind, namespace, selector):  # type: ignore[no-untyped-def]
        assert kind == "Pod"
        return self.pods


def _failed_job_pod(message: str) -> dict:  # type: ignore[type-arg]
    return {
        "metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {"name": "trainer", "state": {"terminated": {"exitCode": 1, "message": message}}}
            ],
        },
    }


def test_a_termination_message_reaches_status_redacted_printable_and_bounded() -> None:
    from tfmaas.operator.training import observe_job

    job = {
        "metadata": {"name": "m-v1", "labels": {"tfmaas.io/version": "1"}},
        "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimit"}]},
    }
    # A crash log's tail (FallbackToLogsOnError) or an image that is not the trainer: the
    # operator cannot know the secret's value, only the shape of an assignment.
    crash = (
        "x" * 10_000
        + "\x1b[31mAWS_SECRET_ACCESS_KEY=fake-secret-91ab\x00 aws_session_token: 'tok-91ab'\r\n"
    )
    observation = observe_job(PodsKube([_failed_job_pod(crash)]), job, "ns")  # type: ignore[arg-type]
    assert observation is not None and observation.failure is not None
    failure = observation.failure
    assert "fake-secret" not in failure and "tok-91ab" not in failure
    assert "\x1b" not in failure and "\x00" not in failure and "\r" not in failure
    assert "AWS_SECRET_ACCESS_KEY=[redacted]" in failure
    assert len(failure) < 1000


class CallsKube:
    """An empty namespace that records every call a reconcile makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def list(self, api_version, kind, namespace, selector):  # type: ignore[no-untyped-def]
        self.calls.append(("list", kind))
        return []

    def get(self, api_version, kind, namespace, name):  # type: ignore[no-untyped-def]
        self.calls.append(("get", kind))
        return None

    def apply(self, manifest):  # type: ignore[no-untyped-def]
        self.calls.append(("apply", manifest["kind"]))
        return manifest

    def create_or_apply(self, manifest):  # type: ignore[no-untyped-def]
        self.calls.append(("create", manifest["kind"]))
        return manifest

    def delete(self, api_version, kind, namespace, name):  # type: ignore[no-untyped-def]
        self.calls.append(("delete", kind))
        return False

    def patch_status(self, api_version, kind, namespace, name, status):  # type: ignore[no-untyped-def]
        self.calls.append(("patch_status", kind))
        return {}


SEARCH = {"maxTrials": 2, "parallelTrials": 2, "parameters": {"batchSize": {"choices": [32, 64]}}}


@pytest.mark.parametrize("tuning", [None, SEARCH])
def test_a_new_model_service_costs_one_job_listing_before_its_jobs(tuning: object) -> None:
    # At a thousand ModelServices applied at once the API server is the bottleneck: a first
    # reconcile asks only what it needs before the Jobs exist.
    training: dict = {"dataset": {"uri": "builtin:chinese-reviews"}}  # type: ignore[type-arg]
    if tuning is not None:
        training["tuning"] = tuning
    body = {
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {"storage": {"uri": "s3://models/m"}, "training": training},
    }
    kube = CallsKube()
    reconcile(kube, body, OperatorConfig())  # type: ignore[arg-type]
    assert kube.calls[0] == ("list", "Job")
    assert ("list", "Job") not in kube.calls[1:]
    # Each Job by a plain create: it costs the API server half of what an apply does.
    assert kube.calls.count(("create", "Job")) == (1 if tuning is None else 2)
    assert ("apply", "Job") not in kube.calls
    assert kube.calls[-1] == ("patch_status", "ModelService")
