"""The ModelService status, computed whole from what was observed (pure), and the Events
that tell users about each transition."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tfmaas.operator.naming import VERSION_LABEL
from tfmaas.operator.search import SEARCHING, search_summary
from tfmaas.operator.versions import (
    FAILED,
    SUCCEEDED,
    TRAINING,
    VersionStatus,
    newest,
)
from tfmaas.serving_policy import Problem, ServingPlan
from tfmaas.tensorflow_versions import newer_than

PENDING = "Pending"
PHASE_TRAINING = "Training"
ROLLING_OUT = "RollingOut"
PHASE_SERVING = "Serving"
DEGRADED = "Degraded"
PHASE_FAILED = "Failed"

TRAINED = "Trained"
GATE = "QualityGatePassed"
READY = "Ready"
VERSIONS_RESOLVED = "VersionsResolved"
SPEC_VALID = "SpecValid"
SERVING_TENSORFLOW = "ServingTensorFlowCompatible"
# Reasons of conditions that say nothing yet, so no Event tells of them.
# Reasons that restate what another condition's Event already says (a training started,
# nothing is served yet): no Event of their own.
QUIET_REASONS = ("NotStarted", "NoTrainedVersion", "NoServedVersion", "NoServableVersion")
# Reasons worth an Event only as a recovery, not when their condition first appears.
RECOVERY_REASONS = ("Resolved",)
TEACHER_NOT_PUBLISHED = "TeacherNotPublished"
SEARCH_FAILED = "SearchFailed"


@dataclass(frozen=True)
class DeploymentState:
    """The parts of a Deployment (and its pod template) that say how a rollout stands."""

    version: int | None
    desired: int
    updated: int
    ready: int
    available: int
    total: int
    generation: int
    observed_generation: int

    @classmethod
    def from_object(cls, deployment: Mapping[str, Any]) -> DeploymentState:
        spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
        template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        raw_version = template_labels.get(VERSION_LABEL)
        return cls(
            version=int(raw_version) if raw_version else None,
            desired=int(spec.get("replicas", 1)),
            updated=int(status.get("updatedReplicas", 0)),
            ready=int(status.get("readyReplicas", 0)),
            available=int(status.get("availableReplicas", 0)),
            total=int(status.get("replicas", 0)),
            generation=int((deployment.get("metadata") or {}).get("generation", 0)),
            observed_generation=int(status.get("observedGeneration", 0)),
        )

    def rolled_out(self, version: int) -> bool:
        """Every replica runs `version`, the old ones are gone, and at least one is ready."""
        return (
            self.version == version
            and self.observed_generation >= self.generation
            and self.updated >= self.desired
            and self.total == self.updated
            and self.available >= self.desired
            and self.available >= 1
        )


@dataclass(frozen=True)
class Observed:
    generation: int
    records: Sequence[VersionStatus]
    plan: ServingPlan
    stable: DeploymentState | None
    canary: DeploymentState | None
    endpoint: Mapping[str, str] | None
    access_mode: str | None = None
    blocked: str | None = None
    """Why the Job of the current spec.training was not started (a distillation teacher, a
    search whose every trial failed), with `blocked_reason` the Trained condition's reason."""
    blocked_reason: str = TEACHER_NOT_PUBLISHED
    tuning: Mapping[str, Any] | None = None
    """status.tuning: the search of the current spec.training, if it asks for one."""
    serving_tensorflow: str | None = None
    """The TensorFlow of the serving image; None when the operator does not know it (an image
    of the spec's own, or none configured)."""

    @property
    def searching(self) -> bool:
        return self.tuning is not None and self.tuning.get("phase") == SEARCHING


def condition(
    kind: str,
    status: str,
    reason: str,
    message: str,
    generation: int,
    previous: Mapping[str, Mapping[str, Any]],
    now: str,
) -> dict[str, Any]:
    """A condition whose lastTransitionTime moves only when its status does."""
    before = previous.get(kind)
    changed = before is None or before.get("status") != status
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now
        if changed or before is None
        else before.get("lastTransitionTime", now),
        "observedGeneration": generation,
    }


def _metrics_text(record: VersionStatus) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in record.metrics.items())


