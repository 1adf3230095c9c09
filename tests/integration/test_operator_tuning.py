"""A hyperparameter search on a real control plane: the operator runs its trials as Jobs
(each trained here by the real trainer in trial mode, as its pod would), a failed trial does
not fail the search, and the best configuration is trained into MinIO, published with the
trial table in its model card, and served. Changing only `tuning` starts a new search."""

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

NAME = "tuned"
TUNING = {
    "maxTrials": 3,
    "parallelTrials": 2,
    "parameters": {
        "learningRate": {"min": 0.002, "max": 0.05},
        "embeddingDim": {"choices": [16, 32]},
    },
}
SMALL = {
    "dataset": {"uri": "builtin:chinese-reviews"},
    "model": {"maxTokens": 3000},
    "hyperparameters": {"epochs": 2, "batchSize": 32, "maxExamples": 800},
    "qualityGate": {"minAccuracy": 0.55},
    "tuning": TUNING,
}


def _trial_jobs(harness: Harness) -> list[dict[str, Any]]:
    return harness.items("jobs", f"tfmaas.io/model-service={NAME},tfmaas.io/trial")


def _command(job: dict[str, Any]) -> list[str]:
    return list(job["spec"]["template"]["spec"]["containers"][0]["command"])


def _pod_of(harness: Harness, job: str) -> str:
    pods = wait_for(
        lambda: harness.items("pods", f"batch.kubernetes.io/job-name={job}"), f"{job}'s pod"
    )
    return str(pods[0]["metadata"]["name"])


def _run_trial(harness: Harness, job: dict[str, Any]) -> float:
    """What the trial's pod does: the trainer in trial mode on the Job's own arguments."""
    from tfmaas.trainer.entrypoint import run_trial

    command = _command(job)
    assert "--version" not in command  # a trial publishes nothing
    result = run_trial(
        json.loads(command[command.index("--training-json") + 1]),
        trial=int(command[command.index("--trial") + 1]),
        log=lambda line: None,
    )
    message = result.termination_message()
    assert json.loads(message)["evaluatedOn"] == "validation"
    harness.cluster.finish_pod(
        harness.namespace, _pod_of(harness, job["metadata"]["name"]), termination_message=message
    )
    return float(result.metrics["accuracy"])


def _events(harness: Harness, reason: str) -> list[dict[str, Any]]:
    listed = json.loads(harness.kubectl("get", "events", "-o", "json").stdout)["items"]
    return [event for event in listed if event.get("reason") == reason]


def test_a_search_runs_trials_as_jobs_then_trains_and_serves_the_best(
    harness: Harness, minio: Any, minio_env: dict[str, str]
) -> None:
    from tfmaas.storage import open_store
    from tfmaas.trainer import train_and_publish
    from tfmaas.trainer.entrypoint import parse_tuning_table

    bucket = minio.bucket("tuning")
    document = model_service(NAME)
    document["spec"]["training"] = dict(SMALL)
    harness.apply(document)

    first_two = wait_for(
        lambda: len(_trial_jobs(harness)) == 2 and _trial_jobs(harness), "2 trials"
    )
    status = harness.wait_status(
        NAME, "searching", lambda s: (s.get("tuning") or {}).get("trialsRunning") == 2
    )
    assert status["phase"] == "Training" and not status.get("versions")
    assert harness.items("jobs", f"tfmaas.io/model-service={NAME},tfmaas.io/version") == []
    by_trial = {j["metadata"]["labels"]["tfmaas.io/trial"]: j for j in first_two}
    scores = {0: _run_trial(harness, by_trial["0"])}
    # Trial 1 dies (say, out of memory): the search goes on without it.
    harness.cluster.finish_pod(
        harness.namespace,
        _pod_of(harness, by_trial["1"]["metadata"]["name"]),
        succeeded=False,
        termination_message='{"error":"MemoryError: boom"}',
    )
    third = wait_for(
        lambda: [
            j for j in _trial_jobs(harness) if j["metadata"]["labels"]["tfmaas.io/trial"] == "2"
        ],
        "trial 2",
        TIMEOUT,
    )[0]
    scores[2] = _run_trial(harness, third)

    job = wait_for(
        lambda: harness.get("job", f"{NAME}-train-1"), "the tuned version's Job", TIMEOUT
    )
    command = _command(job)
    training = json.loads(command[command.index("--training-json") + 1])
    table = parse_tuning_table(command[command.index("--tuning-json") + 1])
    assert table is not None and "tuning" not in training
    best = max(scores, key=lambda n: (scores[n], -n))
    assert table["bestTrial"] == best
    result = train_and_publish(
        training,
        name=NAME,
        store_uri=f"s3://{bucket}/{NAME}",
        version=1,
        log=lambda line: None,
        tuning=table,
    )
    harness.cluster.finish_pod(
        harness.namespace,
        harness.training_pod(NAME, 1),
        termination_message=result.termination_message(),
    )
    harness.serve(NAME, 1)

    tuning = harness.status(NAME)["tuning"]
    assert (tuning["phase"], tuning["version"], tuning["best"]["trial"]) == ("Succeeded", 1, best)
    assert (tuning["trialsDone"], tuning["trialsFailed"], tuning["trialsRunning"]) == (3, 1, 0)
    assert "MemoryError: boom" in tuning["trials"][1]["message"]
    chosen = tuning["best"]["parameters"]
    assert training["hyperparameters"]["learningRate"] == pytest.approx(chosen["learningRate"])
    assert training["model"]["embeddingDim"] == chosen["embeddingDim"]
    (event,) = wait_for(lambda: _events(harness, "SearchSucceeded"), "the Event", TIMEOUT)
    assert "3 of 3 trials done (1 failed)" in event["message"]
    # Every trial's Job is gone once its result is recorded.
    wait_for(lambda: _trial_jobs(harness) == [], "trial Jobs deleted", TIMEOUT)

    card = json.loads(open_store(f"s3://{bucket}/{NAME}").read_bytes(1, "model_card.json"))
    assert card["tuning"]["bestTrial"] == best and len(card["tuning"]["trials"]) == 3
    assert card["tuning"]["evaluatedOn"] == "validation"
    assert card["hyperparameters"]["learningRate"] == pytest.approx(chosen["learningRate"])

    # Only tuning changes: that is a new spec.training, so a new search (and then a version).
    harness.patch_spec(NAME, {"training": {"tuning": {"maxTrials": 2}}})
    status = harness.wait_status(
        NAME,
        "a new search",
        lambda s: (
            (s.get("tuning") or {}).get("maxTrials") == 2 and s["tuning"].get("trialsRunning") == 2
        ),
    )
    assert status["servingVersion"] == 1  # the tuned version serves on meanwhile
