"""What a client with only network access to a serving pod can do to it, on both gRPC front ends:
decode caps, the config-reload RPC, metric label growth, and TLS on the gRPC port."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tests.integration.test_serving_server import (  # noqa: F401 (frontend is a fixture)
    Running,
    frontend,
    predict,
    start,
)
from tfmaas.client.tensors import strings_proto
from tfmaas.dev import pki

pytestmark = pytest.mark.integration

MiB = 1 << 20
METRICS = "/monitoring/prometheus/metrics"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, frontend: str) -> Iterator[Running]:  # noqa: F811
    served = start(tmp_path_factory.mktemp("hardening"), frontend=frontend)
    yield served
    served.server.stop()


def memory_kib(field: str) -> int:
    """VmRSS or VmHWM of this process, which runs the server (the front end relays bytes)."""
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def broadcast_request(name: str, elements: int) -> predict_pb2.PredictRequest:
    """A few dozen bytes on the wire that declare `elements` strings: one value, repeated."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    text = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
    text.tensor_shape.dim.add().size = elements
    text.string_val.append(b"x")
    request.inputs["text"].CopyFrom(text)
    return request


@pytest.mark.parametrize("name", ["demo", "nope"])
def test_a_tiny_request_declaring_a_huge_tensor_is_refused_without_allocating(
    running: Running, name: str
) -> None:
    request = broadcast_request(name, 60_000_000)
    assert request.ByteSize() < 45  # the 29- and 41-byte attacks of issue 11
    rss, peak = memory_kib("VmRSS"), memory_kib("VmHWM")
    with running.channel() as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(request, timeout=60)
    if name == "demo":
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "--max_request_elements" in (error.value.details() or "")
    else:  # the model is looked up before anything is decoded
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert memory_kib("VmRSS") - rss < 50 * 1024
    assert memory_kib("VmHWM") - peak < 50 * 1024


def test_one_value_fills_its_shape_as_tensorflow_does(running: Running) -> None:
    with running.channel() as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(broadcast_request("demo", 3), timeout=30)
    assert list(response.outputs["label"].string_val) == [b"negative"] * 3


def test_caps_are_flags_and_rest_has_them_too(tmp_path: Path, frontend: str) -> None:  # noqa: F811
    served = start(
        tmp_path, frontend=frontend, max_request_elements=100, max_request_tensor_bytes=10_000
    )
    try:
        with served.channel() as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as elements:
                stub.Predict(broadcast_request("demo", 101), timeout=30)
            assert elements.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "limit of 100 (--max_request_elements)" in (elements.value.details() or "")
            big = predict_pb2.PredictRequest()
            big.model_spec.name = "demo"
            big.inputs["text"].CopyFrom(strings_proto(["x" * 20_000]))
            with pytest.raises(grpc.RpcError) as nbytes:
                stub.Predict(big, timeout=30)
            assert "(--max_request_tensor_bytes)" in (nbytes.value.details() or "")
            assert predict(channel, ["a"] * 100).outputs["label"].string_val  # at the cap: fine

        def rest(body: object) -> tuple[int, dict]:
            data = json.dumps(body).encode()
            call = urllib.request.Request(f"{served.rest}/v1/models/demo:predict", data=data)
            try:
                with urllib.request.urlopen(call, timeout=30) as answer:
                    return answer.status, json.loads(answer.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())

        status, answer = rest({"instances": ["a"] * 101})
        assert status == 400 and "(--max_request_elements)" in answer["error"]
        nested: list = ["a"]
        for _ in range(100):
            nested = [nested]
        status, answer = rest({"inputs": {"text": nested}})
        assert status == 400 and "deeper than 64" in answer["error"]
        assert rest({"instances": ["a"] * 100})[0] == 200
    finally:
        served.server.stop()


def reload_empty_config(channel: grpc.Channel) -> model_management_pb2.ReloadConfigResponse:
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = model_management_pb2.ReloadConfigRequest()
    request.config.model_config_list.SetInParent()  # no models: unload them all
    return stub.HandleReloadConfigRequest(request, timeout=30)


def test_config_reload_over_grpc_is_refused_by_default(running: Running) -> None:
    with running.channel() as channel:
        with pytest.raises(grpc.RpcError) as error:
            reload_empty_config(channel)
        assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "--allow_grpc_config_reload" in (error.value.details() or "")
        assert predict(channel, ["still served"]).outputs["label"].string_val


