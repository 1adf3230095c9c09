"""TF Serving flags that `tfmaas serve` now implements instead of ignoring (issue 12 item 6):
--grpc_socket_path on both gRPC front ends, load retries, and model warmup."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tests.fixtures.tfs_models import export_estimator_style, export_tflite_half_plus_two
from tests.integration.test_serving_inference import examples_input, regression
from tests.integration.test_serving_server import free_port
from tfmaas.errors import UserError
from tfmaas.serving.flags import ServerFlags
from tfmaas.serving.server import ModelServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def estimator_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_estimator_style(tmp_path_factory.mktemp("export"), "1")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # A Unix socket path must fit in 107 bytes; pytest's tmp_path may not.
    path = Path(tempfile.mkdtemp(prefix="tfs-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def flags_for(base: Path, frontend: str = "python", **overrides) -> ServerFlags:
    flags = ServerFlags(
        port=0,
        rest_api_port=free_port(),
        bind_address="127.0.0.1",
        model_name="hp2",
        model_base_path=str(base),
        grpc_frontend=frontend,
    )
    for name, value in overrides.items():
        setattr(flags, name, value)
    return flags


def copy_model(export: Path, base: Path) -> None:
    shutil.copytree(export, base / "1")


@pytest.mark.parametrize("frontend", ["python", "native"])
def test_grpc_socket_path_serves_the_same_api(
    request: pytest.FixtureRequest, frontend: str, estimator_export: Path, short_dir: Path
) -> None:
    if frontend == "native":
        request.getfixturevalue("grpc_frontend_binary")
    copy_model(estimator_export, short_dir / "models")
    socket_path = short_dir / "grpc.sock"
    server = ModelServer(
        flags_for(short_dir / "models", frontend, grpc_socket_path=str(socket_path))
    )
    server.start()
    try:
        assert server.grpc_frontend == frontend
        assert socket_path.is_socket()
        with grpc.insecure_channel(f"unix:{socket_path}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            response = stub.Regress(regression("regress_x_to_y", examples_input(80.0)), timeout=30)
            assert [r.value for r in response.result.regressions] == [42.0]
            status_request = get_model_status_pb2.GetModelStatusRequest()
            status_request.model_spec.name = "hp2"
            status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
                status_request, timeout=30
            )
            assert [s.version for s in status.model_version_status] == [1]
        # The TCP port still answers too.
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            response = stub.Regress(regression("regress_x_to_y", examples_input(2.0)), timeout=30)
            assert [r.value for r in response.result.regressions] == [3.0]
    finally:
        server.stop()


def test_a_version_still_being_written_loads_on_a_retry(
    estimator_export: Path, tmp_path: Path
) -> None:
    # saved_model.pb lands first (the version is discovered), the variables a moment later:
    # the first load fails, a retry finds the whole version.
    version = tmp_path / "models" / "1"
    version.mkdir(parents=True)
    shutil.copy(estimator_export / "saved_model.pb", version)
    timer = threading.Timer(
        1.0, lambda: shutil.copytree(estimator_export / "variables", version / "variables")
    )
    timer.start()
    server = ModelServer(
        flags_for(tmp_path / "models", max_num_load_retries=60, load_retry_interval_micros=250_000)
    )
    try:
        server.start()
        assert server.registry.has_available("hp2")
    finally:
        timer.join()
        server.stop()


def test_without_retries_the_same_version_fails(estimator_export: Path, tmp_path: Path) -> None:
    version = tmp_path / "models" / "1"
    version.mkdir(parents=True)
    shutil.copy(estimator_export / "saved_model.pb", version)
    server = ModelServer(flags_for(tmp_path / "models", max_num_load_retries=0))
    with contextlib.suppress(UserError):  # whether a failed load stops start-up: item 1's call
        server.start()
    try:
        assert not server.registry.has_available("hp2")
    finally:
        server.stop()


def write_warmup(version: Path, records: list[prediction_log_pb2.PredictionLog]) -> None:
    folder = version / "assets.extra"
    folder.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(folder / "tf_serving_warmup_requests")) as writer:
        for record in records:
            writer.write(record.SerializeToString())


def regress_log(signature: str) -> prediction_log_pb2.PredictionLog:
    record = prediction_log_pb2.PredictionLog()
    request: regression_pb2.RegressionRequest = regression(signature, examples_input(1.0))
    record.regress_log.request.CopyFrom(request)
    return record


def predict_log() -> prediction_log_pb2.PredictionLog:
    record = prediction_log_pb2.PredictionLog()
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = "predict_x"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0]], dtype=tf.float32))
    record.predict_log.request.CopyFrom(request)
    return record


def test_warmup_requests_run_before_the_version_serves(
    estimator_export: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy_model(estimator_export, tmp_path / "models")
    write_warmup(tmp_path / "models" / "1", [regress_log("regress_x_to_y"), predict_log()])
    server = ModelServer(flags_for(tmp_path / "models"))
    with caplog.at_level(logging.INFO, logger="tfmaas.serving.server"):
        server.start()
    try:
        assert server.registry.has_available("hp2")
        assert "Number of warmup records read: 2." in caplog.text
    finally:
        server.stop()


def test_a_failing_warmup_request_fails_the_load(estimator_export: Path, tmp_path: Path) -> None:
    copy_model(estimator_export, tmp_path / "models")
    write_warmup(tmp_path / "models" / "1", [regress_log("classify_x_to_y")])
    server = ModelServer(flags_for(tmp_path / "models", max_num_load_retries=0))
    try:
        with contextlib.suppress(UserError):  # whether that stops start-up: item 1's call
            server.start()
        assert not server.registry.has_available("hp2")
        [record] = server.registry.status("hp2", None, "")
        assert "Expected regression signature method_name" in record.error
    finally:
        server.stop()


def test_warmup_off_skips_the_file(estimator_export: Path, tmp_path: Path) -> None:
    copy_model(estimator_export, tmp_path / "models")
    write_warmup(tmp_path / "models" / "1", [regress_log("classify_x_to_y")])
    server = ModelServer(
        flags_for(tmp_path / "models", enable_model_warmup=False, max_num_load_retries=0)
    )
    server.start()
    try:
        assert server.registry.has_available("hp2")
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tflite_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("tflite") / "models"
    export_tflite_half_plus_two(base, "1")
    return base


@pytest.mark.parametrize("frontend", ["python", "native"])
def test_prefer_tflite_model_serves_model_tflite(
    request: pytest.FixtureRequest, frontend: str, tflite_base: Path
) -> None:
    if frontend == "native":
        request.getfixturevalue("grpc_frontend_binary")
    server = ModelServer(flags_for(tflite_base, frontend, prefer_tflite_model=True))
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            predict_request = predict_pb2.PredictRequest()
            predict_request.model_spec.name = "hp2"
            predict_request.inputs["x"].CopyFrom(
                tf.make_tensor_proto([[1.0], [2.0], [5.0]], dtype=tf.float32)
            )
            response = stub.Predict(predict_request, timeout=30)
        assert response.model_spec.signature_name == "serving_default"
        assert tf.make_ndarray(response.outputs["output_0"]).tolist() == [[2.5], [3.0], [4.5]]
        rest = f"http://127.0.0.1:{server.rest_port}/v1/models/hp2"
        body = json.dumps({"instances": [[4.0]]}).encode()
        with urllib.request.urlopen(
            urllib.request.Request(f"{rest}:predict", data=body), timeout=30
        ) as answer:
            assert json.loads(answer.read()) == {"predictions": [[4.0]]}
        with urllib.request.urlopen(f"{rest}/metadata", timeout=30) as answer:
            signature = json.loads(answer.read())["metadata"]["signature_def"]["signature_def"]
        serving = signature["serving_default"]
        assert serving["method_name"] == "tensorflow/serving/predict"
        assert serving["inputs"]["x"]["dtype"] == "DT_FLOAT"
        assert [d["size"] for d in serving["inputs"]["x"]["tensor_shape"]["dim"]] == ["-1", "1"]
    finally:
        server.stop()


def test_without_prefer_tflite_model_a_tflite_only_version_is_not_served(
    tflite_base: Path,
) -> None:
    server = ModelServer(flags_for(tflite_base, max_num_load_retries=0))
    try:
        with contextlib.suppress(UserError):  # whether that stops start-up: item 1's call
            server.start()
        assert not server.registry.has_available("hp2")
    finally:
        server.stop()


def predict_x(stub, signature: str) -> predict_pb2.PredictResponse:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "hp2"
    request.model_spec.signature_name = signature
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[2.0]], dtype=tf.float32))
    return stub.Predict(request, timeout=30)


@pytest.mark.parametrize("check", [False, True])
def test_signature_method_name_check(estimator_export: Path, tmp_path: Path, check: bool) -> None:
    copy_model(estimator_export, tmp_path / "models")
    server = ModelServer(flags_for(tmp_path / "models", enable_signature_method_name_check=check))
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            assert tf.make_ndarray(predict_x(stub, "predict_x").outputs["y"]).tolist() == [[3.0]]
            if not check:
                assert predict_x(stub, "no_method").outputs["y"].float_val == [3.0]
                return
            with pytest.raises(grpc.RpcError) as caught:
                predict_x(stub, "no_method")
        assert caught.value.code() == grpc.StatusCode.INTERNAL
        assert caught.value.details() == (
            "Expected prediction signature method_name to be one of {tensorflow/serving/predict, "
            "tensorflow/serving/classify, tensorflow/serving/regress}. Was: "
        )
    finally:
        server.stop()


def test_allow_version_labels_false_refuses_a_config_with_labels(
    estimator_export: Path, tmp_path: Path
) -> None:
    copy_model(estimator_export, tmp_path / "models")
    config = tmp_path / "models.config"
    config.write_text(
        'model_config_list { config { name: "hp2" base_path: "'
        + str(tmp_path / "models")
        + '" model_platform: "tensorflow" version_labels { key: "stable" value: 1 } } }\n'
    )
    flags = flags_for(tmp_path / "models", allow_version_labels=False)
    flags.model_base_path, flags.model_config_file = "", str(config)
    server = ModelServer(flags)
    try:
        with pytest.raises(UserError, match="Model version labels are not currently allowed"):
            server.start()
    finally:
        server.stop()
    flags.allow_version_labels = True
    server = ModelServer(flags)
    server.start()
    try:
        assert server.registry.labels("hp2") == {"stable": 1}
    finally:
        server.stop()