def _trained(observed: Observed) -> tuple[str, str, str]:
    records, blocked = observed.records, observed.blocked
    if blocked is not None:
        return "False", observed.blocked_reason, blocked
    if observed.searching and observed.tuning is not None:
        return "Unknown", "Searching", f"hyperparameter search: {search_summary(observed.tuning)}"
    last = newest(records)
    if last is None:
        return "Unknown", "NotStarted", "no training has started yet"
    if last.state == TRAINING:
        return "Unknown", "Training", f"Job {last.job} is training version {last.version}"
    if last.state == FAILED:
        return (
            "False",
            "TrainingFailed",
            f"version {last.version} failed: {last.message}. Fix the cause (see "
            f"`kubectl logs job/{last.job}`), then change spec.training to train again",
        )
    # The Trained Event carries this message: a run that survived its pod says so.
    resumed = (
        f" (resumed from epoch {last.resumed_from_epoch})"
        if last.resumed_from_epoch is not None
        else ""
    )
    return (
        "True",
        "Succeeded",
        f"version {last.version} trained{resumed}: {_metrics_text(last)}",
    )


def _gate(records: Sequence[VersionStatus]) -> tuple[str, str, str]:
    finished = [record for record in records if record.state == SUCCEEDED]
    last = newest(finished)
    if last is None:
        return "Unknown", "NoTrainedVersion", "no version has finished training yet"
    if last.promoted:
        return "True", "Passed", f"version {last.version} passed the quality gate"
    return (
        "False",
        "BelowQualityGate",
        f"{last.message}. It is kept but not promoted: improve the data or model, lower "
        f"spec.training.qualityGate, or pin spec.serving.version: {last.version} to serve it",
    )


def _ready(observed: Observed) -> tuple[str, str, str]:
    plan, stable = observed.plan, observed.stable
    if plan.stable is None:
        return "False", "NoServableVersion", "no version has passed the quality gate yet"
    if stable is None:
        return "False", "RollingOut", f"creating the Deployment for version {plan.stable}"
    canary_done = plan.canary is None or (
        observed.canary is not None and observed.canary.rolled_out(plan.canary)
    )
    if stable.rolled_out(plan.stable) and canary_done:
        where = observed.endpoint["grpc"] if observed.endpoint else "its Service"
        canary = f", canary version {plan.canary}" if plan.canary else ""
        return (
            "True",
            "Serving",
            f"version {plan.stable}{canary} serving on {where} ({stable.ready} ready)",
        )
    if stable.available == 0 and stable.version != plan.stable:
        return "False", "RollingOut", f"rolling out version {plan.stable}; nothing is ready yet"
    if stable.available == 0:
        return (
            "False",
            "NoReadyReplicas",
            f"no replica of version {plan.stable} is ready; see `kubectl describe pods -l "
            "tfmaas.io/track=stable` for why",
        )
    return (
        "False",
        "RollingOut",
        f"rolling out version {plan.stable}: {stable.updated}/{stable.desired} replicas updated, "
        f"{stable.available} available",
    )


def _serving_tensorflow(observed: Observed) -> tuple[str, str, str]:
    served = [v for v in (observed.plan.stable, observed.plan.canary) if v is not None]
    if not served:
        return "Unknown", "NoServedVersion", "no version is to be served yet"
    serving = observed.serving_tensorflow
    if not serving:
        return (
            "Unknown",
            "ServingTensorFlowUnknown",
            "the TensorFlow of the serving image is not known (spec.serving.image is not one of "
            "the operator's, or no defaults.serving.tensorflowVersion is set); make sure it is "
            "at least the one each version was exported by (status.versions[].tensorflowVersion)",
        )
    exported = {r.version: r.tensorflow_version for r in observed.records}
    newer = [(v, exported[v]) for v in served if newer_than(exported.get(v) or "", serving)]
    if newer:
        version, tensorflow = newer[0]
        return (
            "False",
            "ExportedByNewerTensorFlow",
            f"version {version} was exported by TensorFlow {tensorflow}, newer than the serving "
            f"image's {serving}: it loads there only if it uses no op {serving} lacks (a failed "
            "load shows in the serving pod's log). Serve it with a TF Serving image of that "
            "TensorFlow or newer (chart defaults.serving.image and "
            "defaults.serving.tensorflowVersion), or train with the serving image's TensorFlow",
        )
    unknown = [v for v in served if not exported.get(v)]
    if unknown:
        return (
            "Unknown",
            "ExportTensorFlowUnknown",
            f"version {unknown[0]} recorded no TensorFlow version (trained by an older trainer)",
        )
    listed = " and ".join(f"{v} (TensorFlow {exported[v]})" for v in served)
    return (
        "True",
        "Compatible",
        f"version {listed}: exported by a TensorFlow not newer than the serving image's {serving}",
    )


