"""Which images a ModelService may run, and which get the operator's default store
credentials.

Whoever may create a ModelService should not thereby run any image they like with the
store's credentials: the operator's own images (trainer, serving on CPU and GPU, storage
initializer) are always allowed, others only under a prefix the admin lists in
allowedImages. The default
store secret goes only into the operator's own images; a spec's own storage.secretRef is
the spec owner's to give to whatever allowed image they choose.
"""

from __future__ import annotations

from tfmaas.api import ModelService
from tfmaas.operator.config import OperatorConfig
from tfmaas.redact import printable

# Where a prefix may end inside an image reference: after a registry or repository path
# segment, before a tag or a digest. "registry/team" must not admit "registry/team-evil".
_BOUNDARIES = "/:@"
IMAGE_SHOWN = 80


def own_images(config: OperatorConfig) -> frozenset[str]:
    return frozenset(
        {
            config.trainer_image,
            config.serving_image,
            config.serving_gpu_image,
            config.storage_initializer_image,
        }
    )


def is_own_image(image: str, config: OperatorConfig) -> bool:
    return image in own_images(config)


def matches_prefix(image: str, prefix: str) -> bool:
    if not prefix or not image.startswith(prefix):
        return False
    return (
        len(image) == len(prefix) or prefix[-1] in _BOUNDARIES or image[len(prefix)] in _BOUNDARIES
    )


def image_allowed(image: str, config: OperatorConfig) -> bool:
    return is_own_image(image, config) or any(
        matches_prefix(image, prefix) for prefix in config.allowed_images
    )


def image_problem(service: ModelService, config: OperatorConfig) -> str | None:
    """Why the spec's images may not run here, naming the field; None when they may."""
    wanted = (
        ("spec.training.image", service.spec.training.image),
        ("spec.serving.image", service.spec.serving.image),
    )
    refused = [
        (path, image) for path, image in wanted if image and not image_allowed(image, config)
    ]
    if not refused:
        return None
    allowed = ", ".join(config.allowed_images) if config.allowed_images else "none"
    return "; ".join(f"{path} {_shown(image)!r} is not allowed" for path, image in refused) + (
        f": this operator runs its own images ({', '.join(sorted(own_images(config)))}) and "
        f"images under the allowedImages prefixes ({allowed}); remove the field to use the "
        "default image, or ask the operator's admin to allow the image"
    )


def serving_tensorflow(service: ModelService, config: OperatorConfig) -> str | None:
    """The TensorFlow version the ModelService's serving image runs, when the operator knows
    it: one of its default serving images (CPU or GPU build of the same release)."""
    image = service.spec.serving.image
    if image and image not in (config.serving_image, config.serving_gpu_image):
        return None
    return config.serving_tensorflow_version or None


def _shown(image: str) -> str:
    image = printable(image)
    return image if len(image) <= IMAGE_SHOWN else image[: IMAGE_SHOWN - 1] + "…"
