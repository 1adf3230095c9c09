"""The model server's end of the native gRPC front end (`tools/grpc-frontend`).

Python's gRPC server spends about 0.3 ms of the GIL-holding thread on every call before any model
work, which caps a lone request's latency and what batching can gain. With the native front end,
a Go program terminates the gRPC connections and relays each unary call over a Unix socket as the
raw bytes of its request; this module answers them with the same services the Python gRPC server
runs, so models, labels, batching, metrics and status codes behave the same on both.

One reader thread takes calls off the socket. Predict is decoded and queued right there: a
batched call goes to its batcher, whose batch thread writes the whole batch's answers in one
send; an unbatched call runs on a model thread, or on the reader itself when it is alone and its
model is quick (the same rule as the event loop's). The other methods may load models (a config
reload) or run one (Classify, Regress, MultiInference), so they run on the handler pool. The
frame layout is described in `tools/grpc-frontend/main.go`.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import predict_pb2

from tfmaas.errors import UserError
from tfmaas.serving.batching import Task
from tfmaas.serving.config import TlsSettings
from tfmaas.serving.core import PredictPlan, ServingCore, internal
from tfmaas.serving.errors import ServingError, invalid_argument
from tfmaas.serving.grpc_service import model_ref, predict_plan, predict_response

log = logging.getLogger(__name__)

BINARY_NAME = "tfmaas-grpc-frontend"
PREDICT = "/tensorflow.serving.PredictionService/Predict"

_CALL_HEADER = struct.Struct("<IQH")  # size, id, method length
_ANSWER_HEADER = struct.Struct("<IQB")  # size, id, status code
_ANSWER_OVERHEAD = _ANSWER_HEADER.size - 4
_READ_BYTES = 1 << 20
_START_TIMEOUT_S = 30.0

# A unary method the relay answers: how to parse its request, and the servicer method that takes
# (request, context) like a grpc handler.
UnaryMethod = tuple[Callable[[bytes], Any], Callable[[Any, Any], Any]]


def find_binary() -> Path | None:
    """The front end's binary: $TFMAAS_GRPC_FRONTEND, then PATH, then a source checkout's build."""
    configured = os.environ.get("TFMAAS_GRPC_FRONTEND")
    if configured:
        return Path(configured) if Path(configured).is_file() else None
    on_path = shutil.which(BINARY_NAME)
    if on_path:
        return Path(on_path)
    try:
        from tfmaas.dev import tools

        built = tools.binary_path("grpc-frontend")
    except UserError:  # not a source checkout
        return None
    return built if built.is_file() else None


class _RelayContext:
    """The part of grpc.ServicerContext the unary servicers use."""

    def __init__(self) -> None:
        self.code = grpc.StatusCode.OK
        self.details = ""

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise ServingError(code, details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details


def _answer(call_id: int, code: grpc.StatusCode, payload: bytes) -> bytes:
    return _ANSWER_HEADER.pack(_ANSWER_OVERHEAD + len(payload), call_id, code.value[0]) + payload


class NativeFrontend:
    def __init__(
        self,
        binary: Path,
        core: ServingCore,
        methods: Mapping[str, UnaryMethod],
        model_executor: Executor,
        handler_executor: Executor,
        on_exit: Callable[[], None] = lambda: None,
    ) -> None:
        self._binary = binary
        self._core = core
        self._methods = dict(methods)
        self._model_executor = model_executor
        self._handler_executor = handler_executor
        self._on_exit = on_exit
        self._process: subprocess.Popen[str] | None = None
        self._socket: socket.socket | None = None
        self._socket_dir: str | None = None
        self._send_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        # Predict calls not answered yet: id -> (model name, start time); whoever pops an id
        # (its answer or its cancel) records the request's metric.
        self._pending: dict[int, tuple[str, float]] = {}

    # --- lifecycle -----------------------------------------------------------------------

    def start(
        self,
        address: str,
        channel_arguments: list[tuple[str, int | str]],
        *,
        drain_seconds: float,
        tls: TlsSettings | None = None,
        unix_path: str = "",
    ) -> int:
        """Start the front end on `address`; returns the port it listens on. It applies the
        channel arguments grpc-go has a setting for and logs that it ignores the others, and serves
        `unix_path` as well when given (--grpc_socket_path); told
        to stop, it gives calls in flight up to `drain_seconds` to finish."""
        self._socket_dir = tempfile.mkdtemp(prefix="tfmaas-grpc-")
        path = os.path.join(self._socket_dir, "server.sock")
        tls_flags = self._tls_flags(tls) if tls is not None else []
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(path)
            listener.listen(1)
            command = [
                str(self._binary),
                f"-listen={address}",
                f"-backend={path}",
                f"-grace={drain_seconds}s",
                *(f"-arg={key}={value}" for key, value in channel_arguments),
                *tls_flags,
                *([f"-listen_unix={unix_path}"] if unix_path else []),
            ]
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            self._socket = self._accept(listener)
        finally:
            listener.close()
        port = self._read_port(address)
        self._spawn(self._read_calls, "grpc-relay")
        self._spawn(self._forward_log, "grpc-frontend-log")
        return port

    def _tls_flags(self, tls: TlsSettings) -> list[str]:
        """The PEM texts as files in the private socket directory: not on a command line,
        where any local user could read a key."""
        assert self._socket_dir is not None
        pems = {"tls_key": tls.server_key, "tls_cert": tls.server_cert, "tls_ca": tls.custom_ca}
        flags = []
        for name, text in pems.items():
            if text:
                file = Path(self._socket_dir, f"{name}.pem")
                file.touch(mode=0o600)
                file.write_text(text, encoding="utf-8")
                flags.append(f"-{name}={file}")
        if tls.client_verify:
            flags.append("-tls_client_verify")
        return flags

    def _accept(self, listener: socket.socket) -> socket.socket:
        assert self._process is not None
        deadline = time.monotonic() + _START_TIMEOUT_S
        listener.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                if self._process.poll() is not None:
                    break
                continue
            connection.settimeout(None)
            return connection
        raise UserError(f"the gRPC front end {self._binary} did not start: {self._exit_message()}")

    def _read_port(self, address: str) -> int:
        assert self._process is not None and self._process.stdout is not None
        line = self._process.stdout.readline().split()
        if len(line) == 2 and line[0] == "listening" and line[1].isdigit():
            return int(line[1])
        raise UserError(f"cannot listen on {address} for gRPC: {self._exit_message()}")

    def _exit_message(self) -> str:
        assert self._process is not None
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            return "it did not answer in time"
        assert self._process.stderr is not None
        lines = self._process.stderr.read().strip().splitlines()
        if not lines:
            return f"it exited with status {self._process.returncode}"
        return lines[-1].removeprefix("grpc-frontend: ")  # the fatal one comes last

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _forward_log(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        for line in self._process.stderr:
            log.warning("%s", line.rstrip())

    def stop(self, grace: float = 1.0) -> None:
        """Calls in flight get `grace` seconds to finish: the front end stops taking calls, and
        this side keeps answering until it exits."""
        self._stopping = True  # from here on the socket's end is expected
        if self._process is not None:
            if self._process.poll() is None:
                self._process.terminate()
            try:
                self._process.wait(timeout=grace + 1)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._socket is not None:
            self._socket.close()
        for thread in self._threads:
            thread.join(timeout=10)
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    # --- calls in ------------------------------------------------------------------------

    def _read_calls(self) -> None:
        assert self._socket is not None
        buffer = bytearray()
        try:
            while True:
                chunk = self._socket.recv(_READ_BYTES)
                if not chunk:
                    break
                buffer += chunk
                offset = 0
                while len(buffer) - offset >= _CALL_HEADER.size:
                    size, call_id, method_length = _CALL_HEADER.unpack_from(buffer, offset)
                    end = offset + 4 + size
                    if end > len(buffer):
                        break
                    method_end = offset + _CALL_HEADER.size + method_length
                    method = buffer[offset + _CALL_HEADER.size : method_end].decode()
                    payload = bytes(buffer[method_end:end])
                    offset = end
                    self._dispatch(call_id, method, payload)
                del buffer[:offset]
        except OSError as exc:
            if not self._stopping:
                log.error("the gRPC front end's socket failed: %s", exc)
        if not self._stopping:
            log.error("the gRPC front end exited; the server stops")
            self._on_exit()

    def _dispatch(self, call_id: int, method: str, payload: bytes) -> None:
        if method == PREDICT:
            self._predict(call_id, payload)
        elif not method:
            self._cancelled(call_id)
        else:
            self._handler_executor.submit(self._unary, call_id, method, payload)

    def _unary(self, call_id: int, method: str, payload: bytes) -> None:
        handler = self._methods.get(method)
        if handler is None:
            self._send([_answer(call_id, grpc.StatusCode.UNIMPLEMENTED, b"Method not found!")])
            return
        parse, serve = handler
        context = _RelayContext()
        try:
            response = serve(parse(payload), context)
            if context.code != grpc.StatusCode.OK:
                raise ServingError(context.code, context.details)
            answer = _answer(call_id, grpc.StatusCode.OK, response.SerializeToString())
        except ServingError as exc:
            answer = _answer(call_id, exc.code, exc.message.encode())
        except DecodeError:
            answer = _answer(call_id, grpc.StatusCode.INTERNAL, b"cannot parse the request")
        except Exception as exc:
            log.exception("%s failed", method)
            error = internal(exc)
            answer = _answer(call_id, error.code, error.message.encode())
        self._send([answer])

    # --- Predict -------------------------------------------------------------------------

    def _predict(self, call_id: int, payload: bytes) -> None:
        started = time.perf_counter()
        try:
            request = predict_pb2.PredictRequest.FromString(payload)
        except DecodeError:  # no model named: nothing to count it against
            error = invalid_argument("cannot parse the request")
            self._send([_answer(call_id, error.code, error.message.encode())])
            return
        name, version, label = model_ref(request.model_spec)
        self._pending[call_id] = (name, started)
        try:
            plan = predict_plan(self._core, request, name, version, label)
            served = plan.served
            if served.batched:
                served.enqueue(plan.signature, plan.inputs, self._batch_done, (call_id, plan))
                return
            served.in_flight.acquire()  # released once the call has run
            if len(self._pending) == 1 and served.is_quick(plan.signature):
                self._run_unbatched(call_id, plan)
                return
            try:
                self._model_executor.submit(self._run_unbatched, call_id, plan)
            except BaseException:
                served.in_flight.release()
                raise
        except ServingError as exc:
            self._send_frame(self._failed(call_id, exc))
        except Exception as exc:
            log.exception("Predict failed")
            self._send_frame(self._failed(call_id, internal(exc)))

    def _run_unbatched(self, call_id: int, plan: PredictPlan) -> None:
        run = plan.served.timed_run
        try:
            outputs = self._settle(call_id, plan, lambda: run(plan.signature, plan.inputs))
        finally:
            plan.served.in_flight.release()
        self._send_frame(outputs)

    def _batch_done(self, tasks: list[Task]) -> None:
        frames = []
        for task in tasks:
            waiter: tuple[int, PredictPlan] = task.waiter  # type: ignore[assignment]
            frame = self._settle(*waiter, task.outcome)
            if frame is not None:
                frames.append(frame)
        self._send(frames)

    def _settle(self, call_id: int, plan: PredictPlan, outputs: Callable[[], dict]) -> bytes | None:
        """The answer frame for a model call's outcome, or None for a call already cancelled."""
        try:
            return self._answered(call_id, plan, outputs())
        except ServingError as exc:
            return self._failed(call_id, exc)
        except Exception as exc:
            log.exception("Predict failed")
            return self._failed(call_id, internal(exc))

    def _answered(self, call_id: int, plan: PredictPlan, outputs: dict) -> bytes | None:
        call = self._pending.pop(call_id, None)
        if call is None:
            return None  # cancelled while it ran
        name, started = call
        response = predict_response(name, plan.result(outputs)).SerializeToString()
        self._core.observe(name, "predict", "GRPC", "OK", started)
        return _answer(call_id, grpc.StatusCode.OK, response)

    def _failed(self, call_id: int, error: ServingError) -> bytes | None:
        call = self._pending.pop(call_id, None)
        if call is None:
            return None
        name, started = call
        self._core.observe(name, "predict", "GRPC", error.code_name, started)
        return _answer(call_id, error.code, error.message.encode())

    def _cancelled(self, call_id: int) -> None:
        call = self._pending.pop(call_id, None)
        if call is not None:
            name, started = call
            self._core.observe(name, "predict", "GRPC", "CANCELLED", started)

    # --- answers out ---------------------------------------------------------------------

    def _send_frame(self, frame: bytes | None) -> None:
        if frame is not None:
            self._send([frame])

    def _send(self, frames: list[bytes]) -> None:
        if not frames:
            return
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        assert self._socket is not None
        try:
            with self._send_lock:
                self._socket.sendall(data)
        except OSError as exc:
            if not self._stopping:
                log.error("cannot answer the gRPC front end: %s", exc)
