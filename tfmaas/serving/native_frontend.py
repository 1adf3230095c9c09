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
frames are `relay_frames`'; the Go process's life is `frontend_process`'; how each Predict ends
exactly once is `relay_predicts`'.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import predict_pb2

from tfmaas.serving.batching import Task
from tfmaas.serving.config import TlsSettings
from tfmaas.serving.core import PredictPlan, ServingCore, internal
from tfmaas.serving.errors import ServingError, invalid_argument
from tfmaas.serving.frontend_process import FrontendProcess
from tfmaas.serving.grpc_service import model_ref, predict_plan
from tfmaas.serving.relay_frames import PREDICT, Call, answer, split_calls
from tfmaas.serving.relay_predicts import PendingPredicts

log = logging.getLogger(__name__)

_READ_BYTES = 1 << 20

# A unary method the relay answers: how to parse its request, and the servicer method that takes
# (request, context) like a grpc handler.
UnaryMethod = tuple[Callable[[bytes], Any], Callable[[Any, Any], Any]]


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
        self._process = FrontendProcess(binary)
        self._core = core
        self._methods = dict(methods)
        self._model_executor = model_executor
        self._handler_executor = handler_executor
        self._on_exit = on_exit
        self._socket: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._stopping = False
        self._predicts = PendingPredicts(core)

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
        channel arguments grpc-go has a setting for and logs that it ignores the others, and
        serves `unix_path` as well when given (--grpc_socket_path); told to stop, it gives calls
        in flight up to `drain_seconds` to finish."""
        flags = [
            f"-grace={drain_seconds}s",
            *(f"-arg={key}={value}" for key, value in channel_arguments),
            *(self._tls_flags(tls) if tls is not None else []),
            *([f"-listen_unix={unix_path}"] if unix_path else []),
        ]
        self._socket, port = self._process.start(flags, address=address)
        self._reader = threading.Thread(target=self._read_calls, name="grpc-relay", daemon=True)
        self._reader.start()
        return port

    def _tls_flags(self, tls: TlsSettings) -> list[str]:
        pems = {"tls_key": tls.server_key, "tls_cert": tls.server_cert, "tls_ca": tls.custom_ca}
        flags = [
            f"-{name}={self._process.write_private_file(f'{name}.pem', text)}"
            for name, text in pems.items()
            if text
        ]
        if tls.client_verify:
            flags.append("-tls_client_verify")
        return flags

    def stop(self, grace: float = 1.0) -> None:
        """Calls in flight get `grace` seconds to finish: the front end stops taking calls, and
        this side keeps answering until it exits."""
        self._stopping = True  # from here on the socket's end is expected
        self._process.stop(grace)
        if self._socket is not None:
            self._socket.close()
        if self._reader is not None:
            self._reader.join(timeout=10)
        self._process.remove_private_dir()

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
                for call in split_calls(buffer):
                    self._dispatch(call)
        except OSError as exc:
            if not self._stopping:
                log.error("the gRPC front end's socket failed: %s", exc)
        if not self._stopping:
            log.error("the gRPC front end exited; the server stops")
            self._on_exit()

    def _dispatch(self, call: Call) -> None:
        if call.method == PREDICT:
            self._predict(call.id, call.payload)
        elif not call.method:
            self._predicts.cancelled(call.id)
        else:
            self._handler_executor.submit(self._unary, call)

    def _unary(self, call: Call) -> None:
        handler = self._methods.get(call.method)
        if handler is None:
            self._send([answer(call.id, grpc.StatusCode.UNIMPLEMENTED, b"Method not found!")])
            return
        parse, serve = handler
        context = _RelayContext()
        try:
            response = serve(parse(call.payload), context)
            if context.code != grpc.StatusCode.OK:
                raise ServingError(context.code, context.details)
            frame = answer(call.id, grpc.StatusCode.OK, response.SerializeToString())
        except ServingError as exc:
            frame = answer(call.id, exc.code, exc.message.encode())
        except DecodeError:
            frame = answer(call.id, grpc.StatusCode.INTERNAL, b"cannot parse the request")
        except Exception as exc:
            log.exception("%s failed", call.method)
            error = internal(exc)
            frame = answer(call.id, error.code, error.message.encode())
        self._send([frame])

    # --- Predict: scheduled here, settled by PendingPredicts ----------------------------

    def _predict(self, call_id: int, payload: bytes) -> None:
        try:
            request = predict_pb2.PredictRequest.FromString(payload)
        except DecodeError:  # no model named: nothing to count it against
            error = invalid_argument("cannot parse the request")
            self._send([answer(call_id, error.code, error.message.encode())])
            return
        name, version, label = model_ref(request.model_spec)
        self._predicts.add(call_id, name)
        try:
            plan = predict_plan(self._core, request, name, version, label)
            served = plan.served
            if served.batched:
                served.enqueue(plan.signature, plan.inputs, self._batch_done, (call_id, plan))
                return
            served.in_flight.acquire()  # released once the call has run
            if len(self._predicts) == 1 and served.is_quick(plan.signature):
                self._run_unbatched(call_id, plan)
                return
            try:
                self._model_executor.submit(self._run_unbatched, call_id, plan)
            except BaseException:
                served.in_flight.release()
                raise
        except ServingError as exc:
            self._send_frame(self._predicts.failed(call_id, exc))
        except Exception as exc:
            log.exception("Predict failed")
            self._send_frame(self._predicts.failed(call_id, internal(exc)))

    def _run_unbatched(self, call_id: int, plan: PredictPlan) -> None:
        run = plan.served.timed_run
        try:
            frame = self._predicts.settle(call_id, plan, lambda: run(plan.signature, plan.inputs))
        finally:
            plan.served.in_flight.release()
        self._send_frame(frame)

    def _batch_done(self, tasks: list[Task]) -> None:
        frames = []
        for task in tasks:
            waiter: tuple[int, PredictPlan] = task.waiter  # type: ignore[assignment]
            frame = self._predicts.settle(*waiter, task.outcome)
            if frame is not None:
                frames.append(frame)
        self._send(frames)

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
