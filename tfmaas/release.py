"""What a release ships: its version (tfmaas.__version__, the one place it is written) and the
images it builds, named as the Helm chart and deploy/ expect them. The operator's defaults and
`make images` read these names; unit tests hold the chart's and deploy/'s copies to them."""

from __future__ import annotations

from dataclasses import dataclass

from tfmaas import __version__

TRAINER_REPOSITORY = "tfmaas/trainer"
# The operator image also runs `tfmaas store pull` as the serving pods' storage initializer.
OPERATOR_REPOSITORY = "tfmaas/operator"
ACCESS_GATEWAY_REPOSITORY = "tfmaas/access-gateway"
# MinIO for the chart's opt-in demo store (demoStore.enabled): MinIO publishes no community
# images any more, so the release builds one from the MinIO module the project pins.
DEMO_STORE_REPOSITORY = "tfmaas/demo-store"
# TF Serving's newest release: its own published image, not built here (the chart's
# defaults.serving.image). Each release is built against the TensorFlow of the same version
# (the chart's defaults.serving.tensorflowVersion), which the operator compares with the
# TensorFlow that exported each version.
SERVING_TENSORFLOW_VERSION = "2.20.0"
SERVING_IMAGE = f"tensorflow/serving:{SERVING_TENSORFLOW_VERSION}"
# TF Serving publishes each release built with CUDA under the same tag plus "-gpu"; the
# CPU image cannot use a GPU. The chart's defaults.serving.gpuImage.
SERVING_GPU_IMAGE = f"{SERVING_IMAGE}-gpu"


@dataclass(frozen=True)
class ReleaseImage:
    repository: str
    dockerfile: str  # relative to the repository root
    chart_value: str  # the chart value (repository, tag) that names this image


RELEASE_IMAGES = (
    ReleaseImage(TRAINER_REPOSITORY, "Dockerfile.trainer", "defaults.trainer.image"),
    ReleaseImage(OPERATOR_REPOSITORY, "Dockerfile.operator", "image"),
    ReleaseImage(
        ACCESS_GATEWAY_REPOSITORY, "images/Dockerfile.access-gateway", "access.gateway.image"
    ),
    ReleaseImage(DEMO_STORE_REPOSITORY, "images/Dockerfile.demo-store", "demoStore.image"),
)


def image_reference(repository: str, *, registry: str = "", version: str = __version__) -> str:
    """`[registry/]repository:version`, the tag `make images` builds and the chart names."""
    prefix = f"{registry.rstrip('/')}/" if registry else ""
    return f"{prefix}{repository}:{version}"
