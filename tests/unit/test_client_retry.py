"""The clients' shared retry: transient errors are retried with doubling waits, others are not."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tfmaas.client import retry
from tfmaas.client.retry import with_backoff


class Transient(Exception):
    pass


def _failing(times: int, error: Exception, calls: list[int]) -> Callable[[], str]:
    def call() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return "ok"

    return call


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waited: list[float] = []
    monkeypatch.setattr(retry.time, "sleep", waited.append)
    return waited


def is_transient(error: Exception) -> bool:
    return isinstance(error, Transient)


def test_transient_errors_are_retried_with_doubling_waits(sleeps: list[float]) -> None:
    calls: list[int] = []
    call = _failing(2, Transient(), calls)
    assert with_backoff(call, retries=3, backoff=0.1, transient=is_transient) == "ok"
    assert len(calls) == 3 and sleeps == [0.1, 0.2]


def test_the_last_transient_error_propagates(sleeps: list[float]) -> None:
    calls: list[int] = []
    with pytest.raises(Transient):
        with_backoff(_failing(9, Transient(), calls), retries=2, backoff=1, transient=is_transient)
    assert len(calls) == 3 and sleeps == [1, 2]


def test_other_errors_are_not_retried(sleeps: list[float]) -> None:
    calls: list[int] = []
    with pytest.raises(ValueError):
        with_backoff(_failing(1, ValueError(), calls), retries=3, backoff=1, transient=is_transient)
    assert len(calls) == 1 and sleeps == []
