"""Clients for TF Serving's gRPC and REST APIs: raw strings in, labels and class scores
(or explanations) out.

Imports are lazy so `from tfmaas.client import Prediction` stays cheap; the gRPC client pulls in
the tensorflow-serving-api stubs only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tfmaas.client.explanations import Explanation, to_explanations
from tfmaas.client.predictions import Prediction, PredictionError, to_predictions

if TYPE_CHECKING:
    from tfmaas.client.grpc_client import GrpcClient
    from tfmaas.client.rest_client import RestClient

__all__ = [
    "Explanation",
    "GrpcClient",
    "Prediction",
    "PredictionError",
    "RestClient",
    "to_explanations",
    "to_predictions",
]


def __getattr__(name: str) -> Any:
    if name == "GrpcClient":
        from tfmaas.client.grpc_client import GrpcClient

        return GrpcClient
    if name == "RestClient":
        from tfmaas.client.rest_client import RestClient

        return RestClient
    raise AttributeError(name)
