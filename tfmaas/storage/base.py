"""What every model store shares: the interface, its errors and the version-name rules.

A store holds immutable, integer-numbered model versions under one URI. A version is
visible only once its manifest (`MANIFEST_NAME`, written last) exists; everything else
under the store (staging areas, half-copied files of a crashed publisher) is invisible
to `list_versions` and `pull`.
"""

from __future__ import annotations

import abc
import json
import re
from pathlib import Path
from typing import Any

from tfmaas.errors import TfmaasError, UserError

MANIFEST_NAME = ".tfmaas-manifest.json"
# Staging areas and pull temporaries start with a dot: TF Serving only loads
# directories whose names are integers, so it never sees them.
STAGING_DIR = ".staging"
# The trainer's page of a version's curves and figures (tfmaas.trainer.report), which
# `tfmaas store list` points to.
REPORT_FILE = "report.html"
LOGS_DIR = "logs"

_CANONICAL_VERSION = re.compile(r"[1-9][0-9]{0,17}")


class StoreError(TfmaasError):
    """A store operation failed for a reason the user cannot fix by changing input."""


class VersionExistsError(UserError):
    """The version number is already published (or being published) in this store."""


class VersionNotFoundError(UserError):
    """The version number is not published in this store."""


class StoreAccessError(UserError):
    """The store cannot be reached or refuses us: endpoint, credentials, bucket."""


class StoreUnreachableError(StoreAccessError):
    """The store's endpoint did not answer: maybe a wrong URL, maybe a passing outage. A
    command line says how to set the URL; a training pod lets its Job retry instead."""


class CorruptVersionError(StoreError):
    """A published file does not match its manifest (size or sha256)."""


def check_version(version: object) -> int:
    """Return `version` if it is a valid version number, else raise a UserError."""
    if isinstance(version, bool) or not isinstance(version, int):
        raise UserError(
            f"model version {version!r} is not an integer; versions are positive integers "
            "like 1, 2, 3"
        )
    if version < 1 or not _CANONICAL_VERSION.fullmatch(str(version)):
        raise UserError(
            f"model version {version} is out of range; versions are positive integers "
            "below 10**18 (TF Serving reads them as int64)"
        )
    return version


def version_from_name(name: str) -> int | None:
    """The version a directory or key segment names, or None if it names none.

    Only canonical decimal names count ("7", not "07" or "+7"), so one version has
    exactly one location and stray directories are never mistaken for versions.
    """
    if _CANONICAL_VERSION.fullmatch(name):
        return int(name)
    return None


def parse_version_list(text: str) -> list[int]:
    """Parse "3,4" (the CLI's --versions) into sorted unique versions."""
    versions: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        version = version_from_name(part)
        if version is None:
            raise UserError(
                f"--versions: {part!r} is not a version number; give positive integers "
                "separated by commas, like --versions 3,4"
            )
        versions.add(version)
    if not versions:
        raise UserError("--versions is empty; give at least one version, like --versions 3")
    return sorted(versions)


class ModelStore(abc.ABC):
    """A place that holds published model versions (contract 6 of the design)."""

    uri: str

    @abc.abstractmethod
    def list_versions(self) -> list[int]:
        """Published versions, ascending."""

    def latest_version(self) -> int | None:
        versions = self.list_versions()
        return versions[-1] if versions else None

    @abc.abstractmethod
    def publish(self, version: int, local_dir: Path) -> str:
        """Publish `local_dir` as `version` atomically; return the version's URI.

        Raises VersionExistsError if the version is already published.
        """

    @abc.abstractmethod
    def pull(self, version: int, dest_dir: Path) -> Path:
        """Copy `version` into `dest_dir/<version>/` atomically and verified; return that path.

        A complete copy already in place is kept as is.
        """

    @abc.abstractmethod
    def read_bytes(self, version: int, name: str) -> bytes:
        """One file of a published version, verified against its manifest."""

    @abc.abstractmethod
    def read_manifest(self, version: int) -> dict[str, Any]:
        """The manifest of a published version."""

    @abc.abstractmethod
    def gc(self) -> list[str]:
        """Remove what crashed publishers left behind; return what was removed."""

    # Training checkpoints of a version not yet published (see tfmaas.storage.checkpoints).
    @abc.abstractmethod
    def save_checkpoint(self, version: int, local_dir: Path) -> None:
        """Make the store's checkpoint area of `version` a copy of `local_dir`."""

    @abc.abstractmethod
    def load_checkpoint(self, version: int, local_dir: Path) -> bool:
        """Copy `version`'s checkpoint area into `local_dir`; False if there is none."""

    @abc.abstractmethod
    def delete_checkpoint(self, version: int) -> None:
        """Remove `version`'s checkpoint area (nothing happens if there is none)."""

    @abc.abstractmethod
    def save_logs(self, version: int, local_dir: Path) -> None:
        """Copy `local_dir`'s files (TensorBoard event files) to `version`'s logs, adding to
        what is there: a resumed run writes new event files beside the first run's."""

    def logs_uri(self, version: int) -> str:
        """Where a version's training logs go: `<store>/logs/<version>/`. No version is named
        `logs`, so `list_versions`, `pull` and TF Serving never see them, and
        `tensorboard --logdir <store>/logs` shows every version as a run."""
        return f"{self.uri.rstrip('/')}/{LOGS_DIR}/{check_version(version)}/"

    def checkpoint_uri(self, version: int) -> str:
        from tfmaas.storage.checkpoints import checkpoint_path

        return f"{self.uri.rstrip('/')}/{checkpoint_path(version)}/"

    def read_json(self, version: int, name: str) -> dict[str, Any]:
        data = self.read_bytes(version, name)
        try:
            value = json.loads(data)
        except ValueError as exc:
            raise StoreError(f"{self.version_uri(version)}{name} is not valid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise StoreError(f"{self.version_uri(version)}{name} holds JSON that is not an object")
        return value

    def version_uri(self, version: int) -> str:
        return f"{self.uri.rstrip('/')}/{version}/"

    def missing_version_error(self, version: int) -> VersionNotFoundError:
        try:
            existing = self.list_versions()
        except TfmaasError:
            existing = []
        shown = ", ".join(str(v) for v in existing) if existing else "none"
        return VersionNotFoundError(
            f"version {version} is not published in {self.uri} (published versions: {shown})"
        )
