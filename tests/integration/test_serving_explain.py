"""The `explain` signature of a trained export, served by `tfmaas serve` over both gRPC front
ends and REST, with TF Serving's error codes for a signature name that does not exist."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.integration.test_serving_server import free_port, frontend  # noqa: F401 (fixture)
from tfmaas.client import GrpcClient, PredictionError, RestClient
from tfmaas.serving.flags import ServerFlags
from tfmaas.serving.server import ModelServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SENTENCES = ["质量很好，非常满意！", "太差了，完全不能用", "一般"]


@pytest.fixture(scope="module")
def server(exported_model: Any, frontend: str) -> Iterator[ModelServer]:  # noqa: F811
    flags = ServerFlags(
        port=0,
        rest_api_port=free_port(),
        bind_address="127.0.0.1",
        model_name=exported_model.name,
        model_base_path=str(exported_model.base_path),
        file_system_poll_wait_seconds=0,
        grpc_frontend=frontend,
    )
    with ModelServer(flags) as running:
        assert running.grpc_frontend == frontend
        yield running


def test_explain_answers_over_grpc_and_rest_as_the_saved_model_does(
    server: ModelServer, exported_model: Any
) -> None:
    with GrpcClient(f"127.0.0.1:{server.grpc_port}") as client:
        over_grpc = client.explain(exported_model.name, SENTENCES)
        predicted = client.predict(exported_model.name, SENTENCES)
    over_rest = RestClient(f"127.0.0.1:{server.rest_port}").explain(
        exported_model.name, SENTENCES, version=exported_model.version
    )
    loaded = tf.saved_model.load(str(exported_model.version_path)).signatures["explain"]
    local = {k: v.numpy() for k, v in loaded(text=tf.constant(SENTENCES)).items()}
    for row, sentence in enumerate(SENTENCES):
        grpc_answer, rest_answer = over_grpc[row], over_rest[row]
        assert grpc_answer.label == rest_answer.label == predicted[row].label
        assert grpc_answer.score == pytest.approx(max(predicted[row].scores.values()), rel=1e-5)
        assert "".join(grpc_answer.characters) == "".join(rest_answer.characters) == sentence
        expected = local["char_attributions"][row][: len(sentence)].tolist()
        assert grpc_answer.char_attributions == pytest.approx(expected, rel=1e-5, abs=1e-7)
        assert rest_answer.char_attributions == pytest.approx(expected, rel=1e-5, abs=1e-6)
        assert [u for u, _ in grpc_answer.units] == [u for u, _ in rest_answer.units]
        assert grpc_answer.units, "the top units name what fired"
    # Trailing punctuation is trimmed before the model sees the sentence: it weighs nothing.
    # ("，" inside it becomes the space the model does see.)
    assert over_grpc[0].char_attributions[9] == 0.0 != over_grpc[0].char_attributions[4]


def test_metadata_lists_explain_next_to_serving_default(
    server: ModelServer, exported_model: Any
) -> None:
    with GrpcClient(f"127.0.0.1:{server.grpc_port}") as client:
        signatures = client.signature_defs(exported_model.name).signature_def
    assert {"serving_default", "explain"} <= set(signatures)
    assert set(signatures["explain"].outputs) == {
        "characters",
        "char_attributions",
        "units",
        "unit_attributions",
        "class_id",
        "label",
        "score",
    }


def test_a_wrong_signature_name_keeps_tf_serving_codes(
    server: ModelServer, exported_model: Any
) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = exported_model.name
    request.model_spec.signature_name = "explains"
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(["好"], dtype=tf.string))
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(request, timeout=10)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert '"explains" not found' in error.value.details()

    body = {"signature_name": "explains", "inputs": {"text": ["好"]}}
    rest = urllib.request.Request(
        f"http://127.0.0.1:{server.rest_port}/v1/models/{exported_model.name}:predict",
        data=json.dumps(body).encode(),
    )
    with pytest.raises(urllib.error.HTTPError) as http_error:
        urllib.request.urlopen(rest, timeout=10)
    assert http_error.value.code == 400
    assert json.loads(http_error.value.read()) == {
        "error": 'Serving signature name: "explains" not found in signature def'
    }
    with pytest.raises(PredictionError) as client_error:
        RestClient(f"127.0.0.1:{server.rest_port}").predict_json(exported_model.name, body)
    assert client_error.value.code == "INVALID_ARGUMENT"


def _tfmaas_explain(*args: str, stdout: int | None = subprocess.PIPE) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tfmaas", "explain", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


def test_the_explain_command_marks_colours_and_prints_json(
    server: ModelServer, exported_model: Any
) -> None:
    target = ["--target", f"127.0.0.1:{server.grpc_port}", "--model", exported_model.name]
    sentence = SENTENCES[1]

    plain, _ = _tfmaas_explain(*target, sentence).communicate(timeout=120)
    label, marked = plain.decode("utf-8").rstrip("\n").split("\t")
    assert re.fullmatch(r"(negative|positive) \d\.\d{3}", label)
    assert re.search(r"\[[+-][^\]]+\]", marked), marked
    assert re.sub(r"\[[+-]([^\]]*)\]", r"\1", marked) == sentence

    rest = ["--rest", f"127.0.0.1:{server.rest_port}", "--model", exported_model.name]
    as_json, _ = _tfmaas_explain(*rest, "--json", sentence).communicate(timeout=120)
    document = json.loads(as_json)
    assert document["text"] == "".join(document["characters"]) == sentence
    assert len(document["char_attributions"]) == len(sentence)
    assert document["label"] == label.split()[0]

    primary, replica = pty.openpty()
    on_tty = _tfmaas_explain(*target, sentence, stdout=replica)
    os.close(replica)
    on_tty.wait(timeout=120)
    coloured = os.read(primary, 65536).decode("utf-8")
    os.close(primary)
    assert "\x1b[" in coloured and "[-" not in coloured and "[+" not in coloured
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured).strip().split("\t")[1] == sentence
