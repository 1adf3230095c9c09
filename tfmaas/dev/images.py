"""The container images a local node runs, built on this machine and cached by content.

No registry can be reached, so every image starts from a Debian root filesystem bootstrapped
here (debootstrap from the host's own apt mirror) and is written as an OCI archive that
containerd imports. Each image's tag is a hash of everything that went into it, so a rebuild
happens only when an input changed, and an image present in containerd is never pulled.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tfmaas.dev import oci
from tfmaas.errors import UserError

log = logging.getLogger(__name__)

REGISTRY = "tfmaas.local"
REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGES_DIR = REPO_ROOT / "images"
BASE_SUITE = "bookworm"
# `python` and `pip` as the project's Dockerfiles call them (python:3.11-slim's names).
BASE_PACKAGES = (
    "python3",
    "python3-pip",
    "python3-venv",
    "python-is-python3",
    "ca-certificates",
    "tzdata",
)
# Bump when base_image() or _trim_rootfs() change what the base contains.
BASE_RECIPE_VERSION = "2"
WHEELHOUSE_MOUNT = "/wheelhouse"
GRPC_FRONTEND_MOUNT = "/grpc-frontend"
# pip inside image builds installs from the mounted wheelhouse only; Debian marks its Python
# externally managed, and an image is the one place where installing into it is right.
PIP_CONF = f"""[global]
no-index = true
find-links = {WHEELHOUSE_MOUNT}
break-system-packages = true
"""
_HOST_APT_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))


@dataclass(frozen=True)
class BuiltImage:
    reference: str
    archive: Path


def cache_dir() -> Path:
    """Where heavy, reusable build outputs live: outside the repository, shared by runs."""
    root = Path(os.environ.get("TFMAAS_CACHE_DIR") or Path.home() / ".cache" / "tfmaas")
    path = root / "images"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _hash_parts(parts: Iterable[bytes | str]) -> str:
    sha = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        sha.update(len(data).to_bytes(8, "big"))
        sha.update(data)
    return sha.hexdigest()[:16]


def _hash_tree(root: Path) -> list[str]:
    """Names, sizes and content of every file under root (sorted), for cache keys."""
    parts = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        parts.append(str(path.relative_to(root)))
        parts.append(hashlib.sha256(path.read_bytes()).hexdigest())
    return parts


def _run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    log.info("running %s", " ".join(command))
    completed = subprocess.run(command, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if completed.returncode != 0:
        raise RuntimeError(
            f"{command[0]} failed (exit {completed.returncode}): {completed.stderr.strip()[-3000:]}"
        )
    return completed


def _require(program: str) -> str:
    found = shutil.which(program)
    if not found:
        raise UserError(
            f"{program} is not installed; run .ci/install-node-packages to install the node's "
            "Debian packages"
        )
    return found


def pause_image() -> BuiltImage:
    """The pod sandbox image: a static `pause` built from images/pause with Go."""
    source = IMAGES_DIR / "pause"
    go = shutil.which("go") or "/usr/local/go/bin/go"
    go_version = _run([go, "env", "GOVERSION"]).stdout.strip()
    key = _hash_parts([go_version, *_hash_tree(source)])
    reference = f"{REGISTRY}/pause:{key}"
    archive = cache_dir() / f"pause-{key}.tar"
    if archive.exists():
        return BuiltImage(reference, archive)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as scratch_name:
        binary = Path(scratch_name) / "pause"
        env = {**os.environ, "CGO_ENABLED": "0"}
        _run(
            [go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(binary), "."],
            cwd=source,
            env=env,
        )
        config = oci.ImageConfig(entrypoint=["/pause"], env=[], user="65535:65535")
        return _one_binary_image(reference, archive, binary, path="/pause", config=config)


def _one_binary_image(
    reference: str, archive: Path, binary: Path, *, path: str, config: oci.ImageConfig
) -> BuiltImage:
    """An image of one static binary at `path` on an empty base, written to `archive`."""
    with tempfile.TemporaryDirectory(dir=cache_dir()) as scratch_name:
        layer = oci.layer_from_files(
            [oci.FileEntry(path, binary.read_bytes(), 0o755)], Path(scratch_name) / "layer.tar"
        )
        oci.write_archive(reference=reference, layers=[layer], config=config, dest=archive)
    return BuiltImage(reference, archive)


ACCESS_GATEWAY_BINARY = "/usr/local/bin/access-gateway"


def access_gateway_image() -> BuiltImage:
    """The access gateway's image, as images/Dockerfile.access-gateway's final stage makes it
    (the static binary on an empty base, non-root), from the binary built on the host."""
    from tfmaas.dev import tools

    binary = tools.ensure("access-gateway")
    dockerfile = REPO_ROOT / "images" / "Dockerfile.access-gateway"
    key = _hash_parts([_file_digest(binary), _file_digest(dockerfile)])
    reference = f"{REGISTRY}/access-gateway:{key}"
    archive = cache_dir() / f"access-gateway-{key}.tar"
    if archive.exists():
        return BuiltImage(reference, archive)
    config = oci.ImageConfig(
        entrypoint=["access-gateway"], env=["PATH=/usr/local/bin"], user="65532:65532"
    )
    return _one_binary_image(reference, archive, binary, path=ACCESS_GATEWAY_BINARY, config=config)


DEMO_STORE_BINARY = "/usr/local/bin/minio"


def demo_store_image() -> BuiltImage:
    """The chart's demo store (MinIO), as images/Dockerfile.demo-store's final stage makes it,
    from the MinIO binary built on the host from the same pinned module."""
    from tfmaas.dev import tools

    binary = tools.ensure("minio")
    dockerfile = REPO_ROOT / "images" / "Dockerfile.demo-store"
    key = _hash_parts([_file_digest(binary), _file_digest(dockerfile)])
    reference = f"{REGISTRY}/demo-store:{key}"
    archive = cache_dir() / f"demo-store-{key}.tar"
    if archive.exists():
        return BuiltImage(reference, archive)
    config = oci.ImageConfig(entrypoint=["minio"], env=["PATH=/usr/local/bin"], user="65532:65532")
    return _one_binary_image(reference, archive, binary, path=DEMO_STORE_BINARY, config=config)


def project_images(*, base: BuiltImage | None = None) -> dict[str, BuiltImage]:
    """Every image the chart runs, built locally: PROJECT_DOCKERFILES, the access gateway and
    the demo store."""
    base = base or base_image()
    built = {name: project_image(name, base=base) for name in PROJECT_DOCKERFILES}
    built["access-gateway"] = access_gateway_image()
    built["demo-store"] = demo_store_image()
    return built


def host_debian_mirror() -> str:
    """The Debian mirror this host's apt already uses, so image builds reach nothing new."""
    for path in _HOST_APT_SOURCES:
        if not path.exists():
            continue
        text = path.read_text()
        for match in re.finditer(r"^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+)", text, re.M):
            uri = match.group(1)
            if "security" not in uri and "/debian" in uri:
                return uri
    raise UserError(
        "no Debian mirror found in the host's apt sources; set TFMAAS_DEBIAN_MIRROR to the "
        "mirror URL debootstrap should use"
    )


