"""The text-format config files of tensorflow_model_server, read with its own schemas.

ModelServerConfig comes from tensorflow-serving-api. MonitoringConfig, BatchingParameters and
SSLConfig are not shipped in that package, so their schemas are declared here with TF Serving's
field names (text format matches by name), which keeps a file written for the real server valid
here and a typo an error rather than a silently ignored setting.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from tfmaas.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"


def _build_schemas() -> dict[str, Any]:
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)

    F = descriptor_pb2.FieldDescriptorProto
    optional, repeated = F.LABEL_OPTIONAL, F.LABEL_REPEATED

    def field(name: str, number: int, kind: int, type_name: str = "", label: int = optional):
        made = F(name=name, number=number, type=kind, label=label)
        if type_name:  # an empty type_name still counts as set and breaks scalar fields
            made.type_name = type_name
        return made

    i64 = ".google.protobuf.Int64Value"
    proto = descriptor_pb2.FileDescriptorProto(
        name="tfmaas/serving/tfs_configs.proto",
        package="tfmaas.tfs",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
        message_type=[
            descriptor_pb2.DescriptorProto(
                name="PrometheusConfig",
                field=[field("enable", 1, F.TYPE_BOOL), field("path", 2, F.TYPE_STRING)],
            ),
            descriptor_pb2.DescriptorProto(
                name="SamplingConfig",
                field=[field("sampling_rate", 1, F.TYPE_DOUBLE)],
            ),
            descriptor_pb2.DescriptorProto(
                name="MonitoringConfig",
                field=[
                    field("prometheus_config", 1, F.TYPE_MESSAGE, ".tfmaas.tfs.PrometheusConfig"),
                    field("sampling_config", 2, F.TYPE_MESSAGE, ".tfmaas.tfs.SamplingConfig"),
                ],
            ),
            descriptor_pb2.DescriptorProto(
                name="BatchingParameters",
                field=[
                    field("max_batch_size", 1, F.TYPE_MESSAGE, i64),
                    field("batch_timeout_micros", 2, F.TYPE_MESSAGE, i64),
                    field("max_enqueued_batches", 3, F.TYPE_MESSAGE, i64),
                    field("num_batch_threads", 4, F.TYPE_MESSAGE, i64),
                    field("thread_pool_name", 5, F.TYPE_MESSAGE, ".google.protobuf.StringValue"),
                    field("allowed_batch_sizes", 6, F.TYPE_INT64, label=repeated),
                    field("pad_variable_length_inputs", 7, F.TYPE_BOOL),
                    field(
                        "enable_large_batch_splitting",
                        8,
                        F.TYPE_MESSAGE,
                        ".google.protobuf.BoolValue",
                    ),
                    field("max_execution_batch_size", 9, F.TYPE_MESSAGE, i64),
                    field("batch_padding_policy", 10, F.TYPE_STRING),
                ],
            ),
            descriptor_pb2.DescriptorProto(
                name="SSLConfig",
                field=[
                    field("server_key", 1, F.TYPE_STRING),
                    field("server_cert", 2, F.TYPE_STRING),
                    field("custom_ca", 3, F.TYPE_STRING),
                    field("client_verify", 4, F.TYPE_BOOL),
                ],
            ),
        ],
    )
    pool.Add(proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tfmaas.tfs.{name}"))
        for name in ("MonitoringConfig", "BatchingParameters", "SSLConfig")
    }


_SCHEMAS = _build_schemas()
MonitoringConfig = _SCHEMAS["MonitoringConfig"]
BatchingParameters = _SCHEMAS["BatchingParameters"]
SSLConfig = _SCHEMAS["SSLConfig"]


def _parse(text: str, message: Any, source: str) -> Any:
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise UserError(parse_error_message(exc, message, source)) from exc
    return message


def parse_error_message(exc: text_format.ParseError, message: Any, source: str) -> str:
    """The words protobuf's C++ TextFormat parser logs when tensorflow_model_server reads a bad
    file ("Error parsing text-format tensorflow.serving.ModelServerConfig: 3:5: ..."), so that a
    search for TF Serving's error finds this one too; then the file, as server.cc's "Invalid
    protobuf file" names it. All of TF Serving's config messages live in tensorflow.serving."""
    # Python's ParseError reads "3:5 : reason"; C++ writes "3:5: reason".
    reason = re.sub(r"^(\d+(?::\d+)?) : ", r"\1: ", str(exc))
    return (
        f"Error parsing text-format tensorflow.serving.{message.DESCRIPTOR.name}: {reason} "
        f"(Invalid protobuf file: '{source}')"
    )


