"""No TF Serving flag that changes behaviour is accepted and ignored (issue 12 item 6)."""

from __future__ import annotations

import threading

import pytest

from tfmaas.errors import UserError
from tfmaas.serving.flags import parse
from tfmaas.serving.loading import load_with_retries

BASE = ["--model_base_path=/m"]


@pytest.mark.parametrize(
    "flag",
    [
        "--saved_model_tags=serve,gpu",
        "--platform_config_file=/p.config",
        "--rest_api_enable_cors_support=true",
    ],
)
def test_unimplemented_values_stop_the_server(flag: str) -> None:
    name = flag.split("=")[0]
    with pytest.raises(UserError, match=f"^{name} is not supported by tfmaas serve"):
        parse([*BASE, flag])


@pytest.mark.parametrize(
    "flag",
    [
        "--saved_model_tags=serve",
        "--platform_config_file=",
        "--rest_api_enable_cors_support=false",
        # Pure tuning of TF Serving's C++ runtime: any value.
        "--num_load_threads=8",
        "--num_unload_threads=2",
        "--xla_cpu_compilation_enabled=true",
        "--flush_filesystem_caches=false",
    ],
)
def test_default_behaviour_and_tuning_flags_are_accepted(flag: str) -> None:
    parse([*BASE, flag])


def test_implemented_flags_keep_tf_servings_defaults() -> None:
    flags = parse(BASE)
    assert (flags.max_num_load_retries, flags.load_retry_interval_micros) == (5, 60_000_000)
    assert flags.enable_model_warmup is True
    assert flags.grpc_socket_path == ""
    assert flags.prefer_tflite_model is False
    assert flags.allow_version_labels is True
    assert flags.enable_signature_method_name_check is False
    flags = parse(
        [
            *BASE,
            "--max_num_load_retries=0",
            "--load_retry_interval_micros=1000",
            "--enable_model_warmup=false",
            "--grpc_socket_path=/run/tfs.sock",
            "--allow_version_labels=false",
            "--enable_signature_method_name_check",
        ]
    )
    assert flags.max_num_load_retries == 0 and flags.load_retry_interval_micros == 1000
    assert flags.enable_model_warmup is False
    assert flags.grpc_socket_path == "/run/tfs.sock"
    assert flags.allow_version_labels is False
    assert flags.enable_signature_method_name_check is True


def test_socket_path_too_long_for_sun_path_is_refused() -> None:
    with pytest.raises(UserError, match="--grpc_socket_path is longer"):
        parse([*BASE, "--grpc_socket_path=/" + "s" * 120])


def test_negative_retries_are_refused() -> None:
    with pytest.raises(UserError, match="--max_num_load_retries"):
        parse([*BASE, "--max_num_load_retries=-1"])


def flaky(failures: int):
    calls = []

    def load() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise OSError(f"attempt {len(calls)}")
        return "loaded"

    return load, calls


def test_a_load_is_retried_until_it_succeeds() -> None:
    load, calls = flaky(2)
    result = load_with_retries(load, retries=2, interval_s=0, stop=threading.Event(), what="m")
    assert result == "loaded" and len(calls) == 3


def test_retries_run_out() -> None:
    load, calls = flaky(5)
    with pytest.raises(OSError, match="attempt 3"):
        load_with_retries(load, retries=2, interval_s=0, stop=threading.Event(), what="m")
    assert len(calls) == 3


def test_a_stopping_server_stops_retrying() -> None:
    stop = threading.Event()
    stop.set()
    load, calls = flaky(5)
    with pytest.raises(OSError, match="attempt 1"):
        load_with_retries(load, retries=5, interval_s=3600, stop=stop, what="m")
    assert len(calls) == 1
