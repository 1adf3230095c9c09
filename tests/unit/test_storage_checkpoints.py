"""Checkpoint areas in a file:// store: where they live, the sync order, hostile contents."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfmaas.errors import UserError
from tfmaas.storage import StoreError, open_store
from tfmaas.storage.checkpoints import (
    CHECKPOINT_INDEX,
    MAX_CHECKPOINT_FILES,
    check_download,
    checkpoint_path,
    stale_names,
    upload_order,
)
from tfmaas.storage.local import STALE_STAGING_SECONDS, FileStore


def _checkpoint(directory: Path, number: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.iterdir():
        old.unlink()
    (directory / f"ckpt-{number}.index").write_bytes(b"index")
    (directory / f"ckpt-{number}.data-00000-of-00001").write_bytes(b"data" * number)
    (directory / CHECKPOINT_INDEX).write_text(f'model_checkpoint_path: "ckpt-{number}"\n')
    return directory


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    opened = open_store(f"file://{tmp_path / 'store'}")
    assert isinstance(opened, FileStore)
    return opened


@pytest.mark.parametrize("name", ["../escape", ".hidden", "a/b", "", "x" * 201, "a..b"])
def test_a_download_with_a_foreign_file_name_is_refused(name: str) -> None:
    with pytest.raises(StoreError, match="not a checkpoint file name"):
        check_download({CHECKPOINT_INDEX: 10, name: 1}, source="s3://b/m/.staging/ckpt-1/")


def test_a_download_with_too_many_files_or_bytes_is_refused() -> None:
    many = {f"f{i}": 1 for i in range(MAX_CHECKPOINT_FILES + 1)}
    with pytest.raises(StoreError, match="more than the 64"):
        check_download(many, source="here")
    with pytest.raises(StoreError, match="bytes"):
        check_download({"ckpt-1.data": 64 * 1024**3}, source="here")


def test_upload_order_puts_the_index_last_and_needs_one(tmp_path: Path) -> None:
    directory = _checkpoint(tmp_path / "c", 3)
    assert upload_order(directory)[-1] == CHECKPOINT_INDEX
    (directory / CHECKPOINT_INDEX).unlink()
    with pytest.raises(UserError, match="no 'checkpoint' index"):
        upload_order(directory)


def test_stale_names_are_the_remote_files_not_kept() -> None:
    assert stale_names(["ckpt-1.index", "checkpoint"], ["ckpt-2.index", "checkpoint"]) == [
        "ckpt-1.index"
    ]


def test_the_area_is_under_staging_never_a_version(store: FileStore, tmp_path: Path) -> None:
    assert checkpoint_path(7) == ".staging/ckpt-7"
    assert store.checkpoint_uri(7) == f"{store.uri}/.staging/ckpt-7/"
    store.save_checkpoint(7, _checkpoint(tmp_path / "c", 1))
    assert store.list_versions() == []
    with pytest.raises(UserError):
        store.checkpoint_uri(0)


def test_sync_replaces_the_old_checkpoint_and_round_trips(store: FileStore, tmp_path: Path) -> None:
    local = tmp_path / "c"
    store.save_checkpoint(2, _checkpoint(local, 1))
    store.save_checkpoint(2, _checkpoint(local, 2))
    area = store.root / ".staging" / "ckpt-2"
    assert sorted(p.name for p in area.iterdir()) == sorted(p.name for p in local.iterdir())
    restored = tmp_path / "restored"
    assert store.load_checkpoint(2, restored)
    assert (restored / "ckpt-2.data-00000-of-00001").read_bytes() == b"data" * 2
    assert not store.load_checkpoint(3, tmp_path / "none")


def test_a_sync_killed_halfway_leaves_a_temporary_that_is_not_downloaded(
    store: FileStore, tmp_path: Path
) -> None:
    store.save_checkpoint(4, _checkpoint(tmp_path / "c", 1))
    area = store.root / ".staging" / "ckpt-4"
    (area / ".ckpt-2.index.1234abcd").write_bytes(b"half")
    restored = tmp_path / "restored"
    assert store.load_checkpoint(4, restored)
    assert not (restored / ".ckpt-2.index.1234abcd").exists()


def test_a_planted_foreign_file_fails_the_download(store: FileStore, tmp_path: Path) -> None:
    store.save_checkpoint(5, _checkpoint(tmp_path / "c", 1))
    (store.root / ".staging" / "ckpt-5" / "evil name").write_bytes(b"x")
    with pytest.raises(StoreError, match="not a checkpoint file name"):
        store.load_checkpoint(5, tmp_path / "restored")


def test_delete_and_gc_remove_checkpoints(store: FileStore, tmp_path: Path) -> None:
    import os

    store.save_checkpoint(6, _checkpoint(tmp_path / "c", 1))
    store.delete_checkpoint(6)
    store.delete_checkpoint(6)  # nothing there: no error
    assert not store.load_checkpoint(6, tmp_path / "r")
    store.save_checkpoint(8, _checkpoint(tmp_path / "c", 1))
    area = store.root / ".staging" / "ckpt-8"
    assert store.gc() == []  # fresh: a trainer may still be writing it
    old = area.stat().st_mtime - STALE_STAGING_SECONDS - 10
    os.utime(area, (old, old))
    assert store.gc() == [f"{store.uri}/.staging/ckpt-8"]


def test_logs_sit_beside_the_versions_and_are_never_listed(
    store: FileStore, tmp_path: Path
) -> None:
    from tfmaas.cli.local import tensorboard_command

    run = tmp_path / "run"
    (run / "train").mkdir(parents=True)
    (run / "train" / "events.out.tfevents.1").write_bytes(b"first")
    store.save_logs(3, run)
    (run / "train" / "events.out.tfevents.2").write_bytes(b"resumed")
    store.save_logs(3, run)
    logs = store.root / "logs" / "3" / "train"
    assert sorted(p.name for p in logs.iterdir()) == [
        "events.out.tfevents.1",
        "events.out.tfevents.2",
    ]
    assert store.list_versions() == []
    assert store.logs_uri(3) == f"{store.uri}/logs/3/"
    assert tensorboard_command(store.uri) == f"tensorboard --logdir {store.root / 'logs'}"
    assert tensorboard_command("s3://bucket/m/") == "tensorboard --logdir s3://bucket/m/logs"
    assert tensorboard_command("file:///tmp/a b") == "tensorboard --logdir '/tmp/a b/logs'"


def test_a_logs_directory_with_too_many_files_is_refused(store: FileStore, tmp_path: Path) -> None:
    from tfmaas.storage.checkpoints import MAX_LOG_FILES

    run = tmp_path / "run"
    run.mkdir()
    for index in range(MAX_LOG_FILES + 1):
        (run / f"f{index}").write_bytes(b"")
    with pytest.raises(UserError, match="over 256"):
        store.save_logs(1, run)
