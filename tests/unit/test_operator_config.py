"""Operator settings from the chart's TFMAAS_* variables and an optional YAML file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfmaas.errors import UserError
from tfmaas.operator.config import OperatorConfig


def test_environment_overrides_file(tmp_path: Path) -> None:
    file = tmp_path / "operator.yaml"
    file.write_text("trainerImage: from-file\nservingImage: serving-file\nresyncSeconds: 5\n")
    config = OperatorConfig.load(
        {
            "TFMAAS_OPERATOR_CONFIG": str(file),
            "TFMAAS_TRAINER_IMAGE": "from-env",
            "TFMAAS_DEFAULT_STORE_ENDPOINT": "",
            "TFMAAS_DEFAULT_STORE_SECRET": "shared",
            "TFMAAS_SERVING_COMMAND": "tfmaas serve",
            "TFMAAS_GPU_NODE_SELECTOR": '{"gpu": "yes"}',
        }
    )
    assert config.trainer_image == "from-env" and config.serving_image == "serving-file"
    assert config.resync_seconds == 5.0
    assert config.default_store_endpoint is None and config.default_store_secret == "shared"
    assert config.serving_command == ("tfmaas", "serve")
    assert config.gpu_node_selector == {"gpu": "yes"}


def test_defaults_without_settings() -> None:
    config = OperatorConfig.load({})
    assert config.serving_image.startswith("tensorflow/serving:")
    assert config.serving_command == ("tensorflow_model_server",)


def test_mistakes_are_user_errors(tmp_path: Path) -> None:
    file = tmp_path / "operator.yaml"
    file.write_text("trainerImmage: x\n")
    with pytest.raises(UserError, match="unknown setting 'trainerImmage'"):
        OperatorConfig.load({"TFMAAS_OPERATOR_CONFIG": str(file)})
    with pytest.raises(UserError, match="resync_seconds"):
        OperatorConfig.load({"TFMAAS_RESYNC_SECONDS": "soon"})
    # 0 is TF Serving's "take it all", the very thing the setting bounds.
    for fraction in ("0", "-0.1", "1.5"):
        with pytest.raises(UserError, match="serving_gpu_memory_fraction must be above 0"):
            OperatorConfig.load({"TFMAAS_SERVING_GPU_MEMORY_FRACTION": fraction})
    assert (
        OperatorConfig.load({"TFMAAS_SERVING_GPU_MEMORY_FRACTION": "1"}).serving_gpu_memory_fraction
        == 1.0
    )


@pytest.mark.parametrize("version", ["2.20", "latest", "2.20.0; rm", "9" * 30 + ".0.0"])
def test_a_careless_serving_tensorflow_version_is_refused(version: str) -> None:
    with pytest.raises(UserError, match="serving_tensorflow_version"):
        OperatorConfig.load(environ={"TFMAAS_SERVING_TENSORFLOW_VERSION": version})


def test_an_empty_serving_tensorflow_version_turns_the_check_off() -> None:
    config = OperatorConfig.load(environ={"TFMAAS_SERVING_TENSORFLOW_VERSION": ""})
    assert config.serving_tensorflow_version == ""
