"""Server-side apply, skipping what this process already applied unchanged a moment ago.

Owned Jobs and Deployments change status many times per rollout and each change triggers a
reconcile; re-sending identical manifests each time is most of an operator's API load. A
manifest is sent again when it changed, when the cached copy is older than `max_age` (so
hand edits and deletions are undone within that time), or after `forget` (the handlers call
it when an owned object is deleted).
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
    clock: Callable[[], float] = time.monotonic
    _sent: dict[Key, tuple[str, float, str]] = field(default_factory=dict)
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
        return True

    def forget(self, namespace: str, service: str) -> None:
        """Send everything of this ModelService again on its next reconcile."""
        with self._lock:
            for key in [k for k, v in self._sent.items() if k[2] == namespace and v[2] == service]:
                del self._sent[key]

    def forget_object(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            self._sent.pop((api_version, kind, namespace, name), None)
