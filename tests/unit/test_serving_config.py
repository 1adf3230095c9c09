"""The text-format config files TF Serving reads: model config, monitoring, batching, SSL."""

from __future__ import annotations

import pytest

from tfmaas.errors import UserError
from tfmaas.serving.config import (
    BatchingOptions,
    TlsSettings,
    parse_batching_parameters,
    parse_model_server_config,
    read_monitoring_config,
    read_ssl_config,
    single_model_config,
)

MODEL_CONFIG = """
model_config_list {
  config {
    name: "sentiment"
    base_path: "/models/sentiment"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 3 versions: 4 } }
    version_labels { key: "stable" value: 3 }
    version_labels { key: "canary" value: 4 }
  }
}
"""


def test_model_config_reads_policy_and_labels() -> None:
    config = parse_model_server_config(MODEL_CONFIG)
    model = config.model_config_list.config[0]
    assert model.name == "sentiment"
    assert list(model.model_version_policy.specific.versions) == [3, 4]
    assert dict(model.version_labels) == {"stable": 3, "canary": 4}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model_config_list { config { name: 'a' } }", "name and a base_path"),
        ("model_config_list { config { nme: 'a' } }", "Error parsing text-format"),
        (
            "model_config_list { config { name: 'a' base_path: '/a' } "
            "config { name: 'a' base_path: '/b' } }",
            "unique",
        ),
        (
            "model_config_list { config { name: 'a' base_path: '/a' model_platform: 'onnx' } }",
            "only 'tensorflow'",
        ),
    ],
)
def test_bad_model_config_is_rejected_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_model_server_config(text)


def test_single_model_flags_mean_one_model_latest_version() -> None:
    model = single_model_config("m", "/models/m").model_config_list.config[0]
    assert (model.name, model.base_path) == ("m", "/models/m")
    assert model.model_version_policy.WhichOneof("policy_choice") is None


def test_monitoring_config_enables_prometheus(tmp_path) -> None:
    path = tmp_path / "monitoring.config"
    path.write_text('prometheus_config { enable: true, path: "/metrics" }\n')
    settings = read_monitoring_config(str(path))
    assert settings.prometheus_enabled and settings.path == "/metrics"
    path.write_text("prometheus_config { enable: true }\n")
    assert read_monitoring_config(str(path)).path == "/monitoring/prometheus/metrics"
    assert not read_monitoring_config("").prometheus_enabled
    path.write_text("prometheus_config { enabled: true }\n")
    with pytest.raises(UserError, match="MonitoringConfig"):
        read_monitoring_config(str(path))


def test_batching_parameters_use_wrapper_syntax_and_upstream_defaults() -> None:
    options = parse_batching_parameters(
        "max_batch_size { value: 32 }\n"
        "batch_timeout_micros { value: 2000 }\n"
        "num_batch_threads { value: 0 }\n"
        "allowed_batch_sizes: 8\n"
        "pad_variable_length_inputs: true\n"
    )
    assert options.max_batch_size == 32
    assert options.batch_timeout_micros == 2000
    assert options.max_enqueued_batches == BatchingOptions().max_enqueued_batches
    assert options.threads >= 1  # 0 means one per CPU
    with pytest.raises(UserError, match="BatchingParameters"):
        parse_batching_parameters("max_batch_size: 32\n")  # upstream needs { value: N }
    with pytest.raises(UserError, match="max_batch_size"):
        parse_batching_parameters("max_batch_size { value: 0 }\n")


def test_ssl_config_is_tf_serving_text_proto_with_pem_text(tmp_path) -> None:
    path = tmp_path / "ssl.config"
    path.write_text(
        'server_key: "-----BEGIN PRIVATE KEY-----\\nk\\n"\n'
        'server_cert: "-----BEGIN CERTIFICATE-----\\nc\\n"\n'
        'custom_ca: "ca"\nclient_verify: true\n'
    )
    settings = read_ssl_config(str(path))
    assert settings == TlsSettings(
        server_key="-----BEGIN PRIVATE KEY-----\nk\n",
        server_cert="-----BEGIN CERTIFICATE-----\nc\n",
        custom_ca="ca",
        client_verify=True,
    )
    assert read_ssl_config("") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('server_cert: "c"\n', "server_key and server_cert"),
        ('server_key: "k"\nserver_cert: "c"\nclient_verify: true\n', "client_verify needs"),
        ('server_key: "k"\nserver_crt: "c"\n', "SSLConfig"),
    ],
)
def test_bad_ssl_config_is_refused_at_start_up(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "ssl.config"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        read_ssl_config(str(path))


def test_a_config_that_does_not_parse_is_reported_in_tf_servings_words() -> None:
    # protobuf's C++ TextFormat, as tensorflow_model_server logs it for the same file.
    with pytest.raises(UserError) as raised:
        parse_model_server_config("model_config_list {\n  config { nme: 'a' }\n}\n", "m.config")
    assert str(raised.value) == (
        "Error parsing text-format tensorflow.serving.ModelServerConfig: 2:12: Message type "
        '"tensorflow.serving.ModelConfig" has no field named "nme". '
        "(Invalid protobuf file: 'm.config')"
    )


def test_every_config_file_names_its_tf_serving_message_type() -> None:
    with pytest.raises(
        UserError,
        match=r"^Error parsing text-format tensorflow\.serving\."
        r"BatchingParameters: 1:1: ",
    ):
        parse_batching_parameters("max_batch_sise { value: 2 }")
