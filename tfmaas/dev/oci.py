"""OCI image archives assembled from files, with no registry and no daemon.

Nothing can be pulled on this machine, so the images a local node runs are written here as
OCI image layouts (a tar with `oci-layout`, `index.json` and `blobs/`) that
`ctr images import` and `buildah pull oci-archive:` both read. Layers are uncompressed and
written deterministically (sorted entries, zero mtimes and owners) so the same inputs give the
same digests, which is what build caching keys on.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    """One regular file to place in a layer."""

    path: str
    data: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class ImageConfig:
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=lambda: ["PATH=/usr/local/bin:/usr/bin:/bin"])
    working_dir: str = "/"
    user: str = ""


def layer_from_files(files: Iterable[FileEntry], dest: Path) -> Path:
    """Write a reproducible layer tar holding `files` (parent directories included)."""
    entries = sorted(files, key=lambda entry: entry.path)
    directories: set[str] = set()
    for entry in entries:
        parent = Path(entry.path.lstrip("/")).parent
        while str(parent) not in ("", "."):
            directories.add(str(parent))
            parent = parent.parent
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for directory in sorted(directories):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for entry in entries:
            info = tarfile.TarInfo(entry.path.lstrip("/"))
            info.size = len(entry.data)
            info.mode = entry.mode
            tar.addfile(info, io.BytesIO(entry.data))
    return dest


def layer_from_directory(root: Path, dest: Path) -> Path:
    """Write a reproducible layer tar of a whole root filesystem (devices, links, modes kept)."""

    def normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for current, dirnames, filenames in os.walk(root):
            dirnames.sort()
            relative_dir = Path(current).relative_to(root)
            for name in sorted(dirnames) + sorted(filenames):
                full = Path(current) / name
                arcname = str(relative_dir / name) if str(relative_dir) != "." else name
                tar.add(full, arcname=arcname, recursive=False, filter=normalize)
            # os.walk does not descend into symlinked directories, which tar.add keeps as links.
    return dest


def _digest_file(path: Path) -> tuple[str, int]:
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return "sha256:" + sha.hexdigest(), size


def write_archive(
    *,
    reference: str,
    layers: list[Path],
    config: ImageConfig,
    dest: Path,
    labels: Mapping[str, str] | None = None,
) -> Path:
    """Write an OCI image-layout tar named `reference` (e.g. `tfmaas.local/pause:1a2b`)."""
    with tempfile.TemporaryDirectory(dir=dest.parent) as scratch_name:
        scratch = Path(scratch_name)
        blobs = scratch / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        layer_descriptors = []
        for layer in layers:
            digest, size = _digest_file(layer)
            shutil.copyfile(layer, blobs / digest.split(":", 1)[1])
            layer_descriptors.append(
                {"mediaType": LAYER_MEDIA_TYPE, "digest": digest, "size": size}
            )
        image_config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                key: value
                for key, value in {
                    "Entrypoint": config.entrypoint or None,
                    "Cmd": config.cmd or None,
                    "Env": config.env,
                    "WorkingDir": config.working_dir,
                    "User": config.user or None,
                    "Labels": dict(labels) if labels else None,
                }.items()
                if value is not None
            },
            "rootfs": {
                "type": "layers",
                "diff_ids": [descriptor["digest"] for descriptor in layer_descriptors],
            },
            # Builders (buildah) check that every layer has a history entry.
            "history": [
                {"created": "1970-01-01T00:00:00Z", "created_by": f"tfmaas.dev.oci {layer.name}"}
                for layer in layers
            ],
        }
        config_descriptor = _write_blob(blobs, image_config, CONFIG_MEDIA_TYPE)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": config_descriptor,
            "layers": layer_descriptors,
        }
        manifest_descriptor = _write_blob(blobs, manifest, MANIFEST_MEDIA_TYPE)
        manifest_descriptor["annotations"] = {
            # containerd names the imported image by this; buildah reads the ref name.
            "io.containerd.image.name": reference,
            "org.opencontainers.image.ref.name": reference.rsplit(":", 1)[-1],
        }
        index = {"schemaVersion": 2, "manifests": [manifest_descriptor]}
        (scratch / "index.json").write_text(json.dumps(index))
        (scratch / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        partial = dest.with_suffix(dest.suffix + ".partial")
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            for name in ("oci-layout", "index.json", "blobs"):
                tar.add(scratch / name, arcname=name)
        partial.replace(dest)
    return dest


def _write_blob(blobs: Path, document: object, media_type: str) -> dict[str, object]:
    data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    hexdigest = hashlib.sha256(data).hexdigest()
    (blobs / hexdigest).write_bytes(data)
    return {"mediaType": media_type, "digest": "sha256:" + hexdigest, "size": len(data)}
