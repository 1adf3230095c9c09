"""A hyperparameter search's decisions (pure) and one search driven through reconcile against
an in-memory API: trials start as Jobs up to the limits, a failed trial does not fail the
search, the best configuration is trained as the next version, and an Event says so."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tfmaas.api import load_training_spec
from tfmaas.operator.config import OperatorConfig
from tfmaas.operator.events import transitions
from tfmaas.operator.naming import JOB_NAME_LABEL, TRIAL_PARAMETERS_ANNOTATION
from tfmaas.operator.reconcile import reconcile
from tfmaas.operator.search import (
    RUNNING,
    Search,
    TrialObservation,
    TrialRecord,
    known_trials,
    merge_trials,
    parse_trial_message,
    search_status,
    suggest,
)
from tfmaas.operator.versions import FAILED, SUCCEEDED, TRAINING

TUNING = {
    "maxTrials": 3,
    "parallelTrials": 2,
    "parameters": {
        "learningRate": {"min": 0.0005, "max": 0.05},
        "batchSize": {"choices": [32, 64]},
        "ngrams": {"min": 1, "max": 3},
    },
}
TRAINING_SPEC = {"dataset": {"uri": "builtin:chinese-reviews"}, "tuning": TUNING}


def _search(*trials: TrialRecord, **tuning: Any) -> Search:
    config = load_training_spec({**TRAINING_SPEC, "tuning": {**TUNING, **tuning}})
    assert config.tuning is not None
    return Search(config.tuning, config.fingerprint(), list(trials))


def _trial(number: int, state: str, value: float | None = None) -> TrialRecord:
    parameters = {"learningRate": 0.001 * (number + 1), "batchSize": 32, "ngrams": 2}
    return TrialRecord(trial=number, state=state, parameters=parameters, value=value)


def _message(accuracy: float, f1: float = 0.5, on: str = "validation") -> str:
    metrics = {"accuracy": accuracy, "precision": 0.5, "recall": 0.5, "f1": f1}
    return json.dumps({"trial": 0, "evaluatedOn": on, "metrics": metrics, "epochs": 2})


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (None, "no termination message"),
        ("", "no termination message"),
        ("Traceback ...", "not JSON"),
        ("[1]", "no validation scores"),
        (_message(0.9, on="test"), "no validation scores"),
        (json.dumps({"evaluatedOn": "validation", "metrics": {}}), "no metrics.accuracy"),
        (json.dumps({"evaluatedOn": "validation", "metrics": {"accuracy": "NaN"}}), "0..1"),
        (json.dumps({"evaluatedOn": "validation", "metrics": {"accuracy": 1e9}}), "0..1"),
        (json.dumps({"evaluatedOn": "validation", "metrics": {"accuracy": True}}), "0..1"),
    ],
)
def test_a_trial_message_that_is_not_a_validation_score_is_refused(
    text: str | None, fragment: str
) -> None:
    with pytest.raises(ValueError, match=fragment.replace(".", r"\.")):
        parse_trial_message(text, "accuracy")


def test_the_objective_picks_the_metric() -> None:
    assert parse_trial_message(_message(0.8, f1=0.7), "accuracy") == 0.8
    assert parse_trial_message(_message(0.8, f1=0.7), "f1") == 0.7


def test_limits_bound_the_trials_started() -> None:
    assert _search().to_start() == [0, 1]  # parallelTrials
    assert _search(_trial(0, RUNNING)).to_start() == [1]
    assert _search(_trial(0, SUCCEEDED, 0.8), _trial(1, RUNNING)).to_start() == [2]
    # maxTrials counts failed trials: a search whose every trial fails still ends.
    done = _search(_trial(0, FAILED), _trial(1, FAILED), _trial(2, FAILED))
    assert done.to_start() == [] and done.finished and done.best is None


def test_the_best_trial_is_the_highest_and_the_earliest_on_a_tie() -> None:
    search = _search(
        _trial(0, SUCCEEDED, 0.81), _trial(1, SUCCEEDED, 0.85), _trial(2, SUCCEEDED, 0.85)
    )
    assert search.best is not None and search.best.trial == 1
    status = search_status(search)
    assert status["phase"] == SUCCEEDED and status["best"]["trial"] == 1
    assert (status["trialsDone"], status["trialsRunning"], status["trialsFailed"]) == (3, 0, 0)


def test_a_failed_trial_does_not_fail_the_search() -> None:
    search = _search(_trial(0, FAILED), _trial(1, SUCCEEDED, 0.7), _trial(2, FAILED))
    assert search.finished and search.best is not None and search.best.trial == 1
    assert search_status(search)["phase"] == SUCCEEDED


def test_suggestions_are_in_the_space_and_the_same_when_asked_again() -> None:
    search = _search(_trial(0, SUCCEEDED, 0.8), _trial(1, FAILED))
    first = suggest(search, 2, seed=42)
    assert first == suggest(search, 2, seed=42)  # a reconcile retried after a crash agrees
    assert 0.0005 <= float(first["learningRate"]) <= 0.05
    assert first["batchSize"] in (32, 64) and first["ngrams"] in (1, 2, 3)
    assert isinstance(first["ngrams"], int) and isinstance(first["learningRate"], float)
    assert suggest(search, 2, seed=7) != first or suggest(search, 3, seed=42) != first


def test_merge_records_finished_trials_once_and_a_vanished_job_as_failed() -> None:
    known = [_trial(0, SUCCEEDED, 0.8), _trial(1, RUNNING)]
    parameters = {"learningRate": 0.01, "batchSize": 64, "ngrams": 1}
    observed = [
        TrialObservation(0, "j0", parameters, FAILED, failure="late"),  # final already
        TrialObservation(2, "j2", parameters, SUCCEEDED, _message(0.9)),
    ]
    merged = merge_trials(known, observed, "accuracy")
    assert [(t.trial, t.state, t.value) for t in merged] == [
        (0, SUCCEEDED, 0.8),
        (1, FAILED, None),
        (2, SUCCEEDED, 0.9),
    ]
    assert "deleted before it ended" in (merged[1].message or "")


def test_status_entries_that_are_not_the_operators_are_dropped() -> None:
    search = _search(_trial(0, SUCCEEDED, 0.8))
    status = search_status(search)
    status["trials"] += [
        {"trial": -1, "state": SUCCEEDED, "parameters": {}},
        {"trial": 5, "state": "Bogus", "parameters": {}},
        {"trial": 6, "state": SUCCEEDED, "parameters": {"epochs": 3}},
        {"trial": 7, "state": SUCCEEDED, "parameters": {"learningRate": float("inf")}},
        "not a mapping",
    ]
    assert [t.trial for t in known_trials(status, search.training_hash)] == [0]
    assert known_trials(status, "another-spec") == []


class FakeKube:
    """Jobs and pods in memory: apply stores, list filters by label selector."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.statuses: list[dict[str, Any]] = []

    def apply(self, manifest: dict[str, Any], **_: Any) -> dict[str, Any]:
        key = (manifest["kind"], manifest["metadata"]["name"])
        self.objects.setdefault(key, copy.deepcopy(manifest))
        return self.objects[key]

    create_or_apply = apply

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Any:
        return self.objects.get((kind, name))

    def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[Any]:
        def matches(item: dict[str, Any]) -> bool:
            labels = item["metadata"].get("labels") or {}
            for term in selector.split(","):
                key, _, value = term.partition("=")
                if key not in labels or (value and labels[key] != value):
                    return False
            return True

        return [o for (k, _), o in self.objects.items() if k == kind and matches(o)]

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        return self.objects.pop((kind, name), None) is not None

    def patch_status(self, *args: Any) -> dict[str, Any]:
        self.statuses.append(args[-1])
        return {}

    def jobs(self, component: str) -> list[dict[str, Any]]:
        return [
            o
            for (k, _), o in self.objects.items()
            if k == "Job" and o["metadata"]["labels"]["app.kubernetes.io/component"] == component
        ]

    def finish(self, job: dict[str, Any], *, message: str, succeeded: bool = True) -> None:
        kind = "Complete" if succeeded else "Failed"
        job["status"] = {"conditions": [{"type": kind, "status": "True", "reason": "X"}]}
        name = job["metadata"]["name"]
        self.objects[("Pod", name)] = {
            "metadata": {"name": name, "labels": {JOB_NAME_LABEL: name}},
            "status": {
                "phase": "Succeeded" if succeeded else "Failed",
                "containerStatuses": [
                    {"name": "trainer", "state": {"terminated": {"message": message}}}
                ],
            },
        }


