"""How S3 failures become messages, and where the endpoint comes from (no server needed)."""

import botocore.exceptions as bce
import pytest

from tfmaas.errors import UserError
from tfmaas.storage import StoreAccessError, StoreError, StoreUnreachableError
from tfmaas.storage.s3 import resolve_endpoint, s3_errors

ENDPOINT = "http://minio.tfmaas-system:9000"


def fail_with(code: str, message: str = "") -> None:
    raise bce.ClientError({"Error": {"Code": code, "Message": message}}, "GetObject")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (
            "InvalidAccessKeyId",
            "refused the credentials in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
        ),
        ("SignatureDoesNotMatch", "refused the credentials"),
        ("AccessDenied", "denied access to s3://models/m"),
        ("NoSuchBucket", f"bucket 'models' does not exist at {ENDPOINT}; create it first"),
        ("404", "answered HTTP 404"),
    ],
)
def test_client_errors_say_what_to_fix(code: str, expected: str) -> None:
    with pytest.raises(StoreAccessError) as caught, s3_errors(ENDPOINT, "s3://models/m", "models"):
        fail_with(code, "secret-looking detail")
    assert expected in str(caught.value)
    assert isinstance(caught.value, UserError)


def test_other_server_errors_keep_their_code() -> None:
    with pytest.raises(StoreError, match="InternalError: boom"), s3_errors(None, "s3://b/m", "b"):
        fail_with("InternalError", "boom")


def test_connection_failures_name_the_endpoint_and_how_to_set_it() -> None:
    with pytest.raises(StoreUnreachableError) as caught, s3_errors(ENDPOINT, "s3://b/m", "b"):
        raise bce.EndpointConnectionError(endpoint_url=ENDPOINT)
    # Still a user-facing access error on the command line (exit 2).
    assert isinstance(caught.value, StoreAccessError)
    assert f"cannot reach the S3 endpoint {ENDPOINT}" in str(caught.value)
    assert "AWS_ENDPOINT_URL" in str(caught.value)
    with (
        pytest.raises(StoreAccessError, match=r"AWS S3 \(no endpoint set\)"),
        s3_errors(None, "s3://b/m", "b"),
    ):
        raise bce.ConnectTimeoutError(endpoint_url="https://s3.amazonaws.com")


def test_missing_credentials_name_the_variables() -> None:
    with (
        pytest.raises(StoreAccessError, match="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        s3_errors(None, "s3://b/m", "b"),
    ):
        raise bce.NoCredentialsError()


def test_endpoint_argument_then_s3_variable_then_generic_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    assert resolve_endpoint(None) is None
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://generic:9000")
    assert resolve_endpoint(None) == "http://generic:9000"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3-only:9000")
    assert resolve_endpoint(None) == "http://s3-only:9000"
    assert resolve_endpoint("https://given") == "https://given"
    with pytest.raises(UserError, match="not a URL"):
        resolve_endpoint("minio:9000")
