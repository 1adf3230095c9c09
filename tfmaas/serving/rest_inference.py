"""REST `:classify` and `:regress`: TF Serving's JSON in, the shared Classify/Regress, its JSON out.

Request: `{"signature_name": "...", "context": {...}, "examples": [{...}, ...]}`.
Answers: classify `{"results": [[["label", score], ...], ...]}` (one list of [label, score] per
example), regress `{"results": [value, ...]}`, as http_rest_api_handler.cc writes them.
"""

from __future__ import annotations

from typing import Any

from tensorflow_serving.apis import classification_pb2, regression_pb2

from tfmaas.serving import inference
from tfmaas.serving.core import ServingCore
from tfmaas.serving.examples import input_from_json


def classify(core: ServingCore, ref: inference.ModelRef, body: dict[str, Any]) -> dict[str, Any]:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.signature_name = body.get("signature_name", "")
    request.input.CopyFrom(input_from_json(body, budget=core.limits.budget()))
    result = inference.classify(core, ref, request).result
    return {
        "results": [
            [[entry.label, entry.score] for entry in classifications.classes]
            for classifications in result.classifications
        ]
    }


def regress(core: ServingCore, ref: inference.ModelRef, body: dict[str, Any]) -> dict[str, Any]:
    request = regression_pb2.RegressionRequest()
    request.model_spec.signature_name = body.get("signature_name", "")
    request.input.CopyFrom(input_from_json(body, budget=core.limits.budget()))
    result = inference.regress(core, ref, request).result
    return {"results": [regression.value for regression in result.regressions]}