def test_a_search_through_reconcile_trains_and_reports_the_best() -> None:
    kube = FakeKube()
    body: dict[str, Any] = {
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {"storage": {"uri": "s3://models/m"}, "training": TRAINING_SPEC},
    }
    config = OperatorConfig()

    def run() -> Any:
        outcome = reconcile(kube, body, config)  # type: ignore[arg-type]
        events = transitions(body.get("status") or {}, outcome.status)
        body["status"] = {k: v for k, v in outcome.status.items() if v is not None}
        return outcome, events

    outcome, _ = run()
    trials = kube.jobs("tuning")
    assert len(trials) == 2 and outcome.started_training is None
    assert outcome.status["phase"] == "Training" and outcome.status["tuning"]["trialsRunning"] == 2
    trained = next(c for c in outcome.status["conditions"] if c["type"] == "Trained")
    assert trained["reason"] == "Searching" and "0 of 3 trials done" in trained["message"]
    first = trials[0]
    command = first["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--trial" in command and "--version" not in command
    trial_spec = json.loads(command[command.index("--training-json") + 1])
    assert "tuning" not in trial_spec
    sampled = json.loads(first["metadata"]["annotations"][TRIAL_PARAMETERS_ANNOTATION])
    assert trial_spec["hyperparameters"]["learningRate"] == sampled["learningRate"]

    kube.finish(trials[0], message=_message(0.83))
    kube.finish(trials[1], message='{"error":"out of memory"}', succeeded=False)
    outcome, _ = run()
    assert len(kube.jobs("tuning")) == 1  # both recorded and deleted, the third started
    tuning = outcome.status["tuning"]
    assert (tuning["trialsDone"], tuning["trialsFailed"], tuning["trialsRunning"]) == (2, 1, 1)
    assert "out of memory" in tuning["trials"][1]["message"]

    kube.finish(kube.jobs("tuning")[0], message=_message(0.79))
    outcome, events = run()
    assert outcome.started_training == 1
    tuning = outcome.status["tuning"]
    assert (tuning["phase"], tuning["best"]["trial"], tuning["version"]) == (SUCCEEDED, 0, 1)
    (version_job,) = kube.jobs("training")
    command = version_job["spec"]["template"]["spec"]["containers"][0]["command"]
    trained_spec = json.loads(command[command.index("--training-json") + 1])
    assert (
        trained_spec["hyperparameters"]["learningRate"]
        == tuning["best"]["parameters"]["learningRate"]
    )
    table = json.loads(command[command.index("--tuning-json") + 1])
    assert table["bestTrial"] == 0 and len(table["trials"]) == 3
    assert outcome.status["versions"][0]["state"] == TRAINING
    assert [e.reason for e in events if e.reason.startswith("Search")] == ["SearchSucceeded"]
    # The next reconcile keeps the search's record and starts nothing more.
    outcome, events = run()
    assert outcome.started_training is None and outcome.status["tuning"]["version"] == 1
    assert not [e for e in events if e.reason.startswith("Search")]

    # Changing only tuning is a new spec.training: a new search, then a new version.
    body["spec"]["training"] = {**TRAINING_SPEC, "tuning": {**TUNING, "maxTrials": 2}}
    outcome, _ = run()
    assert (
        outcome.status["tuning"]["trialsRunning"] == 2
        and outcome.status["tuning"]["maxTrials"] == 2
    )


def test_a_search_whose_every_trial_fails_says_so_and_trains_nothing() -> None:
    kube = FakeKube()
    tuning = {**TUNING, "maxTrials": 1, "parallelTrials": 1}
    body: dict[str, Any] = {
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {
            "storage": {"uri": "s3://models/m"},
            "training": {**TRAINING_SPEC, "tuning": tuning},
        },
    }
    first = reconcile(kube, body, OperatorConfig())  # type: ignore[arg-type]
    body["status"] = {k: v for k, v in first.status.items() if v is not None}
    kube.finish(kube.jobs("tuning")[0], message="Killed", succeeded=False)
    outcome = reconcile(kube, body, OperatorConfig())  # type: ignore[arg-type]
    assert outcome.started_training is None and kube.jobs("training") == []
    assert outcome.status["tuning"]["phase"] == FAILED and outcome.status["phase"] == "Failed"
    trained = next(c for c in outcome.status["conditions"] if c["type"] == "Trained")
    assert (trained["status"], trained["reason"]) == ("False", "SearchFailed")
    events = transitions(body["status"], outcome.status)
    assert any(e.type == "Warning" and e.reason == "SearchFailed" for e in events)
    # Nothing more starts on the next reconcile.
    body["status"] = {k: v for k, v in outcome.status.items() if v is not None}
    again = reconcile(kube, body, OperatorConfig())  # type: ignore[arg-type]
    assert again.started_training is None and kube.jobs("tuning") == []
