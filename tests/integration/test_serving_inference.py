"""Classify, Regress and MultiInference on an estimator-style export, as TF Serving answers them.

The model is y = 0.5 * x + 2 over serialized tf.Examples (tests/fixtures/tfs_models.py), so the
answers are the ones TF Serving's own http_rest_api_handler_test and classifier/regressor tests
expect for its half_plus_two test data: x = 20 classifies to [["", 12]], x = 80 regresses to 42.
Every gRPC test runs on both front ends; REST is the same server's HTTP port.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    input_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tests.fixtures.tfs_models import ESTIMATOR_LABELS, export_estimator_style, half_plus_two
from tests.integration.test_serving_server import free_port
from tfmaas.serving.flags import ServerFlags
from tfmaas.serving.server import ModelServer

pytestmark = pytest.mark.integration

MAX_ELEMENTS = 10_000


@pytest.fixture(scope="module")
def estimator_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("estimator") / "half_plus_two"
    export_estimator_style(base, "123")
    return base


@pytest.fixture(scope="module", params=["python", "native"])
def server(request: pytest.FixtureRequest, estimator_base: Path) -> Iterator[ModelServer]:
    if request.param == "native":
        request.getfixturevalue("grpc_frontend_binary")
    flags = ServerFlags(
        port=0,
        rest_api_port=free_port(),
        bind_address="127.0.0.1",
        model_name="hp2",
        model_base_path=str(estimator_base),
        grpc_frontend=request.param,
        max_request_elements=MAX_ELEMENTS,
    )
    served = ModelServer(flags)
    served.start()
    assert served.grpc_frontend == request.param
    yield served
    served.stop()


@pytest.fixture
def stub(server: ModelServer) -> Iterator[prediction_service_pb2_grpc.PredictionServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def example(**features: float) -> tf.train.Example:
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                name: tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
                for name, value in features.items()
            }
        )
    )


def examples_input(*xs: float) -> input_pb2.Input:
    request_input = input_pb2.Input()
    for x in xs:
        request_input.example_list.examples.add().CopyFrom(example(x=x))
    return request_input


def classification(signature: str, request_input: input_pb2.Input, model: str = "hp2"):
    request = classification_pb2.ClassificationRequest(input=request_input)
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    return request


def regression(signature: str, request_input: input_pb2.Input, model: str = "hp2"):
    request = regression_pb2.RegressionRequest(input=request_input)
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    return request


def rpc_error(call: Any, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=30)
    return caught.value


def test_classify_scores_only_answers_empty_labels(stub) -> None:
    response = stub.Classify(classification("classify_x_to_y", examples_input(20.0)), timeout=30)
    assert response.model_spec.name == "hp2"
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == "classify_x_to_y"
    [classifications] = response.result.classifications
    assert [(c.label, c.score) for c in classifications.classes] == [("", 12.0)]


def test_classify_default_signature_with_labels(stub) -> None:
    response = stub.Classify(classification("", examples_input(2.0, 4.0)), timeout=30)
    assert response.model_spec.signature_name == "serving_default"
    answers = [
        [(c.label, c.score) for c in item.classes] for item in response.result.classifications
    ]
    low, high = (label.decode() for label in ESTIMATOR_LABELS)
    assert answers == [[(low, half_plus_two(x)), (high, half_plus_two(x) + 1)] for x in (2.0, 4.0)]


def test_classify_merges_the_context_into_every_example(stub) -> None:
    request_input = input_pb2.Input()
    with_context = request_input.example_list_with_context
    with_context.context.CopyFrom(example(x=4.0))
    with_context.examples.add()  # takes x from the context
    with_context.examples.add().CopyFrom(example(x=20.0))  # its own x wins
    response = stub.Classify(classification("classify_x_to_y", request_input), timeout=30)
    scores = [item.classes[0].score for item in response.result.classifications]
    assert scores == [half_plus_two(4.0), half_plus_two(20.0)]


def test_regress_answers_one_value_per_example(stub) -> None:
    response = stub.Regress(regression("regress_x_to_y", examples_input(80.0, 2.0)), timeout=30)
    assert [r.value for r in response.result.regressions] == [42.0, 3.0]
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == "regress_x_to_y"


def test_multi_inference_runs_every_head(stub) -> None:
    request = inference_pb2.MultiInferenceRequest(input=examples_input(10.0))
    for signature, method in (
        ("classify_x_to_y", "tensorflow/serving/classify"),
        ("regress_x_to_y2", "tensorflow/serving/regress"),
    ):
        task = request.tasks.add(method_name=method)
        task.model_spec.name = "hp2"
        task.model_spec.signature_name = signature
    response = stub.MultiInference(request, timeout=30)
    first, second = response.results
    assert first.model_spec.signature_name == "classify_x_to_y"
    assert first.model_spec.version.value == 123
    assert first.classification_result.classifications[0].classes[0].score == 7.0
    assert second.model_spec.signature_name == "regress_x_to_y2"
    assert [r.value for r in second.regression_result.regressions] == [8.0]


@pytest.mark.parametrize(
    ("method", "signature", "code", "message"),
    [
        ("Classify", "nope", "INVALID_ARGUMENT", "No signature was found with the name: nope"),
        (
            "Classify",
            "regress_x_to_y",
            "INVALID_ARGUMENT",
            "Expected classification signature method_name to be tensorflow/serving/classify. "
            "Was: tensorflow/serving/regress",
        ),
        (
            "Regress",
            "predict_x",
            "INVALID_ARGUMENT",
            "Expected regression signature method_name to be tensorflow/serving/regress. "
            "Was: tensorflow/serving/predict",
        ),
        (
            "Regress",
            "",
            "INVALID_ARGUMENT",
            "Expected regression signature method_name to be tensorflow/serving/regress. "
            "Was: tensorflow/serving/classify",
        ),
    ],
)
def test_wrong_signature_gets_tf_servings_status(stub, method, signature, code, message) -> None:
    build = classification if method == "Classify" else regression
    error = rpc_error(getattr(stub, method), build(signature, examples_input(1.0)))
    assert error.code().name == code
    assert error.details() == message


def test_unknown_model_and_empty_input(stub) -> None:
    error = rpc_error(stub.Regress, regression("regress_x_to_y", examples_input(1.0), "nope"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = rpc_error(stub.Regress, regression("regress_x_to_y", input_pb2.Input()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "Input is empty."


def multi(tasks: list[tuple[str, str, str]]) -> inference_pb2.MultiInferenceRequest:
    request = inference_pb2.MultiInferenceRequest(input=examples_input(1.0))
    for model, signature, method in tasks:
        task = request.tasks.add(method_name=method)
        task.model_spec.name = model
        task.model_spec.signature_name = signature
    return request


@pytest.mark.parametrize(
    ("tasks", "code", "message"),
    [
        (
            [("hp2", "regress_x_to_y", "tensorflow/serving/regress")] * 2,
            "INVALID_ARGUMENT",
            "Duplicate evaluation of signature: regress_x_to_y",
        ),
        (
            [
                ("hp2", "regress_x_to_y", "tensorflow/serving/regress"),
                ("other", "regress_x_to_y2", "tensorflow/serving/regress"),
            ],
            "INVALID_ARGUMENT",
            "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
        ),
        (
            [("hp2", "predict_x", "tensorflow/serving/predict")],
            "UNIMPLEMENTED",
            "Unsupported signature method_name: tensorflow/serving/predict",
        ),
        (
            [("hp2", "nope", "tensorflow/serving/regress")],
            "INVALID_ARGUMENT",
            "Requested signature not found in model graph: nope",
        ),
    ],
)
def test_multi_inference_errors(stub, tasks, code, message) -> None:
    error = rpc_error(stub.MultiInference, multi(tasks))
    assert error.code().name == code
    assert error.details() == message


def test_examples_are_bounded_by_the_request_limits(stub) -> None:
    # 200 empty examples and a 100-value context: a few hundred bytes on the wire, but the
    # context is copied into every example the model parses: 20 000 values, over the limit.
    request_input = input_pb2.Input()
    context = request_input.example_list_with_context.context
    context.features.feature["x"].float_list.value.extend([1.0] * 100)
    for _ in range(200):
        request_input.example_list_with_context.examples.add()
    for call, build in ((stub.Classify, classification), (stub.Regress, regression)):
        signature = "classify_x_to_y" if build is classification else "regress_x_to_y"
        error = rpc_error(call, build(signature, request_input))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "--max_request_elements" in error.details()
        assert f"limit of {MAX_ELEMENTS}" in error.details()
    too_many = examples_input(*([1.0] * (MAX_ELEMENTS + 1)))
    error = rpc_error(stub.Regress, regression("regress_x_to_y", too_many))
    assert "--max_request_elements" in error.details()


# --- REST --------------------------------------------------------------------------------


def post(server: ModelServer, path: str, body: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.rest_port}{path}", data=data, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_rest_classify_and_regress_answer_tf_servings_json(server: ModelServer) -> None:
    status, body = post(
        server,
        "/v1/models/hp2:classify",
        {"signature_name": "classify_x_to_y", "examples": [{"x": 20.0}]},
    )
    assert (status, body) == (200, {"results": [[["", 12.0]]]})
    status, body = post(
        server,
        "/v1/models/hp2/versions/123:regress",
        {"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}, {"x": 2.0}]},
    )
    assert (status, body) == (200, {"results": [42.0, 3.0]})
    status, body = post(
        server,
        "/v1/models/hp2:classify",
        {"context": {"x": 4.0}, "examples": [{}, {"x": [20.0]}]},
    )
    assert status == 200
    assert body == {"results": [[["low", 4.0], ["high", 5.0]], [["low", 12.0], ["high", 13.0]]]}


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        (
            ":classify",
            {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}]},
            400,
            "Expected classification signature method_name to be tensorflow/serving/classify. "
            "Was: tensorflow/serving/regress",
        ),
        (
            ":regress",
            {"signature_name": "nope", "examples": [{"x": 1.0}]},
            400,
            "No signature was found with the name: nope",
        ),
        (
            ":regress",
            {"signature_name": "regress_x_to_y"},
            400,
            "When method is classify, key 'examples' is expected and was not found",
        ),
        (":regress", {"examples": []}, 400, "'examples' value is an empty array"),
        (":regress", {"examples": {}}, 400, "Expecting 'examples' value to be an list/array"),
        (":regress", {"examples": [3]}, 400, "Example must be JSON object but got JSON Number"),
        (
            ":regress",
            {"examples": [{"x": [1.0, "a"]}]},
            400,
            "Unexpected element type in feature: x expecting type: float",
        ),
        (
            ":regress",
            {"examples": [{"x": None}]},
            400,
            "Feature: x has element with unexpected JSON type: Null",
        ),
        (":classify", {"signature_name": 3, "examples": [{}]}, 400, None),
    ],
)
def test_rest_errors(server: ModelServer, path, body, status, error) -> None:
    got_status, got = post(server, f"/v1/models/hp2{path}", body)
    assert got_status == status
    if error is not None:
        assert got == {"error": error}


def test_rest_examples_are_bounded_before_they_are_built(server: ModelServer) -> None:
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": [1.0] * (MAX_ELEMENTS + 1)}]}
    status, got = post(server, "/v1/models/hp2:regress", body)
    assert status == 400
    assert "--max_request_elements" in got["error"]
