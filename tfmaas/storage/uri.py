"""Parse store and dataset URIs: `s3://bucket/prefix` and `file:///absolute/path`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from tfmaas.errors import UserError

# S3's bucket naming rules, which MinIO enforces too.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_ADDRESS = re.compile(r"\d+\.\d+\.\d+\.\d+")


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str  # no leading or trailing slash; "" is the bucket's root

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"

    def child(self, *parts: str) -> str:
        """The object key of `parts` below this location."""
        return "/".join(p for p in (self.key, *parts) if p)


@dataclass(frozen=True)
class FileLocation:
    path: PurePosixPath

    @property
    def uri(self) -> str:
        return f"file://{self.path}"


Location = S3Location | FileLocation


def parse_uri(uri: str, *, what: str = "storage URI") -> Location:
    """Parse `uri` or raise a UserError that says how a valid one looks."""
    if not isinstance(uri, str) or not uri.strip():
        raise UserError(f"{what} is empty; use s3://bucket/prefix or file:///absolute/path")
    uri = uri.strip()
    scheme, _, _ = uri.partition("://")
    if "://" not in uri:
        raise UserError(
            f"{what} {uri!r} has no scheme; use s3://bucket/prefix or file:///absolute/path"
        )
    scheme = scheme.lower()
    if scheme == "s3":
        return _parse_s3(uri, what)
    if scheme == "file":
        return _parse_file(uri, what)
    raise UserError(
        f"{what} {uri!r} uses the unsupported scheme {scheme!r}; "
        "use s3://bucket/prefix or file:///absolute/path"
    )


def _parse_s3(uri: str, what: str) -> S3Location:
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise UserError(f"{what} {uri!r} names no bucket; use s3://bucket/prefix")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket or _IP_ADDRESS.fullmatch(bucket):
        raise UserError(
            f"{what} {uri!r}: {bucket!r} is not a valid bucket name; bucket names are 3-63 "
            "lowercase letters, digits, dots and hyphens, starting and ending with a letter or "
            "digit"
        )
    if "?" in key or "#" in key:
        raise UserError(f"{what} {uri!r} has a query or fragment; remove it")
    key = key.strip("/")
    parts = key.split("/") if key else []
    for part in parts:
        if part in ("", ".", ".."):
            raise UserError(
                f"{what} {uri!r} has an empty, '.' or '..' path segment; "
                "write the prefix plainly, like s3://bucket/models/sentiment"
            )
    return S3Location(bucket=bucket, key=key)


def _parse_file(uri: str, what: str) -> FileLocation:
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise UserError(
            f"{what} {uri!r} names the host {parts.netloc!r}; file URIs need an absolute path "
            "and three slashes, like file:///data/models (a relative path is not allowed)"
        )
    if parts.query or parts.fragment:
        raise UserError(f"{what} {uri!r} has a query or fragment; remove it")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise UserError(f"{what} {uri!r} is not absolute; use file:///absolute/path")
    pure = PurePosixPath(path)
    if ".." in pure.parts:
        raise UserError(f"{what} {uri!r} contains '..'; give the resolved absolute path")
    return FileLocation(path=pure)
