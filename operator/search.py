"""Decisions of a hyperparameter search, as pure functions: what its trial Jobs say, how many
trials to start, which configuration Optuna suggests next, which trial won, and what
`status.tuning` shows.

The study is not kept anywhere but in status: each reconcile rebuilds an in-memory Optuna
study from the trial records (ask-and-tell), asks it for the next configurations, and
forgets it. The sampler is seeded with the spec's seed and the trial's number, so asking
twice for the same trial with the same history gives the same configuration: a reconcile
that crashed after creating a trial's Job and one that did not agree on what it trains.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tfmaas.api import TuningSpec
from tfmaas.api.spec import FLOAT_PARAMETERS, TUNABLE_PARAMETERS
from tfmaas.operator.versions import (
    FAILED,
    FINAL_STATES,
    SUCCEEDED,
    TRAINING,
    merge_job_records,
    truncate,
)

RUNNING = "Running"
SEARCHING = "Searching"
# Optuna's TPE sampler samples at random until this many trials have finished, then models
# the good and bad ones; fewer than its default 10 because a search here has at most 50.
STARTUP_TRIALS = 5
_MAX_TRIALS_KEPT = 50


@dataclass(frozen=True)
class TrialRecord:
    """One entry of `status.tuning.trials`."""

    trial: int
    state: str  # Running, Succeeded or Failed
    parameters: Mapping[str, float | int]
    value: float | None = None
    job: str | None = None
    message: str | None = None

    def to_status(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "trial": self.trial,
            "state": self.state,
            "parameters": dict(self.parameters),
        }
        optional = {"value": self.value, "job": self.job, "message": self.message}
        entry.update({key: value for key, value in optional.items() if value is not None})
        return entry

    @classmethod
    def from_status(cls, entry: Mapping[str, Any]) -> TrialRecord | None:
        """The record, or None for an entry that is not one the operator wrote."""
        trial, state = entry.get("trial"), entry.get("state")
        parameters = entry.get("parameters")
        value = entry.get("value")
        if not isinstance(trial, int) or isinstance(trial, bool) or not 0 <= trial < 1000:
            return None
        if state not in (RUNNING, SUCCEEDED, FAILED) or not isinstance(parameters, Mapping):
            return None
        clean = parameters_from(parameters)
        if clean is None:
            return None
        return cls(
            trial=trial,
            state=str(state),
            parameters=clean,
            value=_score(value),
            job=entry.get("job") if isinstance(entry.get("job"), str) else None,
            message=entry.get("message") if isinstance(entry.get("message"), str) else None,
        )


@dataclass(frozen=True)
class TrialObservation:
    """What a trial's Job (and, once finished, its pod) says."""

    trial: int
    job: str
    parameters: Mapping[str, float | int]
    state: str  # versions.TRAINING, SUCCEEDED or FAILED, as training.job_state says
    termination_message: str | None = None
    failure: str | None = None


@dataclass(frozen=True)
class Search:
    """A search's trials so far, against the spec that asks for it."""

    tuning: TuningSpec
    training_hash: str
    trials: list[TrialRecord] = field(default_factory=list)

    @property
    def running(self) -> int:
        return sum(1 for t in self.trials if t.state == RUNNING)

    @property
    def failed(self) -> int:
        return sum(1 for t in self.trials if t.state == FAILED)

    @property
    def done(self) -> int:
        return sum(1 for t in self.trials if t.state in FINAL_STATES)

    @property
    def finished(self) -> bool:
        return self.done >= self.tuning.max_trials

    @property
    def best(self) -> TrialRecord | None:
        """The succeeded trial with the highest objective; the earliest on a tie."""
        scored = [t for t in self.trials if t.state == SUCCEEDED and t.value is not None]
        return max(scored, key=lambda t: (t.value, -t.trial)) if scored else None

    def to_start(self) -> list[int]:
        """The numbers of the trials to start now: up to parallelTrials running, maxTrials
        in all (a failed trial counts, so a search whose every trial fails still ends)."""
        room = min(
            self.tuning.parallel_trials - self.running, self.tuning.max_trials - len(self.trials)
        )
        first = max((t.trial for t in self.trials), default=-1) + 1
        return list(range(first, first + max(room, 0)))