def test_an_allowed_reload_is_undone_by_the_next_config_poll(
    tmp_path: Path,
    frontend: str,  # noqa: F811
) -> None:
    served = start(tmp_path, frontend=frontend, allow_grpc_config_reload=True)
    try:
        with served.channel() as channel:
            assert reload_empty_config(channel).status.error_code == 0
            assert served.server.registry.model_names() == []
            # The config file did not change; its poll (every second here) puts it back.
            deadline = time.monotonic() + 30
            while served.server.registry.model_names() != ["demo"]:
                assert time.monotonic() < deadline, "the config poll never restored the model"
                time.sleep(0.2)
            deadline = time.monotonic() + 30
            while True:
                try:
                    assert predict(channel, ["back"]).outputs["label"].string_val
                    break
                except grpc.RpcError:
                    assert time.monotonic() < deadline, "the restored model never answered"
                    time.sleep(0.2)
    finally:
        served.server.stop()


def scrape(running: Running) -> list[str]:
    with urllib.request.urlopen(f"{running.rest}{METRICS}", timeout=30) as answer:
        return answer.read().decode().splitlines()


def test_request_names_do_not_grow_the_metrics(running: Running) -> None:
    def unknown_model(channel: grpc.Channel) -> None:
        with pytest.raises(grpc.RpcError) as error:
            predict(channel, ["a"], name=f"m-{uuid.uuid4().hex}")
        assert error.value.code() == grpc.StatusCode.NOT_FOUND

    def unknown_model_rest() -> None:
        request = urllib.request.Request(
            f"{running.rest}/v1/models/r-{uuid.uuid4().hex}:predict", data=b'{"instances":["a"]}'
        )
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request, timeout=30)
        assert error.value.code == 404

    with running.channel() as channel:
        unknown_model(channel)  # the series every unknown name shares, per entrypoint
        unknown_model_rest()
        before = scrape(running)
        for _ in range(1000):
            unknown_model(channel)
    for _ in range(20):
        unknown_model_rest()
    after = scrape(running)
    assert len(after) == len(before)
    unknown = ':tensorflow:serving:request_count{model_name="__unknown__",status="NOT_FOUND"}'
    counts = dict(line.rsplit(" ", 1) for line in after if "{" in line)
    assert float(counts[unknown]) >= 1022
    assert not any("m-" in line or "r-" in line for line in after)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    ca = pki.CertificateAuthority.create("tfmaas-test-ca")
    server_cert, server_key = ca.issue(
        pki.CertRequest(common_name="localhost", ip_addresses=("127.0.0.1",), server=True)
    )
    client_cert, client_key = ca.issue(pki.CertRequest(common_name="client", client=True))
    return {
        "ca": pki.certificate_pem(ca.certificate),
        "server_cert": pki.certificate_pem(server_cert),
        "server_key": pki.private_key_pem(server_key),
        "client_cert": pki.certificate_pem(client_cert),
        "client_key": pki.private_key_pem(client_key),
    }


def ssl_config(path: Path, pems: dict[str, bytes], *, client_verify: bool) -> Path:
    def text(data: bytes) -> str:
        return json.dumps(data.decode())  # a text-proto string literal, newlines escaped

    path.write_text(
        f"server_key: {text(pems['server_key'])}\n"
        f"server_cert: {text(pems['server_cert'])}\n"
        f"custom_ca: {text(pems['ca'])}\n"
        f"client_verify: {'true' if client_verify else 'false'}\n"
    )
    return path


def tls_predicts(running: Running, credentials: grpc.ChannelCredentials) -> bool:
    with grpc.secure_channel(running.target, credentials) as channel:
        try:
            return bool(predict(channel, ["tls"]).outputs["label"].string_val)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error
            return False


@pytest.mark.parametrize("client_verify", [False, True])
def test_ssl_config_file_serves_grpc_over_tls(
    tmp_path: Path,
    frontend: str,  # noqa: F811
    tls_files: dict[str, bytes],
    client_verify: bool,
) -> None:
    config = ssl_config(tmp_path / "ssl.config", tls_files, client_verify=client_verify)
    served = start(tmp_path, frontend=frontend, ssl_config_file=str(config))
    try:
        with served.channel() as plain, pytest.raises(grpc.RpcError) as error:
            predict(plain, ["plain text"])
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        server_only = grpc.ssl_channel_credentials(root_certificates=tls_files["ca"])
        assert tls_predicts(served, server_only) is not client_verify
        with_client_cert = grpc.ssl_channel_credentials(
            root_certificates=tls_files["ca"],
            private_key=tls_files["client_key"],
            certificate_chain=tls_files["client_cert"],
        )
        assert tls_predicts(served, with_client_cert)
    finally:
        served.server.stop()
