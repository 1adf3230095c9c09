"""kopf registration, kept thin: every trigger ends in one coalesced reconcile of the
ModelService concerned.

Triggers: the ModelService's own create/update/resume (with kopf's retries: a transient API
fault is a TemporaryError with backoff, an invalid spec a PermanentError), updates of the
Jobs and Deployments it owns that change what a reconcile reads (so a finished training or
a ready replica is noticed at once), and a periodic resync as a safety net (one loop in the
Reconciler, fed the resourceVersions this module's ModelService watch sees).
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
from tfmaas.operator.kube import KubeError, connect
from tfmaas.operator.naming import (
    FIELD_MANAGER,
    MANAGED_BY_LABEL,
    MODEL_SERVICE_LABEL,
)
from tfmaas.operator.reconcile import InvalidModelService
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
        concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="reconcile")
    )
    memo["reconciler"] = reconciler = Reconciler(await asyncio.to_thread(connect), CONFIG)
    memo["resync"] = asyncio.create_task(reconciler.resync_forever(), name="resync")


@kopf.on.cleanup()
async def stop_resync(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("resync")
    if task is not None:
        task.cancel()


async def _reconcile_with_retries(
    namespace: str | None,
    name: str,
    memo: Any,
    trigger: str,
    stored: Mapping[str, Any] | None = None,
) -> None:
    try:
        await _reconciler(memo).run(namespace or "default", name, trigger, stored=stored)
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
    namespace: str | None,
    name: str,
    memo: Any,
    reason: str,
    retry: int,
    body: Mapping[str, Any],
    **_: Any,
) -> None:
    # A new object's first sight is what is stored: nothing, not even a status write of
    # ours, can have come since. Reading it again would cost a request per ModelService
    # in a burst of creations, ahead of its Job. A retry may follow our own writes: it reads.
    fresh = reason == "create" and retry == 0
    await _reconcile_with_retries(
        namespace, name, memo, trigger=str(reason), stored=dict(body) if fresh else None
    )


@kopf.on.event(GROUP, VERSION, PLURAL)
async def model_service_event(
    type: str, namespace: str | None, name: str, memo: Any, body: Mapping[str, Any], **_: Any
) -> None:
    # The periodic resync (Reconciler.resync_forever) needs only this: a settled
    # ModelService whose resourceVersion has not moved costs no request at all.
    if type == "DELETED":
        await _reconciler(memo).forget(namespace or "default", name)
    else:
        resource_version = (body.get("metadata") or {}).get("resourceVersion")
        _reconciler(memo).saw(namespace or "default", name, resource_version)


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
