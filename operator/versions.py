"""Decisions about versions, as pure functions: what the training Jobs say happened, whether
a new version must be trained, which versions status keeps. Which version each track serves
is tfmaas.serving_policy's, shared with `tfmaas local run`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tfmaas.api import QualityGate, ServingSpec
from tfmaas.api.spec import METRIC_NAMES
from tfmaas.serving_policy import ServingPlan, judge_gate
from tfmaas.tensorflow_versions import parse_version

TRAINING = "Training"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
FINAL_STATES = (SUCCEEDED, FAILED)
MESSAGE_LIMIT = 1024


@dataclass(frozen=True)
class VersionStatus:
    """One entry of a ModelService's `status.versions`: a version and its recorded result."""

    version: int
    state: str
    training_hash: str | None = None
    job: str | None = None
    trained_at: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    promoted: bool | None = None
    message: str | None = None
    resumed_from_epoch: int | None = None
    tensorflow_version: str | None = None
    """The TensorFlow that exported the version, as its trainer reported it."""
    size_bytes: int | None = None

    @property
    def servable(self) -> bool:
        return self.state == SUCCEEDED

    def to_status(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"version": self.version, "state": self.state}
        optional = {
            "trainingHash": self.training_hash,
            "job": self.job,
            "trainedAt": self.trained_at,
            "resumedFromEpoch": self.resumed_from_epoch,
            "tensorflowVersion": self.tensorflow_version,
            "sizeBytes": self.size_bytes,
            "metrics": dict(self.metrics) if self.metrics else None,
            "promoted": self.promoted,
            "message": self.message,
        }
        entry.update({key: value for key, value in optional.items() if value is not None})
        return entry

    @classmethod
    def from_status(cls, entry: Mapping[str, Any]) -> VersionStatus:
        return cls(
            version=int(entry["version"]),
            state=str(entry.get("state", SUCCEEDED)),
            training_hash=entry.get("trainingHash"),
            job=entry.get("job"),
            trained_at=entry.get("trainedAt"),
            metrics=dict(entry.get("metrics") or {}),
            promoted=entry.get("promoted"),
            message=entry.get("message"),
            resumed_from_epoch=_epoch(entry.get("resumedFromEpoch")),
            tensorflow_version=tensorflow_version(entry.get("tensorflowVersion")),
            size_bytes=_size(entry.get("sizeBytes")),
        )


@dataclass(frozen=True)
class JobObservation:
    """What a training Job (and, once finished, its chief pod) says."""

    version: int
    job: str
    training_hash: str | None
    state: str
    termination_message: str | None = None
    failure: str | None = None
    # Wall time from the Job's start to its end, once it has ended (None while it runs).
    seconds: float | None = None


@dataclass(frozen=True)
class TrainingResult:
    metrics: dict[str, float]
    trained_at: str | None
    resumed_from_epoch: int | None = None
    tensorflow_version: str | None = None
    size_bytes: int | None = None


# Epochs are bounded by the spec far below this; anything larger is not the trainer's.
_MAX_EPOCH = 1_000_000


def _epoch(value: object) -> int | None:
    """A resumed-from epoch count the pod reported, if it is one."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_EPOCH:
        return None
    return value


def tensorflow_version(value: object) -> str | None:
    """A TensorFlow version the pod reported ("2.21.0", "2.22.0-dev20260101"), if it is one:
    the pod writes its own termination message, so anything else is dropped, not shown."""
    if isinstance(value, str) and parse_version(value) is not None:
        return value
    return None


# A SavedModel larger than this is not one the trainer wrote (its pod has GiBs, not TiBs).
_MAX_SIZE_BYTES = 1 << 40


def _size(value: object) -> int | None:
    """A SavedModel size in bytes the pod reported, if it is one."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 < value <= _MAX_SIZE_BYTES else None