def _read(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read the {what} file {path}: {exc.strerror}") from exc


def parse_model_server_config(
    text: str, source: str = "model config"
) -> model_server_config_pb2.ModelServerConfig:
    config = _parse(text, model_server_config_pb2.ModelServerConfig(), source)
    if config.WhichOneof("config") == "custom_model_config":
        raise UserError(f"{source}: custom_model_config is not supported; use model_config_list")
    names = [model.name for model in config.model_config_list.config]
    for model in config.model_config_list.config:
        if not model.name or not model.base_path:
            raise UserError(f"{source}: every model needs a name and a base_path")
        if model.model_platform not in ("", "tensorflow"):
            raise UserError(
                f"{source}: model {model.name!r} has platform {model.model_platform!r}; "
                "only 'tensorflow' SavedModels are served"
            )
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise UserError(f"{source}: model names must be unique, repeated: {', '.join(duplicates)}")
    return config


def read_model_server_config(path: str) -> model_server_config_pb2.ModelServerConfig:
    return parse_model_server_config(_read(path, "model config"), path)


def single_model_config(name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
    """What `--model_name` + `--model_base_path` mean: one model, latest version."""
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = name
    model.base_path = base_path
    model.model_platform = "tensorflow"
    return config


@dataclass(frozen=True)
class MonitoringSettings:
    prometheus_enabled: bool = False
    path: str = DEFAULT_METRICS_PATH


def read_monitoring_config(path: str) -> MonitoringSettings:
    if not path:
        return MonitoringSettings()
    config = _parse(_read(path, "monitoring config"), MonitoringConfig(), path)
    prometheus = config.prometheus_config
    metrics_path = prometheus.path or DEFAULT_METRICS_PATH
    if not metrics_path.startswith("/"):
        raise UserError(f"{path}: prometheus_config.path must start with '/', got {metrics_path!r}")
    return MonitoringSettings(prometheus_enabled=prometheus.enable, path=metrics_path)


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class BatchingOptions:
    """TF Serving's BasicBatchScheduler defaults where the file leaves a field out."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 0
    enable_large_batch_splitting: bool = False

    @property
    def threads(self) -> int:
        return self.num_batch_threads or available_cpus()


def parse_batching_parameters(text: str, source: str = "batching parameters") -> BatchingOptions:
    params = _parse(text, BatchingParameters(), source)
    values: dict[str, Any] = {}
    for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches"):
        if params.HasField(name):
            values[name] = getattr(params, name).value
    if params.HasField("num_batch_threads"):
        values["num_batch_threads"] = params.num_batch_threads.value
    if params.HasField("enable_large_batch_splitting"):
        values["enable_large_batch_splitting"] = params.enable_large_batch_splitting.value
    options = BatchingOptions(**values)
    if options.max_batch_size < 1:
        raise UserError(f"{source}: max_batch_size must be >= 1")
    if options.batch_timeout_micros < 0 or options.max_enqueued_batches < 1:
        raise UserError(f"{source}: batch_timeout_micros >= 0 and max_enqueued_batches >= 1")
    if options.num_batch_threads < 0:
        raise UserError(f"{source}: num_batch_threads must be >= 0 (0 = one per CPU)")
    if params.allowed_batch_sizes:
        log.info("%s: allowed_batch_sizes is ignored; batches are not padded", source)
    return options


def read_batching_parameters(path: str) -> BatchingOptions:
    if not path:
        return BatchingOptions()
    return parse_batching_parameters(_read(path, "batching parameters"), path)


@dataclass(frozen=True)
class TlsSettings:
    """TF Serving's SSLConfig: PEM text itself, not file names."""

    server_key: str
    server_cert: str
    custom_ca: str = ""
    client_verify: bool = False


def read_ssl_config(path: str) -> TlsSettings | None:
    """TLS for the gRPC port, or None without `--ssl_config_file` (plain text, as upstream)."""
    if not path:
        return None
    config = _parse(_read(path, "SSL config"), SSLConfig(), path)
    if not config.server_key or not config.server_cert:
        raise UserError(f"{path}: server_key and server_cert (PEM text) are both required")
    if config.client_verify and not config.custom_ca:
        raise UserError(
            f"{path}: client_verify needs custom_ca, the CA (PEM text) client certificates are "
            "checked against"
        )
    return TlsSettings(
        server_key=config.server_key,
        server_cert=config.server_cert,
        custom_ca=config.custom_ca,
        client_verify=config.client_verify,
    )
