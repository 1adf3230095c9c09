"""Encryption at rest and in transit to the S3 store, against a real MinIO: its single-key KMS
encrypts what publish asks it to, pull refuses what is stored without it, and an https://
endpoint is trusted only through the CA bundle it is given."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig

from tests.unit.test_storage_local import make_model_dir
from tfmaas.cli.main import main
from tfmaas.dev.minio import MinioServer
from tfmaas.errors import UserError
from tfmaas.storage import MANIFEST_NAME, StoreAccessError, VersionExistsError, open_store
from tfmaas.storage import s3 as s3_module
from tfmaas.storage.encryption import ENCRYPTION_ENV, StoreEncryption, UnencryptedObjectError
from tfmaas.storage.s3 import CLAIM_NAME, S3Store

pytestmark = pytest.mark.integration

BUCKET = "models"
MiB = 1024 * 1024


def new_uri(minio: MinioServer) -> str:
    minio.bucket(BUCKET)
    return f"s3://{BUCKET}/enc-{uuid.uuid4().hex[:8]}/sentiment"


def encryption_for(minio: MinioServer, mode: str) -> StoreEncryption:
    return StoreEncryption(mode, minio.kms_key_name if mode == "sse-kms" else None)


def heads_under(minio: MinioServer, prefix: str) -> dict[str, dict[str, object]]:
    client = minio.client()
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {obj["Key"]: client.head_object(Bucket=BUCKET, Key=obj["Key"]) for obj in listed}


def key_of(uri: str, *parts: str) -> str:
    return "/".join([uri.removeprefix(f"s3://{BUCKET}/"), *parts])


@pytest.mark.parametrize(("mode", "algorithm"), [("sse-s3", "AES256"), ("sse-kms", "aws:kms")])
def test_published_objects_carry_sse_and_pull_accepts_them(
    minio: MinioServer, minio_env: dict[str, str], tmp_path: Path, mode: str, algorithm: str
) -> None:
    uri = new_uri(minio)
    store = open_store(uri, encryption=encryption_for(minio, mode))
    store.publish(1, make_model_dir(tmp_path / "m", 0.9))

    heads = heads_under(minio, key_of(uri, "1") + "/")
    names = {key.rsplit("/", 1)[-1] for key in heads}
    assert {MANIFEST_NAME, CLAIM_NAME, "saved_model.pb", "variables.index"} <= names
    for key, head in heads.items():
        assert head.get("ServerSideEncryption") == algorithm, key
        if mode == "sse-kms":
            assert str(head.get("SSEKMSKeyId", "")).endswith(minio.kms_key_name), key

    pulled = store.pull(1, tmp_path / "dest")
    assert (pulled / "saved_model.pb").read_bytes() == b"graph-0.9"
    assert store.read_json(1, "metrics.json")["accuracy"] == 0.9


def test_multipart_upload_and_copy_are_encrypted(
    minio: MinioServer, minio_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # S3's smallest part is 5 MiB; a 6 MiB file takes two parts in both upload and copy.
    monkeypatch.setattr(s3_module, "_MULTIPART_THRESHOLD", 5 * MiB)
    monkeypatch.setattr(
        s3_module,
        "_TRANSFER",
        TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB),
    )
    model = make_model_dir(tmp_path / "m")
    (model / "variables" / "variables.data-00000-of-00001").write_bytes(os.urandom(6 * MiB))
    uri = new_uri(minio)
    store = open_store(uri, encryption=encryption_for(minio, "sse-kms"))
    store.publish(1, model)

    big = key_of(uri, "1", "variables", "variables.data-00000-of-00001")
    head = minio.client().head_object(Bucket=BUCKET, Key=big)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert "-" in head["ETag"]  # a multipart object: the copy went part by part too
    pulled = store.pull(1, tmp_path / "dest")
    assert (pulled / "variables" / "variables.data-00000-of-00001").stat().st_size == 6 * MiB


def test_settings_from_the_environment_encrypt_what_the_trainer_publishes(
    minio: MinioServer,
    minio_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The trainer and the storage initializer get the spec's setting only as env.
    monkeypatch.setenv(ENCRYPTION_ENV, "sse-s3")
    uri = new_uri(minio)
    open_store(uri).publish(1, make_model_dir(tmp_path / "m"))
    heads = heads_under(minio, key_of(uri, "1") + "/")
    assert heads and all(h.get("ServerSideEncryption") == "AES256" for h in heads.values())


def test_pull_refuses_an_object_written_without_the_required_encryption(
    minio: MinioServer,
    minio_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uri = new_uri(minio)
    store = open_store(uri, encryption=encryption_for(minio, "sse-s3"))
    store.publish(1, make_model_dir(tmp_path / "m", 0.9))
    # Someone rewrites one object with the same bytes but no encryption.
    plain_key = key_of(uri, "1", "saved_model.pb")
    minio.client().put_object(Bucket=BUCKET, Key=plain_key, Body=b"graph-0.9")

    dest = tmp_path / "dest"
    with pytest.raises(UnencryptedObjectError) as caught:
        store.pull(1, dest)
    message = str(caught.value)
    assert f"s3://{BUCKET}/{plain_key}" in message
    assert "unencrypted" in message and "requires sse-s3" in message
    assert not (dest / "1").exists()

    # The storage initializer's command says the same in one line and fails.
    args = ["store", "pull", uri, "--versions", "1", "--dest", str(dest), "--encryption", "sse-s3"]
    assert main(args) == 1
    assert plain_key in capsys.readouterr().err
    # Without the requirement the very same version pulls.
    assert main(["store", "pull", uri, "--versions", "1", "--dest", str(dest)]) == 0


def test_sse_kms_refuses_a_version_published_with_sse_s3(
    minio: MinioServer, minio_env: dict[str, str], tmp_path: Path
) -> None:
    uri = new_uri(minio)
    open_store(uri, encryption=encryption_for(minio, "sse-s3")).publish(1, make_model_dir(tmp_path))
    strict = open_store(uri, encryption=encryption_for(minio, "sse-kms"))
    with pytest.raises(UnencryptedObjectError, match=r"stored with 'AES256'.*requires sse-kms"):
        strict.pull(1, tmp_path / "dest")
    with pytest.raises(UnencryptedObjectError, match=MANIFEST_NAME):
        strict.read_manifest(1)


def test_cli_publishes_with_sse_kms(
    minio: MinioServer, minio_env: dict[str, str], tmp_path: Path
) -> None:
    uri = new_uri(minio)
    model = make_model_dir(tmp_path / "m")
    publish = ["store", "publish", uri, "--version", "2", str(model)]
    assert main([*publish, "--encryption", "sse-kms", "--kms-key-id", minio.kms_key_name]) == 0
    heads = heads_under(minio, key_of(uri, "2") + "/")
    assert heads and all(h.get("ServerSideEncryption") == "aws:kms" for h in heads.values())


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--encryption", "rot13"], "--encryption 'rot13' is unknown"),
        (["--encryption", "sse-s3", "--kms-key-id", "k"], "--kms-key-id is set but"),
        (["--encryption", "sse-kms", "--kms-key-id", "k" * 3000], "--kms-key-id is not a KMS"),
    ],
)
def test_cli_refuses_bad_encryption_flags_before_any_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], expected: str
) -> None:
    # No MinIO: the flags are refused before a client exists.
    args = ["store", "pull", "s3://models/x", "--versions", "1", "--dest", str(tmp_path), *flags]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err and "k" * 100 not in err


# -- https:// endpoints -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_minio(
    tmp_path_factory: pytest.TempPathFactory, minio: MinioServer
) -> Iterator[MinioServer]:
    # `minio` first: it skips (or fails under CI) when the binary is unavailable.
    server = MinioServer(data_dir=tmp_path_factory.mktemp("minio-tls"), tls=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tls_env(tls_minio: MinioServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name in ("AWS_CA_BUNDLE", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", ENCRYPTION_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in tls_minio.env.items():
        monkeypatch.setenv(name, value)
    return tls_minio.env


def test_publish_and_pull_over_https_with_the_ca_bundle(
    tls_minio: MinioServer,
    tls_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert tls_minio.endpoint.startswith("https://")
    uri = new_uri(tls_minio)
    ca = str(tls_minio.ca_bundle)
    model = make_model_dir(tmp_path / "m", 0.8)
    assert main(["store", "publish", uri, "--version", "1", str(model), "--ca-bundle", ca]) == 0
    # In pods the bundle arrives as AWS_CA_BUNDLE, which boto3 reads itself.
    monkeypatch.setenv("AWS_CA_BUNDLE", ca)
    store = open_store(uri, encryption=StoreEncryption("sse-s3"))
    store.publish(2, make_model_dir(tmp_path / "n", 0.85))
    assert store.list_versions() == [1, 2]
    assert (store.pull(2, tmp_path / "dest") / "saved_model.pb").read_bytes() == b"graph-0.85"


def test_https_without_the_ca_names_the_endpoint_and_the_fix(
    tls_minio: MinioServer, tls_env: dict[str, str], tmp_path: Path
) -> None:
    store = open_store(new_uri(tls_minio))
    assert isinstance(store, S3Store)
    with pytest.raises(StoreAccessError) as caught:
        store.list_versions()
    message = str(caught.value)
    assert tls_minio.endpoint in message
    assert "not trusted" in message and "spec.storage.caBundle" in message
    assert "--ca-bundle" in message and "AWS_CA_BUNDLE" in message
    assert tls_minio.secret_key not in message


def test_a_missing_ca_bundle_file_is_refused_before_any_request(
    tls_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = str(tmp_path / "nope.crt")
    with pytest.raises(UserError, match=r"--ca-bundle names .*not a readable file"):
        open_store("s3://models/x", ca_bundle=missing)
    monkeypatch.setenv("AWS_CA_BUNDLE", missing)
    with pytest.raises(UserError, match=r"AWS_CA_BUNDLE names .*spec\.storage\.caBundle"):
        open_store("s3://models/x")


def test_encrypted_objects_stay_readable_after_a_restart_on_the_same_data(
    tmp_path: Path, minio: MinioServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The local stack keeps its MinIO data between runs, so the KMS key must persist with it.
    data_dir = tmp_path / "minio"
    model = make_model_dir(tmp_path / "m", 0.7)
    for attempt in ("publish", "pull"):
        with MinioServer(data_dir=data_dir, secret_key="fixed-secret-for-restart") as server:
            for name, value in server.env.items():
                monkeypatch.setenv(name, value)
            uri = f"s3://{server.bucket(BUCKET)}/restart"
            store = open_store(uri, encryption=encryption_for(server, "sse-kms"))
            if attempt == "publish":
                store.publish(1, model)
            else:
                pulled = store.pull(1, tmp_path / "dest")
                assert (pulled / "saved_model.pb").read_bytes() == b"graph-0.7"


def test_a_claim_taken_over_by_a_publisher_without_encryption_is_a_lost_race(
    minio: MinioServer, minio_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Claims hold no model data: another publisher's plain claim means "taken", not "tampered".
    uri = new_uri(minio)
    store = open_store(uri, encryption=encryption_for(minio, "sse-s3"))
    assert isinstance(store, S3Store)
    copy_into_place = store._copy_into_place

    def copy_then_lose_the_claim(version: int, *args: Any) -> None:
        copy_into_place(version, *args)
        minio.client().put_object(
            Bucket=BUCKET, Key=key_of(uri, str(version), CLAIM_NAME), Body=b'{"publishId":"other"}'
        )

    monkeypatch.setattr(store, "_copy_into_place", copy_then_lose_the_claim)
    with pytest.raises(VersionExistsError, match="took the number over"):
        store.publish(1, make_model_dir(tmp_path / "m"))
