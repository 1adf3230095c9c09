"""The applier re-sends a manifest only when it changed, aged, or was forgotten."""

from __future__ import annotations

from typing import Any

from tfmaas.operator.apply import Applier
from tfmaas.operator.reconcile import unchanged


class RecordingKube:
    """Stands in for the API server: records what would be sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.sent.append(manifest["metadata"]["name"])
        return manifest


def manifest(name: str, data: str = "a") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "ns", "labels": {"tfmaas.io/model-service": "m"}},
        "data": {"k": data},
    }


def test_identical_manifests_are_sent_once_per_max_age() -> None:
    now = [0.0]
    kube = RecordingKube()
    applier = Applier(kube, max_age=60, clock=lambda: now[0])  # type: ignore[arg-type]
    assert applier.apply(manifest("a")) and not applier.apply(manifest("a"))
    assert applier.apply(manifest("a", data="b"))  # changed
    now[0] = 61.0
    assert applier.apply(manifest("a", data="b"))  # aged
    applier.forget("ns", "m")
    assert applier.apply(manifest("a", data="b"))  # forgotten
    applier.forget_object("v1", "ConfigMap", "ns", "a")
    assert applier.apply(manifest("a", data="b"))
    assert kube.sent == ["a"] * 5


def test_status_writes_are_skipped_when_nothing_changes() -> None:
    previous = {"phase": "Serving", "servingVersion": 1}
    assert unchanged(previous, {"phase": "Serving", "servingVersion": 1, "canaryVersion": None})
    assert not unchanged(previous, {"phase": "Serving", "servingVersion": 2})
    assert not unchanged(previous, {"phase": "Serving", "servingVersion": None})


class DeletingKube(RecordingKube):
    def __init__(self) -> None:
        super().__init__()
        self.deleted: list[str] = []

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        self.deleted.append(name)
        return False


def test_what_a_watch_saw_deleted_is_sent_again_and_not_deleted_again() -> None:
    kube = DeletingKube()
    applier = Applier(kube, max_age=60, clock=lambda: 0.0)  # type: ignore[arg-type]
    assert applier.apply(manifest("a"))
    applier.absent("v1", "ConfigMap", "ns", "a", service="m")  # a watch saw it deleted
    assert not applier.delete("v1", "ConfigMap", "ns", "a", service="m")
    assert kube.deleted == []
    assert applier.apply(manifest("a"))  # still wanted: sent again at once
    applier.delete("v1", "ConfigMap", "ns", "a", service="m")  # applied since: asked
    assert kube.deleted == ["a"]
    applier.forget("ns", "m")  # the ModelService went: nothing of it is remembered
    applier.delete("v1", "ConfigMap", "ns", "a", service="m")
    assert kube.deleted == ["a", "a"]
