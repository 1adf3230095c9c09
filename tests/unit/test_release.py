"""One version, one set of image names: the operator's defaults, `make images`' tags, the
chart (as helm renders it) and deploy/ all name the same images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tomllib
import yaml

from tests.fixtures.chart import CHART_DIR, REPO_ROOT, helm_binary, one, render
from tfmaas import __version__
from tfmaas.dev.release_images import Build, helm_set_args, main, pick_builder, plan
from tfmaas.errors import UserError
from tfmaas.operator.config import OperatorConfig
from tfmaas.release import (
    ACCESS_GATEWAY_REPOSITORY,
    DEMO_STORE_REPOSITORY,
    OPERATOR_REPOSITORY,
    RELEASE_IMAGES,
    SERVING_GPU_IMAGE,
    SERVING_IMAGE,
    SERVING_TENSORFLOW_VERSION,
    TRAINER_REPOSITORY,
    image_reference,
)

DEPLOY = REPO_ROOT / "deploy" / "operator"
REGISTRY = "registry.invalid:5000/team"


def test_the_version_is_written_once() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "tfmaas.__version__"}
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert (chart["version"], chart["appVersion"]) == (__version__, __version__)


def test_operator_defaults_are_the_release_images() -> None:
    config = OperatorConfig()
    assert config.trainer_image == f"{TRAINER_REPOSITORY}:{__version__}"
    # The storage initializer runs in the operator's image, as the chart and deploy/ say.
    assert config.storage_initializer_image == f"{OPERATOR_REPOSITORY}:{__version__}"
    assert config.access_gateway_image == f"{ACCESS_GATEWAY_REPOSITORY}:{__version__}"
    assert config.serving_image == SERVING_IMAGE
    assert config.serving_gpu_image == SERVING_GPU_IMAGE == f"{SERVING_IMAGE}-gpu"


def test_kustomize_names_the_operator_defaults() -> None:
    defaults = yaml.safe_load((DEPLOY / "defaults.yaml").read_text())["data"]
    config = OperatorConfig.load(environ=defaults)
    assert config == OperatorConfig(
        default_store_endpoint=config.default_store_endpoint,
        default_store_secret=config.default_store_secret,
    )
    deployment = yaml.safe_load((DEPLOY / "deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == image_reference(OPERATOR_REPOSITORY)


def test_chart_values_name_the_release_repositories() -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    for image in RELEASE_IMAGES:
        node: Any = values
        for key in image.chart_value.split("."):
            node = node[key]
        assert (node["repository"], node["tag"]) == (image.repository, ""), image.chart_value
    serving = values["defaults"]["serving"]["image"]
    assert f"{serving['repository']}:{serving['tag']}" == SERVING_IMAGE
    gpu = values["defaults"]["serving"]["gpuImage"]
    assert f"{gpu['repository']}:{gpu['tag']}" == SERVING_GPU_IMAGE


def _chart_images(objects: list[dict[str, Any]]) -> dict[str, str]:
    data = one(objects, "ConfigMap", "tfmaas-defaults")["data"]
    (operator,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return {
        "operator": operator["image"],
        "trainer": data["TFMAAS_TRAINER_IMAGE"],
        "storage-initializer": data["TFMAAS_STORAGE_INITIALIZER_IMAGE"],
        "access-gateway": data["TFMAAS_ACCESS_GATEWAY_IMAGE"],
        "serving": data["TFMAAS_SERVING_IMAGE"],
        "serving-gpu": data["TFMAAS_SERVING_GPU_IMAGE"],
    }


def test_the_rendered_chart_runs_the_operator_defaults() -> None:
    config = OperatorConfig()
    assert _chart_images(render(helm_binary())) == {
        "operator": config.storage_initializer_image,
        "trainer": config.trainer_image,
        "storage-initializer": config.storage_initializer_image,
        "access-gateway": config.access_gateway_image,
        "serving": config.serving_image,
        "serving-gpu": config.serving_gpu_image,
    }


def _all_built(root: Path) -> list[Build]:
    for image in RELEASE_IMAGES:
        (root / image.dockerfile).parent.mkdir(parents=True, exist_ok=True)
        (root / image.dockerfile).write_text("FROM scratch\n")
    builds, skipped = plan(root=root, builder="docker", registry=REGISTRY)
    assert skipped == []
    return builds


def test_make_images_tags_are_what_the_chart_renders_with_its_flags(tmp_path: Path) -> None:
    builds = _all_built(tmp_path)
    flags = helm_set_args(builds)
    values = {}
    for flag in flags:
        key, _, value = flag.removeprefix("--set=").partition("=")
        values[key] = value
    rendered = _chart_images(render(helm_binary(), values))
    built = {build.image.repository: build.reference for build in builds}
    assert rendered["operator"] == built[OPERATOR_REPOSITORY]
    assert rendered["storage-initializer"] == built[OPERATOR_REPOSITORY]
    assert rendered["trainer"] == built[TRAINER_REPOSITORY]
    assert rendered["access-gateway"] == built[ACCESS_GATEWAY_REPOSITORY]
    assert built[OPERATOR_REPOSITORY] == f"{REGISTRY}/tfmaas/operator:{__version__}"


def test_images_whose_dockerfile_is_missing_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile.operator").write_text("FROM scratch\n")
    builds, skipped = plan(root=tmp_path, builder="buildah", push=True, registry=REGISTRY)
    assert [build.image.repository for build in builds] == [OPERATOR_REPOSITORY]
    assert {image.repository for image in skipped} == {
        TRAINER_REPOSITORY,
        ACCESS_GATEWAY_REPOSITORY,
        DEMO_STORE_REPOSITORY,
    }
    reference = f"{REGISTRY}/{OPERATOR_REPOSITORY}:{__version__}"
    assert builds[0].commands == (
        ("buildah", "bud", "-f", "Dockerfile.operator", "-t", reference, "."),
        ("buildah", "push", reference),
    )


@pytest.mark.parametrize(
    ("registry", "push", "build_args", "says"),
    [
        ("", True, (), "PUSH=1 needs REGISTRY"),
        ("registry.invalid/My Team", False, (), "REGISTRY must be"),
        ("https://registry.invalid", False, (), "REGISTRY must be"),
        ("r" * 300, False, (), "longer than"),
        (REGISTRY, False, ("A=b; rm -rf /",), "BUILD_ARGS"),
    ],
)
def test_careless_make_images_settings_are_refused(
    tmp_path: Path, registry: str, push: bool, build_args: tuple[str, ...], says: str
) -> None:
    with pytest.raises(UserError, match=says):
        plan(root=tmp_path, builder="docker", registry=registry, push=push, build_args=build_args)


def test_dry_run_prints_the_builds_and_the_helm_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dry-run", "--registry", REGISTRY]) == 0
    printed = capsys.readouterr().out
    assert f"docker build -f Dockerfile.operator -t {REGISTRY}/tfmaas/operator:" in printed
    assert f"--set=image.repository={REGISTRY}/tfmaas/operator" in printed


@pytest.mark.parametrize(
    ("installed", "daemon", "picked"),
    [
        ({"docker", "buildah"}, True, "docker"),
        ({"docker", "buildah"}, False, "buildah"),  # a docker CLI with no daemon cannot build
        ({"buildah"}, False, "buildah"),
    ],
)
def test_the_builder_is_one_that_can_build(installed: set[str], daemon: bool, picked: str) -> None:
    which = lambda name: f"/bin/{name}" if name in installed else None  # noqa: E731
    assert pick_builder(which=which, docker_answers=lambda: daemon) == picked


def test_no_builder_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"docker .* or buildah"):
        pick_builder(which=lambda name: None, docker_answers=lambda: False)
    with pytest.raises(UserError, match="BUILDER must be"):
        pick_builder(wanted="podman; rm")


def test_the_serving_tensorflow_version_is_the_serving_images_release() -> None:
    assert f"tensorflow/serving:{SERVING_TENSORFLOW_VERSION}" == SERVING_IMAGE
    assert OperatorConfig().serving_tensorflow_version == SERVING_TENSORFLOW_VERSION
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert values["defaults"]["serving"]["tensorflowVersion"] == SERVING_TENSORFLOW_VERSION
    data = one(render(helm_binary()), "ConfigMap", "tfmaas-defaults")["data"]
    assert OperatorConfig.load(environ=data).serving_tensorflow_version == (
        SERVING_TENSORFLOW_VERSION
    )
    kustomize = yaml.safe_load((DEPLOY / "defaults.yaml").read_text())["data"]
    assert kustomize["TFMAAS_SERVING_TENSORFLOW_VERSION"] == SERVING_TENSORFLOW_VERSION


def test_the_demo_store_dockerfile_builds_the_pinned_minio() -> None:
    from tfmaas.dev import tools

    dockerfile = (REPO_ROOT / "images" / "Dockerfile.demo-store").read_text()
    assert f"ARG MINIO_RELEASE_TIME={tools.MINIO_RELEASE_TIME}\n" in dockerfile
    assert f"ARG MINIO_COMMIT={tools.MINIO_COMMIT}\n" in dockerfile
    go_mod = (REPO_ROOT / "tools" / "minio" / "go.mod").read_text()
    assert f"github.com/minio/minio {tools.MINIO_VERSION}" in go_mod
    assert "COPY tools/minio/go.mod tools/minio/go.sum" in dockerfile
    # Non-root, as the chart's restricted pod expects.
    assert "\nUSER 65532:65532\n" in dockerfile
