"""A model store in S3-compatible object storage (`s3://bucket/prefix`): AWS, MinIO, Ceph.

S3 has no rename, so visibility is decided by one object: a version exists iff
`<prefix>/<version>/.tfmaas-manifest.json` exists. Publishing a version:

1. uploads every file to `<prefix>/.staging/<version>-<id>/` (the slow part; a crash
   here leaves only staging objects, which nothing reads and `gc` removes);
2. claims the number by creating `<prefix>/<version>/.tfmaas-claim.json` with
   `If-None-Match: *` - of concurrent publishers exactly one creates it, the others get
   VersionExistsError before they write anything under `<prefix>/<version>/`;
3. copies the staged objects to `<prefix>/<version>/…` server-side (fast);
4. checks the claim is still its own, then creates the manifest, also with
   `If-None-Match: *`. Only now do `list_versions` and `pull` see the version.

The claim is never deleted once the version is published, so a late publisher of the
same number always loses at step 2. A claim without a manifest that is older than
`CLAIM_TTL_SECONDS` (by the server's clock) belongs to a publisher that crashed between
steps 2 and 4; the next publisher of that number, or `gc`, clears it.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions as bce
from boto3.exceptions import S3TransferFailedError, S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from tfmaas.errors import TfmaasError, UserError
from tfmaas.storage.base import (
    LOGS_DIR,
    MANIFEST_NAME,
    STAGING_DIR,
    ModelStore,
    StoreAccessError,
    StoreError,
    StoreUnreachableError,
    VersionExistsError,
    check_version,
    version_from_name,
)
from tfmaas.storage.checkpoints import (
    check_download,
    checkpoint_path,
    log_files,
    stale_names,
    upload_order,
)
from tfmaas.storage.encryption import StoreEncryption
from tfmaas.storage.manifest import (
    FileEntry,
    Manifest,
    build_manifest,
    manifest_dict,
)
from tfmaas.storage.transfer import pull_version, read_file
from tfmaas.storage.uri import S3Location
from tfmaas.timestamps import now_rfc3339

CLAIM_NAME = ".tfmaas-claim.json"
# Longer than the server-side copies of step 3 ever take; uploads happen before the claim.
CLAIM_TTL_SECONDS = 15 * 60
STALE_STAGING_SECONDS = 3600
# Below this size a single PutObject (clear errors); above it, parallel multipart.
_MULTIPART_THRESHOLD = 64 * 1024 * 1024
_TRANSFER = TransferConfig(multipart_threshold=_MULTIPART_THRESHOLD, max_concurrency=8)

_REFUSED_CREDENTIALS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "InvalidClientTokenId",
}
_LOST_RACE = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}


def resolve_endpoint(endpoint: str | None) -> str | None:
    """The S3 endpoint URL: the argument, else the standard AWS variables, else AWS itself."""
    value = (
        endpoint
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or None
    )
    if value is not None and not value.startswith(("http://", "https://")):
        raise UserError(
            f"S3 endpoint {value!r} is not a URL; give it with its scheme, like "
            "http://minio.tfmaas-system:9000"
        )
    return value


def make_client(
    endpoint: str | None,
    region: str | None = None,
    *,
    access_key: str | None = None,
    secret_key: str | None = None,
    ca_bundle: str | None = None,
) -> Any:
    """A boto3 S3 client that fails fast when the endpoint is unreachable.

    Credentials come from the standard AWS chain (env vars first) unless given; an https://
    endpoint is verified against `ca_bundle`, else AWS_CA_BUNDLE, else the system's CAs.
    """
    region = (
        region
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or "us-east-1"
    )
    config = Config(
        connect_timeout=3,
        read_timeout=30,
        retries={"max_attempts": 3, "mode": "standard"},
        # Path-style works with every S3-compatible server; virtual hosts need DNS.
        s3={"addressing_style": "path"},
        signature_version="s3v4",
    )
    session = boto3.session.Session(aws_access_key_id=access_key, aws_secret_access_key=secret_key)
    return session.client(
        "s3", endpoint_url=endpoint, region_name=region, config=config, verify=ca_bundle
    )


def check_ca_bundle(ca_bundle: str | None) -> str | None:
    """`ca_bundle`, checked now: botocore reports a missing bundle only at the first request,
    and in words that do not say where the path came from."""
    source, path = (
        ("--ca-bundle", ca_bundle)
        if ca_bundle
        else ("AWS_CA_BUNDLE", os.environ.get("AWS_CA_BUNDLE"))
    )
    if path and not Path(path).is_file():
        raise UserError(
            f"{source} names {path[:200]!r}, which is not a readable file; give the PEM file of "
            "the CA that signed the store endpoint's certificate (in a cluster: "
            "spec.storage.caBundle)"
        )
    return ca_bundle


def describe_endpoint(endpoint: str | None) -> str:
    return endpoint if endpoint else "AWS S3 (no endpoint set)"


@contextmanager
def s3_errors(endpoint: str | None, uri: str, bucket: str) -> Iterator[None]:
    """Turn botocore's failures into messages that say what to fix. Never shows a secret."""
    where = describe_endpoint(endpoint)
    try:
        yield
    except bce.SSLError:
        raise StoreAccessError(
            f"the TLS certificate of the S3 endpoint {where} is not trusted (while accessing "
            f"{uri}); give the CA that signed it with spec.storage.caBundle, --ca-bundle or "
            "AWS_CA_BUNDLE"
        ) from None
    except (
        bce.EndpointConnectionError,
        bce.ConnectTimeoutError,
        bce.ReadTimeoutError,
        bce.ConnectionClosedError,
    ) as exc:
        raise StoreUnreachableError(
            f"cannot reach the S3 endpoint {where} for {uri} ({type(exc).__name__}); check "
            "that it is up and set the right URL with spec.storage.endpoint, --endpoint or "
            "AWS_ENDPOINT_URL"
        ) from None
    except (bce.NoCredentialsError, bce.PartialCredentialsError):
        raise StoreAccessError(
            f"no S3 credentials for {uri}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(in a cluster: spec.storage.secretRef names a Secret with those keys), or give "
            "the pod an identity the default credential chain finds (in a cluster: "
            "spec.training.pod / spec.serving.pod serviceAccountName, with IRSA or Workload "
            "Identity)"
        ) from None
    except bce.ClientError as exc:
        raise _client_error(exc, where, uri, bucket) from None
    except (S3UploadFailedError, S3TransferFailedError) as exc:
        # The transfer manager flattens the ClientError into text; recover its code.
        text = str(exc)
        for code in (*_REFUSED_CREDENTIALS, "NoSuchBucket", "AccessDenied"):
            if f"({code})" in text:
                fake = bce.ClientError({"Error": {"Code": code, "Message": text}}, "Upload")
                raise _client_error(fake, where, uri, bucket) from None
        raise StoreError(f"transfer to {uri} at {where} failed: {text}") from None


