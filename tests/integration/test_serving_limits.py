"""What `tfmaas serve` refuses over real sockets: bad REST framing, idle and slow REST clients,
and more unbatched calls than it runs at once. Attack-shaped loads here are bounded in
connections, bytes and time and only target loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.integration.test_serving_cli import wait_for_port
from tfmaas.dev.processes import free_port
from tfmaas.serving.flags import ServerFlags
from tfmaas.serving.limits import MAX_REQUEST_BYTES
from tfmaas.serving.rest import MAX_BODY_BYTES
from tfmaas.serving.server import ModelServer
from tfmaas.serving.testing import write_demo_model

pytestmark = pytest.mark.integration

REST_THREADS = 4
REST_TIMEOUT_MS = 2000


@dataclass
class RestProcess:
    process: subprocess.Popen[str]
    port: int

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/task"))

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        sock.settimeout(10)
        return sock


@pytest.fixture(scope="module")
def rest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestProcess]:
    """`tfmaas serve` as its own process, so its thread count is its own."""
    base = tmp_path_factory.mktemp("rest-limits") / "demo"
    write_demo_model(base, 1)
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tfmaas",
            "serve",
            "--port=0",
            f"--rest_api_port={port}",
            "--bind_address=127.0.0.1",
            "--model_name=demo",
            f"--model_base_path={base}",
            "--grpc_frontend=python",
            f"--rest_api_num_threads={REST_THREADS}",
            f"--rest_api_timeout_in_ms={REST_TIMEOUT_MS}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    try:
        wait_for_port(port, process)
        yield RestProcess(process, port)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def read_head_and_body(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    assert data.startswith(b"HTTP/1."), data[:200]
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            break
        body += chunk
    return int(head.split(b" ", 2)[1]), body


def read_response(sock: socket.socket) -> tuple[int, bool]:
    """(status, whether the server closed the connection after it)."""
    status, _ = read_head_and_body(sock)
    try:
        closed = sock.recv(1) == b""
    except (ConnectionResetError, TimeoutError):
        closed = False
    return status, closed


@pytest.mark.parametrize(
    ("content_length", "status"),
    [("-1", 400), ("abc", 400), ("1e3", 400), (" 12", 400), (str(MAX_BODY_BYTES + 1), 413)],
)
def test_a_bad_content_length_is_refused_and_the_connection_closed(
    rest: RestProcess, content_length: str, status: int
) -> None:
    with rest.connect() as sock:
        sock.sendall(
            b"POST /v1/models/demo:predict HTTP/1.1\r\nHost: x\r\n"
            + f"Content-Length: {content_length}\r\n\r\n".encode()
            + b'{"instances": ["a"]}'
        )
        assert read_response(sock) == (status, True)


def test_a_post_without_content_length_is_refused(rest: RestProcess) -> None:
    with rest.connect() as sock:
        sock.sendall(
            b"POST /v1/models/demo:predict HTTP/1.1\r\nHost: x\r\n\r\n" + b'{"instances": ["a"]}'
        )
        assert read_response(sock) == (400, True)
    with rest.connect() as sock:
        sock.sendall(
            b"POST /v1/models/demo:predict HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n14\r\n" + b'{"instances": ["a"]}' + b"\r\n0\r\n\r\n"
        )
        assert read_response(sock) == (400, True)


def test_a_well_formed_request_still_keeps_its_connection(rest: RestProcess) -> None:
    body = b'{"instances": ["a"]}'
    with rest.connect() as sock:
        for _ in range(2):
            sock.sendall(
                b"POST /v1/models/demo:predict HTTP/1.1\r\nHost: x\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            assert read_head_and_body(sock)[0] == 200


def test_idle_connections_leave_the_thread_count_bounded(rest: RestProcess) -> None:
    before = rest.threads()
    sockets = [rest.connect() for _ in range(200)]
    outcomes: Counter[str] = Counter()
    most = before
    try:
        # A connection beyond the worker pool is answered 503 and closed right away; one a
        # worker took is closed when its idle timeout passes.
        for sock in sockets:
            most = max(most, rest.threads())
            sock.settimeout(30)
            try:
                data = sock.recv(64)
            except ConnectionResetError:
                data = b""
            outcomes[
                "503" if data.startswith(b"HTTP/1.1 503") else "closed" if not data else "?"
            ] += 1
    finally:
        for sock in sockets:
            sock.close()
    print(
        f"REST threads: {before} before, at most {most} with 200 idle connections; {dict(outcomes)}"
    )
    assert most - before <= REST_THREADS
    assert outcomes["503"] > 0 and outcomes["503"] + outcomes["closed"] == 200, outcomes


def test_a_slowloris_connection_is_cut_off(rest: RestProcess) -> None:
    request = b"GET /v1/models/demo HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100
    started = time.monotonic()
    cut_off = False
    with rest.connect() as sock:
        for byte in request:  # a byte every 0.2 s: far longer than the timeout in all
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                cut_off = True
                break
            sock.settimeout(0.2)
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            except ConnectionResetError:
                data = b""
            cut_off = data == b"" or data.startswith(b"HTTP/1.1 408")
            break
    print(f"slowloris cut off after {time.monotonic() - started:.1f}s")
    assert cut_off, "the server still reads a request trickling in for 26 s"


# --- unbatched calls beyond the limit ------------------------------------------------------


@pytest.fixture(scope="module", params=["python", "native"])
def frontend(request: pytest.FixtureRequest) -> str:
    if request.param == "native":
        request.getfixturevalue("grpc_frontend_binary")
    return request.param


def test_an_overloaded_server_refuses_fast_instead_of_queueing(
    tmp_path: Path, frontend: str
) -> None:
    write_demo_model(tmp_path / "demo", 1)
    flags = ServerFlags(
        port=0,
        bind_address="127.0.0.1",
        model_name="demo",
        model_base_path=str(tmp_path / "demo"),
        file_system_poll_wait_seconds=0,
        grpc_max_threads=1,
        max_in_flight_unbatched_requests=1,
        grpc_frontend=frontend,
    )

    def request(rows: int) -> predict_pb2.PredictRequest:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "demo"
        request.inputs["text"].CopyFrom(tf.make_tensor_proto(["好" * 50] * rows, dtype=tf.string))
        return request

    slow, quick = request(100_000), request(1)  # slow: a while on the one model thread
    codes: Counter[str] = Counter()
    reject_seconds: list[float] = []
    lock = threading.Lock()
    with ModelServer(flags) as server:
        target = f"127.0.0.1:{server.grpc_port}"

        def client(index: int) -> None:
            hog = index < 2  # these keep the slot taken; the others find it taken
            with grpc.insecure_channel(target) as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                for _ in range(4 if hog else 20):
                    started = time.monotonic()
                    try:
                        stub.Predict(slow if hog else quick, timeout=60)
                        code = "OK"
                    except grpc.RpcError as error:
                        code = error.code().name
                        if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                            assert "max_in_flight_unbatched_requests" in error.details()
                            if not hog:
                                with lock:
                                    reject_seconds.append(time.monotonic() - started)
                    with lock:
                        codes[code] += 1
                    if not hog:
                        time.sleep(0.05)

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(client, range(6)))
    reject_seconds.sort()
    median = reject_seconds[len(reject_seconds) // 2] if reject_seconds else 0.0
    print(
        f"{frontend}: {dict(codes)}; {len(reject_seconds)} small calls refused, "
        f"median {median * 1000:.1f} ms, slowest {max(reject_seconds, default=0) * 1000:.1f} ms"
    )
    assert set(codes) == {"OK", "RESOURCE_EXHAUSTED"}, codes
    assert reject_seconds, "no call found the server at its limit"


# --- message size ----------------------------------------------------------------------------


def test_a_message_over_the_request_limit_is_refused_before_it_is_decoded(
    tmp_path: Path, frontend: str
) -> None:
    """TF Serving reads gRPC messages up to 2 GiB; tfmaas stops at what REST takes, so one call
    cannot make the server hold gigabytes. The message is refused, and the server still answers."""
    write_demo_model(tmp_path / "demo", 1)
    flags = ServerFlags(
        port=0,
        bind_address="127.0.0.1",
        model_name="demo",
        model_base_path=str(tmp_path / "demo"),
        file_system_poll_wait_seconds=0,
        grpc_frontend=frontend,
    )
    oversized = predict_pb2.PredictRequest()
    oversized.model_spec.name = "demo"
    text = oversized.inputs["text"]
    text.dtype = tf.string.as_datatype_enum
    text.tensor_shape.dim.add().size = 1
    text.string_val.append(b"x" * (MAX_REQUEST_BYTES + 1))
    with ModelServer(flags) as server:
        options = [("grpc.max_send_message_length", -1)]
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}", options=options) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.Predict(oversized, timeout=60)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            del oversized
            quick = predict_pb2.PredictRequest()
            quick.model_spec.name = "demo"
            quick.inputs["text"].CopyFrom(tf.make_tensor_proto(["好"], dtype=tf.string))
            assert stub.Predict(quick, timeout=30).outputs
