"""Settling the Predict calls the native front end relays: each call ends exactly once.

A call ends with its answer, its error, or its client's cancel, whichever comes first; whoever
takes its id from the pending table answers it (or drops the answer of a call already
cancelled) and records its metric, so a call is never counted twice nor left uncounted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import grpc

from tfmaas.serving.core import PredictPlan, ServingCore, internal
from tfmaas.serving.errors import ServingError
from tfmaas.serving.grpc_service import predict_response
from tfmaas.serving.relay_frames import answer

log = logging.getLogger(__name__)


class PendingPredicts:
    def __init__(self, core: ServingCore) -> None:
        self._core = core
        # id -> (model name, start time) of calls not settled yet
        self._pending: dict[int, tuple[str, float]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, call_id: int, model_name: str) -> None:
        self._pending[call_id] = (model_name, time.perf_counter())

    def settle(self, call_id: int, plan: PredictPlan, outputs: Callable[[], dict]) -> bytes | None:
        """The answer frame for a model call's outcome, or None for a call already cancelled."""
        try:
            return self.answered(call_id, plan, outputs())
        except ServingError as exc:
            return self.failed(call_id, exc)
        except Exception as exc:
            log.exception("Predict failed")
            return self.failed(call_id, internal(exc))

    def answered(self, call_id: int, plan: PredictPlan, outputs: dict) -> bytes | None:
        call = self._pending.pop(call_id, None)
        if call is None:
            return None  # cancelled while it ran
        name, started = call
        response = predict_response(name, plan.result(outputs)).SerializeToString()
        self._core.observe(name, "predict", "GRPC", "OK", started)
        return answer(call_id, grpc.StatusCode.OK, response)

    def failed(self, call_id: int, error: ServingError) -> bytes | None:
        call = self._pending.pop(call_id, None)
        if call is None:
            return None
        name, started = call
        self._core.observe(name, "predict", "GRPC", error.code_name, started)
        return answer(call_id, error.code, error.message.encode())

    def cancelled(self, call_id: int) -> None:
        call = self._pending.pop(call_id, None)
        if call is not None:
            name, started = call
            self._core.observe(name, "predict", "GRPC", "CANCELLED", started)