def parse_termination_message(text: str | None) -> TrainingResult:
    """The trainer's termination message: JSON with metrics and trainedAt, as
    TrainResult.termination_message (trainer/entrypoint.py) writes it. ValueError saying what
    is wrong otherwise."""
    if not text or not text.strip():
        raise ValueError("the trainer exited 0 but wrote no termination message with its metrics")
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(
            f"the trainer's termination message is not JSON: {truncate(text, 200)!r}"
        ) from None
    metrics = document.get("metrics") if isinstance(document, Mapping) else None
    if not isinstance(metrics, Mapping):
        raise ValueError("the trainer's termination message has no metrics object")
    scores = {
        name: float(metrics[name])
        for name in METRIC_NAMES
        if isinstance(metrics.get(name), int | float)
    }
    if "accuracy" not in scores:
        raise ValueError("the trainer's termination message has no metrics.accuracy")
    trained_at = document.get("trainedAt")
    return TrainingResult(
        scores,
        str(trained_at) if trained_at else None,
        _epoch(document.get("resumedFromEpoch")),
        tensorflow_version(document.get("tensorflowVersion")),
        _size(document.get("sizeBytes")),
    )


def truncate(text: str, limit: int = MESSAGE_LIMIT) -> str:
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def version_taken(failure: str) -> bool:
    """Whether the trainer refused to publish because the version number exists."""
    return "already published" in failure or "already exists in" in failure


def record_from_observation(observation: JobObservation, gate: QualityGate) -> VersionStatus:
    base = VersionStatus(
        version=observation.version,
        state=TRAINING,
        training_hash=observation.training_hash,
        job=observation.job,
    )
    if observation.state == FAILED:
        failure = observation.failure or f"training Job {observation.job} failed"
        if version_taken(failure):
            # Not this spec's fault: the store already holds the number (say, from an earlier
            # ModelService of the same name). Forgetting the hash trains it again, next number.
            return replace(
                base,
                state=FAILED,
                training_hash=None,
                message=truncate(
                    f"version {observation.version} is already published in the store; "
                    f"training again under the next number ({failure})"
                ),
            )
        return replace(base, state=FAILED, message=truncate(failure))
    if observation.state != SUCCEEDED:
        return base
    try:
        result = parse_termination_message(observation.termination_message)
    except ValueError as exc:
        return replace(base, state=FAILED, message=f"training Job {observation.job}: {exc}")
    promoted, message = judge_gate(observation.version, result.metrics, gate)
    return replace(
        base,
        state=SUCCEEDED,
        trained_at=result.trained_at,
        metrics=result.metrics,
        promoted=promoted,
        message=message,
        resumed_from_epoch=result.resumed_from_epoch,
        tensorflow_version=result.tensorflow_version,
        size_bytes=result.size_bytes,
    )


def merge_records(
    known: Iterable[VersionStatus], observed: Iterable[JobObservation], gate: QualityGate
) -> list[VersionStatus]:
    """Status history plus what the Jobs say now. A finished version is final: its Job may
    be deleted later, and a gate change re-judges nothing. A version still training whose Job
    has vanished failed: nothing will ever finish it."""
    return merge_job_records(
        {record.version: record for record in known},
        ((observation.version, observation) for observation in observed),
        record=lambda observation: record_from_observation(observation, gate),
        unfinished=TRAINING,
        vanished=lambda record: f"training Job {record.job} was deleted before it finished",
    )


def merge_job_records(
    known: Mapping[int, Any],
    observed: Iterable[tuple[int, Any]],
    *,
    record: Callable[[Any], Any],
    unfinished: str,
    vanished: Callable[[Any], str],
) -> list[Any]:
    """Records kept in status (by number) updated from their Jobs' observations, for versions
    and search trials alike: a record in a final state stays as it is (its Job is deleted once
    recorded), an observed one is recorded anew, and an `unfinished` one whose Job is gone
    failed with the `vanished` message. Sorted by number."""
    merged = dict(known)
    seen = set()
    for number, observation in observed:
        seen.add(number)
        current = merged.get(number)
        if current is None or current.state not in FINAL_STATES:
            merged[number] = record(observation)
    for number, current in list(merged.items()):
        if current.state == unfinished and number not in seen:
            merged[number] = replace(current, state=FAILED, message=vanished(current))
    return [merged[number] for number in sorted(merged)]


