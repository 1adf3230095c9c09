"""The embedded server over real sockets, via the official tensorflow-serving-api stubs."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tfmaas.client import GrpcClient, PredictionError, RestClient
from tfmaas.client.tensors import strings_proto
from tfmaas.dev.processes import free_port
from tfmaas.errors import UserError
from tfmaas.serving.flags import ServerFlags
from tfmaas.serving.server import ModelServer
from tfmaas.serving.testing import DEMO_CLASSES, child_pids, demo_scores, write_demo_model

pytestmark = pytest.mark.integration


def write_config(path: Path, base: Path, versions: list[int], labels: dict[str, int]) -> None:
    specific = " ".join(f"versions: {v}" for v in versions)
    label_lines = "".join(
        f'    version_labels {{ key: "{k}" value: {v} }}\n' for k, v in labels.items()
    )
    partial = path.with_suffix(".partial")
    partial.write_text(
        "model_config_list {\n  config {\n"
        f'    name: "demo"\n    base_path: "{base}"\n'
        f"    model_version_policy {{ specific {{ {specific} }} }}\n"
        f"{label_lines}  }}\n}}\n"
    )
    partial.replace(path)


@dataclass
class Running:
    server: ModelServer
    base: Path
    config: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.grpc_port}"

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.server.rest_port}"

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target)


@pytest.fixture(scope="module", params=["python", "native"])
def frontend(request: pytest.FixtureRequest) -> str:
    """Every test here runs against both gRPC front ends: they must not differ."""
    if request.param == "native":
        request.getfixturevalue("grpc_frontend_binary")
    return request.param


def start(
    tmp: Path,
    *,
    frontend: str,
    batching: str = "",
    labels: dict[str, int] | None = None,
    **overrides: Any,
) -> Running:
    base = tmp / "models"
    for version in (1, 2):
        write_demo_model(base, version)
    config = tmp / "models.config"
    write_config(config, base, [1, 2], labels if labels is not None else {"stable": 1, "canary": 2})
    monitoring = tmp / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }\n")
    batching_file = tmp / "batching.config"
    if batching:
        batching_file.write_text(batching)
    flags = ServerFlags(
        port=0,
        rest_api_port=free_port(),
        bind_address="127.0.0.1",
        model_config_file=str(config),
        model_config_file_poll_wait_seconds=1,
        file_system_poll_wait_seconds=1,
        monitoring_config_file=str(monitoring),
        enable_batching=bool(batching),
        batching_parameters_file=str(batching_file) if batching else "",
        grpc_channel_arguments="grpc.max_connection_age_ms=600000",
        grpc_frontend=frontend,
    )
    for name, value in overrides.items():
        setattr(flags, name, value)
    server = ModelServer(flags)
    server.start()
    assert server.grpc_frontend == frontend
    return Running(server, base, config)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, frontend: str) -> Iterator[Running]:
    served = start(tmp_path_factory.mktemp("serving"), frontend=frontend)
    yield served
    served.server.stop()


@pytest.fixture(scope="module")
def batched(tmp_path_factory: pytest.TempPathFactory, frontend: str) -> Iterator[Running]:
    served = start(
        tmp_path_factory.mktemp("batched"),
        frontend=frontend,
        batching="max_batch_size { value: 8 }\nbatch_timeout_micros { value: 20000 }\n"
        "num_batch_threads { value: 1 }\n",
    )
    yield served
    served.server.stop()


def predict(channel: grpc.Channel, texts: list[str], **spec: Any) -> predict_pb2.PredictResponse:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = spec.pop("name", "demo")
    if "version" in spec:
        request.model_spec.version.value = spec.pop("version")
    if "label" in spec:
        request.model_spec.version_label = spec.pop("label")
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(texts, dtype=tf.string))
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return stub.Predict(request, timeout=10)


def positive_scores(response: predict_pb2.PredictResponse) -> list[float]:
    return tf.make_ndarray(response.outputs["scores"])[:, 1].tolist()


def test_predict_by_version_label_and_latest(running: Running) -> None:
    texts = ["好", "这个东西非常好用"]
    with running.channel() as channel:
        for spec, version in (({"version": 1}, 1), ({"label": "canary"}, 2), ({}, 2)):
            response = predict(channel, texts, **spec)
            assert response.model_spec.version.value == version
            assert response.model_spec.signature_name == "serving_default"
            expected = [demo_scores(t, version)[1] for t in texts]
            assert positive_scores(response) == pytest.approx(expected, rel=1e-5)
            labels = tf.make_ndarray(response.outputs["label"]).tolist()
            class_ids = tf.make_ndarray(response.outputs["class_id"]).tolist()
            assert [DEMO_CLASSES[i].encode() for i in class_ids] == labels


def test_metadata_is_the_saved_signature(running: Running) -> None:
    with running.channel() as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = "demo"
        request.model_spec.version_label = "stable"
        response = stub.GetModelMetadata(request, timeout=10)
    assert response.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    serving = signatures.signature_def["serving_default"]
    assert serving.inputs["text"].dtype == types_pb2.DT_STRING
    assert set(serving.outputs) == {"scores", "class_id", "label"}
    assert serving.method_name == "tensorflow/serving/predict"


def test_metadata_errors_keep_their_codes(running: Running) -> None:
    with running.channel() as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        unknown = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        unknown.model_spec.name = "nope"
        no_field = get_model_metadata_pb2.GetModelMetadataRequest()
        no_field.model_spec.name = "demo"
        for request, code, message in (
            (unknown, grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
            (no_field, grpc.StatusCode.INVALID_ARGUMENT, "at least one metadata_field"),
        ):
            with pytest.raises(grpc.RpcError) as error:
                stub.GetModelMetadata(request, timeout=10)
            assert error.value.code() == code
            assert message in error.value.details()


def test_status_lists_the_loaded_versions(running: Running) -> None:
    with running.channel() as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "demo"
        response = stub.GetModelStatus(request, timeout=10)
    states = {s.version: s.state for s in response.model_version_status}
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert states == {1: available, 2: available}
    rest = RestClient(running.rest).status("demo", label="stable")
    assert rest == [{"version": 1, "state": "AVAILABLE", "error": ""}]


def test_an_unknown_method_is_unimplemented(running: Running) -> None:
    with running.channel() as channel:
        call = channel.unary_unary("/tensorflow.serving.PredictionService/Explain")
        with pytest.raises(grpc.RpcError) as error:
            call(b"", timeout=10)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_health_service_reports_serving(running: Running) -> None:
    with running.channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "demo"):
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as error:  # a service the server never registered
            stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_rest_and_grpc_agree(running: Running) -> None:
    texts = ["很好", "质量太差了，不推荐购买", "一般般"]
    with GrpcClient(running.target) as client:
        over_grpc = client.predict("demo", texts, version=2, classes=DEMO_CLASSES)
    over_rest = RestClient(running.rest).predict("demo", texts, version=2, classes=DEMO_CLASSES)
    assert [p.label for p in over_grpc] == [p.label for p in over_rest]
    for a, b in zip(over_grpc, over_rest, strict=True):
        assert a.scores == pytest.approx(b.scores, rel=1e-6)
    rows = RestClient(running.rest).predict_json("demo", {"instances": texts}, version=2)
    assert [row["label"] for row in rows["predictions"]] == [p.label for p in over_grpc]


def test_rest_metadata_and_errors(running: Running) -> None:
    metadata = RestClient(running.rest).metadata("demo", version=1)
    assert metadata["model_spec"]["version"] == "1"
    assert "serving_default" in metadata["metadata"]["signature_def"]["signature_def"]
    request = urllib.request.Request(
        f"{running.rest}/v1/models/demo/versions/9:predict", data=b'{"instances": ["a"]}'
    )
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=10)
    assert error.value.code == 404
    assert json.loads(error.value.read()) == {
        "error": "Servable not found for request: Specific(demo, 9)"
    }


def bad_requests() -> list[tuple[str, predict_pb2.PredictRequest, grpc.StatusCode, str]]:
    def request(**spec: Any) -> predict_pb2.PredictRequest:
        made = predict_pb2.PredictRequest()
        made.model_spec.name = spec.pop("name", "demo")
        if "version" in spec:
            made.model_spec.version.value = spec.pop("version")
        if "label" in spec:
            made.model_spec.version_label = spec.pop("label")
        if "signature" in spec:
            made.model_spec.signature_name = spec.pop("signature")
        for alias, proto in spec.pop("inputs", {"text": strings_proto(["a"])}).items():
            made.inputs[alias].CopyFrom(proto)
        made.output_filter.extend(spec.pop("output_filter", []))
        return made

    scalar = tf.make_tensor_proto("a", dtype=tf.string)
    floats = tf.make_tensor_proto([1.0], dtype=tf.float32)
    broken = strings_proto(["a", "b"])
    broken.tensor_shape.dim[0].size = -5  # (fewer values than the shape holds are fine: TF's way)
    code = grpc.StatusCode
    return [
        ("unknown model", request(name="nope"), code.NOT_FOUND, "Latest(nope)"),
        ("unknown version", request(version=7), code.NOT_FOUND, "Specific(demo, 7)"),
        ("unknown label", request(label="beta"), code.INVALID_ARGUMENT, "version label: beta"),
        ("unknown signature", request(signature="x"), code.FAILED_PRECONDITION, '"x" not found'),
        (
            "wrong input name",
            request(inputs={"sentence": strings_proto(["a"])}),
            code.INVALID_ARGUMENT,
            "input tensor alias not found in signature: sentence",
        ),
        (
            "missing input",
            request(inputs={}),
            code.INVALID_ARGUMENT,
            "Missing but required: {text}",
        ),
        ("wrong dtype", request(inputs={"text": floats}), code.INVALID_ARGUMENT, "to be string"),
        # Shapes are not checked against the signature (TF Serving does not either); one the
        # graph cannot compute with is the graph's own INVALID_ARGUMENT.
        ("shape the graph refuses", request(inputs={"text": scalar}), code.INVALID_ARGUMENT, ""),
        ("unparsable", request(inputs={"text": broken}), code.INVALID_ARGUMENT, "parsing error"),
        (
            "unknown output",
            request(output_filter=["logits"]),
            code.INVALID_ARGUMENT,
            "output tensor alias not found",
        ),
    ]


@pytest.mark.parametrize(
    ("case", "request_", "code", "message"), bad_requests(), ids=[c[0] for c in bad_requests()]
)
def test_bad_requests_get_tf_serving_codes(
    running: Running,
    case: str,
    request_: predict_pb2.PredictRequest,
    code: grpc.StatusCode,
    message: str,
) -> None:
    with running.channel() as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(request_, timeout=10)
        assert error.value.code() == code, error.value.details()
        assert message in error.value.details()
        assert positive_scores(predict(channel, ["still fine"], version=1))  # still healthy


def test_client_surfaces_server_errors(running: Running) -> None:
    with GrpcClient(running.target, retries=0) as client, pytest.raises(PredictionError) as error:
        client.predict("demo", ["a"], version=42)
    assert error.value.code == "NOT_FOUND"
    nobody = f"127.0.0.1:{free_port()}"
    with (
        GrpcClient(nobody, retries=1, backoff=0.01, timeout=2) as client,
        pytest.raises(PredictionError) as unreachable,
    ):
        client.predict("demo", ["a"])
    assert unreachable.value.code == "UNAVAILABLE"


def test_metrics_count_requests_by_status(running: Running) -> None:
    def scrape() -> dict[str, float]:
        text = urllib.request.urlopen(f"{running.rest}/monitoring/prometheus/metrics").read()
        samples = {}
        for line in text.decode().splitlines():
            if line.startswith(":tensorflow:serving:request_count"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    ok = ':tensorflow:serving:request_count{model_name="demo",status="OK"}'
    missing = ':tensorflow:serving:request_count{model_name="demo",status="NOT_FOUND"}'
    before = scrape()
    with running.channel() as channel:
        for _ in range(3):
            predict(channel, ["a"])
        with pytest.raises(grpc.RpcError):
            predict(channel, ["a"], version=99)
    RestClient(running.rest).predict("demo", ["a"])
    after = scrape()
    assert after[ok] - before.get(ok, 0) == 4
    assert after[missing] - before.get(missing, 0) == 1


def test_a_call_abandoned_while_its_batch_fills_counts_as_cancelled(
    tmp_path: Path, frontend: str
) -> None:
    served = start(
        tmp_path,
        frontend=frontend,
        batching="max_batch_size { value: 8 }\nbatch_timeout_micros { value: 1000000 }\n",
    )
    cancelled = ':tensorflow:serving:request_count{model_name="demo",status="CANCELLED"}'
    metrics_url = f"{served.rest}/monitoring/prometheus/metrics"
    try:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "demo"
        request.inputs["text"].CopyFrom(tf.make_tensor_proto(["a"], dtype=tf.string))
        with served.channel() as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            # The client gives up while the batch waits a whole second to fill. It cancels
            # rather than letting a deadline pass: at a deadline a grpc-go server (the native
            # front end) resets the stream itself, and the client may then report either code.
            call = stub.Predict.future(request, timeout=30)
            time.sleep(0.2)
            assert call.cancel()
            assert call.code() == grpc.StatusCode.CANCELLED
            deadline = time.monotonic() + 10
            while cancelled not in urllib.request.urlopen(metrics_url).read().decode():
                assert time.monotonic() < deadline, "the abandoned call was never counted"
                time.sleep(0.1)
            # The batch still runs after its caller left, and the server keeps answering.
            assert predict(channel, ["abcdefgh"]).outputs["label"].string_val == [b"positive"]
    finally:
        served.server.stop()


def test_new_version_and_moved_label_without_restart(tmp_path: Path, frontend: str) -> None:
    served = start(tmp_path, frontend=frontend, labels={"stable": 1}, allow_grpc_config_reload=True)
    try:
        with GrpcClient(served.target) as client:
            write_demo_model(served.base, 3)
            # One config push loads 3 and moves `stable` to it (the registry loads before
            # it relabels); the file poll picks the change up within a second.
            write_config(served.config, served.base, [1, 3], {"stable": 3})
            assert client.wait_for_version("demo", 3, label="stable", timeout=30) == 3
            response = client.predict_raw("demo", {"text": strings_proto(["x"])}, label="stable")
            assert response.model_spec.version.value == 3
            with pytest.raises(PredictionError, match="labelled 'canary' of demo not available"):
                client.wait_for_version("demo", 3, label="canary", timeout=0.5)
            states = {s["version"]: s["state"] for s in client.status("demo")}
            assert states == {1: "AVAILABLE", 2: "END", 3: "AVAILABLE"}
            # A label on a version that is not loaded is refused; the old labels stay.
            stub = model_service_pb2_grpc.ModelServiceStub(client._channel)
            reload = model_management_pb2.ReloadConfigRequest()
            reload.config.model_config_list.config.add(
                name="demo", base_path=str(served.base)
            ).version_labels["stable"] = 9
            answer = stub.HandleReloadConfigRequest(reload, timeout=30)
            assert answer.status.error_code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
            assert "not currently available" in answer.status.error_message
    finally:
        served.server.stop()


def test_batching_returns_each_caller_its_rows(batched: Running) -> None:
    def call(i: int) -> tuple[list[str], list[float], int]:
        texts = ["好" * (i % 13 + 1)] * (i % 3 + 1)
        with GrpcClient(batched.target) as client:
            response = client.predict_raw("demo", {"text": strings_proto(texts)}, version=1)
        scores = tf.make_ndarray(response.outputs["scores"])
        return texts, scores[:, 1].tolist(), scores.shape[0]

    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(call, range(48)))
    for texts, positives, rows in results:
        assert rows == len(texts)
        assert positives == pytest.approx([demo_scores(t, 1)[1] for t in texts], rel=1e-5)


def test_batching_rejects_requests_over_max_batch_size(batched: Running) -> None:
    with batched.channel() as channel:
        with pytest.raises(grpc.RpcError) as error:
            predict(channel, ["a"] * 9, version=1)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Task size 9 is larger than maximum input batch size 8" in error.value.details()
        assert len(positive_scores(predict(channel, ["a"] * 8, version=1))) == 8


@pytest.mark.slow
def test_trained_model_is_served(exported_model: Any, tmp_path: Path) -> None:
    flags = ServerFlags(
        port=0,
        bind_address="127.0.0.1",
        model_name=exported_model.name,
        model_base_path=str(exported_model.base_path),
        file_system_poll_wait_seconds=0,
    )
    with ModelServer(flags) as server, GrpcClient(f"127.0.0.1:{server.grpc_port}") as client:
        texts = ["质量很好，非常满意", "太差了，完全不能用"]
        predictions = client.predict(exported_model.name, texts, classes=exported_model.classes)
    for prediction in predictions:
        assert prediction.label == max(prediction.scores, key=prediction.scores.__getitem__)
        assert sum(prediction.scores.values()) == pytest.approx(1.0, abs=1e-4)
        assert np.isfinite(list(prediction.scores.values())).all()


def test_message_size_limit_from_channel_arguments(
    tmp_path: Path, frontend: str, caplog: pytest.LogCaptureFixture
) -> None:
    write_demo_model(tmp_path / "m", 1)
    flags = ServerFlags(
        port=0,
        bind_address="127.0.0.1",
        model_name="demo",
        model_base_path=str(tmp_path / "m"),
        file_system_poll_wait_seconds=0,
        grpc_channel_arguments="grpc.max_receive_message_length=4096,grpc.no_such_knob=1",
        grpc_frontend=frontend,
    )
    with (
        ModelServer(flags) as server,
        grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel,
    ):
        assert len(positive_scores(predict(channel, ["small"]))) == 1
        with pytest.raises(grpc.RpcError) as error:
            predict(channel, ["x" * 8192])
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert len(positive_scores(predict(channel, ["small again"]))) == 1
    if frontend == "native":  # grpc core takes unknown arguments silently; this one says so
        assert "ignoring channel argument grpc.no_such_knob" in caplog.text


def test_client_round_robin_spreads_calls_over_servers(tmp_path: Path, frontend: str) -> None:
    servers = [start(tmp_path / name, frontend=frontend) for name in ("a", "b")]
    try:
        # What a headless Service gives through DNS: several pod addresses for one name.
        target = "ipv4:" + ",".join(s.target for s in servers)
        with GrpcClient(target, round_robin=True) as client:
            for _ in range(20):
                client.predict("demo", ["x"], version=1)
        counts = []
        for served in servers:
            text = urllib.request.urlopen(f"{served.rest}/monitoring/prometheus/metrics").read()
            ok = [
                float(line.rsplit(" ", 1)[1])
                for line in text.decode().splitlines()
                if line.startswith(
                    ':tensorflow:serving:request_count{model_name="demo",status="OK"}'
                )
            ]
            counts.append(ok[0] if ok else 0.0)
        assert sum(counts) == 20
        assert min(counts) >= 5, counts
    finally:
        for served in servers:
            served.server.stop()


def test_a_taken_port_is_a_clear_error(tmp_path: Path, frontend: str) -> None:
    write_demo_model(tmp_path / "m", 1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for grpc_port, rest_port, what in ((port, 0, "gRPC"), (0, port, "REST")):
            flags = ServerFlags(
                port=grpc_port,
                rest_api_port=rest_port,
                bind_address="127.0.0.1",
                model_name="demo",
                model_base_path=str(tmp_path / "m"),
                grpc_frontend=frontend,
            )
            running_before = set(threading.enumerate())  # other tests' servers may be up
            children_before = child_pids()
            with pytest.raises(UserError, match=f"cannot listen on 127.0.0.1:{port} for {what}"):
                ModelServer(flags).start()
            # A failed start leaves nothing running behind it: no event loop, relay thread or
            # front end process.
            left = [t.name for t in set(threading.enumerate()) - running_before]
            assert not [name for name in left if name.startswith("grpc-")], left
            assert child_pids() <= children_before
