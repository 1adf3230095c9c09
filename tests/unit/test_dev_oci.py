"""OCI archives written without a registry: layout, digests and reproducibility."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

from tfmaas.dev import oci


def _archive(tmp_path: Path, name: str) -> Path:
    layer = oci.layer_from_files(
        [oci.FileEntry("/bin/tool", b"#!/bin/sh\necho hi\n", 0o755)], tmp_path / f"{name}.layer"
    )
    return oci.write_archive(
        reference="tfmaas.local/tool:1",
        layers=[layer],
        config=oci.ImageConfig(entrypoint=["/bin/tool"]),
        dest=tmp_path / f"{name}.tar",
    )


def test_archive_is_an_oci_layout_whose_blobs_match_their_digests(tmp_path: Path) -> None:
    with tarfile.open(_archive(tmp_path, "a")) as tar:
        names = tar.getnames()
        assert "oci-layout" in names and "index.json" in names
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        descriptor = index["manifests"][0]
        assert descriptor["annotations"]["io.containerd.image.name"] == "tfmaas.local/tool:1"

        def blob(digest: str) -> bytes:
            data = tar.extractfile("blobs/sha256/" + digest.split(":")[1]).read()  # type: ignore[union-attr]
            assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
            return data

        manifest = json.loads(blob(descriptor["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        layer_digest = manifest["layers"][0]["digest"]
        blob(layer_digest)
        assert config["config"]["Entrypoint"] == ["/bin/tool"]
        assert config["rootfs"]["diff_ids"] == [layer_digest]


def test_the_same_files_give_the_same_layer_digest(tmp_path: Path) -> None:
    first = (tmp_path / "a").with_suffix(".layer")
    _archive(tmp_path, "a")
    _archive(tmp_path, "b")
    second = (tmp_path / "b").with_suffix(".layer")
    assert first.read_bytes() == second.read_bytes()


def test_layer_holds_parent_directories_and_modes(tmp_path: Path) -> None:
    layer = oci.layer_from_files([oci.FileEntry("/a/b/c", b"x", 0o700)], tmp_path / "l.tar")
    with tarfile.open(layer) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["a"].isdir() and members["a/b"].isdir()
    assert members["a/b/c"].mode == 0o700
