"""The protocol-independent request path shared by the gRPC and REST front ends."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from tfmaas.serving.errors import ServingError
from tfmaas.serving.limits import RequestLimits
from tfmaas.serving.metrics import UNKNOWN_MODEL, ServingMetrics
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
    def __init__(
        self,
        registry: Registry,
        metrics: ServingMetrics | None = None,
        limits: RequestLimits | None = None,
        *,
        method_name_check: bool = False,
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.limits = limits or RequestLimits()
        # --enable_signature_method_name_check: Predict only runs predict/classify/regress
        # signatures, as TF Serving's predict_util.cc checks when the flag is on.
        self.method_name_check = method_name_check

    def target(
        self, *, model_name: str, version: int | None, label: str, signature_name: str
    ) -> tuple[ServedVersion, Signature]:
        """The model version and signature a request names: resolved before its tensors are
        decoded, so a request for nothing costs nothing."""
        served = self.registry.resolve(model_name, version, label)
        signature = served.signature(signature_name or DEFAULT_SIGNATURE)
        if self.method_name_check:
            check_predict_method(signature)
        return served, signature

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
        served, signature = self.target(
            model_name=model_name, version=version, label=label, signature_name=signature_name
        )
        return checked_plan(served, signature, inputs, output_filter)

    def predict(self, **request: Any) -> PredictResult:
        plan = self.plan(**request)
        return plan.result(plan.served.run(plan.signature, plan.inputs))

    def observe(
        self, model_name: str, api: str, entrypoint: str, code: str, started: float
    ) -> None:
        if self.metrics is not None:
            # A request may name anything; only the served models get series of their own.
            known = self.registry.has_model(model_name)
            self.metrics.record(
                model_name=model_name if known else UNKNOWN_MODEL,
                api=api,
                entrypoint=entrypoint,
                status=code,
                latency_us=(time.perf_counter() - started) * 1e6,
            )


def checked_plan(
    served: ServedVersion,
    signature: Signature,
    inputs: Mapping[str, tuple[np.ndarray, int]],
    output_filter: list[str] | None = None,
) -> PredictPlan:
    """The decoded inputs checked against the signature they are for."""
    signature.validate(inputs)
    return PredictPlan(
        served=served,
        signature=signature,
        inputs={alias: array for alias, (array, _) in inputs.items()},
        aliases=signature.select_outputs(output_filter or []),
    )


PREDICTABLE_METHODS = (
    "tensorflow/serving/predict",
    "tensorflow/serving/classify",
    "tensorflow/serving/regress",
)


def check_predict_method(signature: Signature) -> None:
    method = signature.definition.method_name
    if method not in PREDICTABLE_METHODS:
        raise ServingError(
            grpc.StatusCode.INTERNAL,
            "Expected prediction signature method_name to be one of "
            f"{{{', '.join(PREDICTABLE_METHODS)}}}. Was: {method}",
        )


def internal(exc: Exception) -> ServingError:
    return ServingError(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
