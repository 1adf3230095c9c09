"""Distillation on a real control plane: a teacher that is not published stops the student
before any Job, and a distilled, quantized student trains (the real trainer, in-process, into
a real MinIO store, as its Job would), publishes, passes the gate and is served."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration import test_operator_lifecycle as lifecycle
from tests.integration.operator_harness import wait_for
from tests.integration.test_operator_lifecycle import TIMEOUT, Harness, model_service

# The lifecycle tests' fixture: an operator with its own namespace, for this module's tests.
harness = lifecycle.harness

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

SMALL = {
    "dataset": {"uri": "builtin:chinese-reviews"},
    "model": {"maxTokens": 3000},
    "hyperparameters": {"epochs": 2, "batchSize": 32, "maxExamples": 800},
    "qualityGate": {"minAccuracy": 0.6},
}


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def _events(harness: Harness, reason: str) -> list[dict[str, Any]]:
    listed = json.loads(harness.kubectl("get", "events", "-o", "json").stdout)["items"]
    return [event for event in listed if event.get("reason") == reason]


def test_a_teacher_that_does_not_exist_gets_a_condition_an_event_and_no_job(
    harness: Harness,
) -> None:
    document = model_service("orphan")
    document["spec"]["training"]["distillation"] = {"teacher": {"version": 7}}
    harness.apply(document)
    status = harness.wait_status(
        "orphan",
        "Trained False: TeacherNotPublished",
        lambda s: _condition(s, "Trained").get("reason") == "TeacherNotPublished",
    )
    message = _condition(status, "Trained")["message"]
    assert "teacher.version 7 does not exist" in message and "No training Job" in message
    assert status["phase"] == "Failed" and not status.get("versions")
    (event,) = wait_for(lambda: _events(harness, "TeacherNotPublished"), "the Event", TIMEOUT)
    assert event["type"] == "Warning" and event["involvedObject"]["name"] == "orphan"
    assert harness.items("jobs", "tfmaas.io/model-service=orphan") == []


def _run_the_job(harness: Harness, name: str, version: int, bucket: str) -> dict[str, Any]:
    """What the Job's trainer does, in-process against MinIO: its own --training-json."""
    from tfmaas.trainer import train_and_publish

    job = wait_for(lambda: harness.get("job", f"{name}-train-{version}"), "the Job", TIMEOUT)
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    training = json.loads(command[command.index("--training-json") + 1])
    assert command[command.index("--version") + 1] == str(version)
    result = train_and_publish(
        training,
        name=name,
        store_uri=f"s3://{bucket}/{name}",
        version=version,
        log=lambda line: None,
    )
    pod = harness.training_pod(name, version)
    harness.cluster.finish_pod(
        harness.namespace, pod, termination_message=result.termination_message()
    )
    return dict(training)


def test_a_distilled_quantized_student_trains_publishes_passes_the_gate_and_serves(
    harness: Harness, minio: Any, minio_env: dict[str, str]
) -> None:
    from tfmaas.storage import open_store

    bucket = minio.bucket("distillation")
    document = model_service("pupil")
    document["spec"]["training"] = dict(SMALL)
    harness.apply(document)
    _run_the_job(harness, "pupil", 1, bucket)
    harness.serve("pupil", 1)

    harness.patch_spec(
        "pupil",
        {
            "training": {
                "model": {"maxTokens": 3000, "embeddingDim": 16},
                # 300 of the sentences maxExamples left out get the teacher's soft labels.
                "distillation": {
                    "teacher": {"version": 1},
                    "alpha": 0.5,
                    "unlabelledExamples": 300,
                },
                "compression": {"quantize": "int8", "pruneVocabulary": 1000},
            }
        },
    )
    training = _run_the_job(harness, "pupil", 2, bucket)
    assert training["distillation"]["teacher"] == {"version": 1}
    assert training["distillation"]["unlabelledExamples"] == 300
    status = harness.wait_status(
        "pupil",
        "version 2 promoted",
        lambda s: any(v["version"] == 2 and v.get("promoted") for v in s.get("versions") or []),
    )
    assert _condition(status, "QualityGatePassed")["status"] == "True"
    harness.serve("pupil", 2)

    store = open_store(f"s3://{bucket}/pupil")
    card = json.loads(store.read_bytes(2, "model_card.json"))
    assert card["teacher"]["version"] == 1 and card["teacher"]["modelService"] == "pupil"
    assert card["compression"] == {"quantize": "int8", "pruneVocabulary": 1000}
    assert card["sizeBytes"] * 4 <= card["teacher"]["sizeBytes"]
    assert card["latency"]["p50Ms"] > 0 and card["latency"]["teacherP50Ms"] > 0
    metrics = json.loads(store.read_bytes(2, "metrics.json"))
    assert metrics["quantization"]["agreementWithUnquantized"] >= 0.99
    # `kubectl get ms -o wide` shows the served version's size: what the trainer published.
    served = harness.wait_status(
        "pupil", "version 2 served", lambda s: s.get("servingVersion") == 2
    )
    assert served["servingSizeBytes"] == card["sizeBytes"]
    wide = harness.kubectl("get", "ms", "pupil", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-1] == "SIZE" and wide[1].split()[-1] == str(card["sizeBytes"])
