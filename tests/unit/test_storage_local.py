import json
import os
import threading
import time
from pathlib import Path

import pytest

from tfmaas.errors import UserError
from tfmaas.storage import (
    MANIFEST_NAME,
    CorruptVersionError,
    VersionExistsError,
    VersionNotFoundError,
    open_store,
    read_uri,
)
from tfmaas.storage.local import STALE_STAGING_SECONDS, FileStore
from tfmaas.storage.transfer import PULL_TEMP_PREFIX


def make_model_dir(root: Path, accuracy: float = 0.9) -> Path:
    (root / "variables").mkdir(parents=True)
    (root / "assets").mkdir()
    (root / "assets" / "vocab.txt").write_text("a\nb\n")
    (root / "saved_model.pb").write_bytes(b"graph-" + str(accuracy).encode())
    (root / "variables" / "variables.index").write_bytes(b"index")
    (root / "metrics.json").write_text(json.dumps({"accuracy": accuracy, "f1": accuracy - 0.01}))
    (root / "model_card.json").write_text(json.dumps({"classes": ["negative", "positive"]}))
    return root


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    opened = open_store(f"file://{tmp_path / 'store'}")
    assert isinstance(opened, FileStore)
    return opened


def test_publish_list_pull_round_trip(store: FileStore, tmp_path: Path) -> None:
    assert store.list_versions() == []
    assert store.latest_version() is None
    uri = store.publish(1, make_model_dir(tmp_path / "m1", 0.8))
    store.publish(2, make_model_dir(tmp_path / "m2", 0.9))
    assert uri == f"{store.uri}/1/"
    assert store.list_versions() == [1, 2]
    assert store.latest_version() == 2
    assert store.read_json(2, "metrics.json")["accuracy"] == 0.9

    pulled = store.pull(2, tmp_path / "dest")
    assert pulled == tmp_path / "dest" / "2"
    assert (pulled / "saved_model.pb").read_bytes() == b"graph-0.9"
    assert (pulled / "variables" / "variables.index").read_bytes() == b"index"
    assert (pulled / "assets" / "vocab.txt").read_text() == "a\nb\n"
    assert sorted(os.listdir(tmp_path / "dest")) == ["2"]


def test_published_layout_is_what_tf_serving_loads(store: FileStore, tmp_path: Path) -> None:
    store.publish(5, make_model_dir(tmp_path / "m"))
    version_dir = store.root / "5"
    assert (version_dir / "saved_model.pb").is_file()
    assert (version_dir / "variables" / "variables.index").is_file()
    assert (version_dir / MANIFEST_NAME).is_file()
    # Nothing numeric but the version itself: TF Serving would try to load it.
    assert [n for n in os.listdir(store.root) if n.isdigit()] == ["5"]


def test_second_publish_of_a_version_is_refused_and_changes_nothing(
    store: FileStore, tmp_path: Path
) -> None:
    store.publish(3, make_model_dir(tmp_path / "a", 0.7))
    with pytest.raises(VersionExistsError, match=r"immutable.*new version number"):
        store.publish(3, make_model_dir(tmp_path / "b", 0.95))
    assert store.read_json(3, "metrics.json")["accuracy"] == 0.7
    assert not list((store.root / ".staging").iterdir())


