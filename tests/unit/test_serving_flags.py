"""tensorflow_model_server flag syntax and meaning, as `tfmaas serve` parses them."""

from __future__ import annotations

import pytest

from tfmaas.errors import UserError
from tfmaas.serving.flags import ServerFlags, parse, parse_channel_arguments
from tfmaas.serving.limits import DEFAULT_MAX_BYTES, DEFAULT_MAX_ELEMENTS, RequestLimits


def test_flags_take_tf_serving_syntax_and_defaults() -> None:
    flags = parse(
        [
            "--port=9000",
            "--rest_api_port=9001",
            "--model_name=sentiment",
            "--model_base_path=/models/sentiment",
            "--enable_batching",
            "--tensorflow_intra_op_parallelism=2",
        ]
    )
    assert (flags.port, flags.rest_api_port) == (9000, 9001)
    assert flags.model_name == "sentiment"
    assert flags.enable_batching is True
    assert flags.tensorflow_intra_op_parallelism == 2
    assert flags.file_system_poll_wait_seconds == 1  # TF Serving's default
    assert flags.model_config_file_poll_wait_seconds == 0


@pytest.mark.parametrize(("text", "expected"), [("true", True), ("false", False), ("0", False)])
def test_boolean_flags_accept_explicit_values(text: str, expected: bool) -> None:
    flags = parse(["--model_base_path=/m", f"--enable_batching={text}"])
    assert flags.enable_batching is expected


def test_runtime_only_upstream_flags_are_accepted() -> None:
    flags = parse(
        [
            "--model_config_file=/c",
            "--per_process_gpu_memory_fraction=0.5",
            "--enable_model_warmup=true",
        ]
    )
    assert flags.model_config_file == "/c"
    assert flags.per_process_gpu_memory_fraction == 0.5


def test_unknown_flag_is_an_error() -> None:
    with pytest.raises(SystemExit):
        parse(["--model_base_path=/m", "--no_such_flag=1"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "nothing to serve"),
        (["--model_base_path=/m", "--model_config_file=/c"], "exclusive"),
        (["--model_base_path=/m", "--port=8500", "--rest_api_port=8500"], "must differ"),
        (["--model_base_path=/m", "--port=70000"], "not a TCP port"),
        (["--model_base_path=/m", "--per_process_gpu_memory_fraction=2"], "between 0 and 1"),
    ],
)
def test_bad_flag_combinations_say_what_to_fix(argv: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse(argv)


def test_channel_arguments_become_typed_server_options() -> None:
    options = parse_channel_arguments(
        "grpc.max_connection_age_ms=30000, grpc.primary_user_agent=tfmaas"
    )
    assert options == [("grpc.max_connection_age_ms", 30000), ("grpc.primary_user_agent", "tfmaas")]
    assert parse_channel_arguments("") == []
    with pytest.raises(UserError, match="key=value"):
        parse_channel_arguments("grpc.max_connection_age_ms")


def test_grpc_threads_cover_a_concurrency_of_32() -> None:
    assert ServerFlags(model_base_path="/m").grpc_threads >= 32
    assert ServerFlags(model_base_path="/m", grpc_max_threads=8).grpc_threads == 8


def test_request_caps_and_reload_have_safe_defaults() -> None:
    flags = parse(["--model_base_path=/m"])
    assert RequestLimits.of(flags) == RequestLimits(DEFAULT_MAX_ELEMENTS, DEFAULT_MAX_BYTES)
    assert flags.allow_grpc_config_reload is False
    flags = parse(
        [
            "--model_base_path=/m",
            "--max_request_elements=10",
            "--max_request_tensor_bytes=20",
            "--allow_grpc_config_reload=true",
            "--ssl_config_file=/ssl.config",
        ]
    )
    assert RequestLimits.of(flags) == RequestLimits(max_elements=10, max_bytes=20)
    assert flags.allow_grpc_config_reload is True
    assert flags.ssl_config_file == "/ssl.config"  # read, not ignored
    with pytest.raises(UserError, match="--max_request_elements must be at least 1"):
        parse(["--model_base_path=/m", "--max_request_elements=0"])
