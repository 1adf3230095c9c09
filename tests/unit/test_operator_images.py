"""Which images a ModelService may run: the operator's own, or under an admin's prefix."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tfmaas.api import ModelService, load_model_service
from tfmaas.operator.config import OperatorConfig
from tfmaas.operator.images import image_allowed, image_problem, matches_prefix
from tfmaas.operator.reconcile import InvalidModelService, reconcile

OWN = OperatorConfig(
    trainer_image="tfmaas/trainer:1.0",
    serving_image="tensorflow/serving:2.18.0",
    storage_initializer_image="tfmaas/tfmaas:1.0",
    serving_gpu_image="tensorflow/serving:2.18.0-gpu",
)


def model(**images: str) -> ModelService:
    spec: dict[str, Any] = {
        "storage": {"uri": "s3://models/m"},
        "training": {"dataset": {"uri": "builtin:chinese-reviews"}},
        "serving": {},
    }
    if "training" in images:
        spec["training"]["image"] = images["training"]
    if "serving" in images:
        spec["serving"]["image"] = images["serving"]
    return load_model_service(
        {
            "apiVersion": "tfmaas.io/v1alpha1",
            "kind": "ModelService",
            "metadata": {"name": "m", "namespace": "ns", "uid": "u"},
            "spec": spec,
        }
    )


def test_by_default_only_the_operator_s_own_images_run() -> None:
    own = ("tfmaas/trainer:1.0", "tensorflow/serving:2.18.0", "tfmaas/tfmaas:1.0")
    for image in (*own, "tensorflow/serving:2.18.0-gpu"):
        assert image_allowed(image, OWN)
    for image in ("tfmaas/trainer:1.1", "tensorflow/serving:latest", "evil/miner", ""):
        assert not image_allowed(image, OWN)
    assert not image_allowed("tensorflow/serving:latest-gpu", OWN)
    assert image_problem(model(serving="tensorflow/serving:2.18.0-gpu"), OWN) is None
    assert image_problem(model(), OWN) is None
    assert image_problem(model(training="tfmaas/trainer:1.0"), OWN) is None


@pytest.mark.parametrize(
    ("image", "prefix", "allowed"),
    [
        ("registry.example/team/trainer:2", "registry.example/team/", True),
        ("registry.example/team/trainer:2", "registry.example/team", True),
        ("registry.example/team-evil/trainer:2", "registry.example/team", False),
        ("tensorflow/serving:2.19.0", "tensorflow/serving:", True),
        ("tensorflow/serving:2.19.0", "tensorflow/serving", True),
        ("tensorflow/serving-evil:1", "tensorflow/serving", False),
        ("tensorflow/serving@sha256:abc", "tensorflow/serving", True),
        ("tensorflow/serving", "tensorflow/serving", True),
        ("anything", "", False),
    ],
)
def test_prefixes_end_at_a_path_tag_or_digest_boundary(
    image: str, prefix: str, allowed: bool
) -> None:
    assert matches_prefix(image, prefix) is allowed


def test_a_refused_image_names_the_field_briefly() -> None:
    config = replace(OWN, allowed_images=("team/",))
    assert image_problem(model(training="team/trainer:2", serving="team/serving:2"), config) is None
    # The CRD refuses such a reference; the operator's own check must hold without it (a CRD
    # installed from an older chart), so the spec is built past validation.
    huge = "evil/" + "x" * 400 + "\x1b[0m"
    service = model(serving="evil/x")
    careless = replace(
        service, spec=replace(service.spec, serving=replace(service.spec.serving, image=huge))
    )
    message = image_problem(careless, config)
    assert message is not None
    assert message.startswith("spec.serving.image 'evil/xxx") and "is not allowed" in message
    assert "x" * 100 not in message and "\x1b" not in message
    assert "team/" in message and "tfmaas/trainer:1.0" in message
    both = image_problem(model(training="evil/t", serving="evil/s"), config)
    assert both is not None and "spec.training.image" in both and "spec.serving.image" in both


class StatusOnlyKube:
    def __init__(self) -> None:
        self.statuses: list[dict[str, Any]] = []

    def patch_status(self, api_version, kind, namespace, name, status):  # type: ignore[no-untyped-def]
        self.statuses.append(status)
        return {}


def test_a_refused_image_is_an_invalid_spec_and_starts_nothing() -> None:
    kube = StatusOnlyKube()
    body = {
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {
            "storage": {"uri": "s3://models/m"},
            "training": {"dataset": {"uri": "builtin:chinese-reviews"}, "image": "evil/miner"},
        },
    }
    with pytest.raises(InvalidModelService, match=r"spec\.training\.image 'evil/miner'"):
        reconcile(kube, body, OWN)  # type: ignore[arg-type]
    (status,) = kube.statuses
    (condition,) = status["conditions"]
    assert (condition["type"], condition["status"]) == ("SpecValid", "False")


def test_the_serving_tensorflow_is_known_only_for_the_operators_serving_images() -> None:
    from tfmaas.operator.images import serving_tensorflow

    config = OperatorConfig(serving_tensorflow_version="2.20.0")
    assert serving_tensorflow(model(), config) == "2.20.0"
    assert serving_tensorflow(model(serving=config.serving_image), config) == "2.20.0"
    assert serving_tensorflow(model(serving=config.serving_gpu_image), config) == "2.20.0"
    assert serving_tensorflow(model(serving="registry.invalid/serving:9"), config) is None
    assert serving_tensorflow(model(), OperatorConfig(serving_tensorflow_version="")) is None
