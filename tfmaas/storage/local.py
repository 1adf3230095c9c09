"""A model store in a local directory (`file:///path`), as `tfmaas local run` uses.

Publish copies into `<root>/.staging/<version>-<id>/`, writes the manifest there, and
renames the directory to `<root>/<version>/`. A rename onto a non-empty directory fails,
so of two publishers of one number exactly one wins, and the version appears whole.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from tfmaas.errors import UserError
from tfmaas.storage.base import (
    LOGS_DIR,
    MANIFEST_NAME,
    STAGING_DIR,
    ModelStore,
    StoreError,
    VersionExistsError,
    check_version,
    version_from_name,
)
from tfmaas.storage.checkpoints import (
    check_download,
    check_file_name,
    checkpoint_path,
    log_files,
    stale_names,
    upload_order,
)
from tfmaas.storage.manifest import (
    FileEntry,
    Manifest,
    build_manifest,
    manifest_dict,
    verify_file,
)
from tfmaas.storage.transfer import pull_version, read_file

# A staging directory older than this belongs to a publisher that died.
STALE_STAGING_SECONDS = 3600.0


class FileStore(ModelStore):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = f"file://{root}"

    def list_versions(self) -> list[int]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        except NotADirectoryError as exc:
            raise UserError(f"the store {self.uri} is a file, not a directory") from exc
        versions = [
            version
            for name in names
            if (version := version_from_name(name)) is not None
            and (self.root / name / MANIFEST_NAME).is_file()
        ]
        return sorted(versions)

    def publish(self, version: int, local_dir: Path) -> str:
        check_version(version)
        target = self.root / str(version)
        if (target / MANIFEST_NAME).exists():
            raise self._exists_error(version)
        publish_id = uuid.uuid4().hex
        manifest = build_manifest(local_dir, version, publish_id)
        self._remove_stale_staging(prefix=f"{version}-")
        staging = self.root / STAGING_DIR / f"{version}-{publish_id[:12]}"
        try:
            staging.mkdir(parents=True)
        except OSError as exc:
            raise UserError(f"cannot write to the store {self.uri}: {exc}") from exc
        try:
            for entry in manifest.files:
                dest = staging / entry.path
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(local_dir / entry.path, dest)
            # Copies are checked against the checksums taken before copying, so a file
            # that changed while we copied fails the publish instead of being served.
            for entry in manifest.files:
                _verify_path(staging / entry.path, entry, source=f"{self.uri}/{STAGING_DIR}/")
            (staging / MANIFEST_NAME).write_bytes(manifest.to_json())
            _fsync_tree(staging)
            self._rename_into_place(staging, target, version)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.version_uri(version)

    def _rename_into_place(self, staging: Path, target: Path, version: int) -> None:
        try:
            if target.is_dir() and not any(target.iterdir()):
                target.rmdir()
            os.rename(staging, target)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise self._exists_error(version) from exc
            raise
        _fsync_dir(self.root)

    def _exists_error(self, version: int) -> VersionExistsError:
        return VersionExistsError(
            f"version {version} already exists in {self.uri}; published versions are "
            "immutable: publish under a new version number (see `tfmaas store list "
            f"{self.uri}`)"
        )

    def read_manifest(self, version: int) -> dict[str, Any]:
        return manifest_dict(self._manifest(version))

    def _manifest(self, version: int) -> Manifest:
        check_version(version)
        path = self.root / str(version) / MANIFEST_NAME
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise self.missing_version_error(version) from None
        return Manifest.from_json(data, where=str(path))

    def pull(self, version: int, dest_dir: Path) -> Path:
        manifest = self._manifest(version)
        source = self.version_uri(version)
        base = self.root / str(version)

        def fetch(entry: FileEntry, path: Path) -> None:
            shutil.copyfile(base / entry.path, path)

        return pull_version(manifest, dest_dir, fetch, source=source)

    def read_bytes(self, version: int, name: str) -> bytes:
        base = self.root / str(version)

        def read(entry: FileEntry) -> bytes:
            return (base / entry.path).read_bytes()

        return read_file(self._manifest(version), name, read, source=self.version_uri(version))

    def gc(self) -> list[str]:
        """Remove staging directories left by publishers that died over an hour ago."""
        return self._remove_stale_staging(prefix="")

    def save_checkpoint(self, version: int, local_dir: Path) -> None:
        area = self.root / checkpoint_path(version)
        try:
            area.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot write to the store {self.uri}: {exc}") from exc
        names = upload_order(local_dir)
        for name in names:
            # Each file appears whole (copy, then rename), the index after the files it names.
            temp = area / f".{name}.{uuid.uuid4().hex[:8]}"
            shutil.copyfile(local_dir / name, temp)
            os.replace(temp, area / name)
        for name in stale_names(os.listdir(area), names):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                (area / name).unlink()
        os.utime(area)  # the area is fresh: `gc` judges staging groups by their age

    def load_checkpoint(self, version: int, local_dir: Path) -> bool:
        area = self.root / checkpoint_path(version)
        if not area.is_dir():
            return False
        source = self.checkpoint_uri(version)
        # Temporaries of a sync killed halfway start with a dot; they are not the checkpoint.
        sizes = {
            path.name: path.stat().st_size
            for path in area.iterdir()
            if path.is_file() and not path.name.startswith(".")
        }
        if not sizes:
            return False
        check_download(sizes, source=source)
        local_dir.mkdir(parents=True, exist_ok=True)
        for name in sizes:
            shutil.copyfile(area / check_file_name(name, source=source), local_dir / name)
        return True

    def save_logs(self, version: int, local_dir: Path) -> None:
        target = self.root / LOGS_DIR / str(check_version(version))
        for path in log_files(local_dir):
            relative = path.relative_to(local_dir)
            dest = target / relative
            dest.parent.mkdir(parents=True, exist_ok=True)
            temp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}"
            shutil.copyfile(path, temp)
            os.replace(temp, dest)

    def delete_checkpoint(self, version: int) -> None:
        shutil.rmtree(self.root / checkpoint_path(version), ignore_errors=True)

    def _remove_stale_staging(self, *, prefix: str) -> list[str]:
        removed: list[str] = []
        staging_root = self.root / STAGING_DIR
        if not staging_root.is_dir():
            return removed
        cutoff = time.time() - STALE_STAGING_SECONDS
        for leftover in sorted(staging_root.glob(f"{prefix}*")):
            try:
                if leftover.stat().st_mtime < cutoff:
                    shutil.rmtree(leftover)
                    removed.append(f"{self.uri}/{STAGING_DIR}/{leftover.name}")
            except FileNotFoundError:
                continue
        return removed


def _verify_path(path: Path, entry: FileEntry, *, source: str) -> None:
    try:
        verify_file(path, entry, source=source)
    except StoreError as exc:
        raise StoreError(f"the model directory changed while it was published: {exc}") from exc


def _fsync_tree(root: Path) -> None:
    """Flush file contents before the rename, so a power loss cannot publish empty files."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
