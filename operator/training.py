"""The training steps of a reconcile: what the ModelService's Jobs say, and starting the
Job of a new version (stopping any it supersedes)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from tfmaas.api import ModelService, TrainingSpec
from tfmaas.operator.config import OperatorConfig
from tfmaas.operator.kube import Kube
from tfmaas.operator.manifests.job import build_training_job, build_worker_service
from tfmaas.operator.naming import (
    COMPLETION_INDEX_ANNOTATION,
    JOB_NAME_LABEL,
    MODEL_SERVICE_LABEL,
    TRAINER_CONTAINER,
    TRAINING_HASH_ANNOTATION,
    VERSION_LABEL,
    job_name,
)
from tfmaas.operator.versions import (
    FAILED,
    FINAL_STATES,
    SUCCEEDED,
    TRAINING,
    JobObservation,
    VersionStatus,
    needs_training,
    supersede,
    truncate,
)
from tfmaas.redact import safe_message
from tfmaas.timestamps import parse_rfc3339

log = logging.getLogger(__name__)
# Kubernetes keeps at most 4096 bytes of a termination message.
TERMINATION_MESSAGE_CHARS = 4096


def job_state(job: Mapping[str, Any]) -> tuple[str, str | None]:
    for entry in (job.get("status") or {}).get("conditions") or []:
        if entry.get("status") != "True":
            continue
        if entry.get("type") in ("Complete", "SuccessCriteriaMet"):
            return SUCCEEDED, None
        if entry.get("type") == "Failed":
            return FAILED, f"{entry.get('reason', 'Failed')}: {entry.get('message', '')}".strip()
    return TRAINING, None


def job_seconds(job: Mapping[str, Any]) -> float | None:
    """How long a finished Job ran: startTime to completionTime, or to its Failed condition
    (a failed Job has no completionTime). None while it runs or when a time is unreadable."""
    status = job.get("status") or {}
    end = status.get("completionTime") or next(
        (
            c.get("lastTransitionTime")
            for c in status.get("conditions") or []
            if c.get("type") == "Failed" and c.get("status") == "True"
        ),
        None,
    )
    started, ended = parse_rfc3339(status.get("startTime")), parse_rfc3339(end)
    if started is None or ended is None or ended < started:
        return None
    return (ended - started).total_seconds()


def _terminated_message(pod: Mapping[str, Any]) -> str | None:
    """The trainer's termination message as status and Events may show it. The pod wrote
    it, maybe with a log's tail (FallbackToLogsOnError) or an image that is not the
    trainer: credentials redacted, control characters out, bounded."""
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        if container.get("name") == TRAINER_CONTAINER:
            terminated = (container.get("state") or {}).get("terminated") or {}
            message = terminated.get("message")
            if not isinstance(message, str):
                return None
            return safe_message(message, limit=TERMINATION_MESSAGE_CHARS, keep="end")
    return None


def trainer_error(message: str | None) -> str | None:
    """The trainer reports a failure as {"error": ...}; a crash leaves its log's tail."""
    if not message:
        return None
    try:
        document = json.loads(message)
    except json.JSONDecodeError:
        return message
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        return str(document["error"])
    return message


def _chief_first(pod: Mapping[str, Any]) -> tuple[int, str]:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    index = annotations.get(COMPLETION_INDEX_ANNOTATION, "0")
    created = (pod.get("metadata") or {}).get("creationTimestamp") or ""
    return (int(index) if str(index).isdigit() else 0, created)


