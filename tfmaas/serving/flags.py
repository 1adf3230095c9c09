"""The tensorflow_model_server flags `tfmaas serve` accepts, with TF Serving's names and defaults.

The operator writes one container command line for both servers, so every flag here keeps its
upstream spelling (`--flag=value`, booleans as `--flag`, `--flag=true|false`) and meaning.
Flags TF Serving has that only tune its C++ internals are accepted and ignored, so a command line
written for the real server never fails here; a flag whose value would change behaviour that
tfmaas does not have is refused at start-up instead (`_REFUSED_FLAGS`), never silently ignored.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields

from tfmaas.errors import UserError

# The request caps' defaults. Sized for the default 2Gi serving pod: 1 Mi one-byte strings through
# the demo text model (decode, model and answer) peak at about 270 MiB. An image model may need
# more: raise them. They live here, not in limits.py, so that parsing flags (which every `tfmaas`
# command does) needs neither gRPC nor TensorFlow: the operator image has neither.
DEFAULT_MAX_ELEMENTS = 1 << 20
DEFAULT_MAX_BYTES = 64 << 20

_TRUE = {"true", "1", "yes", "t", "y"}
_FALSE = {"false", "0", "no", "f", "n"}


def parse_bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


FRONTENDS = ("auto", "native", "python")


@dataclass
class ServerFlags:
    port: int = 8500
    rest_api_port: int = 0
    rest_api_num_threads: int = 0
    rest_api_timeout_in_ms: int = 30000
    bind_address: str = "0.0.0.0"
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    file_system_poll_wait_seconds: int = 1
    monitoring_config_file: str = ""
    enable_batching: bool = False
    batching_parameters_file: str = ""
    grpc_channel_arguments: str = ""
    grpc_max_threads: int = 0
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    tensorflow_session_parallelism: int = 0
    allow_version_labels_for_unavailable_models: bool = False
    per_process_gpu_memory_fraction: float = 0.0
    # A text-format tensorflow.serving.SSLConfig: TLS on the gRPC port, as TF Serving does.
    ssl_config_file: str = ""
    # tfmaas's own: which gRPC front end answers on --port (see FRONTENDS).
    grpc_frontend: str = "auto"
    # tfmaas's own: unbatched Predict calls running or waiting for a model thread, over all
    # models and both protocols; one more is refused with RESOURCE_EXHAUSTED (0 = see
    # `unbatched_in_flight_limit`). Batched calls are bounded by max_enqueued_batches instead.
    max_in_flight_unbatched_requests: int = 0
    # tfmaas's own: on SIGTERM or SIGINT, how long calls in flight may take to finish after
    # the ports stop taking new ones; below Kubernetes' default 30 s grace period.
    drain_timeout_seconds: float = 20.0
    # tfmaas's own bounds on what one Predict request may decode into, over all its inputs
    # (gRPC and REST): a tensor's declared shape, not its bytes on the wire, decides its cost.
    # TF Serving has no such cap; a request over one gets INVALID_ARGUMENT (REST 400).
    max_request_elements: int = DEFAULT_MAX_ELEMENTS
    max_request_tensor_bytes: int = DEFAULT_MAX_BYTES
    # TF Serving answers ModelService/HandleReloadConfigRequest for any client of its gRPC port,
    # so anyone who can reach it can unload every model; tfmaas refuses it (PERMISSION_DENIED)
    # unless this is true.
    allow_grpc_config_reload: bool = False
    # TF Serving's: also serve gRPC on this Unix socket (both front ends, same credentials).
    grpc_socket_path: str = ""
    # TF Serving's: a version that fails to load is tried this many more times, this far apart.
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    # TF Serving's: replay a version's assets.extra/tf_serving_warmup_requests before serving it.
    enable_model_warmup: bool = True
    # TF Serving's: serve a version's model.tflite (tf.lite.Interpreter) instead of its SavedModel.
    prefer_tflite_model: bool = False
    # TF Serving's: false refuses configs with version_labels (FAILED_PRECONDITION, so start-up
    # fails); true (its default) allows them.
    allow_version_labels: bool = True
    # TF Serving's: Predict refuses (INTERNAL) a signature whose method is not predict, classify
    # or regress.
    enable_signature_method_name_check: bool = False

    def validate(self) -> None:
        if self.model_config_file and self.model_base_path:
            raise UserError(
                "--model_config_file and --model_base_path are exclusive: list the models in the "
                "config file, or serve one model with --model_name and --model_base_path"
            )
        if not self.model_config_file and not self.model_base_path:
            raise UserError(
                "nothing to serve: pass --model_base_path=DIR (with --model_name) or "
                "--model_config_file=FILE"
            )
        for name in ("port", "rest_api_port"):
            value = getattr(self, name)
            if not 0 <= value <= 65535:
                raise UserError(f"--{name}={value} is not a TCP port (0..65535)")
        if self.port and self.port == self.rest_api_port:
            raise UserError("--port and --rest_api_port must differ")
        if not 0.0 <= self.per_process_gpu_memory_fraction <= 1.0:
            raise UserError("--per_process_gpu_memory_fraction must be between 0 and 1")
        if self.grpc_frontend not in FRONTENDS:
            raise UserError(
                f"--grpc_frontend={self.grpc_frontend} is not one of {', '.join(FRONTENDS)}: "
                "native relays gRPC through tools/grpc-frontend, python serves it in-process, "
                "auto picks native when its binary is found"
            )
        for name in ("rest_api_num_threads", "max_in_flight_unbatched_requests"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name} must be >= 0 (0 picks the default)")
        if self.rest_api_timeout_in_ms <= 0:
            raise UserError("--rest_api_timeout_in_ms must be > 0")
        if self.drain_timeout_seconds < 0:
            raise UserError("--drain_timeout_seconds must be >= 0")
        for name in ("max_request_elements", "max_request_tensor_bytes"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be at least 1")
        if self.max_num_load_retries < 0 or self.load_retry_interval_micros < 0:
            raise UserError("--max_num_load_retries and --load_retry_interval_micros must be >= 0")
        if len(os.fsencode(self.grpc_socket_path)) > MAX_UNIX_PATH_BYTES:
            raise UserError(
                f"--grpc_socket_path is longer than a Unix socket path may be "
                f"({MAX_UNIX_PATH_BYTES} bytes); pick a shorter path"
            )
        if self.file_system_poll_wait_seconds < 0 or self.model_config_file_poll_wait_seconds < 0:
            raise UserError("poll intervals must be >= 0 seconds (0 turns polling off)")

    @property
    def grpc_threads(self) -> int:
        # Unbatched model calls each hold a thread while the model runs, so a concurrency of
        # N clients needs N threads; TF Serving's default is 4 per core.
        return self.grpc_max_threads or max(64, 4 * (os.cpu_count() or 1))

    @property
    def rest_threads(self) -> int:
        # TF Serving's default: 4 per schedulable CPU (its http_num_threads).
        return self.rest_api_num_threads or 4 * len(os.sched_getaffinity(0))

    @property
    def unbatched_in_flight_limit(self) -> int:
        # A call running on each model thread plus one waiting for each: enough to keep every
        # thread busy, while a burst beyond it is told to back off instead of queueing.
        return self.max_in_flight_unbatched_requests or 2 * self.grpc_threads


# sockaddr_un.sun_path holds 108 bytes on Linux, the last one a NUL.
MAX_UNIX_PATH_BYTES = 107

# Upstream flags that only tune TF Serving's C++ runtime (thread counts, XLA, file system caches)
# and change no answer: accepted with any value, so one command line fits both servers.
_TUNING_FLAGS = (
    "num_load_threads",
    "num_unload_threads",
    "xla_cpu_compilation_enabled",
    "flush_filesystem_caches",
)


@dataclass(frozen=True)
class _Refused:
    """An upstream flag tfmaas does not implement: only values that keep TF Serving's default
    behaviour are accepted, anything else stops the server before it serves."""

    accepted: frozenset[str]
    why: str


_REFUSED_FLAGS = {
    "saved_model_tags": _Refused(
        frozenset({"serve"}), "only the MetaGraph tagged 'serve' is loaded (TF Serving's default)"
    ),
    "platform_config_file": _Refused(
        frozenset({""}), "only the TensorFlow SavedModel platform is served; remove the flag"
    ),
    "rest_api_enable_cors_support": _Refused(
        frozenset(_FALSE), "the REST API sends no CORS headers; put a proxy in front for them"
    ),
}


def _normalized(value: str) -> str:
    return value.strip().lower() if value.strip().lower() in _TRUE | _FALSE else value.strip()


def check_refused(args: argparse.Namespace) -> None:
    """Stop at start-up on a refused flag set to a value that would change behaviour."""
    for name, refused in _REFUSED_FLAGS.items():
        value = getattr(args, name)
        if value is None or _normalized(value) in refused.accepted:
            continue
        raise UserError(
            f"--{name} is not supported by tfmaas serve with this value: {refused.why}. "
            f"Accepted: {', '.join(sorted(refused.accepted - {''}) or ['empty'])}"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ServerFlags()
    for field in fields(ServerFlags):
        default = getattr(defaults, field.name)
        if field.type in (bool, "bool"):
            parser.add_argument(
                f"--{field.name}",
                type=parse_bool,
                nargs="?",
                const=True,
                default=default,
                metavar="BOOL",
            )
        elif field.type in (int, "int"):
            parser.add_argument(f"--{field.name}", type=int, default=default, metavar="N")
        elif field.type in (float, "float"):
            parser.add_argument(f"--{field.name}", type=float, default=default, metavar="X")
        else:
            parser.add_argument(f"--{field.name}", default=default, metavar="VALUE")
    for name in (*_TUNING_FLAGS, *_REFUSED_FLAGS):
        # A bare `--flag` is `true`, as for the boolean flags above.
        parser.add_argument(
            f"--{name}", nargs="?", const="true", default=None, help=argparse.SUPPRESS
        )


def from_namespace(args: argparse.Namespace) -> ServerFlags:
    check_refused(args)
    values = {field.name: getattr(args, field.name) for field in fields(ServerFlags)}
    flags = ServerFlags(**values)
    flags.validate()
    return flags


def parse(argv: list[str]) -> ServerFlags:
    parser = argparse.ArgumentParser(prog="tfmaas serve", allow_abbrev=False)
    add_arguments(parser)
    return from_namespace(parser.parse_args(argv))


def parse_channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """`grpc.max_connection_age_ms=30000,grpc.http2.max_pings_without_data=0` -> server options."""
    options: list[tuple[str, int | str]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(
                f"--grpc_channel_arguments: {item!r} is not key=value; "
                "example: grpc.max_connection_age_ms=30000"
            )
        value = value.strip()
        try:
            options.append((key.strip(), int(value)))
        except ValueError:
            options.append((key.strip(), value))
    return options
