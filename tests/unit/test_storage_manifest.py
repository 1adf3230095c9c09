import hashlib
import json
from pathlib import Path

import pytest

from tfmaas.errors import UserError
from tfmaas.storage.base import (
    MANIFEST_NAME,
    CorruptVersionError,
    StoreError,
    check_version,
    parse_version_list,
    version_from_name,
)
from tfmaas.storage.manifest import (
    FileEntry,
    Manifest,
    build_manifest,
    is_complete_copy,
    verify_bytes,
    verify_file,
)


def make_model_dir(root: Path, payload: bytes = b"weights") -> Path:
    (root / "variables").mkdir(parents=True)
    (root / "assets").mkdir()
    (root / "saved_model.pb").write_bytes(b"graph")
    (root / "variables" / "variables.data-00000-of-00001").write_bytes(payload)
    (root / "variables" / "variables.index").write_bytes(b"index")
    (root / "metrics.json").write_text(json.dumps({"accuracy": 0.9, "f1": 0.88}))
    return root


@pytest.mark.parametrize(
    ("name", "version"),
    [("1", 1), ("42", 42), ("999999999999999999", 10**18 - 1), ("1000000000000000000", None)],
)
def test_only_canonical_decimal_names_are_versions(name: str, version: int | None) -> None:
    assert version_from_name(name) == version


@pytest.mark.parametrize("name", ["0", "07", "+7", "-1", "1.0", "v1", ".staging", " 1", ""])
def test_non_version_names_are_ignored(name: str) -> None:
    assert version_from_name(name) is None


@pytest.mark.parametrize("bad", [0, -3, True, "3", 2.0, None, 10**18])
def test_check_version_rejects_non_positive_or_non_int(bad: object) -> None:
    with pytest.raises(UserError, match="version"):
        check_version(bad)


def test_parse_version_list_sorts_and_dedups() -> None:
    assert parse_version_list("4, 3,4,") == [3, 4]
    with pytest.raises(UserError, match="'x'"):
        parse_version_list("3,x")
    with pytest.raises(UserError, match="empty"):
        parse_version_list(" , ")


def test_manifest_lists_every_file_with_size_and_sha(tmp_path: Path) -> None:
    model = make_model_dir(tmp_path / "m")
    manifest = build_manifest(model, 3, "abc")
    paths = [f.path for f in manifest.files]
    assert paths == [
        "metrics.json",
        "saved_model.pb",
        "variables/variables.data-00000-of-00001",
        "variables/variables.index",
    ]
    entry = manifest.entry("saved_model.pb")
    assert entry is not None and entry.size == 5
    assert entry.sha256 == hashlib.sha256(b"graph").hexdigest()
    assert manifest.total_bytes == sum(f.size for f in manifest.files)


def test_manifest_round_trips_through_json(tmp_path: Path) -> None:
    manifest = build_manifest(make_model_dir(tmp_path / "m"), 7, "pid")
    again = Manifest.from_json(manifest.to_json(), where="test")
    assert again == manifest
    doc = json.loads(manifest.to_json())
    assert doc["version"] == 7 and doc["publishedAt"].endswith("Z")


def test_an_old_manifest_in_the_source_dir_is_not_published(tmp_path: Path) -> None:
    model = make_model_dir(tmp_path / "m")
    (model / MANIFEST_NAME).write_text("{}")
    assert MANIFEST_NAME not in [f.path for f in build_manifest(model, 1, "p").files]


def test_a_directory_without_saved_model_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "metrics.json").write_text("{}")
    with pytest.raises(UserError, match=r"no saved_model\.pb"):
        build_manifest(tmp_path / "m", 1, "p")
    with pytest.raises(UserError, match="not a directory"):
        build_manifest(tmp_path / "missing", 1, "p")


@pytest.mark.parametrize(
    "doc",
    [
        b"not json",
        b'{"format": "other/v9", "files": []}',
        json.dumps(
            {
                "format": "tfmaas.io/manifest/v1",
                "version": 1,
                "publishedAt": "x",
                "files": [{"path": "../escape", "size": 1, "sha256": "0"}],
            }
        ).encode(),
    ],
)
def test_unreadable_or_unsafe_manifests_are_rejected(doc: bytes) -> None:
    with pytest.raises(StoreError, match="unreadable"):
        Manifest.from_json(doc, where="s3://b/1/")


def test_verification_catches_changed_content_and_size(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"hello")
    good = FileEntry("f", 5, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
    verify_file(path, good, source="x/")
    verify_bytes(b"hello", good, source="x/")
    with pytest.raises(CorruptVersionError, match="does not match"):
        verify_bytes(b"hellO", good, source="x/")
    path.write_bytes(b"hello!")
    with pytest.raises(CorruptVersionError, match="size 6, expected 5"):
        verify_file(path, good, source="x/")


def test_complete_copy_needs_the_same_manifest_and_sizes(tmp_path: Path) -> None:
    model = make_model_dir(tmp_path / "m")
    manifest = build_manifest(model, 1, "p")
    assert not is_complete_copy(model, manifest)
    (model / MANIFEST_NAME).write_bytes(manifest.to_json())
    assert is_complete_copy(model, manifest)
    (model / "saved_model.pb").write_bytes(b"gr")
    assert not is_complete_copy(model, manifest)