def _client_error(exc: bce.ClientError, where: str, uri: str, bucket: str) -> TfmaasError:
    code = error_code(exc)
    if code in _REFUSED_CREDENTIALS:
        return StoreAccessError(
            f"the S3 endpoint {where} refused the credentials in AWS_ACCESS_KEY_ID/"
            f"AWS_SECRET_ACCESS_KEY ({code}) while accessing {uri}; check both values "
            "(and spec.storage.secretRef in a cluster)"
        )
    if code in ("AccessDenied", "403", "Forbidden"):
        return StoreAccessError(
            f"the S3 endpoint {where} denied access to {uri} (AccessDenied); the credentials "
            f"need read and write access to bucket {bucket!r}"
        )
    if code == "NoSuchBucket":
        return StoreAccessError(
            f"bucket {bucket!r} does not exist at {where}; create it first, e.g. "
            f"`mc mb ALIAS/{bucket}` or `aws s3 mb s3://{bucket}"
            + (f" --endpoint-url {where}`" if where.startswith("http") else "`")
        )
    message = exc.response.get("Error", {}).get("Message", "")
    if code.isdigit():
        # A bare HTTP status, no S3 error document: something else answered.
        return StoreAccessError(
            f"the endpoint {where} answered HTTP {code} ({message or 'no S3 error'}) for {uri}; "
            "check that it is an S3 endpoint, and set the right URL with spec.storage.endpoint, "
            "--endpoint or AWS_ENDPOINT_URL"
        )
    return StoreError(f"S3 request for {uri} at {where} failed: {code}: {message}")


