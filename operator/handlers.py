"""kopf registration, kept thin: every trigger ends in one coalesced reconcile of the
ModelService concerned.

Triggers: the ModelService's own watch (a new object, a spec whose metadata.generation is
ahead of the status.observedGeneration a reconcile last wrote, as controller-runtime's
GenerationChangedPredicate decides), updates of the Jobs and Deployments it owns that change
what a reconcile reads (so a finished training or a ready replica is noticed at once), and a
periodic resync as a safety net (one loop in the Reconciler, fed the resourceVersions this
module's ModelService watch sees). The Reconciler retries transient API faults with backoff
and leaves an invalid spec to its condition.

Not kopf's create/update/resume handlers: their bookkeeping is a PATCH of each ModelService
after every handled change (the last-handled configuration, to diff the next change against)
and a watch event for that patch, which in a burst of new ModelServices competes with their
Jobs for the API server. The generation already says whether the spec changed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from tfmaas.api import GROUP, PLURAL, VERSION
from tfmaas.operator.config import OperatorConfig
from tfmaas.operator.kube import connect
from tfmaas.operator.naming import (
    FIELD_MANAGER,
    MANAGED_BY_LABEL,
    MODEL_SERVICE_LABEL,
)
from tfmaas.operator.reconcile_runner import WORKERS, Reconciler

CONFIG = OperatorConfig.load()
OWNED: Mapping[str, Any] = {  # kopf's label filter values: a string or kopf.PRESENT
    MANAGED_BY_LABEL: FIELD_MANAGER,
    MODEL_SERVICE_LABEL: kopf.PRESENT,
}


def _reconciler(memo: Any) -> Reconciler:
    reconciler: Reconciler = memo["reconciler"]
    return reconciler


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
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
        concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="reconcile")
    )
    memo["reconciler"] = reconciler = Reconciler(await asyncio.to_thread(connect), CONFIG)
    memo["resync"] = asyncio.create_task(reconciler.resync_forever(), name="resync")


@kopf.on.cleanup()
async def stop_resync(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("resync")
    if task is not None:
        task.cancel()


def spec_trigger(event_type: str | None, body: Mapping[str, Any]) -> str | None:
    """The reconcile a ModelService's watch event asks for: `create` for one no reconcile has
    written a status to yet, `update` for a spec changed since the last reconcile (its
    generation ahead of status.observedGeneration), `resume` for either found in the listing
    a watch starts with; None for everything else, our own status writes included (the
    resync and the owned objects' watches cover the rest)."""
    if event_type == "DELETED":
        return None
    generation = (body.get("metadata") or {}).get("generation")
    status = body.get("status") or {}
    if status and status.get("observedGeneration") == generation:
        return None
    if event_type is None:
        return "resume"
    return "update" if status else "create"


@kopf.on.event(GROUP, VERSION, PLURAL)
async def model_service_event(
    type: str | None, namespace: str | None, name: str, memo: Any, body: Mapping[str, Any], **_: Any
) -> None:
    reconciler = _reconciler(memo)
    namespace = namespace or "default"
    if type == "DELETED":
        await reconciler.forget(namespace, name)
        return
    # The periodic resync (Reconciler.resync_forever) needs only this: a settled
    # ModelService whose resourceVersion has not moved costs no request at all.
    reconciler.saw(namespace, name, (body.get("metadata") or {}).get("resourceVersion"))
    trigger = spec_trigger(type, body)
    if trigger is not None:
        # A new object's first sight is what is stored: nothing, not even a status write of
        # ours, can have come since. Reading it again would cost a request per ModelService
        # in a burst of creations, ahead of its Job.
        stored = dict(body) if trigger == "create" else None
        reconciler.request(namespace, name, trigger=trigger, stored=stored)


# Pods need no watch: a training pod's end shows in its Job, a serving pod's readiness in its
# Deployment's status. The rest of what a ModelService owns is watched so that a hand edit
# or deletion is undone at once, without a periodic re-send of everything (resync).
@kopf.on.event("batch", "v1", "jobs", labels=OWNED)
@kopf.on.event("apps", "v1", "deployments", labels=OWNED)
@kopf.on.event("", "v1", "configmaps", labels=OWNED)
@kopf.on.event("", "v1", "services", labels=OWNED)
@kopf.on.event("", "v1", "serviceaccounts", labels=OWNED)
@kopf.on.event("autoscaling", "v2", "horizontalpodautoscalers", labels=OWNED)
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=OWNED)
@kopf.on.event("networking.k8s.io", "v1", "networkpolicies", labels=OWNED)
async def owned_object_changed(
    type: str,
    body: Mapping[str, Any],
    labels: Mapping[str, str],
    namespace: str | None,
    name: str,
    memo: Any,
    **_: Any,
) -> None:
    _reconciler(memo).owned_object_changed(
        body,
        namespace=namespace or "default",
        name=name,
        service=labels[MODEL_SERVICE_LABEL],
        deleted=type == "DELETED",
    )
