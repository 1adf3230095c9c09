"""The embedded model server: loads models, serves gRPC and REST, keeps polling for changes.

Like tensorflow_model_server it loads the initial models before it opens its ports, so a
readiness probe that finds the port open can already predict.

gRPC has two front ends over the same services: the native one (`native_frontend`, a Go program
relaying raw calls; the default when its binary is found) and grpc.aio in this process
(`grpc_service`).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tfmaas.errors import UserError
from tfmaas.serving import config as config_files
from tfmaas.serving import warmup
from tfmaas.serving.config import TlsSettings
from tfmaas.serving.core import ServingCore
from tfmaas.serving.errors import ServingError
from tfmaas.serving.flags import ServerFlags, parse_channel_arguments
from tfmaas.serving.frontend_process import find_binary
from tfmaas.serving.grpc_service import ModelServicer, PredictionServicer
from tfmaas.serving.http_server import RestServer
from tfmaas.serving.limits import MAX_REQUEST_BYTES, InFlightLimit, RequestLimits
from tfmaas.serving.loading import load_with_retries
from tfmaas.serving.loop_thread import LoopThread
from tfmaas.serving.metrics import ServingMetrics
from tfmaas.serving.native_frontend import NativeFrontend, UnaryMethod
from tfmaas.serving.registry import Registry
from tfmaas.serving.rest import RestApi
from tfmaas.serving.runner import ServedVersion
from tfmaas.serving.servable import Servable
from tfmaas.serving.tflite import TfLiteServable, has_tflite_model

log = logging.getLogger(__name__)

# TF Serving lifts gRPC's 4 MiB default to the most gRPC takes (server.cc:
# builder.SetMaxMessageSize(kint32max)), so one call may make the server hold 2 GiB before
# anything looks at it. tfmaas receives at most what REST takes (MAX_REQUEST_BYTES): a message
# that large decodes over --max_request_tensor_bytes anyway. Answers keep TF Serving's ceiling.
# --grpc_channel_arguments=grpc.max_receive_message_length=N changes it on both front ends.
_MAX_SEND_BYTES = 2**31 - 1
# Calls one HTTP/2 connection may have open at once (HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS);
# a client queues the ones over it on its side. 100 is the floor RFC 9113 recommends; gRPC's own
# default is unbounded. --grpc_channel_arguments=grpc.max_concurrent_streams=N changes it.
_MAX_CONCURRENT_STREAMS = 100
_tensorflow_configured = False
# How soon `wait` notices a signal; the handler itself may take no lock to wake it sooner.
_SIGNAL_POLL_SECONDS = 0.2


def configure_tensorflow(intra_op: int, inter_op: int, gpu_memory_fraction: float = 0.0) -> None:
    """Thread pools sized for the pod, not the node; GPU memory taken as needed, not all at
    once. Must run before TensorFlow executes its first op; later calls change nothing."""
    global _tensorflow_configured
    if _tensorflow_configured:
        return
    import tensorflow as tf

    try:
        if intra_op > 0:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        if inter_op > 0:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op)
        if gpu_memory_fraction > 0:
            # Memory growth is what a fraction is for: leave room for other processes.
            for gpu in tf.config.list_physical_devices("GPU"):
                tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError as exc:
        log.warning("TensorFlow already initialized; %s", exc)
    _tensorflow_configured = True


def _server_credentials(tls: TlsSettings) -> grpc.ServerCredentials:
    """What TF Serving builds from its SSLConfig: client certificates required and verified
    against custom_ca only with client_verify."""
    return grpc.ssl_server_credentials(
        [(tls.server_key.encode(), tls.server_cert.encode())],
        root_certificates=tls.custom_ca.encode() or None,
        require_client_auth=tls.client_verify,
    )


class ModelServer:
    def __init__(self, flags: ServerFlags) -> None:
        flags.validate()
        self.flags = flags
        self._monitoring = config_files.read_monitoring_config(flags.monitoring_config_file)
        self._batching = (
            config_files.read_batching_parameters(flags.batching_parameters_file)
            if flags.enable_batching
            else None
        )
        self._channel_options = parse_channel_arguments(flags.grpc_channel_arguments)
        self._tls = config_files.read_ssl_config(flags.ssl_config_file)
        self.metrics = ServingMetrics() if self._monitoring.prometheus_enabled else None
        self.registry = Registry(
            self._load,
            allow_labels_for_unavailable=flags.allow_version_labels_for_unavailable_models,
            allow_version_labels=flags.allow_version_labels,
        )
        self.core = ServingCore(
            self.registry,
            self.metrics,
            RequestLimits.of(flags),
            method_name_check=flags.enable_signature_method_name_check,
        )
        self._unbatched = InFlightLimit(
            flags.unbatched_in_flight_limit, flag="max_in_flight_unbatched_requests"
        )
        self._health = health.HealthServicer()
        self.registry.on_change = self._update_health
        self._grpc: grpc.aio.Server | None = None
        self._native: NativeFrontend | None = None
        self.grpc_frontend = ""  # "native" or "python" once started
        self._loop: LoopThread | None = None
        self._model_executor: futures.ThreadPoolExecutor | None = None
        self._handler_executor: futures.ThreadPoolExecutor | None = None
        self._rest: RestServer | None = None
        self._rest_api: RestApi | None = None
        self._stop = threading.Event()
        self._signal_received: int | None = None  # written by the signal handler alone
        self._pollers: list[threading.Thread] = []
        self.grpc_port = 0
        self.rest_port = 0
        self._applied_config_text = ""
        self.failure = ""  # why serving stopped on its own, if it did

    def _load(self, name: str, version: int, path: Path) -> ServedVersion:
        return load_with_retries(
            lambda: self._load_once(name, version, path),
            retries=self.flags.max_num_load_retries,
            interval_s=self.flags.load_retry_interval_micros / 1e6,
            stop=self._stop,
            what=f"servable {{name: {name} version: {version}}}",
        )

    def _load_once(self, name: str, version: int, path: Path) -> ServedVersion:
        started = time.monotonic()
        try:
            if self.flags.prefer_tflite_model and has_tflite_model(path):
                servable: Servable = TfLiteServable(name, version, path)
            else:
                servable = Servable(name, version, path)
        except BaseException:
            self._record_load(path, started, ok=False)
            raise
        self._record_load(path, started, ok=True)
        metrics = self.metrics
        served = ServedVersion(
            servable,
            self._batching,
            self._unbatched,
            on_batch=None
            if metrics is None
            else lambda rows: metrics.record_batch(model_name=name, rows=rows),
        )
        requests = warmup.warmup_file(path) if self.flags.enable_model_warmup else None
        if requests is not None:
            try:
                count = warmup.replay(served, name, requests, self.core.limits)
            except BaseException:
                served.close()
                raise
            log.info(
                "Finished reading warmup data for model at %s. Number of warmup records read: %d.",
                path,
                count,
            )
        return served

    def _record_load(self, path: Path, started: float, *, ok: bool) -> None:
        if self.metrics is not None:
            self.metrics.record_load(
                model_path=str(path), seconds=time.monotonic() - started, ok=ok
            )

    def _initial_config(self):
        if self.flags.model_config_file:
            source = self.flags.model_config_file
            try:
                text = Path(source).read_text(encoding="utf-8")
            except OSError as exc:
                raise UserError(f"cannot read the model config file {source}: {exc}") from exc
            self._applied_config_text = text
            return config_files.parse_model_server_config(text, source)
        return config_files.single_model_config(self.flags.model_name, self.flags.model_base_path)

    def start(self) -> None:
        configure_tensorflow(
            self.flags.tensorflow_intra_op_parallelism,
            self.flags.tensorflow_inter_op_parallelism or self.flags.tensorflow_session_parallelism,
            self.flags.per_process_gpu_memory_fraction,
        )
        try:
            self.registry.apply_config(self._initial_config())
        except ServingError as exc:
            raise UserError(
                f"Failed to start server. Error: {exc.code_name}: {exc.message}"
            ) from exc
        self._refuse_failed_loads()
        try:
            self._start_grpc()
            if self.flags.rest_api_port:
                self._start_rest()
        except BaseException:
            self.stop(grace=0)  # whatever did start: the loop, its thread pools, a port
            raise
        self._start_pollers()
        log.info(
            "Serving gRPC on %s:%d (%s front end)%s",
            self.flags.bind_address,
            self.grpc_port,
            self.grpc_frontend,
            f", REST on port {self.rest_port}" if self.rest_port else "",
        )

    def _refuse_failed_loads(self) -> None:
        """TF Serving waits for every configured model's aspired versions at start-up and exits
        when one ends in error (server_core.cc, WaitUntilModelsAvailable: "Some servables were
        not available"); a server up with a model missing would pass readiness and then answer
        NOT_FOUND."""
        failures = self.registry.load_failures()
        if not failures:
            return
        reasons = ", ".join(
            f"{{name: {name} version: {version}}} due to error: {error}"
            for name, version, error in failures
        )
        self.registry.close()
        message = (
            "Failed to start server. Error: UNKNOWN: Some servables were not available: "
            f"{{{reasons}}}"
        )
        log.error("%s", message)
        raise UserError(message)

    def _start_grpc(self) -> None:
        options: list[tuple[str, int | str]] = [
            ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
            ("grpc.max_send_message_length", _MAX_SEND_BYTES),
            ("grpc.max_concurrent_streams", _MAX_CONCURRENT_STREAMS),
            ("grpc.so_reuseport", 0),
        ]
        overridden = {key for key, _ in self._channel_options}
        options = [opt for opt in options if opt[0] not in overridden] + self._channel_options
        threads = self.flags.grpc_threads
        # Unbatched model calls, one thread per concurrent request as TF Serving runs them.
        self._model_executor = futures.ThreadPoolExecutor(threads, thread_name_prefix="model")
        # The synchronous handlers: metadata, status, config reload, health, classify/regress.
        self._handler_executor = futures.ThreadPoolExecutor(
            max(4, threads // 8), thread_name_prefix="grpc"
        )
        binary = self._frontend_binary()
        if binary is not None:
            self._start_native(binary, options)
            return
        self.grpc_frontend = "python"
        self._loop = LoopThread("grpc-loop")
        self._grpc, self.grpc_port = self._loop.run(
            self._serve_grpc(options, self._model_executor, self._handler_executor)
        )

    def _frontend_binary(self) -> Path | None:
        wanted = self.flags.grpc_frontend
        if wanted == "python":
            return None
        binary = find_binary()
        if binary is None and wanted == "native":
            raise UserError(
                "--grpc_frontend=native: the tfmaas-grpc-frontend binary is not on PATH; build "
                "it with `tfmaas dev tools build grpc-frontend` (needs Go), point "
                "TFMAAS_GRPC_FRONTEND at it, or use --grpc_frontend=python"
            )
        return binary

    def _start_native(self, binary: Path, options: list[tuple[str, int | str]]) -> None:
        assert self._model_executor is not None and self._handler_executor is not None
        self._native = NativeFrontend(
            binary,
            self.core,
            self._unary_methods(),
            self._model_executor,
            self._handler_executor,
            on_exit=self._front_end_exited,
        )
        self.grpc_frontend = "native"
        self.grpc_port = self._native.start(
            f"{self.flags.bind_address}:{self.flags.port}",
            options,
            drain_seconds=self.flags.drain_timeout_seconds,
            tls=self._tls,
            unix_path=self.flags.grpc_socket_path,
        )

    def _unary_methods(self) -> dict[str, UnaryMethod]:
        """Every unary method but Predict (the relay's own fast path), as the relay calls them."""
        assert self._model_executor is not None
        prediction = PredictionServicer(self.core, self._model_executor)
        models = ModelServicer(self.core, allow_reload=self.flags.allow_grpc_config_reload)
        predictions = "/tensorflow.serving.PredictionService/"
        return {
            predictions + "GetModelMetadata": (
                get_model_metadata_pb2.GetModelMetadataRequest.FromString,
                prediction.GetModelMetadata,
            ),
            predictions + "Classify": (
                classification_pb2.ClassificationRequest.FromString,
                prediction.Classify,
            ),
            predictions + "Regress": (
                regression_pb2.RegressionRequest.FromString,
                prediction.Regress,
            ),
            predictions + "MultiInference": (
                inference_pb2.MultiInferenceRequest.FromString,
                prediction.MultiInference,
            ),
            "/tensorflow.serving.ModelService/GetModelStatus": (
                get_model_status_pb2.GetModelStatusRequest.FromString,
                models.GetModelStatus,
            ),
            "/tensorflow.serving.ModelService/HandleReloadConfigRequest": (
                model_management_pb2.ReloadConfigRequest.FromString,
                models.HandleReloadConfigRequest,
            ),
            "/grpc.health.v1.Health/Check": (
                health_pb2.HealthCheckRequest.FromString,
                self._health.Check,
            ),
        }

    async def _serve_grpc(
        self,
        options: list[tuple[str, int | str]],
        model_executor: futures.Executor,
        handler_executor: futures.Executor,
    ) -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server(migration_thread_pool=handler_executor, options=options)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.core, model_executor), server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(self.core, allow_reload=self.flags.allow_grpc_config_reload), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        address = f"{self.flags.bind_address}:{self.flags.port}"
        try:
            if self._tls is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, _server_credentials(self._tls))
        except RuntimeError as exc:
            raise UserError(f"cannot listen on {address} for gRPC: {exc}") from exc
        if self.flags.grpc_socket_path:
            self._add_unix_port(server)
        await server.start()
        return server, port

    def _add_unix_port(self, server: grpc.aio.Server) -> None:
        """TF Serving's --grpc_socket_path: the same services, with the same credentials."""
        path = self.flags.grpc_socket_path
        address = f"unix:{path}"
        try:
            if self._tls is None:
                server.add_insecure_port(address)
            else:
                server.add_secure_port(address, _server_credentials(self._tls))
        except RuntimeError as exc:
            raise UserError(f"cannot listen on --grpc_socket_path {path}: {exc}") from exc

    def _start_rest(self) -> None:
        api = self._rest_api = RestApi(self.core, self._monitoring.path if self.metrics else None)
        address = f"{self.flags.bind_address}:{self.flags.rest_api_port}"
        try:
            self._rest = RestServer(
                api,
                self.flags.bind_address,
                self.flags.rest_api_port,
                threads=self.flags.rest_threads,
                timeout_s=self.flags.rest_api_timeout_in_ms / 1000,
            )
        except OSError as exc:
            raise UserError(f"cannot listen on {address} for REST: {exc.strerror}") from exc
        self._rest.start()
        self.rest_port = self._rest.port

    def _start_pollers(self) -> None:
        if self.flags.file_system_poll_wait_seconds > 0:
            self._poll_every(self.flags.file_system_poll_wait_seconds, self.registry.poll, "fs")
        if self.flags.model_config_file and self.flags.model_config_file_poll_wait_seconds > 0:
            self._poll_every(
                self.flags.model_config_file_poll_wait_seconds, self._reload_config, "config"
            )

    def _poll_every(self, seconds: float, action, name: str) -> None:
        def loop() -> None:
            while not self._stop.wait(seconds):
                try:
                    action()
                except Exception as exc:  # a bad poll is logged; serving goes on
                    log.error("%s poll failed: %s", name, exc)

        thread = threading.Thread(target=loop, name=f"poll-{name}", daemon=True)
        thread.start()
        self._pollers.append(thread)

    def _reload_config(self) -> None:
        """Applied every poll, changed or not: the file is what should be served, so a model a
        gRPC reload took away comes back within one poll."""
        text = Path(self.flags.model_config_file).read_text(encoding="utf-8")
        source = self.flags.model_config_file
        self.registry.apply_config(config_files.parse_model_server_config(text, source))
        if text != self._applied_config_text:
            self._applied_config_text = text
            log.info("Applied the changed model config %s", source)

    def _update_health(self) -> None:
        names = self.registry.model_names()
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        for name in names:
            self._health.set(name, serving if self.registry.has_available(name) else not_serving)
        all_up = bool(names) and all(self.registry.has_available(n) for n in names)
        self._health.set("", serving if all_up else not_serving)

    def _front_end_exited(self) -> None:
        self.failure = "the native gRPC front end exited"
        self._stop.set()

    def request_stop(self) -> None:
        """Make `wait` return. Not from a signal handler: see `stop_on_signals`."""
        self._stop.set()

    def wait(self) -> None:
        """Until `request_stop`, a signal (`stop_on_signals`), or until the server can no longer
        serve (see `failure`)."""
        while not self._stop.wait(timeout=_SIGNAL_POLL_SECONDS):
            if self._signal_received is not None:
                log.info("Got %s; shutting down", signal.Signals(self._signal_received).name)
                self._stop.set()

    def stop(self, grace: float | None = None) -> None:
        """Shut down gracefully: health turns NOT_SERVING (gRPC health, REST model status),
        both ports stop taking connections and calls (gRPC sends GOAWAY), calls in flight get
        up to `grace` seconds (default --drain_timeout_seconds) to finish, then all is closed."""
        if grace is None:
            grace = self.flags.drain_timeout_seconds
        deadline = time.monotonic() + grace
        self._stop.set()
        self._health.enter_graceful_shutdown()
        if self._rest_api is not None:
            self._rest_api.draining = True
        log.info("Shutting down: health is NOT_SERVING")
        if self._rest is not None:
            self._rest.stop_accepting()
        log.info("Shutting down: no longer accepting calls; those in flight get up to %.0fs", grace)
        if self._native is not None:
            self._native.stop(grace)
            self._native = None
        if self._grpc is not None and self._loop is not None:
            self._loop.run(self._grpc.stop(grace))
            self._grpc = None
        if self._loop is not None:
            self._loop.close()
            self._loop = None
        for executor in (self._model_executor, self._handler_executor):
            if executor is not None:
                executor.shutdown(wait=True)
        self._model_executor = self._handler_executor = None
        if self._rest is not None:
            self._rest.stop(max(0.0, deadline - time.monotonic()))
            self._rest = None
        for thread in self._pollers:
            thread.join(timeout=5)
        self.registry.close()

    def stop_on_signals(self) -> None:
        """Make SIGTERM (how a pod is stopped) and SIGINT (Ctrl-C, or a process manager) end
        `wait`, whatever disposition this process inherited: a background job of a
        non-interactive shell starts with SIGINT ignored, and Python then installs no
        KeyboardInterrupt handler. A second signal ends the process at once. Main thread only."""

        def stop(signum: int, _frame: object) -> None:
            # Only a plain assignment: the handler runs in the main thread between two of its
            # bytecodes, maybe while it holds the lock of the Event `wait` waits on (Event.set
            # here deadlocked a stopping `tfmaas local run`) or writes to the log's stream.
            self._signal_received = signum
            signal.signal(signum, signal.SIG_DFL)

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, stop)

    def __enter__(self) -> ModelServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
