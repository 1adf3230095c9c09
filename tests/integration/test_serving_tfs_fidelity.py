"""`tfmaas serve` against TF Serving's documented answers, with models exported like its own
test data (tests/fixtures/tfs_models.py): half_plus_two under `00000123/` (TF2) and a TF1
half_plus_three graph with estimator-era signatures.

Expected REST bodies are TF Serving's (https://www.tensorflow.org/tfx/serving/api_rest and
http_rest_api_util.cc's printer), compared byte for byte where TF Serving fixes the bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.fixtures.tfs_models import (
    export_half_plus_two,
    export_tf1_half_plus_three,
)
from tfmaas.dev.processes import free_port
from tfmaas.serving.flags import ServerFlags
from tfmaas.serving.server import ModelServer

pytestmark = pytest.mark.integration


@dataclass
class Served:
    server: ModelServer

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.server.rest_port}"

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.rest + path, timeout=30) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.rest + path, data=json.dumps(body).encode(), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def predict(self, model: str, inputs: dict[str, Any], signature: str = "") -> Any:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = signature
        for alias, value in inputs.items():
            request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
        with grpc.insecure_channel(f"127.0.0.1:{self.server.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            return stub.Predict(request, timeout=30)


@pytest.fixture(scope="module", params=["python", "native"])
def frontend(request: pytest.FixtureRequest) -> str:
    if request.param == "native":
        request.getfixturevalue("grpc_frontend_binary")
    return request.param


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tfs-models")
    export_half_plus_two(root / "half_plus_two")
    export_tf1_half_plus_three(root / "half_plus_three")
    config = root / "models.config"
    config.write_text(
        "model_config_list {\n"
        f'  config {{ name: "half_plus_two" base_path: "{root / "half_plus_two"}" }}\n'
        f'  config {{ name: "half_plus_three" base_path: "{root / "half_plus_three"}" }}\n'
        "}\n"
    )
    return config


@pytest.fixture(scope="module")
def served(models: Path, frontend: str) -> Iterator[Served]:
    flags = ServerFlags(
        port=0,
        rest_api_port=free_port(),
        bind_address="127.0.0.1",
        model_config_file=str(models),
        grpc_frontend=frontend,
    )
    server = ModelServer(flags)
    server.start()
    yield Served(server)
    server.stop()


# --- item 1: the version folder keeps its name -----------------------------------------------

STATUS_123 = """{
 "model_version_status": [
  {
   "version": "123",
   "state": "AVAILABLE",
   "status": {
    "error_code": "OK",
    "error_message": ""
   }
  }
 ]
}
"""


def test_a_zero_padded_version_folder_is_served_as_its_number(served: Served) -> None:
    assert served.get("/v1/models/half_plus_two") == (200, STATUS_123.encode())
    assert served.get("/v1/models/half_plus_two/versions/123") == (200, STATUS_123.encode())
    response = served.predict("half_plus_two", {"x": np.array([[1.0]], dtype=np.float32)})
    assert response.model_spec.version.value == 123


# --- item 2: inputs validated as TF Serving validates them ------------------------------------


def test_rest_row_and_columnar_predict_answer_as_tf_serving_documents(served: Served) -> None:
    # The documented half_plus_two examples: a signature declared [-1, 1] takes a vector.
    path = "/v1/models/half_plus_two:predict"
    assert served.post(path, {"instances": [2.0, 3.0, 4.0]}) == (
        200,
        {"predictions": [3.0, 3.5, 4.0]},
    )
    assert served.post(path, {"inputs": [2.0, 3.0, 4.0]}) == (200, {"outputs": [3.0, 3.5, 4.0]})
    assert served.post(path, {"instances": [{"x": [1.0]}, {"x": [2.0]}]}) == (
        200,
        {"predictions": [[2.5], [3.0]]},
    )
    assert served.post(path, {"inputs": {"x": [[1.0], [2.0]]}}) == (
        200,
        {"outputs": [[2.5], [3.0]]},
    )


def test_rest_names_an_unknown_signature_as_tf_serving_does(served: Served) -> None:
    assert served.post(
        "/v1/models/half_plus_two:predict", {"signature_name": "nope", "instances": [1.0]}
    ) == (400, {"error": 'Serving signature name: "nope" not found in signature def'})


def test_grpc_takes_a_shape_the_signature_does_not_declare(served: Served) -> None:
    response = served.predict("half_plus_two", {"x": np.array([1.0], dtype=np.float32)})
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [2.5]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"x": np.array([1.0], dtype=np.float64)}, "Expects arg[0] to be float but double"),
        ({"z": np.array([1.0], dtype=np.float32)}, "input tensor alias not found in signature: z"),
        ({}, "Missing but required: {x}"),
    ],
    ids=["dtype", "name", "missing"],
)
def test_names_and_dtypes_are_checked_as_tf_serving_checks_them(
    served: Served, inputs: dict[str, Any], message: str
) -> None:
    with pytest.raises(grpc.RpcError) as error:
        served.predict("half_plus_two", inputs)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (error.value.details() or "")


# --- item 3: TF1 graphs run as stored ----------------------------------------------------------


def test_a_tf1_graph_serves_every_predict_signature(served: Served) -> None:
    column = np.array([[2.0], [3.0]], dtype=np.float32)
    for signature in ("serving_default", "hand_written"):
        response = served.predict("half_plus_three", {"x": column}, signature)
        assert tf.make_ndarray(response.outputs["y"]).tolist() == [[4.0], [4.5]], signature
    scalar = served.predict("half_plus_three", {"s": np.float32(2.0)}, "scalar")
    assert tf.make_ndarray(scalar.outputs["t"]).tolist() == 4.0
    path = "/v1/models/half_plus_three:predict"
    assert served.post(path, {"signature_name": "scalar", "instances": [2.0, 4.0]}) == (
        200,
        {"predictions": [4.0, 5.0]},
    )
    assert served.post(path, {"signature_name": "hand_written", "inputs": {"x": [[2.0]]}}) == (
        200,
        {"outputs": [[4.0]]},
    )


def test_a_shape_the_graph_cannot_take_is_the_graphs_invalid_argument(served: Served) -> None:
    # parse_example needs a vector of serialized examples: a matrix fails in the graph itself.
    status, body = served.post(
        "/v1/models/half_plus_three:predict",
        {"signature_name": "regress_x_to_y", "inputs": {"inputs": [["a", "b"]]}},
    )
    assert status == 400, body
    assert body["error"]


# --- item 4: metadata, byte for byte -----------------------------------------------------------


def _tensor(dtype: str, dims: list[int] | None, name: str, indent: int) -> str:
    pad = " " * indent
    if dims is None:
        shape = (
            f'{pad} "tensor_shape": {{\n{pad}  "dim": [],\n{pad}  "unknown_rank": true\n{pad} }},'
        )
    else:
        entries = ",\n".join(
            f'{pad}   {{\n{pad}    "size": "{d}",\n{pad}    "name": ""\n{pad}   }}' for d in dims
        )
        shape = (
            f'{pad} "tensor_shape": {{\n{pad}  "dim": [\n{entries}\n{pad}  ],\n'
            f'{pad}  "unknown_rank": false\n{pad} }},'
        )
    return f'{{\n{pad} "dtype": "{dtype}",\n{shape}\n{pad} "name": "{name}"\n{pad}}}'


HALF_PLUS_TWO_METADATA = (
    '{\n"model_spec":{\n "name": "half_plus_two",\n "signature_name": "",\n "version": "123"\n}\n'
    ',\n"metadata": {"signature_def": {\n "signature_def": {\n'
    '  "__saved_model_init_op": {\n   "inputs": {},\n   "outputs": {\n'
    f'    "__saved_model_init_op": {_tensor("DT_INVALID", None, "NoOp", 4)}\n'
    '   },\n   "method_name": "",\n   "defaults": {}\n  },\n'
    '  "serving_default": {\n   "inputs": {\n'
    f'    "x": {_tensor("DT_FLOAT", [-1, 1], "serving_default_x:0", 4)}\n'
    '   },\n   "outputs": {\n'
    f'    "y": {_tensor("DT_FLOAT", [-1, 1], "StatefulPartitionedCall:0", 4)}\n'
    '   },\n   "method_name": "tensorflow/serving/predict",\n   "defaults": {}\n  }\n'
    " }\n}\n}\n}\n"
)


def test_rest_metadata_is_printed_as_tf_serving_prints_it(served: Served) -> None:
    status, body = served.get("/v1/models/half_plus_two/metadata")
    assert status == 200
    assert body.decode() == HALF_PLUS_TWO_METADATA
    # ... and clients that index it find every field.
    shape = json.loads(body)["metadata"]["signature_def"]["signature_def"]
    assert shape["__saved_model_init_op"]["outputs"]["__saved_model_init_op"]["tensor_shape"] == {
        "dim": [],
        "unknown_rank": True,
    }


# --- items 1 and 7: the command refuses what TF Serving refuses --------------------------------


def _serve(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tfmaas", "serve", "--port=0", "--bind_address=127.0.0.1", *flags],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


def test_a_model_that_cannot_load_stops_the_server_from_starting(tmp_path: Path) -> None:
    broken = tmp_path / "broken" / "00000007"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    # TF Serving retries a failed load 5 times a minute apart before giving up; so would this.
    answer = _serve(
        "--model_name=broken", f"--model_base_path={broken.parent}", "--max_num_load_retries=0"
    )
    assert answer.returncode == 2, answer.stderr[-2000:]
    assert (
        "Failed to start server. Error: UNKNOWN: Some servables were not available: "
        "{{name: broken version: 7} due to error: "
    ) in answer.stderr
    assert "Loading servable: {name: broken version: 7} failed" in answer.stderr  # the log


def test_a_config_file_that_does_not_parse_is_refused_in_tf_servings_words(
    tmp_path: Path,
) -> None:
    config = tmp_path / "models.config"
    config.write_text("model_config_list {\n  config { nme: 'a' }\n}\n")
    answer = _serve(f"--model_config_file={config}")
    assert answer.returncode == 2
    assert (
        "Error parsing text-format tensorflow.serving.ModelServerConfig: 2:12: Message type "
        '"tensorflow.serving.ModelConfig" has no field named "nme".'
    ) in answer.stderr