BASE_CONFIG = oci.ImageConfig(
    cmd=["/bin/bash"],
    env=[
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        # `python -m pip` run in a source tree must not import its operator/ folder in place of
        # the standard library's operator module.
        "PYTHONSAFEPATH=1",
    ],
)


def base_image(packages: Iterable[str] = BASE_PACKAGES) -> BuiltImage:
    """A minimal Debian root filesystem with Debian's python3, bootstrapped here.

    The root filesystem layer is cached on its own (debootstrap is the slow part); the image
    around it is keyed by the layer and the image config together.
    """
    wanted = sorted(set(packages))
    mirror = os.environ.get("TFMAAS_DEBIAN_MIRROR") or host_debian_mirror()
    layer_key = _hash_parts([BASE_SUITE, mirror, *wanted, BASE_RECIPE_VERSION])
    layer = cache_dir() / f"debian-rootfs-{layer_key}.tar"
    key = _hash_parts([layer_key, repr(BASE_CONFIG)])
    reference = f"{REGISTRY}/debian-python:{key}"
    archive = cache_dir() / f"debian-python-{key}.tar"
    if archive.exists():
        return BuiltImage(reference, archive)
    if not layer.exists():
        _bootstrap_layer(wanted, mirror, layer)
    oci.write_archive(reference=reference, layers=[layer], config=BASE_CONFIG, dest=archive)
    return BuiltImage(reference, archive)


def _bootstrap_layer(packages: list[str], mirror: str, dest: Path) -> None:
    debootstrap = _require("debootstrap")
    with tempfile.TemporaryDirectory(dir=cache_dir()) as scratch_name:
        rootfs = Path(scratch_name) / "rootfs"
        _run(
            [
                debootstrap,
                "--variant=minbase",
                f"--include={','.join(packages)}",
                f"--cache-dir={_debootstrap_cache()}",
                BASE_SUITE,
                str(rootfs),
                mirror,
            ]
        )
        _trim_rootfs(rootfs)
        partial = dest.with_suffix(".partial")
        oci.layer_from_directory(rootfs, partial)
        partial.replace(dest)


def _debootstrap_cache() -> Path:
    path = cache_dir() / "debootstrap-debs"
    path.mkdir(exist_ok=True)
    return path


