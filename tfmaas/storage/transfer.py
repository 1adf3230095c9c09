"""Verified reads of a version's files: atomic copies into a local directory (what `pull`
does) and single files (what `read_bytes` does), whatever store the bytes come from.

Files go into a dot-named temporary directory beside the target and are renamed into
place only after every checksum matched, so a crash (an init container killed halfway)
never leaves a half version that TF Serving would try to load.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from tfmaas.errors import UserError
from tfmaas.storage.base import MANIFEST_NAME
from tfmaas.storage.manifest import (
    FileEntry,
    Manifest,
    is_complete_copy,
    verify_bytes,
    verify_file,
)

PULL_TEMP_PREFIX = ".tfmaas-pull-"

Fetch = Callable[[FileEntry, Path], None]
Read = Callable[[FileEntry], bytes]


def read_file(manifest: Manifest, name: str, read: Read, *, source: str) -> bytes:
    """The file `name` of `manifest`'s version, read by `read(entry)` and checked against
    its checksum."""
    entry = manifest.entry(name)
    if entry is None:
        raise UserError(
            f"{source} has no file {name!r}; it has: " + ", ".join(f.path for f in manifest.files)
        )
    data = read(entry)
    verify_bytes(data, entry, source=source)
    return data


def pull_version(manifest: Manifest, dest_dir: Path, fetch: Fetch, *, source: str) -> Path:
    """Materialize `manifest`'s files as `dest_dir/<version>/` using `fetch(entry, path)`."""
    version = manifest.version
    target = dest_dir / str(version)
    if is_complete_copy(target, manifest):
        return target
    if target.exists() and any(target.iterdir()):
        raise UserError(
            f"{target} exists but is not a complete copy of {source}; remove it and pull again"
        )
    dest_dir.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(dest_dir, version)
    temp = dest_dir / f"{PULL_TEMP_PREFIX}{version}-{uuid.uuid4().hex[:12]}"
    temp.mkdir()
    try:
        for entry in manifest.files:
            path = temp / entry.path
            path.parent.mkdir(parents=True, exist_ok=True)
            fetch(entry, path)
            verify_file(path, entry, source=source)
        (temp / MANIFEST_NAME).write_bytes(manifest.to_json())
        _rename_into_place(temp, target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    if temp.exists():  # another puller of the same version finished first
        shutil.rmtree(temp, ignore_errors=True)
    return target


def _rename_into_place(temp: Path, target: Path) -> None:
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()  # an empty directory is no version; rename cannot replace it atomically
    try:
        os.rename(temp, target)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        # Someone else renamed a copy into place first; theirs is complete by construction.


def _remove_leftovers(dest_dir: Path, version: int) -> None:
    """Delete temporaries of earlier pulls of `version` that crashed before their rename."""
    for leftover in dest_dir.glob(f"{PULL_TEMP_PREFIX}{version}-*"):
        shutil.rmtree(leftover, ignore_errors=True)
