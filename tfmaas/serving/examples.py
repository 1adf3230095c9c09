"""tf.Example input for Classify, Regress and MultiInference, as TF Serving builds it.

TF Serving feeds a classification or regression signature one DT_STRING vector: each Example of
`Input.example_list` serialized, or, for `example_list_with_context`, the context's bytes followed
by the example's (protobuf merges the two when the graph parses them, the example's features
winning). REST's `{"context": {...}, "examples": [{...}]}` becomes the same `Input`, feature by
feature, by TF Serving's JSON rules.

Both are charged to the request's budget before anything is built: one element per feature
value and the bytes the tensor will hold. The context is charged once per example, because it
is copied into every one of them: a small context times many examples is the costly case.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import numpy as np
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import input_pb2

from tfmaas.serving.errors import invalid_argument
from tfmaas.serving.limits import RequestBudget

_FLOAT_MAX = float(np.finfo(np.float32).max)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_UINT64_MAX = 2**64 - 1


def _value_count(example: example_pb2.Example) -> int:
    count = 0
    for feature in example.features.feature.values():
        kind = feature.WhichOneof("kind")
        if kind is not None:
            count += len(getattr(feature, kind).value)
    return count


def serialized_examples(request_input: input_pb2.Input, *, budget: RequestBudget) -> np.ndarray:
    """The Input as the string vector a classify/regress signature takes."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        examples = request_input.example_list.examples
        context = b""
        context_values = 0
    elif kind == "example_list_with_context":
        examples = request_input.example_list_with_context.examples
        context_proto = request_input.example_list_with_context.context
        context = context_proto.SerializeToString()
        context_values = _value_count(context_proto)
    else:
        examples = []
    if not examples:
        raise invalid_argument("Input is empty.")
    count = len(examples)
    # The count and the context's copies first: they cost nothing to know.
    budget.charge(elements=count * max(1, context_values), nbytes=count * len(context))
    for example in examples:
        budget.charge(elements=_value_count(example), nbytes=example.ByteSize())
    result = np.empty(count, dtype=object)
    for index, example in enumerate(examples):
        result[index] = context + example.SerializeToString()
    return result


# --- REST: TF Serving's JSON examples --------------------------------------------------------


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


_KIND_NAMES = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}


def _append(feature: feature_pb2.Feature, name: str, kind: str, value: Any) -> None:
    current = feature.WhichOneof("kind")
    if current not in (None, kind):
        raise invalid_argument(
            f"Unexpected element type in feature: {name} expecting type: {_KIND_NAMES[current]}"
        )
    getattr(feature, kind).value.append(value)


def _add_value(feature: feature_pb2.Feature, name: str, value: Any, budget: RequestBudget) -> None:
    if isinstance(value, bool):
        budget.charge(elements=1, nbytes=8)
        _append(feature, name, "int64_list", int(value))
    elif isinstance(value, int):
        budget.charge(elements=1, nbytes=8)
        if value > _INT64_MAX and value <= _UINT64_MAX:
            raise invalid_argument(f"Feature: {name} has uint64 element. Only int64 is supported.")
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise invalid_argument(f"Feature: {name} has an integer out of the int64 range.")
        _append(feature, name, "int64_list", value)
    elif isinstance(value, float):
        budget.charge(elements=1, nbytes=4)
        if math.isfinite(value) and abs(value) > _FLOAT_MAX:
            raise invalid_argument(
                f"Cannot convert JSON value: {value} to float without loss of precision."
            )
        _append(feature, name, "float_list", value)
    elif isinstance(value, str):
        data = value.encode("utf-8")
        budget.charge(elements=1, nbytes=len(data))
        _append(feature, name, "bytes_list", data)
    elif isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        budget.charge(elements=1, nbytes=len(value["b64"]))
        try:
            data = base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise invalid_argument(f"Feature: {name} holds invalid base64: {exc}") from exc
        _append(feature, name, "bytes_list", data)
    else:
        raise invalid_argument(
            f"Feature: {name} has element with unexpected JSON type: {_json_type(value)}"
        )


def example_from_json(value: Any, example: example_pb2.Example, *, budget: RequestBudget) -> None:
    """Fill `example` from one JSON object: feature name -> value or list of values."""
    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {_json_type(value)}")
    for name, content in value.items():
        feature = example.features.feature[name]
        for item in content if isinstance(content, list) else [content]:
            _add_value(feature, name, item, budget)


def input_from_json(body: dict[str, Any], *, budget: RequestBudget) -> input_pb2.Input:
    """The `Input` of a REST :classify or :regress body (`context`, `examples`)."""
    request_input = input_pb2.Input()
    has_context = "context" in body
    if has_context:
        target = request_input.example_list_with_context
        example_from_json(body["context"], target.context, budget=budget)
    examples = body.get("examples")
    if "examples" not in body:
        raise invalid_argument(
            "When method is classify, key 'examples' is expected and was not found"
        )
    if not isinstance(examples, list):
        raise invalid_argument("Expecting 'examples' value to be an list/array")
    if not examples:
        raise invalid_argument("'examples' value is an empty array")
    budget.charge(elements=len(examples), nbytes=0)
    container = (
        request_input.example_list_with_context if has_context else request_input.example_list
    )
    for item in examples:
        example_from_json(item, container.examples.add(), budget=budget)
    return request_input