def _resolved(problems: Sequence[Problem]) -> tuple[str, str, str]:
    if not problems:
        return "True", "Resolved", "the pinned and canary versions exist"
    first = problems[0]
    return "False", first.reason, "; ".join(problem.message for problem in problems)


def phase_of(observed: Observed, ready_status: str) -> str:
    last = newest(observed.records)
    stable = observed.stable
    if ready_status == "True":
        return PHASE_SERVING
    if stable is not None and stable.available > 0:
        return ROLLING_OUT
    if stable is not None and stable.version is not None and stable.total > 0:
        return DEGRADED if stable.version == observed.plan.stable else ROLLING_OUT
    if (last is not None and last.state == TRAINING) or observed.searching:
        return PHASE_TRAINING
    if observed.blocked is not None and observed.plan.stable is None:
        return PHASE_FAILED
    if observed.plan.stable is not None:
        return ROLLING_OUT
    if last is not None and (last.state == FAILED or last.promoted is False):
        return PHASE_FAILED
    return PENDING


def serving_version(observed: Observed, previous: int | None) -> int | None:
    """The version the stable track has fully rolled out; during a rollout, the one before."""
    plan, stable = observed.plan, observed.stable
    if plan.stable is not None and stable is not None and stable.rolled_out(plan.stable):
        return plan.stable
    return previous


def build_status(observed: Observed, previous: Mapping[str, Any], now: str) -> dict[str, Any]:
    """The complete status; keys whose value is None are removed by the merge patch."""
    old_conditions = {c.get("type"): c for c in previous.get("conditions") or [] if c.get("type")}
    generation = observed.generation
    parts = {
        TRAINED: _trained(observed),
        GATE: _gate(observed.records),
        READY: _ready(observed),
        VERSIONS_RESOLVED: _resolved(observed.plan.problems),
        SERVING_TENSORFLOW: _serving_tensorflow(observed),
    }
    conditions = [
        condition(kind, status, reason, message, generation, old_conditions, now)
        for kind, (status, reason, message) in parts.items()
    ]
    serving = serving_version(observed, previous.get("servingVersion"))
    by_version = {record.version: record for record in observed.records}
    served = by_version.get(serving) if serving is not None else None
    accuracy = served.metrics.get("accuracy") if served else None
    stable = observed.stable
    return {
        "phase": phase_of(observed, parts[READY][0]),
        "observedGeneration": generation,
        "trainingHash": next(
            (r.training_hash for r in reversed(observed.records) if r.training_hash), None
        ),
        "latestVersion": max(by_version) if by_version else None,
        "servingVersion": serving,
        "canaryVersion": observed.plan.canary,
        "accuracy": accuracy,
        "servingSizeBytes": served.size_bytes if served else None,
        "replicas": stable.total if stable else None,
        "readyReplicas": stable.ready if stable else None,
        "endpoint": dict(observed.endpoint) if observed.endpoint and stable else None,
        "accessMode": observed.access_mode,
        "versions": [record.to_status() for record in observed.records],
        "tuning": dict(observed.tuning) if observed.tuning is not None else None,
        "conditions": conditions,
    }


def invalid_spec_status(
    message: str, generation: int, previous: Mapping[str, Any], now: str
) -> dict[str, Any]:
    old_conditions = {c.get("type"): c for c in previous.get("conditions") or [] if c.get("type")}
    kept = [c for kind, c in old_conditions.items() if kind != SPEC_VALID]
    return {
        "phase": PHASE_FAILED,
        "observedGeneration": generation,
        "conditions": [
            *kept,
            condition(SPEC_VALID, "False", "InvalidSpec", message, generation, old_conditions, now),
        ],
    }
