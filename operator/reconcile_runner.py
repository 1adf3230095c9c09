"""Running reconciles: one at a time per ModelService and many ModelServices in parallel,
a burst of triggers folded into one run, and transient API faults retried with backoff.

kopf's handlers (handlers.py) only register triggers and call in here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import kopf

from tfmaas.api import API_VERSION, KIND
from tfmaas.logs import object_ref
from tfmaas.operator import metrics, model_metrics
from tfmaas.operator.apply import Applier
from tfmaas.operator.config import OperatorConfig
from tfmaas.operator.kube import Kube, KubeError
from tfmaas.operator.naming import VERSION_LABEL, gateway_cluster_role_binding_name
from tfmaas.operator.priority_gate import PriorityGate
from tfmaas.operator.reconcile import InvalidModelService, Outcome, reconcile, unchanged
from tfmaas.operator.resync_schedule import ResyncSchedule
from tfmaas.redact import safe_message

log = logging.getLogger(__name__)

EVENT_MESSAGE_LIMIT = 1000
RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
COALESCE_SECONDS = 0.3
# Reconciles block on API calls in this many threads (the event loop's default executor).
WORKERS = 16
# Who goes first when every worker is busy: what a user asked for (a new or changed
# ModelService, or one found on start), then what its objects report, then the safety net.
OWNED_PRIORITY, RESYNC_PRIORITY = 1, 2
PRIORITIES = {"owned": OWNED_PRIORITY, "resync": RESYNC_PRIORITY}

Key = tuple[str, str]


class Reconciler:
    """Runs reconciles one at a time per ModelService, many ModelServices in parallel, and
    folds a burst of requests for one ModelService into a single extra run."""

    def __init__(
        self, kube: Kube, config: OperatorConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.kube = kube
        self.config = config
        self.clock = clock
        self.gate = PriorityGate(WORKERS)
        self.schedule = ResyncSchedule(config.resync_seconds, clock)
        self.applier = Applier(
            kube, max_age=config.resync_seconds, absent_max_age=config.drift_resync_seconds
        )
        self._locks: dict[Key, asyncio.Lock] = {}
        self._queued: set[Key] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # What each owned object last looked like to a reconcile, by (kind, namespace, name).
        self.seen: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        # ModelServices whose last reconcile changed nothing: the resourceVersion it read and
        # when it ran. Until the object or something it owns changes, a resync repeats that
        # reconcile for nothing, so it is skipped (see `settled`).
        self._settled: dict[Key, tuple[str, float]] = {}

    def _lock(self, key: Key) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def settled(self, namespace: str, name: str, resource_version: str | None) -> bool:
        """Whether a resync of this ModelService would only repeat its last reconcile: that
        one changed nothing, the object is still at the version it read, no owned object
        changed since (each change unsettles it), and it ran within drift_resync_seconds (the
        full pass that still comes now and then undoes what no watch reports)."""
        entry = self._settled.get((namespace, name))
        return (
            entry is not None
            and resource_version is not None
            and entry[0] == resource_version
            and self.clock() - entry[1] < self.config.drift_resync_seconds
        )

    async def run(
        self,
        namespace: str,
        name: str,
        trigger: str = "spec",
        *,
        resource_version: str | None = None,
        stored: Mapping[str, Any] | None = None,
    ) -> Outcome | None:
        """Reconcile now; raises what reconcile raises. A resync passes the resourceVersion
        its body has, and is skipped while the ModelService is settled. `stored` is a body
        the caller knows nothing has written since the API server stored it (a first sight
        of a new object); without it the reconcile reads the object first."""
        key = (namespace, name)
        async with self._lock(key):
            self._queued.discard(key)
            if trigger == "resync" and self.settled(namespace, name, resource_version):
                metrics.TRIGGERS.labels("resync-skipped").inc()
                return None
            metrics.TRIGGERS.labels(trigger).inc()
            self._settled.pop(key, None)
            async with self.gate.hold(PRIORITIES.get(trigger, 0)):
                return await self._run_locked(namespace, name, stored)

    async def _run_locked(
        self, namespace: str, name: str, stored: Mapping[str, Any] | None = None
    ) -> Outcome | None:
        # Otherwise the stored object: a handler's body may predate the last status write.
        body = stored or await asyncio.to_thread(self.kube.get, API_VERSION, KIND, namespace, name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            await self.forget(namespace, name)
            return None
        metadata = body.get("metadata") or {}
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
        model_metrics.publish(namespace=namespace, name=name, status=outcome.status)
        for seconds in outcome.finished_training_seconds:
            model_metrics.training_finished(namespace=namespace, name=name, seconds=seconds)
        for event in outcome.events:
            post(body, event.type, event.reason, event.message)
        resource_version = metadata.get("resourceVersion")
        quiet = (
            outcome.started_training is None
            and not outcome.events
            and unchanged(body.get("status") or {}, outcome.status)
        )
        if quiet and resource_version:
            self._settled[(namespace, name)] = (str(resource_version), self.clock())
        return outcome

    def saw(self, namespace: str, name: str, resource_version: str | None) -> None:
        """The ModelService's watch reported it (listed, added or modified)."""
        self.schedule.saw((namespace, name), resource_version)

    async def resync_forever(self) -> None:
        """The safety net: each known ModelService about once per resync_seconds, skipped
        while it is settled (see `settled`)."""
        tick = min(1.0, self.config.resync_seconds)
        while True:
            await asyncio.sleep(tick)
            for (namespace, name), version in self.schedule.due():
                self.request(namespace, name, trigger="resync", resource_version=version)

    def request(
        self,
        namespace: str,
        name: str,
        *,
        trigger: str = "owned",
        resource_version: str | None = None,
        stored: Mapping[str, Any] | None = None,
    ) -> None:
        """Ask for a reconcile soon; requests while one is queued add nothing. `stored` is
        as for `run`, used by the first attempt only (a retry may follow our own writes)."""
        key = (namespace, name)
        if key in self._queued:
            return
        self._queued.add(key)
        task = asyncio.create_task(
            self._requested(namespace, name, trigger, resource_version, stored)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _requested(
        self,
        namespace: str,
        name: str,
        trigger: str,
        resource_version: str | None,
        stored: Mapping[str, Any] | None = None,
    ) -> None:
        # Owned objects change in bursts (a Job's pod starts, finishes, the Job completes):
        # a short wait folds a burst into one reconcile. What a user asked for goes now.
        if trigger in PRIORITIES:
            await asyncio.sleep(COALESCE_SECONDS)
        for delay in (*RETRY_DELAYS, None):
            try:
                await self.run(
                    namespace, name, trigger, resource_version=resource_version, stored=stored
                )
                return
            except InvalidModelService:
                return
            except KubeError as exc:
                stored = None
                if not exc.transient or delay is None:
                    log.warning(
                        "reconcile failed: %s",
                        exc,
                        extra=object_ref(namespace=namespace, name=name),
                    )
                    return
                await asyncio.sleep(delay)
            except Exception:
                log.exception("reconcile failed", extra=object_ref(namespace=namespace, name=name))
                return

    def owned_object_changed(
        self, body: Mapping[str, Any], *, namespace: str, name: str, service: str, deleted: bool
    ) -> None:
        """A Job or Deployment of ModelService `service` changed: reconcile it if what a
        reconcile reads from the object changed."""
        kind = str(body.get("kind"))
        api_version = str(body.get("apiVersion"))
        key = (kind, namespace, name)
        if deleted:
            # Sent again if it is still wanted; not deleted again if it must not exist.
            self.applier.absent(api_version, kind, namespace, name, service=service)
            self.seen.pop(key, None)
        else:
            self.applier.present(api_version, kind, namespace, name)
            # Most updates (a Job's active count, a Deployment's conditions' heartbeats)
            # change nothing a reconcile reads; only the fields it does read trigger one.
            state = observed_state(body)
            before = self.seen.get(key)
            if before == state:
                return
            self.seen[key] = state
            if before is not None and kind not in ("Job", "Deployment"):
                # Someone changed what the operator applied: send it again, not just when
                # the applier's copy expires.
                self.applier.forget_object(api_version, kind, namespace, name)
        self._settled.pop((namespace, service), None)
        self.request(namespace, service)

    async def forget(self, namespace: str, name: str) -> None:
        """The ModelService is gone: drop what is kept of it, and delete what its owner
        reference cannot take with it."""
        self.applier.forget(namespace, name)
        self.schedule.forget((namespace, name))
        self._settled.pop((namespace, name), None)
        model_metrics.remove(namespace=namespace, name=name)
        # A blocking call, kept off the event loop that every watch and handler shares.
        await asyncio.to_thread(self._delete_gateway_binding, namespace, name)
        lock = self._locks.get((namespace, name))
        if lock is not None and not lock.locked():
            self._locks.pop((namespace, name), None)

    def _delete_gateway_binding(self, namespace: str, name: str) -> None:
        # The access gateway's ClusterRoleBinding is cluster-scoped, so it has no owner to be
        # garbage-collected with: it goes with the ModelService here.
        try:
            self.applier.kube.delete(
                "rbac.authorization.k8s.io/v1",
                "ClusterRoleBinding",
                "",
                gateway_cluster_role_binding_name(namespace, name),
            )
        except KubeError as exc:
            log.warning(
                "could not delete the access gateway's ClusterRoleBinding: %s",
                exc,
                extra=object_ref(namespace=namespace, name=name),
            )


def already_invalid(body: Mapping[str, Any], message: str) -> bool:
    """Whether the status already reports this very spec error (one Event per mistake)."""
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(
        c.get("type") == "SpecValid" and c.get("status") == "False" and c.get("message") == message
        for c in conditions
    )


def post(body: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
    text = safe_message(message, limit=EVENT_MESSAGE_LIMIT)
    # Each Event is also a log line, so a log collector sees the transitions too.
    metadata = body.get("metadata") or {}
    log.log(
        logging.WARNING if event_type == "Warning" else logging.INFO,
        "%s: %s",
        reason,
        text,
        extra=object_ref(namespace=str(metadata.get("namespace")), name=str(metadata.get("name"))),
    )
    kopf.event(cast(kopf.Body, dict(body)), type=event_type, reason=reason, message=text)


def observed_state(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a reconcile reads from an owned Job or Deployment; of any other owned object,
    what the operator applied (a controller's status updates of an HPA or PDB are not
    drift)."""
    status = body.get("status") or {}
    if body.get("kind") not in ("Job", "Deployment"):
        applied = {
            "labels": (body.get("metadata") or {}).get("labels"),
            "spec": body.get("spec"),
            "data": body.get("data"),
            "rules": body.get("rules"),
        }
        digest = hashlib.sha256(json.dumps(applied, sort_keys=True, default=str).encode())
        return (str(body.get("kind")), digest.hexdigest())
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
