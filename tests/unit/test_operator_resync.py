"""A converged ModelService costs no requests: its resyncs are skipped until something changes.

The reconcile itself is replaced by a stub here; what is under test is the runner's decision
to call it (and so to read the object) at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from tfmaas.operator import reconcile_runner
from tfmaas.operator.config import OperatorConfig
from tfmaas.operator.reconcile import Outcome
from tfmaas.operator.reconcile_runner import Reconciler, observed_state

NS, NAME = "team", "model"
READY = {"conditions": [{"type": "Ready", "status": "True"}], "servingVersion": 1}


class CountingKube:
    """Answers the runner's one read, the ModelService, and counts it."""

    def __init__(self) -> None:
        self.gets = 0
        self.resource_version = "5"

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
        self.gets += 1
        metadata = {"name": name, "namespace": namespace, "resourceVersion": self.resource_version}
        return {"apiVersion": api_version, "kind": kind, "metadata": metadata, "status": READY}

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        return False


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def stub_reconcile(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Each reconcile reports the next status in the list (the last one from then on)."""
    statuses: list[dict[str, Any]] = [dict(READY)]

    def fake(kube: Any, body: Any, config: Any, applier: Any) -> Outcome:
        status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        return Outcome(status=status, events=[], started_training=None)

    monkeypatch.setattr(reconcile_runner, "reconcile", fake)
    return statuses


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


def reconciler(kube: CountingKube, clock: Clock) -> Reconciler:
    config = OperatorConfig(resync_seconds=60.0, drift_resync_seconds=3600.0)
    return Reconciler(kube, config, clock=clock)  # type: ignore[arg-type]


async def _drain(r: Reconciler) -> None:
    for task in list(r._tasks):
        task.cancel()
    await asyncio.gather(*r._tasks, return_exceptions=True)


def test_a_resync_of_a_settled_model_service_reads_nothing(
    stub_reconcile: list[dict[str, Any]],
) -> None:
    kube, clock = CountingKube(), Clock()

    async def scenario() -> None:
        r = reconciler(kube, clock)
        await r.run(NS, NAME, "create")
        assert kube.gets == 1
        for _ in range(5):
            clock.now += 60
            assert await r.run(NS, NAME, "resync", resource_version="5") is None
        assert kube.gets == 1

    run(scenario)


def test_a_new_model_service_seen_first_is_reconciled_from_that_body_without_a_read(
    stub_reconcile: list[dict[str, Any]],
) -> None:
    kube, clock = CountingKube(), Clock()
    reconciled: list[Any] = []

    def remember(kube: Any, body: Any, config: Any, applier: Any) -> Outcome:
        reconciled.append(body)
        return Outcome(status=dict(READY), events=[], started_training=None)

    stored = {"metadata": {"name": NAME, "namespace": NS, "resourceVersion": "4"}, "spec": {}}

    async def scenario() -> None:
        r = reconciler(kube, clock)
        await r.run(NS, NAME, "create", stored=stored)
        assert kube.gets == 0
        await r.run(NS, NAME, "update")
        assert kube.gets == 1

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reconcile_runner, "reconcile", remember)
        run(scenario)
    assert reconciled[0] is stored
    assert reconciled[1]["metadata"]["resourceVersion"] == "5"


def test_a_resync_without_a_resource_version_is_never_skipped(
    stub_reconcile: list[dict[str, Any]],
) -> None:
    kube, clock = CountingKube(), Clock()

    async def scenario() -> None:
        r = reconciler(kube, clock)
        await r.run(NS, NAME, "create")
        await r.run(NS, NAME, "resync", resource_version=None)
        assert kube.gets == 2

    run(scenario)


def test_a_moved_resource_version_or_the_drift_interval_brings_a_full_reconcile(
    stub_reconcile: list[dict[str, Any]],
) -> None:
    kube, clock = CountingKube(), Clock()

    async def scenario() -> None:
        r = reconciler(kube, clock)
        await r.run(NS, NAME, "create")
        # Someone else wrote the object (a label, a status patch): its version moved.
        await r.run(NS, NAME, "resync", resource_version="6")
        assert kube.gets == 2
        clock.now += 3599
        await r.run(NS, NAME, "resync", resource_version="5")
        assert kube.gets == 2
        clock.now += 2
        await r.run(NS, NAME, "resync", resource_version="5")
        assert kube.gets == 3

    run(scenario)


def test_a_reconcile_that_changed_the_status_does_not_settle(
    stub_reconcile: list[dict[str, Any]],
) -> None:
    # The first reconcile finds serving moved to version 2; the status it writes is news.
    stub_reconcile[:] = [{**READY, "servingVersion": 2}, dict(READY)]
    kube, clock = CountingKube(), Clock()

    async def scenario() -> None:
        r = reconciler(kube, clock)
        await r.run(NS, NAME, "create")
        await r.run(NS, NAME, "resync", resource_version="5")
        assert kube.gets == 2
        await r.run(NS, NAME, "resync", resource_version="5")
        assert kube.gets == 2

    run(scenario)


def _config_map(data: dict[str, str], status_note: str = "") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "model-stable-abc", "labels": {"tfmaas.io/model-service": NAME}},
        "data": data,
        "status": {"note": status_note},
    }


def test_an_owned_object_change_unsettles_and_a_hand_edit_is_sent_again(
    stub_reconcile: list[dict[str, Any]],
) -> None:
    kube, clock = CountingKube(), Clock()

    async def scenario() -> None:
        r = reconciler(kube, clock)
        key = ("v1", "ConfigMap", NS, "model-stable-abc")
        r.applier._sent[key] = ("digest", clock.now, NAME)
        await r.run(NS, NAME, "create")
        # Its creation (the operator's own apply) is seen: no reason to send it again.
        r.owned_object_changed(
            _config_map({"a": "1"}),
            namespace=NS,
            name="model-stable-abc",
            service=NAME,
            deleted=False,
        )
        assert key in r.applier._sent
        assert not r.settled(NS, NAME, "5")
        await r.run(NS, NAME, "owned")
        assert r.settled(NS, NAME, "5")
        # A status-only update is not drift.
        r.owned_object_changed(
            _config_map({"a": "1"}, status_note="x"),
            namespace=NS,
            name="model-stable-abc",
            service=NAME,
            deleted=False,
        )
        assert r.settled(NS, NAME, "5")
        # A hand edit: unsettled, and the applier's copy dropped so the manifest goes again.
        r.owned_object_changed(
            _config_map({"a": "2"}),
            namespace=NS,
            name="model-stable-abc",
            service=NAME,
            deleted=False,
        )
        assert not r.settled(NS, NAME, "5")
        assert key not in r.applier._sent
        await _drain(r)

    run(scenario)


def test_drift_state_covers_what_was_applied_not_what_controllers_report() -> None:
    hpa = {
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"labels": {"a": "b"}, "resourceVersion": "1"},
        "spec": {"minReplicas": 1},
        "status": {"currentReplicas": 1},
    }
    later = {**hpa, "metadata": {"labels": {"a": "b"}, "resourceVersion": "2"}}
    later["status"] = {"currentReplicas": 3}
    assert observed_state(hpa) == observed_state(later)
    assert observed_state(hpa) != observed_state({**hpa, "spec": {"minReplicas": 2}})
    assert observed_state(hpa) != observed_state({**hpa, "metadata": {"labels": {}}})


def test_the_schedule_brings_each_model_service_once_per_interval_with_its_latest_version() -> None:
    from tfmaas.operator.resync_schedule import ResyncSchedule

    clock = Clock()
    schedule = ResyncSchedule(60.0, clock)
    schedule.saw(("a", "one"), "1")
    clock.now += 30
    schedule.saw(("a", "two"), "7")
    schedule.saw(("a", "one"), "2")  # an update does not postpone it
    assert schedule.due() == []
    clock.now += 30
    assert schedule.due() == [(("a", "one"), "2")]
    assert schedule.due() == []
    clock.now += 30
    assert schedule.due() == [(("a", "two"), "7")]
    schedule.forget(("a", "one"))
    clock.now += 60
    assert schedule.due() == [(("a", "two"), "7")]
    assert len(schedule) == 1


def test_the_resync_loop_runs_due_model_services_and_skips_settled_ones(
    stub_reconcile: list[dict[str, Any]],
) -> None:
    kube, clock = CountingKube(), Clock()

    async def scenario() -> None:
        config = OperatorConfig(resync_seconds=0.05, drift_resync_seconds=3600.0)
        r = Reconciler(kube, config, clock=clock)  # type: ignore[arg-type]
        await r.run(NS, NAME, "create")
        r.saw(NS, NAME, "5")
        loop = asyncio.create_task(r.resync_forever())
        clock.now += 1
        await asyncio.sleep(0.5)
        assert kube.gets == 1  # due, but settled at the version its watch saw
        r.saw(NS, NAME, "6")  # someone wrote it
        clock.now += 1
        await asyncio.sleep(0.5)
        assert kube.gets == 2
        await r.forget(NS, NAME)
        clock.now += 1
        await asyncio.sleep(0.5)
        assert kube.gets == 2
        loop.cancel()
        await _drain(r)

    run(scenario)
