"""kopf registration, kept thin: every trigger ends in one coalesced reconcile of the
ModelService concerned.

Triggers: the ModelService's own create/update/resume (with kopf's retries: a transient API
fault is a TemporaryError with backoff, an invalid spec a PermanentError), updates of the
Jobs and Deployments it owns that change what a reconcile reads (so a finished training or
a ready replica is noticed at once), and a periodic timer as a safety net.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Mapping
from typing import Any, cast

import kopf

from tfmaas.api import API_VERSION, GROUP, KIND, PLURAL, VERSION
from tfmaas.operator import metrics
from tfmaas.operator.apply import Applier
from tfmaas.operator.config import OperatorConfig
from tfmaas.operator.kube import Kube, KubeError, connect
from tfmaas.operator.naming import (
    FIELD_MANAGER,
    MANAGED_BY_LABEL,
    MODEL_SERVICE_LABEL,
    VERSION_LABEL,
)
from tfmaas.operator.reconcile import InvalidModelService, Outcome, reconcile
from tfmaas.redact import safe_message

log = logging.getLogger(__name__)

CONFIG = OperatorConfig.load()
OWNED: Mapping[str, Any] = {  # kopf's label filter values: a string or kopf.PRESENT
    MANAGED_BY_LABEL: FIELD_MANAGER,
    MODEL_SERVICE_LABEL: kopf.PRESENT,
}
EVENT_MESSAGE_LIMIT = 1000
RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
COALESCE_SECONDS = 0.3

Key = tuple[str, str]


class Reconciler:
    """Runs reconciles one at a time per ModelService, many ModelServices in parallel, and
    folds a burst of requests for one ModelService into a single extra run."""

    def __init__(self, kube: Kube, config: OperatorConfig) -> None:
        self.kube = kube
        self.config = config
        self.applier = Applier(kube, max_age=config.resync_seconds)
        self._locks: dict[Key, asyncio.Lock] = {}
        self._queued: set[Key] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # What each owned object last looked like to a reconcile, by (kind, namespace, name).
        self.seen: dict[tuple[str, str, str], tuple[Any, ...]] = {}

    def _lock(self, key: Key) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def run(self, namespace: str, name: str, trigger: str = "spec") -> Outcome | None:
        """Reconcile now; raises what reconcile raises."""
        async with self._lock((namespace, name)):
            self._queued.discard((namespace, name))
            metrics.TRIGGERS.labels(trigger).inc()
            return await self._run_locked(namespace, name)

    async def _run_locked(self, namespace: str, name: str) -> Outcome | None:
        # Always the stored object: a handler's body may predate the last status write.
        body = await asyncio.to_thread(self.kube.get, API_VERSION, KIND, namespace, name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            self.forget(namespace, name)
            return None
        started = time.monotonic()
        result = "error"
        try:
            outcome = await asyncio.to_thread(reconcile, self.kube, body, self.config, self.applier)
            result = "ok"
        except InvalidModelService as exc:
            result = "invalid"
            if not already_invalid(body, str(exc)):
                post(body, "Warning", "InvalidSpec", str(exc))
            raise
        except KubeError as exc:
            result = "transient" if exc.transient else "error"
            raise
        finally:
            metrics.RECONCILES.labels(result).inc()
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
        if outcome.started_training is not None:
            metrics.TRAINING_JOBS.inc()
        for event in outcome.events:
            post(body, event.type, event.reason, event.message)
        return outcome

    def request(self, namespace: str, name: str) -> None:
        """Ask for a reconcile soon; requests while one is queued add nothing."""
        key = (namespace, name)
        if key in self._queued:
            return
        self._queued.add(key)
        task = asyncio.create_task(self._requested(namespace, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _requested(self, namespace: str, name: str) -> None:
        # Owned objects change in bursts (a Job's pod starts, finishes, the Job completes):
        # a short wait folds a burst into one reconcile.
        await asyncio.sleep(COALESCE_SECONDS)
        for delay in (*RETRY_DELAYS, None):
            try:
                await self.run(namespace, name, trigger="owned")
                return
            except InvalidModelService:
                return
            except KubeError as exc:
                if not exc.transient or delay is None:
                    log.warning("reconcile of %s/%s failed: %s", namespace, name, exc)
                    return
                await asyncio.sleep(delay)
            except Exception:
                log.exception("reconcile of %s/%s failed", namespace, name)
                return

    def forget(self, namespace: str, name: str) -> None:
        self.applier.forget(namespace, name)
        lock = self._locks.get((namespace, name))
        if lock is not None and not lock.locked():
            self._locks.pop((namespace, name), None)


def already_invalid(body: Mapping[str, Any], message: str) -> bool:
    """Whether the status already reports this very spec error (one Event per mistake)."""
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(
        c.get("type") == "SpecValid" and c.get("status") == "False" and c.get("message") == message
        for c in conditions
    )


def post(body: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
    text = safe_message(message, limit=EVENT_MESSAGE_LIMIT)
    kopf.event(cast(kopf.Body, dict(body)), type=event_type, reason=reason, message=text)


def _reconciler(memo: Any) -> Reconciler:
    reconciler: Reconciler = memo["reconciler"]
    return reconciler


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # The CRD's status schema is structural, so kopf's own bookkeeping goes to annotations.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="tfmaas.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="tfmaas.io", key="last-handled-configuration"
    )
    # Our Events are the transitions; kopf's per-handler log lines would drown them.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    if memo.get("namespaced"):
        # Watching a fixed list of namespaces needs no cluster-wide list of namespaces and
        # CRDs, and a namespaced Role does not grant it: without this, kopf retries those
        # forbidden calls for about a minute before it starts handling anything.
        settings.scanning.disabled = True
    # Reconciles block on API calls in threads; many ModelServices need many threads.
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="reconcile")
    )
    memo["reconciler"] = Reconciler(await asyncio.to_thread(connect), CONFIG)


async def _reconcile_with_retries(
    namespace: str | None, name: str, memo: Any, trigger: str
) -> None:
    try:
        await _reconciler(memo).run(namespace or "default", name, trigger)
    except InvalidModelService as exc:
        raise kopf.PermanentError(str(exc)) from None
    except KubeError as exc:
        if exc.transient:
            raise kopf.TemporaryError(str(exc), delay=5) from None
        raise kopf.PermanentError(str(exc)) from None


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def model_service_changed(
    namespace: str | None, name: str, memo: Any, reason: str, **_: Any
) -> None:
    await _reconcile_with_retries(namespace, name, memo, trigger=str(reason))


@kopf.timer(
    GROUP, VERSION, PLURAL, interval=CONFIG.resync_seconds, initial_delay=CONFIG.resync_seconds
)
async def resync(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    await _reconcile_with_retries(namespace, name, memo, trigger="resync")


@kopf.on.event(GROUP, VERSION, PLURAL)
async def model_service_event(
    type: str, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    if type == "DELETED":
        _reconciler(memo).forget(namespace or "default", name)


# Pods need no watch: a training pod's end shows in its Job, a serving pod's readiness in its
# Deployment's status.
@kopf.on.event("batch", "v1", "jobs", labels=OWNED)
@kopf.on.event("apps", "v1", "deployments", labels=OWNED)
async def owned_object_changed(
    type: str,
    body: Mapping[str, Any],
    labels: Mapping[str, str],
    namespace: str | None,
    name: str,
    memo: Any,
    **_: Any,
) -> None:
    reconciler, service = _reconciler(memo), labels[MODEL_SERVICE_LABEL]
    namespace = namespace or "default"
    key = (str(body.get("kind")), namespace, name)
    if type == "DELETED":
        reconciler.applier.forget(namespace, service)
        reconciler.seen.pop(key, None)
    else:
        # Most updates (a Job's active count, a Deployment's conditions' heartbeats) change
        # nothing a reconcile reads; only the fields it does read trigger one.
        state = observed_state(body)
        if reconciler.seen.get(key) == state:
            return
        reconciler.seen[key] = state
    reconciler.request(namespace, service)


def observed_state(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a reconcile reads from an owned Job or Deployment."""
    status = body.get("status") or {}
    if body.get("kind") == "Job":
        finished = sorted(
            (c.get("type"), c.get("status"))
            for c in status.get("conditions") or []
            if c.get("type") in ("Complete", "SuccessCriteriaMet", "Failed")
        )
        return ("Job", tuple(finished))
    template = ((body.get("spec") or {}).get("template") or {}).get("metadata") or {}
    return (
        "Deployment",
        (body.get("metadata") or {}).get("generation"),
        (body.get("spec") or {}).get("replicas"),
        (template.get("labels") or {}).get(VERSION_LABEL),
        *(
            status.get(field)
            for field in (
                "observedGeneration",
                "replicas",
                "updatedReplicas",
                "readyReplicas",
                "availableReplicas",
            )
        ),
    )
