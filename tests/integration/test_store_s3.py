"""The S3 store against a real MinIO: publish, list, pull, races, crashes and error messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_storage_local import make_model_dir
from tfmaas.cli.main import main
from tfmaas.dev.minio import MinioServer
from tfmaas.dev.processes import free_port
from tfmaas.errors import UserError
from tfmaas.storage import (
    MANIFEST_NAME,
    StoreAccessError,
    StoreError,
    VersionExistsError,
    VersionNotFoundError,
    open_store,
    read_uri,
)
from tfmaas.storage import s3 as s3_module
from tfmaas.storage.s3 import CLAIM_NAME, S3Store

pytestmark = pytest.mark.integration

BUCKET = "models"


@pytest.fixture
def store(minio: MinioServer, minio_env: dict[str, str]) -> S3Store:
    minio.bucket(BUCKET)
    opened = open_store(f"s3://{BUCKET}/t-{uuid.uuid4().hex[:8]}/sentiment")
    assert isinstance(opened, S3Store)
    return opened


def keys_under(minio: MinioServer, prefix: str) -> list[str]:
    response = minio.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(obj["Key"] for obj in response.get("Contents", []))


def test_publish_list_pull_round_trip(store: S3Store, minio: MinioServer, tmp_path: Path) -> None:
    assert store.list_versions() == []
    uri = store.publish(1, make_model_dir(tmp_path / "a", 0.81))
    store.publish(2, make_model_dir(tmp_path / "b", 0.92))
    assert uri == f"{store.uri}/1/"
    assert store.list_versions() == [1, 2]
    assert store.latest_version() == 2
    assert store.read_json(2, "metrics.json")["accuracy"] == 0.92

    pulled = store.pull(1, tmp_path / "dest")
    assert (pulled / "saved_model.pb").read_bytes() == b"graph-0.81"
    assert (pulled / "assets" / "vocab.txt").read_text() == "a\nb\n"
    # The layout TF Serving loads from <base>/<version>/, and no staging left behind.
    keys = keys_under(minio, store.location.key + "/")
    assert f"{store.location.key}/2/saved_model.pb" in keys
    assert f"{store.location.key}/2/variables/variables.index" in keys
    assert not [k for k in keys if "/.staging/" in k]


def test_second_publish_is_refused_and_changes_nothing(store: S3Store, tmp_path: Path) -> None:
    store.publish(3, make_model_dir(tmp_path / "a", 0.7))
    with pytest.raises(VersionExistsError, match=r"immutable.*new version number"):
        store.publish(3, make_model_dir(tmp_path / "b", 0.99))
    assert store.read_json(3, "metrics.json")["accuracy"] == 0.7
    store.pull(3, tmp_path / "dest")


def test_concurrent_publishers_of_one_version_exactly_one_wins(
    store: S3Store, tmp_path: Path
) -> None:
    dirs = [make_model_dir(tmp_path / f"m{i}", 0.5 + i / 100) for i in range(4)]
    stores = [open_store(store.uri) for _ in dirs]
    barrier = threading.Barrier(len(dirs))
    outcomes: dict[int, str] = {}

    def publish(index: int) -> None:
        barrier.wait()
        try:
            stores[index].publish(5, dirs[index])
            outcomes[index] = "won"
        except VersionExistsError:
            outcomes[index] = "lost"

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(len(dirs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes.values()) == ["lost", "lost", "lost", "won"]
    winner = next(i for i, outcome in outcomes.items() if outcome == "won")
    # Every file is the winner's: the pull verifies each against the winner's manifest.
    pulled = store.pull(5, tmp_path / "dest")
    assert (pulled / "saved_model.pb").read_bytes() == (
        dirs[winner] / "saved_model.pb"
    ).read_bytes()
    assert store.list_versions() == [5]


def test_a_crashed_upload_is_never_visible(
    store: S3Store, minio: MinioServer, tmp_path: Path
) -> None:
    client = minio.client()
    # Killed during upload: only staging objects exist.
    staging = f"{store.location.key}/.staging/4-0123456789ab"
    client.put_object(Bucket=BUCKET, Key=f"{staging}/saved_model.pb", Body=b"half")
    # Killed after claiming and copying part of the files, before the manifest.
    client.put_object(Bucket=BUCKET, Key=f"{store.location.key}/6/saved_model.pb", Body=b"half")
    client.put_object(
        Bucket=BUCKET,
        Key=f"{store.location.key}/6/{CLAIM_NAME}",
        Body=json.dumps({"publishId": "dead"}).encode(),
    )
    assert store.list_versions() == []
    with pytest.raises(VersionNotFoundError, match="published versions: none"):
        store.pull(6, tmp_path / "dest")
    assert store.latest_version() is None
    # A fresh claim may belong to a live publisher: the number is not taken over yet.
    with pytest.raises(VersionExistsError, match="another publisher claimed it"):
        store.publish(6, make_model_dir(tmp_path / "m"))


def test_an_expired_claim_is_taken_over_and_collected(
    store: S3Store, minio: MinioServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = minio.client()
    base = store.location.key
    for version in (6, 7):
        client.put_object(Bucket=BUCKET, Key=f"{base}/{version}/stray.bin", Body=b"half")
        client.put_object(Bucket=BUCKET, Key=f"{base}/{version}/{CLAIM_NAME}", Body=b"{}")
    client.put_object(Bucket=BUCKET, Key=f"{base}/.staging/7-aaaa/saved_model.pb", Body=b"x")
    client.put_object(Bucket=BUCKET, Key=f"{base}/.staging/6-bbbb/saved_model.pb", Body=b"x")
    monkeypatch.setattr(s3_module, "CLAIM_TTL_SECONDS", -1)
    monkeypatch.setattr(s3_module, "STALE_STAGING_SECONDS", -1)

    store.publish(6, make_model_dir(tmp_path / "m"))
    assert store.list_versions() == [6]
    assert f"{base}/6/stray.bin" not in keys_under(minio, f"{base}/6/")
    assert keys_under(minio, f"{base}/.staging/6-") == []
    store.pull(6, tmp_path / "dest")

    removed = store.gc()
    assert sorted(removed) == [f"{store.uri}/.staging/7-aaaa/", f"{store.uri}/7/"]
    assert keys_under(minio, f"{base}/7/") == []
    assert keys_under(minio, f"{base}/.staging/") == []
    assert store.list_versions() == [6]


def test_a_damaged_object_fails_the_pull_and_leaves_nothing(
    store: S3Store, minio: MinioServer, tmp_path: Path
) -> None:
    store.publish(1, make_model_dir(tmp_path / "m"))
    minio.client().put_object(
        Bucket=BUCKET, Key=f"{store.location.key}/1/variables/variables.index", Body=b"rotted"
    )
    dest = tmp_path / "dest"
    assert main(["store", "pull", store.uri, "--versions", "1", "--dest", str(dest)]) == 1
    assert os.listdir(dest) == []


def test_cli_publish_list_pull(
    store: S3Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = make_model_dir(tmp_path / "m", 0.875)
    assert main(["store", "publish", store.uri, "--version", "3", str(model)]) == 0
    assert main(["store", "publish", store.uri, "--version", "3", str(model)]) == 2
    assert "version 3 already exists" in capsys.readouterr().err
    assert main(["store", "list", store.uri]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[1].split()[0] == "3" and rows[1].split()[2] == "0.8750"
    dest = tmp_path / "dest"
    for word in ("pulled", "kept"):
        assert main(["store", "pull", store.uri, "--versions", "3", "--dest", str(dest)]) == 0
        assert f"{word} version 3" in capsys.readouterr().out
    assert sorted(os.listdir(dest / "3")) == sorted(
        [MANIFEST_NAME, "assets", "metrics.json", "model_card.json", "saved_model.pb", "variables"]
    )


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tfmaas", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_wrong_credentials_are_named_and_not_shown(
    store: S3Store, minio_env: dict[str, str], tmp_path: Path
) -> None:
    wrong_secret = "not-the-secret-" + uuid.uuid4().hex
    result = run_cli(
        "store", "list", store.uri, env={**minio_env, "AWS_SECRET_ACCESS_KEY": wrong_secret}
    )
    assert result.returncode == 2
    assert "refused the credentials in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" in result.stderr
    assert "SignatureDoesNotMatch" in result.stderr
    assert wrong_secret not in result.stderr + result.stdout
    assert minio_env["AWS_SECRET_ACCESS_KEY"] not in result.stderr + result.stdout

    result = run_cli("store", "list", store.uri, env={**minio_env, "AWS_ACCESS_KEY_ID": "nobody"})
    assert result.returncode == 2
    assert "refused the credentials" in result.stderr and "InvalidAccessKeyId" in result.stderr

    model = str(make_model_dir(tmp_path / "m"))
    for action in (
        ["publish", store.uri, "--version", "1", model],
        ["pull", store.uri, "--versions", "1", "--dest", str(tmp_path / "d")],
    ):
        result = run_cli("store", *action, env={**minio_env, "AWS_SECRET_ACCESS_KEY": wrong_secret})
        assert result.returncode == 2, result.stderr
        assert "refused the credentials" in result.stderr
        assert "SignatureDoesNotMatch" in result.stderr


def test_unreachable_endpoint_names_it_and_how_to_set_it(minio_env: dict[str, str]) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    result = run_cli("store", "list", "s3://models/x", "--endpoint", closed, env=minio_env)
    assert result.returncode == 2
    assert f"cannot reach the S3 endpoint {closed}" in result.stderr
    assert "AWS_ENDPOINT_URL" in result.stderr
    with pytest.raises(StoreAccessError, match="cannot reach"):
        read_uri("s3://models/data.csv", endpoint=closed, max_bytes=1000)


def test_missing_bucket_says_how_to_create_it(minio_env: dict[str, str], tmp_path: Path) -> None:
    missing = f"no-such-{uuid.uuid4().hex[:8]}"
    store = open_store(f"s3://{missing}/m")
    with pytest.raises(StoreAccessError, match=rf"bucket '{missing}' does not exist.*mb"):
        store.list_versions()
    with pytest.raises(StoreAccessError, match="does not exist"):
        store.publish(1, make_model_dir(tmp_path / "m"))
    with pytest.raises(StoreAccessError, match="does not exist"):
        store.pull(1, tmp_path / "dest")


def test_read_uri_of_an_s3_dataset(minio: MinioServer, minio_env: dict[str, str]) -> None:
    minio.bucket("datasets")
    body = "text,label\n这个手机很好用,positive\n太差了,negative\n".encode()
    key = f"reviews-{uuid.uuid4().hex[:6]}.csv"
    minio.client().put_object(Bucket="datasets", Key=key, Body=body)
    assert read_uri(f"s3://datasets/{key}", max_bytes=len(body)) == body
    with pytest.raises(UserError, match=f"larger than the limit of {len(body) - 1} bytes"):
        read_uri(f"s3://datasets/{key}", max_bytes=len(body) - 1)
    with pytest.raises(UserError, match="no such object"):
        read_uri("s3://datasets/missing.csv", max_bytes=1000)
    minio.client().put_object(Bucket="datasets", Key=f"empty-{key}", Body=b"")
    assert read_uri(f"s3://datasets/empty-{key}", max_bytes=1000) == b""


def test_endpoint_argument_wins_over_the_environment(
    minio: MinioServer, minio_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    store: Any = open_store(
        f"s3://{minio.bucket(BUCKET)}/ep-{uuid.uuid4().hex[:6]}", endpoint=minio.endpoint
    )
    store.publish(1, make_model_dir(tmp_path / "m"))
    assert store.list_versions() == [1]


def test_a_file_changed_during_publish_is_rejected_by_the_server(
    store: S3Store, minio: MinioServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_build = s3_module.build_manifest

    def build_then_change(local_dir: Path, version: int, publish_id: str) -> Any:
        manifest = real_build(local_dir, version, publish_id)
        (local_dir / "saved_model.pb").write_bytes(b"rewritten after the manifest was built")
        return manifest

    monkeypatch.setattr(s3_module, "build_manifest", build_then_change)
    with pytest.raises(StoreError, match=r"saved_model\.pb changed while it was being published"):
        store.publish(1, make_model_dir(tmp_path / "m"))
    assert store.list_versions() == []
    assert keys_under(minio, store.location.key + "/") == []


def test_checkpoints_sync_round_trip_and_refuse_planted_keys(
    store: S3Store, minio: MinioServer, tmp_path: Path
) -> None:
    from tests.unit.test_storage_checkpoints import _checkpoint

    local = tmp_path / "c"
    store.save_checkpoint(3, _checkpoint(local, 1))
    store.save_checkpoint(3, _checkpoint(local, 2))
    prefix = f"{store.location.key}/.staging/ckpt-3/"
    listed = minio.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    names = sorted(obj["Key"][len(prefix) :] for obj in listed["Contents"])
    assert names == sorted(p.name for p in local.iterdir())  # epoch 1's files are gone
    assert store.list_versions() == []

    restored = tmp_path / "restored"
    assert store.load_checkpoint(3, restored)
    assert (restored / "ckpt-2.data-00000-of-00001").read_bytes() == b"data" * 2
    assert not store.load_checkpoint(4, tmp_path / "none")

    # A key no trainer writes (a nested path) is refused before anything is downloaded.
    minio.client().put_object(Bucket=BUCKET, Key=prefix + "sub/escape", Body=b"x")
    with pytest.raises(StoreError, match="not a checkpoint file name"):
        store.load_checkpoint(3, tmp_path / "hostile")
    assert not (tmp_path / "hostile").exists()

    store.delete_checkpoint(3)
    assert "Contents" not in minio.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix)
