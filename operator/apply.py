"""Server-side apply and delete, skipping what this process already did a moment ago.

Owned Jobs and Deployments change status many times per rollout and each change triggers a
reconcile; re-sending identical manifests each time is most of an operator's API load. A
manifest is sent again when it changed, when the cached copy is older than `max_age` (so
hand edits and deletions are undone within that time), or after `forget` (the handlers call
it when an owned object is deleted).

Deleting what must not exist (the other engine's autoscaler, a finished canary) is the same
waste the other way round: each full pass would ask, and the API server answer 404. An
object this process deleted or found absent is not asked about again until it applies that
object, a watch reports it (`forget_object`), or `absent_max_age` passes (the drift resync
that undoes what no watch reports).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tfmaas.operator.kube import Kube
from tfmaas.operator.naming import MODEL_SERVICE_LABEL

Key = tuple[str, str, str, str]


@dataclass
class Applier:
    kube: Kube
    max_age: float = 60.0
    absent_max_age: float = 3600.0
    clock: Callable[[], float] = time.monotonic
    _sent: dict[Key, tuple[str, float, str]] = field(default_factory=dict)
    # Objects known absent: when, and the ModelService they would belong to.
    _absent: dict[Key, tuple[float, str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def apply(self, manifest: Mapping[str, Any]) -> bool:
        """Apply unless an identical manifest was applied within max_age; True if sent."""
        meta = manifest["metadata"]
        key = (manifest["apiVersion"], manifest["kind"], meta.get("namespace", ""), meta["name"])
        digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
        now = self.clock()
        with self._lock:
            cached = self._sent.get(key)
        if cached is not None and cached[0] == digest and now - cached[1] < self.max_age:
            return False
        self.kube.apply(manifest)
        owner = (meta.get("labels") or {}).get(MODEL_SERVICE_LABEL, "")
        with self._lock:
            self._sent[key] = (digest, now, owner)
            self._absent.pop(key, None)
        return True

    def delete(
        self, api_version: str, kind: str, namespace: str, name: str, *, service: str
    ) -> bool:
        """Delete an object of ModelService `service` that must not exist, unless it is known
        absent; True if something was deleted."""
        key = (api_version, kind, namespace, name)
        now = self.clock()
        with self._lock:
            absent = self._absent.get(key)
        if absent is not None and now - absent[0] < self.absent_max_age:
            return False
        deleted = self.kube.delete(api_version, kind, namespace, name)
        self.absent(api_version, kind, namespace, name, service=service)
        return deleted

    def absent(
        self, api_version: str, kind: str, namespace: str, name: str, *, service: str
    ) -> None:
        """The object does not exist (deleted, or a watch saw it go): apply sends it again,
        delete does not ask."""
        key = (api_version, kind, namespace, name)
        with self._lock:
            self._sent.pop(key, None)
            self._absent[key] = (self.clock(), service)

    def present(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        """A watch saw the object exist: a delete that it must not exist goes out again."""
        with self._lock:
            self._absent.pop((api_version, kind, namespace, name), None)

    def forget(self, namespace: str, service: str) -> None:
        """Send everything of this ModelService again on its next reconcile."""
        with self._lock:
            for key in [k for k, v in self._sent.items() if k[2] == namespace and v[2] == service]:
                del self._sent[key]
            for key in [
                k for k, v in self._absent.items() if k[2] == namespace and v[1] == service
            ]:
                del self._absent[key]

    def forget_object(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        """Nothing is known of this object any more: a watch saw it change or appear."""
        with self._lock:
            self._sent.pop((api_version, kind, namespace, name), None)
            self._absent.pop((api_version, kind, namespace, name), None)
