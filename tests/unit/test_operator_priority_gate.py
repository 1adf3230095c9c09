"""The reconcile gate: at most N at once, waiting ones by priority then arrival."""

from __future__ import annotations

import asyncio

import pytest

from tfmaas.operator.priority_gate import PriorityGate


async def _hold(gate: PriorityGate, priority: int, name: str, order: list[str]) -> None:
    async with gate.hold(priority):
        order.append(name)
        await asyncio.sleep(0)


def test_waiting_holders_go_by_priority_then_arrival() -> None:
    async def scenario() -> list[str]:
        gate, order = PriorityGate(1), []
        release = asyncio.Event()

        async def first() -> None:
            async with gate.hold(5):
                await release.wait()

        holder = asyncio.create_task(first())
        await asyncio.sleep(0)
        waiters = [
            asyncio.create_task(_hold(gate, priority, name, order))
            for priority, name in (
                (1, "owned-a"),
                (2, "resync"),
                (0, "create-a"),
                (1, "owned-b"),
                (0, "create-b"),
            )
        ]
        await asyncio.sleep(0)
        assert gate.waiting == 5
        release.set()
        await asyncio.gather(holder, *waiters)
        return order

    assert asyncio.run(scenario()) == ["create-a", "create-b", "owned-a", "owned-b", "resync"]


def test_no_more_than_the_limit_hold_at_once() -> None:
    async def scenario() -> int:
        gate, inside, most = PriorityGate(3), [0], [0]

        async def work(priority: int) -> None:
            async with gate.hold(priority):
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                await asyncio.sleep(0.001)
                inside[0] -= 1

        await asyncio.gather(*(work(i % 3) for i in range(30)))
        return most[0]

    assert asyncio.run(scenario()) == 3


def test_a_cancelled_waiter_gives_its_place_on() -> None:
    async def scenario() -> list[str]:
        gate, order = PriorityGate(1), []
        release = asyncio.Event()

        async def first() -> None:
            async with gate.hold(0):
                await release.wait()

        holder = asyncio.create_task(first())
        await asyncio.sleep(0)
        cancelled = asyncio.create_task(_hold(gate, 0, "cancelled", order))
        later = asyncio.create_task(_hold(gate, 1, "later", order))
        await asyncio.sleep(0)
        cancelled.cancel()
        release.set()
        await asyncio.gather(holder, later, cancelled, return_exceptions=True)
        # And the place is free again afterwards.
        await asyncio.wait_for(_hold(gate, 0, "after", order), timeout=1)
        return order

    assert asyncio.run(scenario()) == ["later", "after"]


def test_a_gate_needs_room() -> None:
    with pytest.raises(ValueError):
        PriorityGate(0)
