"""Model stores: immutable, integer-numbered model versions under `s3://…` or `file://…`.

`open_store(uri)` gives a `ModelStore`; `read_uri(uri)` reads one file (a dataset).
boto3 is imported only when an s3:// URI is used.
"""

from __future__ import annotations

from pathlib import Path

from tfmaas.errors import UserError
from tfmaas.storage.base import (
    MANIFEST_NAME,
    CorruptVersionError,
    ModelStore,
    StoreAccessError,
    StoreError,
    StoreUnreachableError,
    VersionExistsError,
    VersionNotFoundError,
    check_version,
    parse_version_list,
)
from tfmaas.storage.encryption import StoreEncryption
from tfmaas.storage.uri import FileLocation, S3Location, parse_uri

__all__ = [
    "MANIFEST_NAME",
    "CorruptVersionError",
    "ModelStore",
    "StoreAccessError",
    "StoreError",
    "StoreUnreachableError",
    "VersionExistsError",
    "VersionNotFoundError",
    "check_version",
    "open_store",
    "parse_version_list",
    "read_uri",
]


def open_store(
    uri: str,
    *,
    endpoint: str | None = None,
    region: str | None = None,
    encryption: StoreEncryption | None = None,
    ca_bundle: str | None = None,
) -> ModelStore:
    """The store at `uri`; `endpoint` (else AWS_ENDPOINT_URL), `encryption` (else
    TFMAAS_STORE_ENCRYPTION) and `ca_bundle` (else AWS_CA_BUNDLE) apply to s3:// only."""
    location = parse_uri(uri, what="storage URI")
    if isinstance(location, FileLocation):
        from tfmaas.storage.local import FileStore

        if encryption is not None or ca_bundle is not None:
            raise UserError(
                f"{uri} is a file:// store; server-side encryption and a CA bundle apply to "
                "s3:// stores only"
            )
        return FileStore(Path(location.path))
    from tfmaas.storage.s3 import S3Store

    return S3Store(
        location, endpoint=endpoint, region=region, encryption=encryption, ca_bundle=ca_bundle
    )


def read_uri(
    uri: str, *, endpoint: str | None = None, region: str | None = None, max_bytes: int
) -> bytes:
    """The bytes of one file named by a `file://` or `s3://` URI (a dataset), refused once it is
    over `max_bytes`: a file's size is only known by reading it (`/proc` files say 0)."""
    location = parse_uri(uri, what="dataset URI")
    if isinstance(location, FileLocation):
        path = Path(location.path)
        try:
            with path.open("rb") as file:
                data = file.read(max_bytes + 1)
        except FileNotFoundError:
            raise UserError(f"{uri}: no such file; check the path (it must be absolute)") from None
        except IsADirectoryError:
            raise UserError(f"{uri} is a directory; name the data file itself") from None
        except PermissionError:
            raise UserError(f"{uri}: permission denied; make the file readable") from None
    else:
        data = _read_s3(location, endpoint=endpoint, region=region, max_bytes=max_bytes)
    if len(data) > max_bytes:
        raise UserError(f"{uri} is larger than the limit of {max_bytes} bytes for a dataset")
    return data


def _read_s3(
    location: S3Location, *, endpoint: str | None, region: str | None, max_bytes: int
) -> bytes:
    import botocore.exceptions as bce

    from tfmaas.storage.s3 import error_code, make_client, resolve_endpoint, s3_errors

    if not location.key:
        raise UserError(f"{location.uri} names a bucket, not a file; use s3://bucket/path/file")
    resolved = resolve_endpoint(endpoint)
    client = make_client(resolved, region)
    with s3_errors(resolved, location.uri, location.bucket):
        try:
            # A range asks for no more than one byte past the limit, whatever the object's size.
            response = client.get_object(
                Bucket=location.bucket, Key=location.key, Range=f"bytes=0-{max_bytes}"
            )
        except bce.ClientError as exc:
            if error_code(exc) == "InvalidRange":  # an empty object has no byte 0
                return b""
            if error_code(exc) not in ("NoSuchKey", "404"):
                raise
            raise UserError(
                f"{location.uri}: no such object in bucket {location.bucket!r}; check the key "
                f"(list it with `aws s3 ls s3://{location.bucket}/`)"
            ) from None
        data: bytes = response["Body"].read(max_bytes + 1)
    return data