def test_concurrent_publishers_of_one_version_exactly_one_wins(
    store: FileStore, tmp_path: Path
) -> None:
    dirs = [make_model_dir(tmp_path / f"m{i}", 0.5 + i / 100) for i in range(4)]
    barrier = threading.Barrier(len(dirs))
    outcomes: list[str] = []

    def publish(model: Path) -> None:
        barrier.wait()
        try:
            store.publish(9, model)
            outcomes.append("won")
        except VersionExistsError:
            outcomes.append("lost")

    threads = [threading.Thread(target=publish, args=(d,)) for d in dirs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["lost", "lost", "lost", "won"]
    assert store.list_versions() == [9]
    store.pull(9, tmp_path / "dest")  # the winner's files match its manifest


def test_a_hand_made_version_dir_is_not_listed_and_not_overwritten(
    store: FileStore, tmp_path: Path
) -> None:
    (store.root / "4").mkdir(parents=True)
    (store.root / "4" / "saved_model.pb").write_bytes(b"someone else's")
    assert store.list_versions() == []
    with pytest.raises(VersionExistsError):
        store.publish(4, make_model_dir(tmp_path / "m"))
    assert (store.root / "4" / "saved_model.pb").read_bytes() == b"someone else's"


def test_crash_mid_publish_leaves_nothing_visible(store: FileStore, tmp_path: Path) -> None:
    # What a publisher killed before its rename leaves: a staging dir with part of the files.
    staging = store.root / ".staging" / "6-deadbeef0000"
    staging.mkdir(parents=True)
    (staging / "saved_model.pb").write_bytes(b"half")
    assert store.list_versions() == []
    with pytest.raises(VersionNotFoundError, match="published versions: none"):
        store.pull(6, tmp_path / "dest")
    # The number is still free, and a stale leftover is collected.
    old = time.time() - STALE_STAGING_SECONDS - 10
    os.utime(staging, (old, old))
    store.publish(6, make_model_dir(tmp_path / "m"))
    assert store.list_versions() == [6]
    assert not staging.exists()


def test_gc_removes_only_stale_staging(store: FileStore, tmp_path: Path) -> None:
    store.publish(1, make_model_dir(tmp_path / "m"))
    stale = store.root / ".staging" / "2-aaaa"
    fresh = store.root / ".staging" / "3-bbbb"
    stale.mkdir(parents=True)
    fresh.mkdir()
    old = time.time() - STALE_STAGING_SECONDS - 10
    os.utime(stale, (old, old))
    assert store.gc() == [f"{store.uri}/.staging/2-aaaa"]
    assert fresh.exists() and store.list_versions() == [1]


def test_missing_version_error_lists_what_exists(store: FileStore, tmp_path: Path) -> None:
    store.publish(1, make_model_dir(tmp_path / "a"))
    store.publish(2, make_model_dir(tmp_path / "b"))
    with pytest.raises(VersionNotFoundError, match=r"version 7 .*published versions: 1, 2"):
        store.pull(7, tmp_path / "dest")
    with pytest.raises(VersionNotFoundError):
        store.read_json(7, "metrics.json")
    with pytest.raises(UserError, match=r"has no file 'nope\.json'"):
        store.read_json(1, "nope.json")


def test_pull_is_idempotent_and_keeps_a_complete_copy(store: FileStore, tmp_path: Path) -> None:
    store.publish(1, make_model_dir(tmp_path / "m"))
    dest = tmp_path / "dest"
    first = store.pull(1, dest)
    marker = first / "saved_model.pb"
    before = marker.stat().st_mtime_ns
    time.sleep(0.01)
    assert store.pull(1, dest) == first
    assert marker.stat().st_mtime_ns == before


def test_pull_refuses_to_replace_a_foreign_directory(store: FileStore, tmp_path: Path) -> None:
    store.publish(1, make_model_dir(tmp_path / "m"))
    (tmp_path / "dest" / "1").mkdir(parents=True)
    (tmp_path / "dest" / "1" / "stray").write_text("x")
    with pytest.raises(UserError, match="not a complete copy"):
        store.pull(1, tmp_path / "dest")


def test_a_failed_pull_leaves_no_half_version(store: FileStore, tmp_path: Path) -> None:
    store.publish(1, make_model_dir(tmp_path / "m"))
    (store.root / "1" / "variables" / "variables.index").write_bytes(b"rotted")
    dest = tmp_path / "dest"
    with pytest.raises(CorruptVersionError, match=r"variables/variables\.index"):
        store.pull(1, dest)
    assert os.listdir(dest) == []


def test_pull_clears_leftovers_of_a_crashed_pull(store: FileStore, tmp_path: Path) -> None:
    store.publish(1, make_model_dir(tmp_path / "m"))
    leftover = tmp_path / "dest" / f"{PULL_TEMP_PREFIX}1-0123456789ab"
    leftover.mkdir(parents=True)
    (leftover / "saved_model.pb").write_bytes(b"half")
    store.pull(1, tmp_path / "dest")
    assert sorted(os.listdir(tmp_path / "dest")) == ["1"]


def test_read_json_verifies_the_file(store: FileStore, tmp_path: Path) -> None:
    store.publish(1, make_model_dir(tmp_path / "m"))
    (store.root / "1" / "metrics.json").write_text('{"accuracy": 1.0, "f1": 1.0}')
    with pytest.raises(CorruptVersionError):
        store.read_json(1, "metrics.json")


def test_read_uri_reads_files_and_explains_mistakes(tmp_path: Path) -> None:
    data = tmp_path / "reviews.csv"
    data.write_text("text,label\n好,positive\n")
    assert read_uri(f"file://{data}", max_bytes=1000) == data.read_bytes()
    with pytest.raises(UserError, match="no such file"):
        read_uri(f"file://{tmp_path / 'missing.csv'}", max_bytes=1000)
    with pytest.raises(UserError, match="is a directory"):
        read_uri(f"file://{tmp_path}", max_bytes=1000)
    with pytest.raises(UserError, match="names a bucket, not a file"):
        read_uri("s3://bucket", max_bytes=1000)
    with pytest.raises(UserError, match="unsupported scheme"):
        read_uri("http://example/x.csv", max_bytes=1000)


def test_read_uri_refuses_a_file_over_its_limit_without_reading_it_all(tmp_path: Path) -> None:
    data = tmp_path / "reviews.csv"
    data.write_bytes(b"x" * 101)
    assert read_uri(f"file://{data}", max_bytes=101) == data.read_bytes()
    with pytest.raises(UserError, match="larger than the limit of 100 bytes"):
        read_uri(f"file://{data}", max_bytes=100)
    # /proc files report a size of 0; the bound holds all the same.
    with pytest.raises(UserError, match="larger than the limit of 10 bytes"):
        read_uri("file:///proc/self/maps", max_bytes=10)
