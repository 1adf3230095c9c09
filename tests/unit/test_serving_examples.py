"""tf.Example input as TF Serving builds it: JSON rules, context merging, and the bounds."""

from __future__ import annotations

import pytest
import tensorflow as tf
from tensorflow_serving.apis import input_pb2

from tfmaas.serving.errors import ServingError
from tfmaas.serving.examples import input_from_json, serialized_examples
from tfmaas.serving.limits import RequestLimits


def budget(elements: int = 1 << 20, nbytes: int = 64 << 20):
    return RequestLimits(max_elements=elements, max_bytes=nbytes).budget()


def test_json_values_become_features_by_tf_servings_rules() -> None:
    request_input = input_from_json(
        {"examples": [{"f": 1.5, "i": [1, True], "s": "é", "b": {"b64": "AAE="}, "e": []}]},
        budget=budget(),
    )
    [example] = request_input.example_list.examples
    features = example.features.feature
    assert list(features["f"].float_list.value) == [1.5]
    assert list(features["i"].int64_list.value) == [1, 1]
    assert list(features["s"].bytes_list.value) == ["é".encode()]
    assert list(features["b"].bytes_list.value) == [b"\x00\x01"]
    assert features["e"].WhichOneof("kind") is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([1, 2.0], "Unexpected element type in feature: x expecting type: int64"),
        ([[1]], "Feature: x has element with unexpected JSON type: Array"),
        ({"y": 1}, "Feature: x has element with unexpected JSON type: Object"),
        (2**63, "Feature: x has uint64 element. Only int64 is supported."),
        ({"b64": "!"}, "Feature: x holds invalid base64"),
        (1e300, "Cannot convert JSON value: 1e+300 to float without loss of precision."),
    ],
)
def test_bad_json_values_are_refused(value, message) -> None:
    with pytest.raises(ServingError) as caught:
        input_from_json({"examples": [{"x": value}]}, budget=budget())
    assert caught.value.message.startswith(message)


def test_context_bytes_come_first_and_the_example_wins() -> None:
    request_input = input_from_json(
        {"context": {"x": 1.0, "c": "ctx"}, "examples": [{"x": 2.0}, {}]}, budget=budget()
    )
    tensor = serialized_examples(request_input, budget=budget())
    parsed = [tf.train.Example.FromString(data) for data in tensor]
    assert [list(e.features.feature["x"].float_list.value) for e in parsed] == [[2.0], [1.0]]
    assert all(e.features.feature["c"].bytes_list.value == [b"ctx"] for e in parsed)


def test_empty_input_is_refused() -> None:
    with pytest.raises(ServingError, match=r"Input is empty\."):
        serialized_examples(input_pb2.Input(), budget=budget())


def test_the_context_is_charged_once_per_example() -> None:
    request_input = input_pb2.Input()
    context = request_input.example_list_with_context.context
    context.features.feature["x"].float_list.value.extend([0.0] * 10)
    for _ in range(10):
        request_input.example_list_with_context.examples.add()
    serialized_examples(request_input, budget=budget(elements=100))
    with pytest.raises(ServingError, match=r"110 tensor elements.*--max_request_elements"):
        request_input.example_list_with_context.examples.add()
        serialized_examples(request_input, budget=budget(elements=100))
    context_bytes = context.ByteSize()
    with pytest.raises(ServingError, match="--max_request_tensor_bytes"):
        serialized_examples(request_input, budget=budget(nbytes=11 * context_bytes - 1))
