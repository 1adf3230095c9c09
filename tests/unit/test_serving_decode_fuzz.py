"""Fuzzing what a client sends into what the server decodes: TensorProtos through `predict_plan`
(both gRPC front ends' path) and JSON bodies through `inputs_from_body` (REST). Whatever arrives,
the answer is a plan or a ServingError with a TF Serving status code, and nothing decoded exceeds
the request caps."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import predict_pb2

from tfmaas.client.tensors import decoded_size, to_numpy
from tfmaas.serving.config import single_model_config
from tfmaas.serving.core import ServingCore
from tfmaas.serving.errors import ServingError
from tfmaas.serving.grpc_service import predict_plan
from tfmaas.serving.limits import RequestLimits
from tfmaas.serving.registry import Registry
from tfmaas.serving.rest import inputs_from_body
from tfmaas.serving.servable import Signature, TensorSpec

LIMITS = RequestLimits(max_elements=10_000, max_bytes=1 << 20)
TF_SERVING_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
}
FUZZ = settings(
    max_examples=300,
    database=None,  # nothing written into the checkout
    deadline=None,  # a hang is pytest-timeout's to catch; per-example timing flakes on CI
    suppress_health_check=[HealthCheck.too_slow],
)


def signature() -> Signature:
    return Signature(
        name="serving_default",
        definition=meta_graph_pb2.SignatureDef(),
        function=lambda **kw: kw,
        inputs={
            "text": TensorSpec("text", types_pb2.DT_STRING, (-1,)),
            "weight": TensorSpec("weight", types_pb2.DT_FLOAT, None),
            "count": TensorSpec("count", types_pb2.DT_INT64, (-1,)),
        },
        outputs={"label": TensorSpec("label", types_pb2.DT_STRING, (-1,))},
    )


class _StandIn:
    """A loaded version without TensorFlow: decoding is under test here, not the model."""

    version = 1

    def signature(self, name: str) -> Signature:
        if name != "serving_default":
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION, "no such signature")
        return signature()

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingCore]:
    base: Path = tmp_path_factory.mktemp("models")
    (base / "1").mkdir()
    (base / "1" / "saved_model.pb").write_bytes(b"")
    registry = Registry(lambda name, version, path: _StandIn())  # type: ignore[arg-type,return-value]
    registry.apply_config(single_model_config("demo", str(base)))
    yield ServingCore(registry, limits=LIMITS)
    registry.close()


DTYPES = st.sampled_from(
    [
        types_pb2.DT_STRING,
        types_pb2.DT_FLOAT,
        types_pb2.DT_DOUBLE,
        types_pb2.DT_INT8,
        types_pb2.DT_UINT16,
        types_pb2.DT_INT64,
        types_pb2.DT_BOOL,
        types_pb2.DT_HALF,
        types_pb2.DT_COMPLEX64,
        types_pb2.DT_INVALID,
        99,
    ]
)
# Sizes around the caps and far past them: a declared shape costs nothing on the wire.
DIMS = st.lists(
    st.one_of(st.integers(-2, 12), st.sampled_from([9_999, 10_001, 2**31, 2**62])), max_size=4
)


@st.composite
def tensors(draw: st.DrawFn) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=draw(DTYPES))
    for size in draw(DIMS):
        proto.tensor_shape.dim.add().size = size
    proto.string_val.extend(draw(st.lists(st.binary(max_size=64), max_size=4)))
    proto.float_val.extend(draw(st.lists(st.floats(width=32), max_size=4)))
    proto.int_val.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=4)))
    proto.int64_val.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4)))
    proto.bool_val.extend(draw(st.lists(st.booleans(), max_size=4)))
    proto.half_val.extend(draw(st.lists(st.integers(0, 2**16 - 1), max_size=4)))
    if draw(st.booleans()):
        proto.tensor_content = draw(st.binary(max_size=64))
    return proto


def requests() -> st.SearchStrategy[predict_pb2.PredictRequest]:
    def build(name: str, signature_name: str, inputs: dict[str, Any], outputs: list[str]):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        request.model_spec.signature_name = signature_name
        for alias, proto in inputs.items():
            request.inputs[alias].CopyFrom(proto)
        request.output_filter.extend(outputs)
        return request

    return st.builds(
        build,
        st.sampled_from(["demo", "other"]),
        st.sampled_from(["", "serving_default", "x"]),
        st.dictionaries(
            st.sampled_from(["text", "weight", "count", "extra"]), tensors(), max_size=4
        ),
        st.lists(st.sampled_from(["label", "nope"]), max_size=2),
    )


def assert_tf_serving_error(error: ServingError) -> None:
    assert error.code in TF_SERVING_CODES, (error.code, error.message)
    assert error.message


def check_plan(core: ServingCore, request: predict_pb2.PredictRequest) -> None:
    try:
        plan = predict_plan(core, request, request.model_spec.name, None, "")
    except ServingError as error:
        assert_tf_serving_error(error)
        return
    assert sum(array.size for array in plan.inputs.values()) <= LIMITS.max_elements


@pytest.mark.timeout(300)
@FUZZ
@given(request=requests())
def test_any_predict_request_decodes_within_the_caps_or_fails_cleanly(
    core: ServingCore, request: predict_pb2.PredictRequest
) -> None:
    check_plan(core, request)


@pytest.mark.timeout(300)
@FUZZ
@given(payload=st.binary(max_size=256))
def test_any_bytes_on_the_relay_decode_or_fail_cleanly(core: ServingCore, payload: bytes) -> None:
    try:  # what the native front end's relay does with a call's raw bytes
        request = predict_pb2.PredictRequest.FromString(payload)
    except DecodeError:
        return
    check_plan(core, request)


@pytest.mark.timeout(300)
@FUZZ
@given(proto=tensors())
def test_decoded_size_is_what_to_numpy_allocates(proto: tensor_pb2.TensorProto) -> None:
    try:
        elements, _ = decoded_size(proto)
    except ValueError:
        return
    if elements > LIMITS.max_elements:
        return  # the caps stop these before to_numpy
    try:
        array = to_numpy(proto)
    except ValueError:
        return
    assert array.size == elements == math.prod(array.shape)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["b64", "text", "weight", "count", "x"]), children, max_size=3
        )
    ),
    max_leaves=40,
)
BODIES = st.dictionaries(
    st.sampled_from(["instances", "inputs", "signature_name", "other"]), JSON, max_size=3
)


@pytest.mark.timeout(300)
@FUZZ
@given(body=BODIES)
def test_any_json_body_decodes_within_the_caps_or_fails_cleanly(body: dict[str, Any]) -> None:
    try:
        inputs = inputs_from_body(body, signature(), budget=LIMITS.budget())
        signature().validate(inputs)
    except ServingError as error:
        assert_tf_serving_error(error)
        return
    assert sum(array.size for array, _ in inputs.values()) <= LIMITS.max_elements
