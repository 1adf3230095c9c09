"""The protocol-independent request path shared by the gRPC and REST front ends."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from tfmaas.serving.errors import ServingError
from tfmaas.serving.metrics import ServingMetrics
from tfmaas.serving.registry import Registry
from tfmaas.serving.runner import ServedVersion
from tfmaas.serving.servable import DEFAULT_SIGNATURE, Signature


@dataclass(frozen=True)
class PredictPlan:
    served: ServedVersion
    signature: Signature
    inputs: dict[str, np.ndarray]
    aliases: list[str]

    def result(self, outputs: dict[str, np.ndarray]) -> PredictResult:
        return PredictResult(
            version=self.served.version,
            signature=self.signature,
            outputs={alias: outputs[alias] for alias in self.aliases},
        )


@dataclass(frozen=True)
class PredictResult:
    version: int
    signature: Signature
    outputs: dict[str, np.ndarray]  # in output order


class ServingCore:
    def __init__(self, registry: Registry, metrics: ServingMetrics | None = None) -> None:
        self.registry = registry
        self.metrics = metrics

    def plan(
        self,
        *,
        model_name: str,
        version: int | None,
        label: str,
        signature_name: str,
        inputs: Mapping[str, tuple[np.ndarray, int]],
        output_filter: list[str] | None = None,
    ) -> PredictPlan:
        """Everything checked before the model runs: model, version, signature, inputs."""
        served = self.registry.resolve(model_name, version, label)
        signature = served.signature(signature_name or DEFAULT_SIGNATURE)
        signature.validate(inputs)
        return PredictPlan(
            served=served,
            signature=signature,
            inputs={alias: array for alias, (array, _) in inputs.items()},
            aliases=signature.select_outputs(output_filter or []),
        )

    def predict(self, **request: Any) -> PredictResult:
        plan = self.plan(**request)
        return plan.result(plan.served.run(plan.signature, plan.inputs))

    def observe(
        self, model_name: str, api: str, entrypoint: str, code: str, started: float
    ) -> None:
        if self.metrics is not None:
            self.metrics.record(
                model_name=model_name,
                api=api,
                entrypoint=entrypoint,
                status=code,
                latency_us=(time.perf_counter() - started) * 1e6,
            )


def internal(exc: Exception) -> ServingError:
    return ServingError(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
