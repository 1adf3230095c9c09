"""`make images [REGISTRY=…] [PUSH=1]`: build the release images from their Dockerfiles with
docker or buildah, tagged as the chart expects, and say which chart values install them.

Only Dockerfiles that exist are built, so an image whose Dockerfile has not landed yet (the
access gateway's) is skipped with a note instead of failing the others.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tfmaas.api.validation import IMAGE_REFERENCE
from tfmaas.errors import UserError
from tfmaas.release import RELEASE_IMAGES, ReleaseImage, image_reference

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILDERS = ("docker", "buildah")
_BUILD_ARG = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=[^\s]{0,512}")
MAX_REGISTRY = 200


@dataclass(frozen=True)
class Build:
    image: ReleaseImage
    reference: str
    commands: tuple[tuple[str, ...], ...]


def _docker_daemon_answers() -> bool:
    # The docker CLI without a reachable daemon cannot build; buildah needs no daemon.
    try:
        probe = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def pick_builder(
    *,
    wanted: str | None = None,
    which: Callable[[str], str | None] = shutil.which,
    docker_answers: Callable[[], bool] = _docker_daemon_answers,
) -> str:
    """`wanted` if given, else docker when its daemon answers, else buildah."""
    if wanted:
        if wanted not in BUILDERS:
            raise UserError(f"BUILDER must be docker or buildah, not {wanted[:40]!r}")
        return wanted
    if which("docker") and docker_answers():
        return "docker"
    if which("buildah"):
        return "buildah"
    raise UserError(
        "make images needs docker (with a running daemon) or buildah on PATH; install one"
    )


def check_registry(registry: str) -> str:
    """The registry prefix, refused unless every tag it makes is an image reference."""
    registry = registry.strip().rstrip("/")
    if len(registry) > MAX_REGISTRY:
        raise UserError(f"REGISTRY is longer than {MAX_REGISTRY} characters")
    probe = image_reference("tfmaas/probe", registry=registry)
    if registry and not re.search(IMAGE_REFERENCE, probe):
        raise UserError(
            "REGISTRY must be a registry host with an optional path, like "
            "registry.invalid:5000/team (lowercase path, no spaces or scheme)"
        )
    return registry


def plan(
    *,
    root: Path,
    builder: str,
    registry: str = "",
    push: bool = False,
    build_args: Sequence[str] = (),
) -> tuple[list[Build], list[ReleaseImage]]:
    """The builds of every release image whose Dockerfile exists under `root`, and the
    images skipped for want of one."""
    registry = check_registry(registry)
    if push and not registry:
        raise UserError(
            "PUSH=1 needs REGISTRY=<your registry>: the bare names would push to Docker Hub's "
            "tfmaas organisation"
        )
    for arg in build_args:
        if not _BUILD_ARG.fullmatch(arg):
            raise UserError("BUILD_ARGS must be NAME=value pairs without spaces")
    builds: list[Build] = []
    skipped: list[ReleaseImage] = []
    for image in RELEASE_IMAGES:
        if not (root / image.dockerfile).is_file():
            skipped.append(image)
            continue
        reference = image_reference(image.repository, registry=registry)
        verb = ("docker", "build") if builder == "docker" else ("buildah", "bud")
        flags = tuple(flag for arg in build_args for flag in ("--build-arg", arg))
        build = (*verb, *flags, "-f", image.dockerfile, "-t", reference, ".")
        commands: tuple[tuple[str, ...], ...] = (build,)
        if push:
            commands += ((builder, "push", reference),)
        builds.append(Build(image=image, reference=reference, commands=commands))
    return builds, skipped


def helm_set_args(builds: Sequence[Build]) -> list[str]:
    """The `helm install` flags under which the chart runs exactly these images."""
    args = []
    for build in builds:
        repository, _, tag = build.reference.rpartition(":")
        args += [
            f"--set={build.image.chart_value}.repository={repository}",
            f"--set={build.image.chart_value}.tag={tag}",
        ]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make images", description=__doc__)
    parser.add_argument("--registry", default="", help="prefix for the tags, e.g. host/team")
    parser.add_argument("--push", action="store_true", help="push each image once built")
    parser.add_argument("--builder", default="", help="docker or buildah (default: first found)")
    parser.add_argument("--build-arg", action="append", default=[], help="NAME=value")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    options = parser.parse_args(argv)
    try:
        if options.dry_run:
            builder = options.builder or "docker"
        else:
            builder = pick_builder(wanted=options.builder or None)
        builds, skipped = plan(
            root=REPO_ROOT,
            builder=builder,
            registry=options.registry,
            push=options.push,
            build_args=options.build_arg,
        )
    except UserError as exc:
        print(f"make images: {exc}", file=sys.stderr)
        return 2
    for image in skipped:
        print(f"make images: skipping {image.repository}: {image.dockerfile} does not exist")
    for build in builds:
        for command in build.commands:
            print("+", " ".join(command), flush=True)
            if not options.dry_run:
                completed = subprocess.run(command, cwd=REPO_ROOT, check=False)
                if completed.returncode != 0:
                    print(
                        f"make images: {command[0]} failed for {build.reference}", file=sys.stderr
                    )
                    return completed.returncode
    print("Install the chart with these images:")
    print("  helm install tfmaas charts/tfmaas -n tfmaas-system --create-namespace \\")
    print("    " + " \\\n    ".join(helm_set_args(builds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
