"""One reconcile of one ModelService: observe, decide (pure functions), converge, report.

Level-based and idempotent: every run reads the current state and computes the whole
desired state again, names are deterministic and writes are server-side applies, so a
second run, or a run after a crash halfway, creates nothing twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tfmaas.api import API_VERSION, KIND, ModelService, SpecError, validate_model_service
from tfmaas.operator.apply import Applier
from tfmaas.operator.config import OperatorConfig
from tfmaas.operator.events import Event, transitions
from tfmaas.operator.images import image_problem, serving_tensorflow
from tfmaas.operator.kube import Kube
from tfmaas.operator.manifests.service import endpoint
from tfmaas.operator.search import search_summary, trial_table
from tfmaas.operator.serving import apply_serving_objects
from tfmaas.operator.status import (
    SEARCH_FAILED,
    TEACHER_NOT_PUBLISHED,
    Observed,
    build_status,
    invalid_spec_status,
)
from tfmaas.operator.training import (
    delete_finished_jobs,
    list_jobs,
    observe_training,
    start_training,
)
from tfmaas.operator.tuning import advance_search, delete_trial_jobs, stop_other_searches
from tfmaas.operator.versions import (
    FINAL_STATES,
    VersionStatus,
    finished_jobs,
    merge_records,
    needs_training,
    next_version,
    teacher_problem,
    trim_history,
)
from tfmaas.serving_policy import plan_serving
from tfmaas.timestamps import now_rfc3339


class InvalidModelService(Exception):
    """The stored spec fails validation: a user mistake no retry will fix."""


@dataclass(frozen=True)
class Outcome:
    status: dict[str, Any]
    events: list[Event]
    started_training: int | None
    # How long each training that this reconcile found finished ran, in seconds.
    finished_training_seconds: tuple[float, ...] = ()


def parse(body: Mapping[str, Any]) -> ModelService:
    """The stored object, defaulted and validated (an object stored under an older CRD may
    lack defaults the current one adds)."""
    metadata = body.get("metadata") or {}
    document = {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": body.get("kind", KIND),
        "metadata": {"name": metadata.get("name"), "namespace": metadata.get("namespace")},
        "spec": body.get("spec"),
    }
    defaulted = validate_model_service(
        document, f"{metadata.get('namespace')}/{metadata.get('name')}"
    )
    defaulted["metadata"] = dict(metadata)
    return ModelService.from_dict(defaulted)


def unchanged(previous: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """Whether writing `status` (a merge patch: None removes) would change nothing."""
    merged = dict(previous)
    for key, value in status.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged == dict(previous)


def reconcile(
    kube: Kube,
    body: Mapping[str, Any],
    config: OperatorConfig,
    applier: Applier | None = None,
) -> Outcome:
    """Converge one ModelService (`body` as just read from the API server)."""
    applier = applier or Applier(kube)
    metadata = body.get("metadata") or {}
    namespace, name = str(metadata.get("namespace")), str(metadata.get("name"))
    generation = int(metadata.get("generation") or 0)
    previous: dict[str, Any] = dict(body.get("status") or {})
    now = now_rfc3339()
    try:
        service = parse(body)
    except SpecError as exc:
        invalid = str(exc)
    else:
        # An image the operator may not run is a spec error like any other: nothing starts.
        invalid = image_problem(service, config) or ""
    if invalid:
        status = invalid_spec_status(invalid, generation, previous, now)
        kube.patch_status(API_VERSION, KIND, namespace, name, status)
        raise InvalidModelService(invalid)

    known = [VersionStatus.from_status(entry) for entry in previous.get("versions") or []]
    training = service.spec.training
    fingerprint = training.fingerprint()
    # One listing of the ModelService's Jobs serves the training and the search steps below.
    listed = list_jobs(kube, service) if needs_training(known, fingerprint) else None
    observations = observe_training(kube, service, known, listed)
    records = merge_records(known, observations, service.spec.training.quality_gate)

    started = blocked = None
    blocked_reason = TEACHER_NOT_PUBLISHED
    # status.tuning stays while it reports this spec.training's search, and goes with it.
    tuning_status = previous.get("tuning") if training.tuning is not None else None
    if isinstance(tuning_status, dict) and tuning_status.get("trainingHash") != fingerprint:
        tuning_status = None
    trial_jobs_done: list[str] = []
    if needs_training(records, fingerprint):
        stop_other_searches(kube, service, fingerprint if training.tuning else None, listed)
        distillation = training.distillation
        if distillation is not None:
            latest = previous.get("latestVersion")
            blocked = teacher_problem(records, distillation.teacher_version, latest)
        if training.tuning is not None:
            step = advance_search(kube, service, previous.get("tuning"), config, listed)
            tuning_status, trial_jobs_done = step.status, step.finished_jobs
            best = step.search.best
            if step.search.finished and best is not None:
                started = next_version(records, previous.get("latestVersion"))
                records = start_training(
                    kube,
                    service,
                    started,
                    records,
                    config,
                    training=training.with_parameters(best.parameters),
                    tuning_table=trial_table(step.search),
                )
                tuning_status["version"] = started
            elif step.search.finished:
                blocked_reason = SEARCH_FAILED
                blocked = (
                    f"every trial of the search failed ({search_summary(tuning_status)}); "
                    "status.tuning.trials says why. No version is trained: fix the cause, then "
                    "change spec.training to search again"
                )
        elif blocked is None:
            started = next_version(records, previous.get("latestVersion"))
            records = start_training(kube, service, started, records, config)

    plan = plan_serving(records, service.spec.serving, previous.get("servingVersion"))
    kept = trim_history(
        records,
        plan=plan,
        serving=service.spec.serving,
        previous=previous,
        keep=config.status_versions_kept,
    )
    stable_state = canary_state = None
    access = previous.get("accessMode")
    if plan.stable is not None:
        had_canary = previous.get("canaryVersion") is not None
        moved = (previous.get("servingVersion"), previous.get("canaryVersion")) != (
            plan.stable,
            plan.canary,
        )
        state = apply_serving_objects(
            kube,
            applier,
            service,
            plan,
            config,
            had_canary,
            versions_moved=moved,
            previous_access_mode=previous.get("accessMode"),
        )
        stable_state, canary_state, access = state.stable, state.canary, state.access_mode

    observed = Observed(
        generation=generation,
        records=kept,
        plan=plan,
        stable=stable_state,
        canary=canary_state,
        endpoint=endpoint(service),
        access_mode=access,
        blocked=blocked,
        serving_tensorflow=serving_tensorflow(service, config),
        blocked_reason=blocked_reason,
        tuning=tuning_status,
    )
    status = build_status(observed, previous, now)
    if not unchanged(previous, status):
        kube.patch_status(API_VERSION, KIND, namespace, name, status)
        # Only now that status records their results may the finished Jobs go.
        delete_finished_jobs(kube, service, finished_jobs(known, records))
        delete_trial_jobs(kube, service, trial_jobs_done)
    already_final = {record.version for record in known if record.state in FINAL_STATES}
    finished = tuple(
        o.seconds
        for o in observations
        if o.state in FINAL_STATES and o.version not in already_final and o.seconds is not None
    )
    return Outcome(
        status=status,
        events=transitions(previous, status),
        started_training=started,
        finished_training_seconds=finished,
    )
