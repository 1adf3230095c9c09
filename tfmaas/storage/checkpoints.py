"""Where a version's training checkpoints (and logs) live in a store, and the rules every
store's sync follows, as pure functions.

Checkpoints of version v go to `<store>/.staging/ckpt-<v>/`: under the staging area, which
`list_versions`, `pull` and TF Serving never see, and never under `<store>/<v>/`, which is
published and immutable. The trainer deletes them once v is published; a trainer that never
comes back (the version was abandoned) leaves them to `gc`, which removes staging groups
untouched for an hour, as it does a crashed publisher's.

The files are TensorFlow's own (`tf.train.CheckpointManager`): `ckpt-N.index`,
`ckpt-N.data-…` and the `checkpoint` index that names the newest. A sync uploads the index
after the files it names and deletes files no longer named only after that, so a sync
killed halfway leaves the previous checkpoint whole and readable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from tfmaas.errors import UserError
from tfmaas.storage.base import STAGING_DIR, StoreError, check_version

CHECKPOINT_GROUP_PREFIX = "ckpt-"
CHECKPOINT_INDEX = "checkpoint"
# A flat directory of TensorFlow's files; anything else in the store's checkpoint area was
# not written by a trainer and is not downloaded.
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
MAX_CHECKPOINT_FILES = 64
# The model itself is bounded by the trainer's memory; this bounds what a download may write.
MAX_CHECKPOINT_BYTES = 32 * 1024**3


def checkpoint_group(version: int) -> str:
    """The staging group (directory or key segment under `.staging/`) of `version`."""
    return f"{CHECKPOINT_GROUP_PREFIX}{check_version(version)}"


def checkpoint_path(version: int) -> str:
    """The checkpoint area of `version`, relative to the store's root."""
    return f"{STAGING_DIR}/{checkpoint_group(version)}"


def check_file_name(name: str, *, source: str) -> str:
    """`name` if it can be a file of a flat checkpoint directory, else a StoreError."""
    if not _FILE_NAME.fullmatch(name) or ".." in name:
        raise StoreError(
            f"{source} holds {name[:80]!r}, which is not a checkpoint file name; only "
            "TensorFlow's flat checkpoint files belong there (delete the area to start afresh)"
        )
    return name


def upload_order(local_dir: Path) -> list[str]:
    """The files of `local_dir` in the order a sync uploads them: the index last."""
    names = sorted(path.name for path in local_dir.iterdir() if path.is_file())
    if CHECKPOINT_INDEX not in names:
        raise UserError(
            f"{local_dir} has no {CHECKPOINT_INDEX!r} index; save a checkpoint before syncing"
        )
    for name in names:
        check_file_name(name, source=str(local_dir))
    names.remove(CHECKPOINT_INDEX)
    return [*names, CHECKPOINT_INDEX]


def stale_names(remote: Iterable[str], local: Iterable[str]) -> list[str]:
    """Remote files that the local directory no longer holds (deleted after the index)."""
    keep = set(local)
    return sorted(name for name in remote if name not in keep)


def check_download(sizes: dict[str, int], *, source: str) -> None:
    """Refuse a checkpoint area that is not one a trainer wrote before downloading any of it."""
    if len(sizes) > MAX_CHECKPOINT_FILES:
        raise StoreError(
            f"{source} holds {len(sizes)} files, more than the {MAX_CHECKPOINT_FILES} a "
            "checkpoint has; delete the area to start afresh"
        )
    for name in sizes:
        check_file_name(name, source=source)
    total = sum(sizes.values())
    if total > MAX_CHECKPOINT_BYTES:
        raise StoreError(
            f"{source} holds {total} bytes, more than the limit of {MAX_CHECKPOINT_BYTES} for a "
            "checkpoint; delete the area to start afresh"
        )


# A run's TensorBoard directory holds a few event files per split; anything beyond is a mistake.
MAX_LOG_FILES = 256


def log_files(local_dir: Path) -> list[Path]:
    """The files under `local_dir` a logs sync uploads (regular files, not links)."""
    files = sorted(
        path for path in local_dir.rglob("*") if path.is_file() and not path.is_symlink()
    )
    if len(files) > MAX_LOG_FILES:
        raise UserError(f"{local_dir} holds {len(files)} files, over {MAX_LOG_FILES} for logs")
    return files
