"""One reconcile of one ModelService: observe, decide (pure functions), converge, report.

Level-based and idempotent: every run reads the current state and computes the whole
desired state again, names are deterministic and writes are server-side applies, so a
second run, or a run after a crash halfway, creates nothing twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from tfmaas.api import API_VERSION, KIND, ModelService, SpecError, validate_model_service
from tfmaas.operator.apply import Applier
from tfmaas.operator.config import OperatorConfig
from tfmaas.operator.kube import Kube
from tfmaas.operator.manifests.configmap import build_config_map, serving_config
from tfmaas.operator.manifests.deployment import build_deployment
from tfmaas.operator.manifests.hpa import build_hpa
from tfmaas.operator.manifests.job import build_training_job, build_worker_service
from tfmaas.operator.manifests.pdb import build_pdb
from tfmaas.operator.manifests.service import build_headless_service, build_service, endpoint
from tfmaas.operator.naming import (
    CANARY,
    COMPLETION_INDEX_ANNOTATION,
    COMPONENT_LABEL,
    JOB_NAME_LABEL,
    MODEL_SERVICE_LABEL,
    SERVING,
    STABLE,
    TRAINER_CONTAINER,
    TRAINING_HASH_ANNOTATION,
    VERSION_LABEL,
    deployment_name,
    job_name,
)
from tfmaas.operator.status import (
    DeploymentState,
    Event,
    Observed,
    build_status,
    invalid_spec_status,
    transitions,
)
from tfmaas.operator.versions import (
    FAILED,
    SUCCEEDED,
    TRAINING,
    JobObservation,
    VersionRecord,
    merge_records,
    needs_training,
    next_version,
    plan_serving,
    supersede,
    truncate,
)

log = logging.getLogger(__name__)
HPA = "HorizontalPodAutoscaler"


class InvalidModelService(Exception):
    """The stored spec fails validation: a user mistake no retry will fix."""


@dataclass(frozen=True)
class Outcome:
    status: dict[str, Any]
    events: list[Event]
    started_training: int | None


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


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


def _job_state(job: Mapping[str, Any]) -> tuple[str, str | None]:
    for entry in (job.get("status") or {}).get("conditions") or []:
        if entry.get("status") != "True":
            continue
        if entry.get("type") in ("Complete", "SuccessCriteriaMet"):
            return SUCCEEDED, None
        if entry.get("type") == "Failed":
            return FAILED, f"{entry.get('reason', 'Failed')}: {entry.get('message', '')}".strip()
    return TRAINING, None


def _terminated_message(pod: Mapping[str, Any]) -> str | None:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        if container.get("name") == TRAINER_CONTAINER:
            terminated = (container.get("state") or {}).get("terminated") or {}
            return terminated.get("message")
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
    state, failure = _job_state(job)
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
    )


def _owned_by(item: Mapping[str, Any], uid: str | None) -> bool:
    owners = (item.get("metadata") or {}).get("ownerReferences") or []
    return any(owner.get("uid") == uid for owner in owners)


def _deployment_state(kube: Kube, namespace: str, name: str) -> DeploymentState | None:
    found = kube.get("apps/v1", "Deployment", namespace, name)
    return DeploymentState.from_object(found) if found else None


def _converge_serving(
    kube: Kube,
    applier: Applier,
    service: ModelService,
    stable: int,
    canary: int | None,
    config: OperatorConfig,
    had_canary: bool,
) -> set[str]:
    """Apply everything serving needs; returns the ConfigMaps now in use."""
    namespace = service.namespace or "default"
    serving = service.spec.serving
    tracks: list[tuple[str, int, int | None]] = [
        (STABLE, stable, None if serving.autoscaling.enabled else serving.replicas)
    ]
    if canary is not None and serving.canary is not None:
        tracks.append((CANARY, canary, serving.canary.replicas))
    in_use = set()
    sent = []
    for track, version, replicas in tracks:
        settings = serving_config(service, track, version)
        config_map = build_config_map(service, settings, config)
        applier.apply(config_map)
        in_use.add(config_map["metadata"]["name"])
        sent.append(applier.apply(build_deployment(service, settings, replicas, config)))
    # Deleting what must not exist costs calls that find nothing; do it only when something
    # changed or the stable Deployment was re-sent (after a start, then every max_age).
    full_pass = sent[0]
    if canary is None and (full_pass or had_canary):
        canary_name = deployment_name(service.name, CANARY)
        if kube.delete("apps/v1", "Deployment", namespace, canary_name):
            applier.forget_object("apps/v1", "Deployment", namespace, canary_name)
    applier.apply(build_service(service))
    applier.apply(build_headless_service(service))
    if serving.autoscaling.enabled:
        applier.apply(build_hpa(service, config.request_rate_metric))
    elif full_pass and kube.delete("autoscaling/v2", HPA, namespace, service.name):
        applier.forget_object("autoscaling/v2", HPA, namespace, service.name)
    applier.apply(build_pdb(service))
    return in_use


def _prune_config_maps(kube: Kube, service: ModelService, in_use: set[str]) -> None:
    """Old serving configurations go once no rollout can still need them."""
    namespace = service.namespace or "default"
    selector = f"{MODEL_SERVICE_LABEL}={service.name},{COMPONENT_LABEL}={SERVING}"
    for item in kube.list("v1", "ConfigMap", namespace, selector):
        name = item["metadata"]["name"]
        if name not in in_use and _owned_by(item, service.uid):
            kube.delete("v1", "ConfigMap", namespace, name)


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
        status = invalid_spec_status(str(exc), generation, previous, now)
        kube.patch_status(API_VERSION, KIND, namespace, name, status)
        raise InvalidModelService(str(exc)) from None

    gate = service.spec.training.quality_gate
    known = [VersionRecord.from_status(entry) for entry in previous.get("versions") or []]
    jobs = [
        job
        for job in kube.list("batch/v1", "Job", namespace, f"{MODEL_SERVICE_LABEL}={name}")
        if _owned_by(job, service.uid)
    ]
    final = {record.version for record in known if record.state in (SUCCEEDED, FAILED)}
    observations = []
    for job in jobs:
        version = ((job.get("metadata") or {}).get("labels") or {}).get(VERSION_LABEL)
        if version and version.isdigit() and int(version) in final:
            continue  # finished and recorded: no need to read its pods again
        observation = observe_job(kube, job, namespace)
        if observation is not None:
            observations.append(observation)
    records = merge_records(known, observations, gate)

    started = None
    fingerprint = service.spec.training.fingerprint()
    if needs_training(records, fingerprint):
        started = next_version(records, previous.get("latestVersion"))
        worker_service = build_worker_service(service, started)
        if worker_service is not None:
            kube.apply(worker_service)
        kube.apply(build_training_job(service, started, config))
        stopped = supersede(records, started)
        for old, new in zip(records, stopped, strict=True):
            if old.state != new.state and old.job:
                kube.delete("batch/v1", "Job", namespace, old.job)
        records = stopped
        records.append(
            VersionRecord(
                version=started,
                state=TRAINING,
                training_hash=fingerprint,
                job=job_name(name, started),
            )
        )
        log.info("%s/%s: training version %d", namespace, name, started)

    plan = plan_serving(records, service.spec.serving, previous.get("servingVersion"))
    stable_state = canary_state = None
    if plan.stable is not None:
        in_use = _converge_serving(
            kube,
            applier,
            service,
            plan.stable,
            plan.canary,
            config,
            had_canary=previous.get("canaryVersion") is not None,
        )
        stable_state = _deployment_state(kube, namespace, deployment_name(name, STABLE))
        if plan.canary is not None:
            canary_state = _deployment_state(kube, namespace, deployment_name(name, CANARY))
        rolled = stable_state is not None and stable_state.rolled_out(plan.stable)
        canary_rolled = plan.canary is None or (
            canary_state is not None and canary_state.rolled_out(plan.canary)
        )
        if rolled and canary_rolled:
            _prune_config_maps(kube, service, in_use)

    observed = Observed(
        generation=generation,
        records=records,
        plan=plan,
        stable=stable_state,
        canary=canary_state,
        endpoint=endpoint(service),
    )
    status = build_status(observed, previous, now)
    if not unchanged(previous, status):
        kube.patch_status(API_VERSION, KIND, namespace, name, status)
    return Outcome(status=status, events=transitions(previous, status), started_training=started)
