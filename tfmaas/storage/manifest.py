"""The manifest: the list of a version's files with size and sha256, written last.

Its presence is what makes a version visible, and its checksums are what `pull`
verifies, so a torn upload or a damaged object is never served.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from tfmaas.errors import UserError
from tfmaas.storage.base import MANIFEST_NAME, CorruptVersionError, StoreError
from tfmaas.timestamps import now_rfc3339

FORMAT = "tfmaas.io/manifest/v1"
_CHUNK = 1 << 20
# A version must be something TF Serving can load from <base>/<version>/.
_SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative, POSIX separators
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    version: int
    files: tuple[FileEntry, ...]
    published_at: str
    publish_id: str

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def entry(self, path: str) -> FileEntry | None:
        for entry in self.files:
            if entry.path == path:
                return entry
        return None

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "version": self.version,
            "publishedAt": self.published_at,
            "publishId": self.publish_id,
            "totalBytes": self.total_bytes,
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
        }
        return json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, *, where: str) -> Manifest:
        try:
            doc = json.loads(data)
            if doc.get("format") != FORMAT:
                raise ValueError(f"unknown format {doc.get('format')!r}")
            files = tuple(
                FileEntry(path=_safe_relpath(f["path"]), size=int(f["size"]), sha256=f["sha256"])
                for f in doc["files"]
            )
            return cls(
                version=int(doc["version"]),
                files=files,
                published_at=str(doc["publishedAt"]),
                publish_id=str(doc.get("publishId", "")),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreError(f"the manifest {where} is unreadable: {exc}") from exc


def sha256_of(stream: BinaryIO) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def file_digest(path: Path) -> tuple[int, str]:
    with open(path, "rb") as stream:
        return sha256_of(stream)


def _safe_relpath(path: str) -> str:
    pure = PurePosixPath(path)
    if pure.is_absolute() or not pure.parts or any(p in ("", ".", "..") for p in pure.parts):
        raise ValueError(f"unsafe file path {path!r}")
    return str(pure)


def collect_files(local_dir: Path) -> list[str]:
    """Relative paths of the files to publish from `local_dir`, checked to form a SavedModel."""
    if not local_dir.is_dir():
        raise UserError(
            f"cannot publish {local_dir}: it is not a directory; give the directory that holds "
            "saved_model.pb"
        )
    paths: list[str] = []
    for root, dirs, files in os.walk(local_dir):
        dirs.sort()
        for name in sorted(files):
            full = Path(root, name)
            rel = full.relative_to(local_dir).as_posix()
            if rel == MANIFEST_NAME:
                continue  # a directory pulled from a store carries its old manifest
            if not full.is_file():
                raise UserError(f"cannot publish {full}: not a regular file (a broken link?)")
            paths.append(rel)
    if not any(p in _SAVED_MODEL_FILES for p in paths):
        raise UserError(
            f"cannot publish {local_dir}: it has no saved_model.pb at its root, so TF Serving "
            "could not load it; export the model with tf.saved_model.save(model, DIR) and "
            "publish DIR"
        )
    return paths


def build_manifest(local_dir: Path, version: int, publish_id: str) -> Manifest:
    entries = []
    for rel in collect_files(local_dir):
        size, sha = file_digest(local_dir / rel)
        entries.append(FileEntry(path=rel, size=size, sha256=sha))
    return Manifest(
        version=version, files=tuple(entries), published_at=now_rfc3339(), publish_id=publish_id
    )


def verify_file(path: Path, entry: FileEntry, *, source: str) -> None:
    size, sha = file_digest(path)
    if size != entry.size or sha != entry.sha256:
        raise CorruptVersionError(
            f"{source}{entry.path} does not match its manifest (size {size}, expected "
            f"{entry.size}; sha256 {sha[:12]}…, expected {entry.sha256[:12]}…); the stored copy "
            "is damaged: publish the model again under a new version"
        )


def verify_bytes(data: bytes, entry: FileEntry, *, source: str) -> None:
    sha = hashlib.sha256(data).hexdigest()
    if len(data) != entry.size or sha != entry.sha256:
        raise CorruptVersionError(
            f"{source}{entry.path} does not match its manifest (size {len(data)}, expected "
            f"{entry.size}); the stored copy is damaged: publish the model again under a new "
            "version"
        )


def is_complete_copy(local_version_dir: Path, manifest: Manifest) -> bool:
    """Whether `local_version_dir` already holds this manifest's files (sizes checked).

    Sizes, not checksums: a copy only ever appears by an atomic rename after full
    verification, so a matching manifest means it was complete when it appeared.
    """
    local_manifest = local_version_dir / MANIFEST_NAME
    try:
        local = Manifest.from_json(local_manifest.read_bytes(), where=str(local_manifest))
    except (OSError, StoreError):
        return False
    if local != manifest:
        return False
    for entry in manifest.files:
        path = local_version_dir / entry.path
        try:
            if path.stat().st_size != entry.size:
                return False
        except OSError:
            return False
    return True


def manifest_dict(manifest: Manifest) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(manifest.to_json())
    return value