def error_code(exc: bce.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _server_now(response: dict[str, Any]) -> datetime:
    """The server's clock from a response, so staleness does not depend on ours."""
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if date:
        try:
            return parsedate_to_datetime(date)
        except (TypeError, ValueError):
            pass
    return datetime.now(timezone.utc)


class S3Store(ModelStore):
    def __init__(
        self,
        location: S3Location,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        encryption: StoreEncryption | None = None,
        ca_bundle: str | None = None,
    ) -> None:
        """`encryption` (else TFMAAS_STORE_ENCRYPTION) is asked for on every write and
        required of every object read."""
        self.location = location
        self.bucket = location.bucket
        self.uri = location.uri
        self.endpoint = resolve_endpoint(endpoint)
        self.encryption = encryption or StoreEncryption.from_env()
        self.client = make_client(self.endpoint, region, ca_bundle=check_ca_bundle(ca_bundle))

    # -- keys -------------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return self.location.child(*parts)

    def _version_key(self, version: int, name: str = "") -> str:
        return self._key(str(version), name)

    def _errors(self) -> Any:
        return s3_errors(self.endpoint, self.uri, self.bucket)

    def _sse_args(self) -> dict[str, str]:
        return self.encryption.put_args() if self.encryption else {}

    def _check_encrypted(self, response: dict[str, Any], key: str) -> None:
        if self.encryption:
            self.encryption.check(response, uri=f"s3://{self.bucket}/{key}")

    # -- reading ----------------------------------------------------------------------
    def list_versions(self) -> list[int]:
        prefix = self._key() + "/" if self.location.key else ""
        candidates: list[int] = []
        with self._errors():
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                for common in page.get("CommonPrefixes", []):
                    name = common["Prefix"][len(prefix) :].rstrip("/")
                    version = version_from_name(name)
                    if version is not None:
                        candidates.append(version)
            with ThreadPoolExecutor(max_workers=8) as pool:
                published = list(pool.map(self._is_published, candidates))
        return sorted(v for v, ok in zip(candidates, published, strict=True) if ok)

    def _is_published(self, version: int) -> bool:
        return self._exists(self._version_key(version, MANIFEST_NAME))

    def _exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except bce.ClientError as exc:
            if error_code(exc) in _NOT_FOUND:
                return False
            if error_code(exc) == "403":
                # HEAD answers carry no error document; a GET tells wrong credentials
                # (InvalidAccessKeyId, SignatureDoesNotMatch) from missing permission.
                self.client.get_object(Bucket=self.bucket, Key=key, Range="bytes=0-0")
            raise
        return True

    def _get(self, key: str, *, model_data: bool = True) -> bytes | None:
        """The object's bytes, None if absent. Model data (manifests and files) must carry the
        required encryption; a claim holds none and may be another publisher's."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        except bce.ClientError as exc:
            if error_code(exc) in _NOT_FOUND:
                return None
            raise
        if model_data:
            self._check_encrypted(response, key)
        data: bytes = response["Body"].read()
        return data

    def _manifest(self, version: int) -> Manifest:
        check_version(version)
        key = self._version_key(version, MANIFEST_NAME)
        with self._errors():
            data = self._get(key)
        if data is None:
            raise self.missing_version_error(version)
        return Manifest.from_json(data, where=f"s3://{self.bucket}/{key}")

    def read_manifest(self, version: int) -> dict[str, Any]:
        return manifest_dict(self._manifest(version))

    def read_bytes(self, version: int, name: str) -> bytes:
        def read(entry: FileEntry) -> bytes:
            with self._errors():
                data = self._get(self._version_key(version, entry.path))
            if data is None:
                raise StoreError(
                    f"{self.version_uri(version)}{entry.path} is listed in the manifest but "
                    "missing; the version was damaged after publishing: publish the model under "
                    "a new version"
                )
            return data

        return read_file(self._manifest(version), name, read, source=self.version_uri(version))

    def pull(self, version: int, dest_dir: Path) -> Path:
        manifest = self._manifest(version)

        def fetch(entry: FileEntry, path: Path) -> None:
            key = self._version_key(version, entry.path)
            with self._errors():
                if self.encryption:
                    # download_file hides GetObject's answer; published objects never change,
                    # so what HeadObject shows is what is downloaded.
                    self._check_encrypted(self.client.head_object(Bucket=self.bucket, Key=key), key)
                self.client.download_file(self.bucket, key, str(path), Config=_TRANSFER)

        return pull_version(manifest, dest_dir, fetch, source=self.version_uri(version))

    # -- publishing -------------------------------------------------------------------
    def publish(self, version: int, local_dir: Path) -> str:
        check_version(version)
        with self._errors():
            if self._is_published(version):
                raise self._exists_error(version)
        publish_id = uuid.uuid4().hex
        manifest = build_manifest(local_dir, version, publish_id)
        staging = self._key(STAGING_DIR, f"{version}-{publish_id[:12]}")
        try:
            with self._errors():
                self._gc_staging(group_prefix=f"{version}-")
                self._upload(local_dir, manifest, staging)
                self._claim(version, publish_id)
                try:
                    self._copy_into_place(version, manifest, staging)
                    self._check_claim_is_ours(version, publish_id)
                    self._create_manifest(version, manifest)
                except BaseException:
                    self._release_claim(version, publish_id)
                    raise
        finally:
            self._delete_prefix_quietly(staging + "/")
        return self.version_uri(version)

    def _exists_error(self, version: int, detail: str = "") -> VersionExistsError:
        return VersionExistsError(
            f"version {version} already exists in {self.uri}{detail}; published versions are "
            "immutable: publish under a new version number (see `tfmaas store list "
            f"{self.uri}`)"
        )

    def _upload(self, local_dir: Path, manifest: Manifest, staging: str) -> None:
        for entry in manifest.files:
            key = f"{staging}/{entry.path}"
            source = local_dir / entry.path
            if entry.size < _MULTIPART_THRESHOLD:
                # The server checks the body against the manifest's sha256, so a file that
                # changed since the manifest was built fails here instead of at every pull.
                checksum = base64.b64encode(bytes.fromhex(entry.sha256)).decode()
                with open(source, "rb") as body:
                    try:
                        self.client.put_object(
                            Bucket=self.bucket,
                            Key=key,
                            Body=body,
                            ChecksumSHA256=checksum,
                            **self._sse_args(),
                        )
                    except bce.ClientError as exc:
                        if error_code(exc) not in ("BadDigest", "XAmzContentChecksumMismatch"):
                            raise
                        raise StoreError(
                            f"{source} changed while it was being published (its sha256 no "
                            "longer matches); publish again once the export has finished"
                        ) from None
            else:
                self.client.upload_file(
                    str(source), self.bucket, key, ExtraArgs=self._sse_args(), Config=_TRANSFER
                )

    def _put_if_absent(self, key: str, body: bytes) -> bool:
        """Create `key` unless it exists; False if another writer has it."""
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                IfNoneMatch="*",
                ContentType="application/json",
                **self._sse_args(),
            )
        except bce.ClientError as exc:
            if error_code(exc) in _LOST_RACE:
                return False
            raise
        return True

    def _claim(self, version: int, publish_id: str) -> None:
        key = self._version_key(version, CLAIM_NAME)
        body = json.dumps({"publishId": publish_id, "claimedAt": now_rfc3339()}).encode()
        if self._put_if_absent(key, body):
            self._fail_if_published(version)
            return
        self._fail_if_published(version)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except bce.ClientError as exc:
            if error_code(exc) not in _NOT_FOUND:
                raise
            head = None  # released by a publisher that failed; try once more below
        if head is not None:
            age = (_server_now(head) - head["LastModified"]).total_seconds()
            if age < CLAIM_TTL_SECONDS:
                raise self._exists_error(
                    version,
                    f" (another publisher claimed it {int(age)}s ago and is still copying)",
                )
            self._clear_unpublished(version)
        if not self._put_if_absent(key, body):
            raise self._exists_error(version, " (another publisher claimed it just now)")
        self._fail_if_published(version)

    def _fail_if_published(self, version: int) -> None:
        if self._is_published(version):
            raise self._exists_error(version)

    def _copy_into_place(self, version: int, manifest: Manifest, staging: str) -> None:
        for entry in manifest.files:
            self.client.copy(
                {"Bucket": self.bucket, "Key": f"{staging}/{entry.path}"},
                self.bucket,
                self._version_key(version, entry.path),
                # A copy is a new object: it is encrypted only if asked again.
                ExtraArgs=self._sse_args(),
                Config=_TRANSFER,
            )

    def _check_claim_is_ours(self, version: int, publish_id: str) -> None:
        data = self._get(self._version_key(version, CLAIM_NAME), model_data=False)
        owner = json.loads(data).get("publishId") if data else None
        if owner != publish_id:
            raise self._exists_error(
                version, " (our claim expired and another publisher took the number over)"
            )

    def _create_manifest(self, version: int, manifest: Manifest) -> None:
        if not self._put_if_absent(self._version_key(version, MANIFEST_NAME), manifest.to_json()):
            raise self._exists_error(version)

    def _release_claim(self, version: int, publish_id: str) -> None:
        """Undo a failed publish after the claim, so the number stays usable."""
        try:
            if self._is_published(version):
                return
            data = self._get(self._version_key(version, CLAIM_NAME), model_data=False)
            if not data or json.loads(data).get("publishId") != publish_id:
                return
            self._clear_unpublished(version)
        except (bce.BotoCoreError, bce.ClientError, ValueError):
            pass  # best effort: a claim left behind expires after CLAIM_TTL_SECONDS

    def _clear_unpublished(self, version: int) -> None:
        """Delete what a failed publisher copied under <version>/, claim last."""
        keys = self._list_keys(self._version_key(version) + "/")
        manifest_key = self._version_key(version, MANIFEST_NAME)
        claim_key = self._version_key(version, CLAIM_NAME)
        if manifest_key in keys:
            return
        self._delete_quietly([k for k in keys if k != claim_key])
        self._delete_quietly([claim_key])

    def _list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys

    def _delete_prefix_quietly(self, prefix: str) -> None:
        # Leftovers are invisible and `gc` removes them later.
        with suppress(bce.BotoCoreError, bce.ClientError):
            self._delete_quietly(self._list_keys(prefix))

    def _delete_quietly(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            with suppress(bce.BotoCoreError, bce.ClientError):
                self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )

    # -- checkpoints ------------------------------------------------------------------
    def _checkpoint_prefix(self, version: int) -> str:
        return self._key(*checkpoint_path(version).split("/")) + "/"

    def _checkpoint_objects(self, version: int) -> dict[str, int]:
        prefix = self._checkpoint_prefix(version)
        sizes: dict[str, int] = {}
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                sizes[obj["Key"][len(prefix) :]] = int(obj["Size"])
        return sizes

    def save_checkpoint(self, version: int, local_dir: Path) -> None:
        prefix = self._checkpoint_prefix(version)
        names = upload_order(local_dir)
        with self._errors():
            before = self._checkpoint_objects(version)
            for name in names:
                self.client.upload_file(
                    str(local_dir / name),
                    self.bucket,
                    prefix + name,
                    ExtraArgs=self._sse_args(),
                    Config=_TRANSFER,
                )
            self._delete_quietly([prefix + name for name in stale_names(before, names)])

    def load_checkpoint(self, version: int, local_dir: Path) -> bool:
        prefix = self._checkpoint_prefix(version)
        with self._errors():
            sizes = self._checkpoint_objects(version)
            if not sizes:
                return False
            check_download(sizes, source=self.checkpoint_uri(version))
            local_dir.mkdir(parents=True, exist_ok=True)
            for name in sizes:
                key = prefix + name
                if self.encryption:
                    self._check_encrypted(self.client.head_object(Bucket=self.bucket, Key=key), key)
                self.client.download_file(self.bucket, key, str(local_dir / name), Config=_TRANSFER)
        return True

    def save_logs(self, version: int, local_dir: Path) -> None:
        with self._errors():
            for path in log_files(local_dir):
                key = self._key(
                    LOGS_DIR, str(check_version(version)), *path.relative_to(local_dir).parts
                )
                self.client.upload_file(
                    str(path), self.bucket, key, ExtraArgs=self._sse_args(), Config=_TRANSFER
                )

    def delete_checkpoint(self, version: int) -> None:
        with self._errors():
            self._delete_quietly(self._list_keys(self._checkpoint_prefix(version)))

    # -- cleaning ---------------------------------------------------------------------
    def gc(self) -> list[str]:
        """Remove stale staging uploads and expired claims of unpublished versions."""
        removed: list[str] = []
        with self._errors():
            removed += self._gc_staging()
            removed += self._gc_claims()
        return removed

    def _gc_staging(self, group_prefix: str = "") -> list[str]:
        prefix = self._key(STAGING_DIR) + "/"
        paginator = self.client.get_paginator("list_objects_v2")
        groups: dict[str, list[dict[str, Any]]] = {}
        now: datetime | None = None
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix + group_prefix):
            now = now or _server_now(page)
            for obj in page.get("Contents", []):
                group = obj["Key"][len(prefix) :].split("/", 1)[0]
                groups.setdefault(group, []).append(obj)
        removed = []
        for group, objects in sorted(groups.items()):
            newest = max(obj["LastModified"] for obj in objects)
            if now is not None and (now - newest).total_seconds() > STALE_STAGING_SECONDS:
                self._delete_quietly([obj["Key"] for obj in objects])
                removed.append(f"s3://{self.bucket}/{prefix}{group}/")
        return removed

    def _gc_claims(self) -> list[str]:
        prefix = self._key() + "/" if self.location.key else ""
        removed = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                version = version_from_name(common["Prefix"][len(prefix) :].rstrip("/"))
                if version is None or self._is_published(version):
                    continue
                try:
                    head = self.client.head_object(
                        Bucket=self.bucket, Key=self._version_key(version, CLAIM_NAME)
                    )
                except bce.ClientError as exc:
                    if error_code(exc) in _NOT_FOUND:
                        continue  # not ours: no claim means no tfmaas publisher wrote it
                    raise
                age = (_server_now(head) - head["LastModified"]).total_seconds()
                if age > CLAIM_TTL_SECONDS:
                    self._clear_unpublished(version)
                    removed.append(self.version_uri(version))
        return removed
