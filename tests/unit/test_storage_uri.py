import re
from pathlib import PurePosixPath

import pytest

from tfmaas.errors import UserError
from tfmaas.storage.uri import FileLocation, S3Location, parse_uri


@pytest.mark.parametrize(
    ("uri", "bucket", "key"),
    [
        ("s3://models", "models", ""),
        ("s3://models/", "models", ""),
        ("s3://models/sentiment", "models", "sentiment"),
        ("s3://models/team/sentiment/", "models", "team/sentiment"),
        ("S3://my-bucket.v2/a", "my-bucket.v2", "a"),
    ],
)
def test_s3_uris_parse_to_bucket_and_key(uri: str, bucket: str, key: str) -> None:
    location = parse_uri(uri)
    assert location == S3Location(bucket=bucket, key=key)


def test_s3_child_keys_join_without_double_slashes() -> None:
    assert S3Location("b", "").child("3", "saved_model.pb") == "3/saved_model.pb"
    assert S3Location("b", "m/s").child("3", "") == "m/s/3"
    assert S3Location("b", "m").uri == "s3://b/m"


def test_file_uris_need_an_absolute_path() -> None:
    assert parse_uri("file:///data/models") == FileLocation(PurePosixPath("/data/models"))
    assert parse_uri("file://localhost/data/m%20x") == FileLocation(PurePosixPath("/data/m x"))


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("", "empty"),
        ("/data/models", "no scheme"),
        ("gs://bucket/x", "unsupported scheme 'gs'"),
        ("s3://", "names no bucket"),
        ("s3:///prefix", "names no bucket"),
        ("s3://My_Bucket/x", "not a valid bucket name"),
        ("s3://ab/x", "not a valid bucket name"),
        ("s3://192.168.1.1/x", "not a valid bucket name"),
        ("s3://bucket/a//b", "empty, '.' or '..'"),
        ("s3://bucket/a/../b", "empty, '.' or '..'"),
        ("file://data/models", "names the host 'data'"),
        ("file:///data/../etc", "contains '..'"),
        ("file:///data?x=1", "query or fragment"),
    ],
)
def test_bad_uris_say_what_is_wrong(uri: str, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        parse_uri(uri)
