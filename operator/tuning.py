"""The hyperparameter-search steps of a reconcile: read the trial Jobs, record what they say,
start the next trials, and say when the search has a winner to train.

Trials are training Jobs of their own (one worker each, scored on the validation split,
publishing nothing); their results come back as termination messages, as a version's do.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tfmaas.api import ModelService
from tfmaas.operator.config import OperatorConfig
from tfmaas.operator.kube import Kube
from tfmaas.operator.manifests.job import build_trial_job
from tfmaas.operator.naming import (
    JOB_NAME_LABEL,
    SEARCH_LABEL,
    TRIAL_LABEL,
    TRIAL_PARAMETERS_ANNOTATION,
    trial_job_name,
)
from tfmaas.operator.search import (
    RUNNING,
    Search,
    TrialObservation,
    TrialRecord,
    known_trials,
    merge_trials,
    parameters_from,
    search_status,
    suggest,
)
from tfmaas.operator.training import (
    _terminated_message,
    job_state,
    list_jobs,
    owned_by,
    trainer_error,
)
from tfmaas.operator.versions import FINAL_STATES, SUCCEEDED, TRAINING, truncate

log = logging.getLogger(__name__)
# A Job annotation the operator wrote holds five numbers; anything longer is not its own.
_PARAMETERS_LIMIT = 1024


@dataclass(frozen=True)
class SearchStep:
    """What one reconcile did to the search, and what the rest of the reconcile needs."""

    search: Search
    status: dict[str, Any]
    # Trial Jobs whose results status records once written: deleted after the write.
    finished_jobs: list[str] = field(default_factory=list)


def _trial_parameters(job: Mapping[str, Any]) -> dict[str, float | int] | None:
    raw = ((job.get("metadata") or {}).get("annotations") or {}).get(TRIAL_PARAMETERS_ANNOTATION)
    if not isinstance(raw, str) or len(raw) > _PARAMETERS_LIMIT:
        return None
    try:
        document = json.loads(raw)
    except json.JSONDecodeError:
        return None
    return parameters_from(document) if isinstance(document, Mapping) else None


def observe_trial(kube: Kube, job: Mapping[str, Any], namespace: str) -> TrialObservation | None:
    meta = job.get("metadata") or {}
    number = (meta.get("labels") or {}).get(TRIAL_LABEL)
    parameters = _trial_parameters(job)
    if not number or not str(number).isdigit() or parameters is None:
        return None
    state, failure = job_state(job)
    message = None
    if state != TRAINING:
        pods = kube.list("v1", "Pod", namespace, f"{JOB_NAME_LABEL}={meta['name']}")
        pods.sort(key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")
        phase = "Succeeded" if state == SUCCEEDED else "Failed"
        ended = [p for p in pods if (p.get("status") or {}).get("phase") == phase]
        text = _terminated_message(ended[-1]) if ended else None
        if state == SUCCEEDED:
            message = text
        else:
            tail = trainer_error(text)
            failure = f"{failure or 'the trial Job failed'}" + (
                f"; the trainer said: {truncate(tail, 200)}" if tail else ""
            )
    return TrialObservation(
        trial=int(number),
        job=str(meta["name"]),
        parameters=parameters,
        state=state,
        termination_message=message,
        failure=failure,
    )


def _trial_jobs(
    kube: Kube, service: ModelService, listed: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """The search's trial Jobs, among `listed` (all the ModelService's Jobs, just listed) or
    a listing of them made here."""
    return [
        job
        for job in (listed if listed is not None else list_jobs(kube, service))
        if TRIAL_LABEL in ((job.get("metadata") or {}).get("labels") or {})
        and owned_by(job, service.uid)
    ]


def stop_other_searches(
    kube: Kube,
    service: ModelService,
    keep: str | None,
    listed: list[dict[str, Any]] | None = None,
) -> None:
    """Delete the trial Jobs of searches other than `keep` (an older spec.training's, or any
    when the spec no longer tunes): their results are no longer wanted."""
    namespace = service.namespace or "default"
    for job in _trial_jobs(kube, service, listed):
        meta = job.get("metadata") or {}
        if (meta.get("labels") or {}).get(SEARCH_LABEL) != keep:
            kube.delete("batch/v1", "Job", namespace, str(meta["name"]))


def advance_search(
    kube: Kube,
    service: ModelService,
    previous: Mapping[str, Any] | None,
    config: OperatorConfig,
    listed: list[dict[str, Any]] | None = None,
) -> SearchStep:
    """Record the finished trials of spec.training.tuning's search and start the next ones,
    up to parallelTrials at once and maxTrials in all."""
    training = service.spec.training
    tuning = training.tuning
    if tuning is None:
        raise ValueError("advance_search needs spec.training.tuning")
    fingerprint = training.fingerprint()
    namespace = service.namespace or "default"
    known = known_trials(previous, fingerprint)
    final = {record.trial for record in known if record.state in FINAL_STATES}
    observations = []
    for job in _trial_jobs(kube, service, listed):
        labels = (job.get("metadata") or {}).get("labels") or {}
        if labels.get(SEARCH_LABEL) != fingerprint:
            continue
        observation = observe_trial(kube, job, namespace)
        if observation is not None and observation.trial not in final:
            observations.append(observation)
    trials = merge_trials(known, observations, tuning.metric)
    newly_final = [
        t.job
        for t in trials
        if t.state in FINAL_STATES and t.trial not in final and t.job is not None
    ]
    search = Search(tuning, fingerprint, trials)
    for number in search.to_start():
        parameters = suggest(search, number, seed=training.hyperparameters.seed)
        kube.create_or_apply(build_trial_job(service, number, parameters, config))
        log.info("%s/%s: trial %d of the search", namespace, service.name, number)
        search = Search(
            tuning,
            fingerprint,
            [
                *search.trials,
                TrialRecord(
                    trial=number,
                    state=RUNNING,
                    parameters=parameters,
                    job=trial_job_name(service.name, fingerprint, number),
                ),
            ],
        )
    return SearchStep(search=search, status=search_status(search), finished_jobs=newly_final)


def delete_trial_jobs(kube: Kube, service: ModelService, jobs: list[str]) -> None:
    namespace = service.namespace or "default"
    for name in jobs:
        kube.delete("batch/v1", "Job", namespace, name)