def next_version(records: Sequence[VersionStatus], latest_version: int | None) -> int:
    """Monotonic: never reuse a number, even one whose training failed."""
    highest = max([record.version for record in records] + [latest_version or 0])
    return highest + 1


def teacher_problem(
    records: Sequence[VersionStatus], teacher: int, latest_version: int | None
) -> str | None:
    """Why spec.training.distillation's teacher cannot teach yet, or None when it can.

    A version status no longer lists but numbered at most status.latestVersion was trimmed
    from status, not lost: the store keeps it, and the trainer says so if it is not there."""
    field = "spec.training.distillation.teacher.version"
    record = next((r for r in records if r.version == teacher), None)
    if record is None:
        if latest_version is not None and teacher <= latest_version:
            return None
        return (
            f"{field} {teacher} does not exist: this ModelService has published no version "
            f"{teacher}; name one that status.versions lists as Succeeded. No training Job starts"
        )
    if record.state == TRAINING:
        return f"{field} {teacher} is still training; the student's Job starts once it is published"
    if record.state != SUCCEEDED:
        return (
            f"{field} {teacher} is not published (its training {record.state.lower()}); name a "
            "version that status.versions lists as Succeeded. No training Job starts"
        )
    return None


def needs_training(records: Sequence[VersionStatus], fingerprint: str) -> bool:
    """Train when no version, finished or not, came from this spec.training. A failed
    version counts too: retraining the same spec would fail the same way, so the user
    changes spec.training to try again."""
    return not any(record.training_hash == fingerprint for record in records)


def supersede(records: Sequence[VersionStatus], version: int) -> list[VersionStatus]:
    """Older versions still training when `version` starts are stopped: their spec is no
    longer wanted and they would only hold (GPU) nodes."""
    return [
        replace(
            record,
            state=FAILED,
            message=f"superseded by version {version} (spec.training changed) before it finished",
        )
        if record.state == TRAINING and record.version < version
        else record
        for record in records
    ]


def newest(records: Sequence[VersionStatus]) -> VersionStatus | None:
    return max(records, key=lambda record: record.version) if records else None


def trim_history(
    records: Sequence[VersionStatus],
    *,
    plan: ServingPlan,
    serving: ServingSpec,
    previous: Mapping[str, Any],
    keep: int,
) -> list[VersionStatus]:
    """status.versions without the old versions nothing depends on (the store keeps them).

    Kept whatever their age: every version still training, the versions served now and
    planned (stable, canary, pinned), the newest promoted and newest trained version (what
    `latest` and the gate condition are judged on), so the next plan from the trimmed list
    is the same. Then the newest `keep` others. The newest version is always among them, so
    the next version number (one above the highest ever) is never reused.
    """
    if len(records) <= keep:
        return list(records)
    newest_promoted = newest([r for r in records if r.servable and r.promoted])
    newest_trained = newest([r for r in records if r.servable])
    pinned = {serving.pinned_version, serving.canary.version if serving.canary else None}
    needed = {
        plan.stable,
        plan.canary,
        previous.get("servingVersion"),
        previous.get("canaryVersion"),
        newest_promoted.version if newest_promoted else None,
        newest_trained.version if newest_trained else None,
        *pinned,
    }
    needed |= {record.version for record in records if record.state == TRAINING}
    by_age = sorted((record.version for record in records), reverse=True)
    needed |= set(by_age[: max(keep, 1)])
    return [record for record in records if record.version in needed]


def finished_jobs(known: Sequence[VersionStatus], records: Sequence[VersionStatus]) -> list[str]:
    """The Jobs whose results `records` (just written to status) record and that are no
    longer needed: every finished Job but the newest version's, whose logs the Trained
    condition points at. Only Jobs that reached that point with this write are named, so
    each is deleted once; the store and status keep the results."""
    last, last_before = newest(records), newest(known)
    before = {record.version: record for record in known}
    names = []
    for record in records:
        if record.state not in FINAL_STATES or not record.job or record is last:
            continue
        earlier = before.get(record.version)
        if earlier is None or earlier.state not in FINAL_STATES or earlier is last_before:
            names.append(record.job)
    return names