def _score(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    score = float(value)
    return score if math.isfinite(score) and 0.0 <= score <= 1.0 else None


def parameters_from(raw: Mapping[str, Any]) -> dict[str, float | int] | None:
    """Tunable parameters read back from status or a Job's annotation, or None if any name
    is not tunable or any value is not a finite number."""
    clean: dict[str, float | int] = {}
    for name, value in raw.items():
        if name not in TUNABLE_PARAMETERS:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if not math.isfinite(float(value)):
            return None
        clean[name] = float(value) if name in FLOAT_PARAMETERS else int(value)
    return clean


def parse_trial_message(text: str | None, metric: str) -> float:
    """The objective from a trial's termination message (TrialResult.termination_message in
    trainer/entrypoint.py); ValueError saying what is wrong otherwise."""
    if not text or not text.strip():
        raise ValueError("the trial exited 0 but wrote no termination message with its scores")
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(
            f"the trial's termination message is not JSON: {truncate(text, 200)!r}"
        ) from None
    if not isinstance(document, Mapping) or document.get("evaluatedOn") != "validation":
        raise ValueError("the trial's termination message holds no validation scores")
    metrics = document.get("metrics")
    score = _score(metrics.get(metric)) if isinstance(metrics, Mapping) else None
    if score is None:
        raise ValueError(f"the trial's termination message has no metrics.{metric} in 0..1")
    return score


def record_from_observation(observation: TrialObservation, metric: str) -> TrialRecord:
    base = TrialRecord(
        trial=observation.trial,
        state=RUNNING,
        parameters=dict(observation.parameters),
        job=observation.job,
    )
    if observation.state == TRAINING:
        return base
    if observation.state == FAILED:
        message = observation.failure or f"trial Job {observation.job} failed"
        return replace(base, state=FAILED, message=truncate(message, 300))
    try:
        value = parse_trial_message(observation.termination_message, metric)
    except ValueError as exc:
        return replace(base, state=FAILED, message=truncate(str(exc), 300))
    return replace(base, state=SUCCEEDED, value=value)


def merge_trials(
    known: Iterable[TrialRecord], observed: Iterable[TrialObservation], metric: str
) -> list[TrialRecord]:
    """Status's trials plus what their Jobs say now. A finished trial is final (its Job is
    deleted once recorded); a running trial whose Job has vanished failed."""
    merged = merge_job_records(
        {record.trial: record for record in known},
        ((observation.trial, observation) for observation in observed),
        record=lambda observation: record_from_observation(observation, metric),
        unfinished=RUNNING,
        vanished=lambda record: f"trial Job {record.job} was deleted before it ended",
    )
    return merged[:_MAX_TRIALS_KEPT]


def known_trials(previous: Mapping[str, Any] | None, training_hash: str) -> list[TrialRecord]:
    """The trials `status.tuning` records for the search of this spec.training (none when
    it records another spec's search)."""
    if not isinstance(previous, Mapping) or previous.get("trainingHash") != training_hash:
        return []
    entries = previous.get("trials")
    if not isinstance(entries, list):
        return []
    records = (
        TrialRecord.from_status(e) for e in entries[:_MAX_TRIALS_KEPT] if isinstance(e, Mapping)
    )
    return [record for record in records if record is not None]


def _distributions(tuning: TuningSpec) -> dict[str, Any]:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    found: dict[str, Any] = {}
    for p in tuning.parameters:
        if p.choices is not None:
            found[p.name] = CategoricalDistribution(list(p.choices))
        elif p.is_float:
            found[p.name] = FloatDistribution(float(p.low or 0), float(p.high or 0), log=p.log)
        else:
            found[p.name] = IntDistribution(int(p.low or 0), int(p.high or 0), log=p.log)
    return found


def suggest(search: Search, trial: int, *, seed: int) -> dict[str, float | int]:
    """The configuration Optuna's TPE sampler proposes for `trial`, given every trial so far
    (finished ones with their scores, running ones as running: the constant liar keeps
    parallel trials from all trying the same place)."""
    import optuna
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = _distributions(search.tuning)
    sampler = optuna.samplers.TPESampler(
        seed=(seed * 1009 + trial) % 2**32,
        n_startup_trials=STARTUP_TRIALS,
        constant_liar=True,
    )
    study = optuna.create_study(direction="maximize", sampler=sampler)
    states = {RUNNING: TrialState.RUNNING, FAILED: TrialState.FAIL}
    for record in search.trials:
        params = {k: v for k, v in record.parameters.items() if k in distributions}
        value = record.value if record.state == SUCCEEDED else None
        try:
            frozen = create_trial(
                params=params,
                distributions=distributions,
                value=value,
                state=TrialState.COMPLETE if value is not None else states[record.state],
            )
        except (KeyError, ValueError):
            continue  # not this search's space (cannot happen while the hash matches)
        study.add_trial(frozen)
    asked = study.ask(distributions)
    return parameters_from(asked.params) or {}


def search_status(search: Search, *, version: int | None = None) -> dict[str, Any]:
    """`status.tuning`: the search's progress, its best trial and every trial."""
    best = search.best
    phase = SEARCHING if not search.finished else SUCCEEDED if best is not None else FAILED
    status: dict[str, Any] = {
        "trainingHash": search.training_hash,
        "objective": search.tuning.objective,
        "phase": phase,
        "maxTrials": search.tuning.max_trials,
        "trialsDone": search.done,
        "trialsRunning": search.running,
        "trialsFailed": search.failed,
        "trials": [trial.to_status() for trial in search.trials],
    }
    if best is not None:
        status["best"] = {
            "trial": best.trial,
            "value": best.value,
            "parameters": dict(best.parameters),
        }
    if version is not None:
        status["version"] = version
    return status


def trial_table(search: Search) -> dict[str, Any]:
    """The search as the tuned version's model card records it."""
    best = search.best
    return {
        "objective": search.tuning.objective,
        "evaluatedOn": "validation",
        "sampler": "optuna TPE",
        "bestTrial": best.trial if best else None,
        "trials": [
            {
                "trial": t.trial,
                "state": t.state,
                "parameters": dict(t.parameters),
                "value": t.value,
            }
            for t in search.trials
        ],
    }


def search_summary(status: Mapping[str, Any]) -> str:
    """One line for the Event and condition that report a finished or running search."""
    objective = status.get("objective", "objective")
    done, total = status.get("trialsDone", 0), status.get("maxTrials", 0)
    failed = status.get("trialsFailed", 0)
    text = f"{done} of {total} trials done ({failed} failed)"
    best = status.get("best")
    if isinstance(best, Mapping):
        shown = ", ".join(f"{k}={v:g}" for k, v in (best.get("parameters") or {}).items())
        text += f"; best trial {best.get('trial')}: {objective} {best.get('value'):.4f} ({shown})"
    return text
