"""The REST printer against what protobuf's C++ MessageToJsonString prints for TF Serving."""

from __future__ import annotations

import json

from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import error_codes_pb2, meta_graph_pb2
from tensorflow_serving.apis import get_model_status_pb2, model_pb2

from tfmaas.serving import tfs_json


def test_status_uses_json_names_and_prints_the_error() -> None:
    response = get_model_status_pb2.GetModelStatusResponse()
    entry = response.model_version_status.add(version=2, state=50)
    entry.status.error_code = error_codes_pb2.UNKNOWN
    entry.status.error_message = "ValueError: bad"
    assert tfs_json.message_to_json(response, proto_field_names=False) == (
        '{\n "model_version_status": [\n  {\n   "version": "2",\n   "state": "END",\n'
        '   "status": {\n    "error_code": "UNKNOWN",\n    "error_message": "ValueError: bad"\n'
        "   }\n  }\n ]\n}\n"
    )


def test_fields_without_presence_are_printed_and_oneof_members_come_last() -> None:
    info = meta_graph_pb2.TensorInfo(name="x:0", dtype=types_pb2.DT_STRING)
    info.tensor_shape.unknown_rank = True
    printed = tfs_json.message_to_json(info, proto_field_names=True)
    assert list(json.loads(printed)) == ["dtype", "tensor_shape", "name"]
    assert json.loads(printed)["tensor_shape"] == {"dim": [], "unknown_rank": True}
    bare = meta_graph_pb2.TensorInfo(name="y:0")  # no tensor_shape: a message field is left out
    assert tfs_json.message_to_json(bare, proto_field_names=True) == (
        '{\n "dtype": "DT_INVALID",\n "name": "y:0"\n}\n'
    )


def test_model_spec_prints_its_version_wrapper_as_a_string_and_labels_in_the_oneof() -> None:
    spec = model_pb2.ModelSpec(name="m", version_label="stable")
    assert tfs_json.message_to_json(spec, proto_field_names=True) == (
        '{\n "name": "m",\n "signature_name": "",\n "version_label": "stable"\n}\n'
    )
    spec = model_pb2.ModelSpec(name="m")
    spec.version.value = 123
    assert json.loads(tfs_json.message_to_json(spec, proto_field_names=True))["version"] == "123"