def _trim_rootfs(rootfs: Path) -> None:
    """Drop what an image never needs (package lists, caches, docs) to keep layers small."""
    for relative in ("var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man"):
        target = rootfs / relative
        if target.is_dir():
            shutil.rmtree(target)
            target.mkdir(parents=True)
    # The bootstrap leaves the host's resolver config; a pod gets its own from the kubelet.
    (rootfs / "etc" / "resolv.conf").unlink(missing_ok=True)
    (rootfs / "etc" / "pip.conf").write_text(PIP_CONF)


def dockerfile_image(
    name: str,
    dockerfile: Path,
    *,
    context: Path,
    base: BuiltImage,
    build_args: Mapping[str, str] | None = None,
    extra_inputs: Iterable[Path] = (),
    extra_key: Iterable[str] = (),
    volumes: Mapping[Path, str] | None = None,
) -> BuiltImage:
    """Build a Dockerfile with buildah against a local base image, never pulling.

    The cache key covers the Dockerfile, the base, the build args and the content of
    `extra_inputs` (directories or files the Dockerfile copies in).
    """
    buildah = _require("buildah")
    args = {"BASE_IMAGE": base.reference, **(build_args or {})}
    parts: list[str] = [dockerfile.read_text(), base.reference, *extra_key]
    parts += [f"{k}={v}" for k, v in sorted(args.items())]
    for path in extra_inputs:
        parts += _hash_tree(path) if path.is_dir() else [path.name, _file_digest(path)]
    key = _hash_parts(parts)
    reference = f"{REGISTRY}/{name}:{key}"
    archive = cache_dir() / f"{name}-{key}.tar"
    if archive.exists():
        return BuiltImage(reference, archive)
    if not _buildah_has(buildah, base.reference):
        _run([buildah, "pull", f"oci-archive:{base.archive}"])
        _run([buildah, "tag", _buildah_id_of_archive(buildah, base), base.reference])
    # --from replaces the first FROM too, so a Dockerfile without the BASE_IMAGE argument
    # (FROM python:3.11-slim) still builds on the local base; no network during RUN steps.
    command = [buildah, "bud", "--pull-never", "--layers", "--network", "none"]
    command += ["--from", base.reference, "-f", str(dockerfile), "-t", reference]
    for arg, value in sorted(args.items()):
        command += ["--build-arg", f"{arg}={value}"]
    for host_path, target in (volumes or {}).items():
        command += ["--volume", f"{host_path}:{target}:ro"]
    _run([*command, str(context)])
    partial = archive.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    _run([buildah, "push", reference, f"oci-archive:{partial}:{reference}"])
    partial.replace(archive)
    _prune_older(buildah, name, keep=reference)
    return BuiltImage(reference, archive)


def _prune_older(buildah: str, name: str, *, keep: str, archives_kept: int = 2) -> None:
    """Each source change makes a new multi-GB image: drop older builds of `name`, keeping
    the newest archives (a run in progress may still import one)."""
    listed = _run([buildah, "images", "--format", "{{.Name}}:{{.Tag}}"]).stdout.split()
    for ref in listed:
        if ref.startswith(f"{REGISTRY}/{name}:") and ref != keep:
            subprocess.run([buildah, "rmi", ref], capture_output=True, check=False)
    # Untagged intermediate images are kept: they are the --layers cache of the next build.
    archives = sorted(cache_dir().glob(f"{name}-*.tar"), key=lambda p: p.stat().st_mtime)
    for old in archives[:-archives_kept]:
        old.unlink(missing_ok=True)


def _file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def _buildah_has(buildah: str, reference: str) -> bool:
    return (
        subprocess.run(
            [buildah, "inspect", "--type", "image", reference], capture_output=True
        ).returncode
        == 0
    )


def _buildah_id_of_archive(buildah: str, image: BuiltImage) -> str:
    """buildah names an OCI-archive pull by the archive's ref name only; tag it fully."""
    images = _run([buildah, "images", "--format", "{{.ID}} {{.Name}}:{{.Tag}}"]).stdout
    tag = image.reference.rsplit(":", 1)[-1]
    for line in images.splitlines():
        image_id, _, name = line.partition(" ")
        if name.endswith(":" + tag):
            return image_id
    raise RuntimeError(f"buildah pulled {image.archive} but no image is tagged {tag}")


def import_into_containerd(image: BuiltImage, *, address: str, namespace: str = "k8s.io") -> None:
    """Make the image present in containerd's CRI namespace so pods never pull it."""
    ctr = _require("ctr")
    listed = _run([ctr, "-a", address, "-n", namespace, "images", "ls", "-q"]).stdout.split()
    if image.reference in listed:
        return
    _run([ctr, "-a", address, "-n", namespace, "images", "import", str(image.archive)])


# -- the project's own images ------------------------------------------------------------------

