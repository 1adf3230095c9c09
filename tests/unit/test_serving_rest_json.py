"""TF Serving's REST JSON request and response shapes (row and columnar)."""

from __future__ import annotations

import base64
import json

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from tfmaas.serving.errors import ServingError
from tfmaas.serving.limits import MAX_JSON_DEPTH, RequestLimits
from tfmaas.serving.rest import inputs_from_body, outputs_to_json
from tfmaas.serving.servable import Signature, TensorSpec


def signature(**inputs: int) -> Signature:
    return Signature(
        name="serving_default",
        definition=meta_graph_pb2.SignatureDef(),
        function=lambda **kw: kw,
        inputs={alias: TensorSpec(alias, dtype, None) for alias, dtype in inputs.items()},
    )


def test_row_format_with_one_input_takes_bare_values() -> None:
    inputs = inputs_from_body(
        {"instances": ["好", {"b64": base64.b64encode(b"\xff").decode()}]},
        signature(text=types_pb2.DT_STRING),
    )
    array, dtype = inputs["text"]
    assert dtype == types_pb2.DT_STRING
    assert array.tolist() == ["好".encode(), b"\xff"]


def test_row_format_with_named_inputs_and_columnar_format() -> None:
    sig = signature(a=types_pb2.DT_FLOAT, b=types_pb2.DT_STRING)
    rows = inputs_from_body({"instances": [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]}, sig)
    assert rows["a"][0].tolist() == [1.0, 2.0] and rows["a"][0].dtype == np.float32
    columns = inputs_from_body({"inputs": {"a": [1, 2], "b": ["x", "y"]}}, sig)
    assert columns["b"][0].tolist() == [b"x", b"y"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Missing 'inputs' or 'instances' key"),
        ({"instances": [], "inputs": []}, "Not both"),
        ({"instances": []}, "non-empty"),
        ({"instances": [1, 2]}, "expects strings"),
        ({"instances": [["a"], "b"]}, "not a rectangular list of string"),
    ],
)
def test_malformed_bodies_are_invalid_argument(body: dict, message: str) -> None:
    with pytest.raises(ServingError, match=message) as error:
        inputs_from_body(body, signature(text=types_pb2.DT_STRING))
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_outputs_as_rows_and_columns() -> None:
    outputs = {
        "scores": np.array([[0.5, 0.5], [0.25, 0.75]], dtype=np.float32),
        "label": np.array([b"neg", b"pos"], dtype=object),
    }
    rows = outputs_to_json(outputs, row_format=True)
    assert rows == {
        "predictions": [
            {"scores": [0.5, 0.5], "label": "neg"},
            {"scores": [0.25, 0.75], "label": "pos"},
        ]
    }
    assert outputs_to_json(outputs, row_format=False)["outputs"]["label"] == ["neg", "pos"]
    single = outputs_to_json({"image_bytes": np.array([b"\x00"], dtype=object)}, row_format=True)
    assert single == {"predictions": [{"b64": "AA=="}]}


def test_json_tensors_are_charged_to_the_request_budget() -> None:
    limits = RequestLimits(max_elements=4, max_bytes=1000)
    sig = signature(a=types_pb2.DT_FLOAT, b=types_pb2.DT_STRING)
    inputs_from_body({"inputs": {"a": [1, 2], "b": ["x", "y"]}}, sig, budget=limits.budget())
    with pytest.raises(ServingError, match=r"5 tensor elements.*\(--max_request_elements\)"):
        inputs_from_body({"inputs": {"a": [1, 2, 3], "b": ["x", "y"]}}, sig, budget=limits.budget())
    with pytest.raises(ServingError, match=r"\(--max_request_tensor_bytes\)") as error:
        inputs_from_body({"inputs": {"b": ["x" * 300]}}, sig, budget=limits.budget())
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_json_nested_past_any_tensor_rank_is_refused_before_numpy() -> None:
    nested: list = [1.0]
    for _ in range(MAX_JSON_DEPTH):
        nested = [nested]
    with pytest.raises(ServingError, match=f"deeper than {MAX_JSON_DEPTH}") as error:
        inputs_from_body({"inputs": nested}, signature(a=types_pb2.DT_FLOAT))
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_a_number_out_of_its_dtypes_range_is_invalid_argument() -> None:
    # Found by test_serving_decode_fuzz: numpy raised OverflowError, answered as INTERNAL.
    with pytest.raises(ServingError, match="not a rectangular list of int64") as error:
        inputs_from_body({"inputs": {"n": 9.3e18}}, signature(n=types_pb2.DT_INT64))
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_an_empty_string_list_is_an_empty_tensor() -> None:
    # Found by test_serving_decode_fuzz: an IndexError, answered as INTERNAL.
    array, _ = inputs_from_body({"inputs": {"text": []}}, signature(text=types_pb2.DT_STRING))[
        "text"
    ]
    assert array.shape == (0,)


def test_float32_outputs_are_the_numbers_tf_serving_prints() -> None:
    # json_tensor.cc WriteDecimal: six significant digits when they round-trip, else nine.
    values = np.array([[0.1, 3.0], [0.7310586, float("nan")]], dtype=np.float32)
    answer = outputs_to_json({"y": values}, row_format=False)["outputs"]
    assert answer[0] == [0.1, 3.0]
    assert answer[1][0] == 0.731058598
    assert np.isnan(answer[1][1])
    assert json.dumps(answer[0]) == "[0.1, 3.0]"
    doubles = outputs_to_json({"y": np.array([0.1], dtype=np.float64)}, row_format=True)
    assert doubles == {"predictions": [0.1]}
