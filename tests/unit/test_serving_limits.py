"""The bounds `tfmaas serve` puts on calls in flight and on REST request framing."""

from __future__ import annotations

import os
from email.message import Message

import grpc
import pytest

from tfmaas.serving.errors import ServingError
from tfmaas.serving.flags import parse
from tfmaas.serving.http_server import FramingError, body_length
from tfmaas.serving.limits import InFlightLimit
from tfmaas.serving.rest import MAX_BODY_BYTES


def test_the_call_over_the_limit_is_refused_at_once_and_names_the_flag() -> None:
    limit = InFlightLimit(2, flag="max_in_flight_unbatched_requests")
    limit.acquire()
    with limit.held(), pytest.raises(ServingError) as error:
        limit.acquire()
    assert error.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.value.http_status == 429
    assert "limit of 2" in error.value.message
    assert "--max_in_flight_unbatched_requests" in error.value.message
    limit.acquire()  # the slot `held` took came back


def headers(**values: str) -> Message:
    message = Message()
    for name, value in values.items():
        message[name.replace("_", "-")] = value
    return message


@pytest.mark.parametrize(
    ("method", "values", "expected"),
    [
        ("GET", {}, 0),
        ("POST", {"Content_Length": "0"}, 0),
        ("POST", {"Content_Length": "17"}, 17),
        ("POST", {"Content_Length": str(MAX_BODY_BYTES)}, MAX_BODY_BYTES),
    ],
)
def test_a_well_framed_body_has_its_length(method: str, values: dict, expected: int) -> None:
    assert body_length(method, headers(**values)) == expected


@pytest.mark.parametrize(
    ("method", "values", "status"),
    [
        ("POST", {}, 400),  # no length: the body's bytes would be read as the next request
        ("POST", {"Content_Length": "-1"}, 400),
        ("POST", {"Content_Length": "0x10"}, 400),
        ("POST", {"Content_Length": "+5"}, 400),
        ("POST", {"Content_Length": "5 "}, 400),
        ("POST", {"Content_Length": "١٢"}, 400),  # digits, but not ASCII ones
        ("POST", {"Content_Length": str(MAX_BODY_BYTES + 1)}, 413),
        ("POST", {"Content_Length": "9" * 40}, 400),
        ("POST", {"Content_Length": "1e3"}, 400),
        ("POST", {"Content_Length": ""}, 400),
        ("POST", {"Transfer_Encoding": "chunked"}, 400),
        ("GET", {"Content_Length": "abc"}, 400),
    ],
)
def test_a_badly_framed_body_is_refused(method: str, values: dict, status: int) -> None:
    with pytest.raises(FramingError) as error:
        body_length(method, headers(**values))
    assert error.value.status == status
    for value in values.values():  # the client's text is never echoed
        assert len(value) < 2 or value not in error.value.message


def test_two_content_lengths_are_refused() -> None:
    message = headers(Content_Length="5")
    message["Content-Length"] = "6"
    with pytest.raises(FramingError, match="one decimal number"):
        body_length("POST", message)


def test_limits_default_like_tf_serving_and_refuse_nonsense() -> None:
    flags = parse(["--model_base_path=/m"])
    assert flags.rest_api_timeout_in_ms == 30000
    assert flags.rest_threads == 4 * len(os.sched_getaffinity(0))
    assert flags.unbatched_in_flight_limit == 2 * flags.grpc_threads
    assert 0 < flags.drain_timeout_seconds < 30  # inside Kubernetes' default grace period
    for bad in (
        "--rest_api_num_threads=-1",
        "--rest_api_timeout_in_ms=0",
        "--max_in_flight_unbatched_requests=-1",
        "--drain_timeout_seconds=-1",
    ):
        with pytest.raises(Exception, match=bad.split("=")[0]):
            parse(["--model_base_path=/m", bad])