# Built from the repository root against the local base; the chart's defaults stay upstream's.
PROJECT_DOCKERFILES = {
    "serving": "images/Dockerfile.serving",
    "trainer": "Dockerfile.trainer",
    "operator": "Dockerfile.operator",
}
_SOURCE_DIRS = ("tfmaas", "operator", "trainer")
_SOURCE_SUFFIXES = (".py", ".yaml", ".yml", ".json", ".typed")
_SOURCE_ONLY = ("snownlp",)  # published as source distributions only: built into wheels here


def wheelhouse_dir() -> Path:
    path = cache_dir().parent / "wheelhouse"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _project_requirements() -> list[str]:
    """The core dependencies plus every runtime extra (not `dev`), from pyproject.toml."""
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra, deps in project["optional-dependencies"].items():
        if extra != "dev":
            requirements += [d for d in deps if not d.startswith("tfmaas")]
    return sorted(set(requirements))


def _installed_constraints(python: Path) -> str:
    """Pin the wheelhouse to what the development venv runs, so images behave the same."""
    frozen = _run([str(python), "-m", "pip", "freeze", "--exclude-editable"]).stdout
    return "\n".join(line for line in frozen.splitlines() if "==" in line) + "\n"


def ensure_wheelhouse(python: Path | None = None) -> tuple[Path, str]:
    """Every runtime dependency as a wheel for Debian 12's Python 3.11, downloaded once;
    returns the directory and a key naming its contents. Image builds install from it only."""
    interpreter = python or Path(os.environ.get("TFMAAS_PYTHON") or sys.executable)
    requirements = _project_requirements()
    constraints = _installed_constraints(interpreter)
    key = _hash_parts([*requirements, constraints])
    directory = wheelhouse_dir()
    stamp = directory / f".complete-{key}"
    if stamp.exists():
        return directory, key
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write(constraints)
        constraints_file = handle.name
    try:
        binary = [r for r in requirements if not r.startswith(_SOURCE_ONLY)]
        source_only = [r for r in requirements if r.startswith(_SOURCE_ONLY)]
        pip = [str(interpreter), "-m", "pip"]
        download = ["download", "-q", "-d", str(directory), "--only-binary=:all:"]
        target = ["--python-version", "3.11", "-c", constraints_file]
        _run([*pip, *download, *target, *binary, "setuptools>=69", "wheel"])
        if source_only:
            build = ["wheel", "-q", "--no-deps", "-w", str(directory)]
            _run([*pip, *build, "-c", constraints_file, *source_only])
    finally:
        Path(constraints_file).unlink(missing_ok=True)
    stamp.touch()
    return directory, key


def project_source_digest() -> str:
    parts = [(REPO_ROOT / "pyproject.toml").read_text()]
    for name in _SOURCE_DIRS:
        for path in sorted((REPO_ROOT / name).rglob("*")):
            if path.suffix in _SOURCE_SUFFIXES and "__pycache__" not in path.parts:
                parts += [str(path.relative_to(REPO_ROOT)), _file_digest(path)]
    return _hash_parts(parts)


def project_image(name: str, *, base: BuiltImage | None = None) -> BuiltImage:
    """Build one of PROJECT_DOCKERFILES offline against the local base (cached by content)."""
    if name not in PROJECT_DOCKERFILES:
        raise UserError(f"unknown image {name!r}; known: {', '.join(PROJECT_DOCKERFILES)}")
    dockerfile = REPO_ROOT / PROJECT_DOCKERFILES[name]
    if not dockerfile.exists():
        raise UserError(f"no Dockerfile for the {name} image: {dockerfile} is missing")
    if os.environ.get("TFMAAS_REUSE_IMAGES") == "1":
        # While iterating on the harness, source edits need not rebuild every image.
        newest = sorted(cache_dir().glob(f"{name}-*.tar"), key=lambda p: p.stat().st_mtime)
        if newest:
            tag = newest[-1].stem.removeprefix(f"{name}-")
            log.warning("TFMAAS_REUSE_IMAGES=1: using %s, built from older sources", newest[-1])
            return BuiltImage(f"{REGISTRY}/{name}:{tag}", newest[-1])
    wheelhouse, wheels_key = ensure_wheelhouse()
    volumes = {wheelhouse: WHEELHOUSE_MOUNT}
    extra_key = [wheels_key, project_source_digest()]
    if name == "serving":
        # The native gRPC front end is a Go program: built on the host from its module (no Go
        # toolchain in the image), mounted for the build, and part of the image's key.
        from tfmaas.dev import tools

        frontend = tools.ensure("grpc-frontend")
        volumes[frontend.parent] = GRPC_FRONTEND_MOUNT
        extra_key.append(_file_digest(frontend))
    return dockerfile_image(
        name,
        dockerfile,
        context=REPO_ROOT,
        base=base or base_image(),
        extra_key=extra_key,
        volumes=volumes,
    )