def observe_job(kube: Kube, job: Mapping[str, Any], namespace: str) -> JobObservation | None:
    meta = job.get("metadata") or {}
    labels = meta.get("labels") or {}
    raw_version = labels.get(VERSION_LABEL)
    if not raw_version or not str(raw_version).isdigit():
        return None
    state, failure = job_state(job)
    message = None
    if state != TRAINING:
        pods = kube.list("v1", "Pod", namespace, f"{JOB_NAME_LABEL}={meta['name']}")
        if state == SUCCEEDED:
            # The chief (completion index 0) writes the metrics of a multi-worker run.
            done = [p for p in pods if (p.get("status") or {}).get("phase") == "Succeeded"]
            done.sort(key=_chief_first)
            message = _terminated_message(done[0]) if done else None
        else:
            failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
            failed.sort(key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")
            tail = trainer_error(_terminated_message(failed[-1])) if failed else None
            failure = f"{failure or 'the training Job failed'}" + (
                f"; the trainer said: {truncate(tail, 600)}" if tail else ""
            )
    return JobObservation(
        version=int(raw_version),
        job=str(meta["name"]),
        training_hash=(meta.get("annotations") or {}).get(TRAINING_HASH_ANNOTATION),
        state=state,
        termination_message=message,
        failure=failure,
        seconds=job_seconds(job) if state != TRAINING else None,
    )


def owned_by(item: Mapping[str, Any], uid: str | None) -> bool:
    owners = (item.get("metadata") or {}).get("ownerReferences") or []
    return any(owner.get("uid") == uid for owner in owners)


def list_jobs(kube: Kube, service: ModelService) -> list[dict[str, Any]]:
    """Every Job labelled as this ModelService's: its trainings and its search's trials."""
    selector = f"{MODEL_SERVICE_LABEL}={service.name}"
    return kube.list("batch/v1", "Job", service.namespace or "default", selector)


def observe_training(
    kube: Kube,
    service: ModelService,
    known: Sequence[VersionStatus],
    listed: list[dict[str, Any]] | None = None,
) -> list[JobObservation]:
    """Observations of this ModelService's Jobs whose versions are not recorded as final.

    When the status already records a version of the current spec.training, only the Jobs
    it lists as training are read, by name. Otherwise all the ModelService's Jobs are read
    (`listed`, when the caller has just listed them): a crash between creating a Job and
    recording it leaves a Job only a listing finds.
    """
    namespace = service.namespace or "default"
    final = {record.version for record in known if record.state in FINAL_STATES}
    observations = []
    jobs: list[dict[str, Any]]
    if needs_training(known, service.spec.training.fingerprint()):
        jobs = listed if listed is not None else list_jobs(kube, service)
    else:
        found = (
            kube.get("batch/v1", "Job", namespace, record.job)
            for record in known
            if record.state == TRAINING and record.job
        )
        jobs = [job for job in found if job is not None]
    recorded = {record.version for record in known}
    highest = max(recorded, default=0)
    for job in jobs:
        if not owned_by(job, service.uid):
            continue
        version = ((job.get("metadata") or {}).get("labels") or {}).get(VERSION_LABEL)
        number = int(version) if version and str(version).isdigit() else None
        if number in final:
            continue  # finished and recorded: no need to read its pods again
        if number is not None and number < highest and number not in recorded:
            continue  # recorded once, then trimmed from status: its result is final
        observation = observe_job(kube, job, namespace)
        if observation is not None:
            observations.append(observation)
    return observations


def start_training(
    kube: Kube,
    service: ModelService,
    version: int,
    records: Sequence[VersionStatus],
    config: OperatorConfig,
    *,
    training: TrainingSpec | None = None,
    tuning_table: Mapping[str, Any] | None = None,
) -> list[VersionStatus]:
    """Create version `version`'s Job, stop older trainings it supersedes; the new records.
    `training` is what it trains when that is not spec.training as written (a search's best
    configuration, whose trial table `tuning_table` the model card records)."""
    namespace = service.namespace or "default"
    worker_service = build_worker_service(service, version)
    if worker_service is not None:
        kube.apply(worker_service)
    kube.create_or_apply(
        build_training_job(service, version, config, training=training, tuning_table=tuning_table)
    )
    stopped = supersede(records, version)
    for old, new in zip(records, stopped, strict=True):
        if old.state != new.state and old.job:
            kube.delete("batch/v1", "Job", namespace, old.job)
    log.info("%s/%s: training version %d", namespace, service.name, version)
    return [
        *stopped,
        VersionStatus(
            version=version,
            state=TRAINING,
            training_hash=service.spec.training.fingerprint(),
            job=job_name(service.name, version),
        ),
    ]


def delete_finished_jobs(kube: Kube, service: ModelService, jobs: Sequence[str]) -> None:
    """Delete training Jobs (their pods with them, and a multi-worker Job's Service) whose
    results status already records."""
    namespace = service.namespace or "default"
    for name in jobs:
        kube.delete("batch/v1", "Job", namespace, name)
        # Only a Service this ModelService owns: another one's may have the same name.
        worker_service = kube.get("v1", "Service", namespace, name)
        if worker_service is not None and owned_by(worker_service, service.uid):
            kube.delete("v1", "Service", namespace, name)
