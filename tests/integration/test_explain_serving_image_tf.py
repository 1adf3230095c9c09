"""Exports load and answer identically in the TensorFlow of the default serving image.

The operator serves versions with `tensorflow/serving:<version>`, whose TensorFlow is older
than the trainer's: a signature using an op (or op version) it lacks would fail to load
there and take `serving_default` down with it. The check loads every signature's graph,
and with it every op it needs, in that TensorFlow (a separate virtual environment, cached
between runs) and compares the answers. (Python's TF1 bundle loader, closest to TF Serving's
C++ one, cannot restore Keras 3 variables in any version, so it cannot serve as the check.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fixtures.models import SMALL_TRAINING
from tfmaas.operator.config import OperatorConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SENTENCES = ["质量很好，非常满意！", "太差了，完全不能用", "", "İstanbul 好"]
_LOAD_AND_RUN = """
import json, sys
import tensorflow as tf

def plain(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value

texts = tf.constant(json.loads(sys.argv[2]))
loaded = tf.saved_model.load(sys.argv[1])
answers = {"tensorflow": tf.__version__}
for name in json.loads(sys.argv[3]):
    outputs = loaded.signatures[name](text=texts)
    answers[name] = {k: plain(v.numpy().tolist()) for k, v in outputs.items()}
print(json.dumps(answers))
"""


def serving_image_tensorflow() -> str:
    """The TensorFlow version of the operator's default serving image: TF Serving <v> is
    built on TensorFlow <v>, and the image's tag is <v>."""
    version = OperatorConfig().serving_tensorflow_version
    assert OperatorConfig().serving_image.endswith(f":{version}")
    return version


@pytest.fixture(scope="session")
def serving_image_python() -> Path:
    from tfmaas.dev.tools import cache_root

    version = serving_image_tensorflow()
    environment = cache_root() / "python" / f"tensorflow-cpu-{version}"
    python = environment / "bin" / "python"
    marker = environment / ".installed"
    if not marker.exists():
        # Not from the repository root: its operator/ folder would shadow the standard
        # library's `operator` module that venv and pip import.
        environment.parent.mkdir(parents=True, exist_ok=True)
        outside = str(environment.parent)
        subprocess.run(
            [sys.executable, "-m", "venv", "--clear", str(environment)], check=True, cwd=outside
        )
        installed = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"tensorflow-cpu=={version}"],
            capture_output=True,
            text=True,
            timeout=1200,
            cwd=outside,
        )
        if installed.returncode != 0:
            message = f"cannot install tensorflow-cpu=={version}: {installed.stderr[-1000:]}"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        marker.write_text(version)
    return python


@pytest.mark.parametrize(
    ("architecture", "quantize"),
    [
        ("bag-of-ngrams", "none"),
        ("cnn", "none"),
        ("transformer", "none"),
        # Quantized exports dequantize in the graph: Cast and Mul, nothing newer.
        ("bag-of-ngrams", "int8"),
        ("transformer", "float16"),
    ],
)
def test_export_answers_the_same_in_the_serving_image_tensorflow(
    architecture: str, quantize: str, serving_image_python: Path, tmp_path: Path
) -> None:
    import tensorflow as tf

    from tfmaas.trainer import export, train

    training = {
        **SMALL_TRAINING,
        "model": {**SMALL_TRAINING["model"], "architecture": architecture, "sequenceLength": 32},
        "hyperparameters": {**SMALL_TRAINING["hyperparameters"], "epochs": 1, "maxExamples": 300},
        "compression": {"quantize": quantize},
    }
    target = export(train(training, log=lambda line: None), tmp_path / "1")
    # The model card says which TensorFlow exported it (the operator's check reads the same).
    card = json.loads((target / "model_card.json").read_text())
    assert card["tensorflowVersion"] == tf.__version__
    loaded = tf.saved_model.load(str(target))
    # Every signature the export carries, not a list that a new one could slip past.
    signatures = sorted(loaded.signatures)
    assert {"serving_default", "explain"} <= set(signatures)
    here: dict[str, dict[str, Any]] = {
        name: {
            k: v.numpy() for k, v in loaded.signatures[name](text=tf.constant(SENTENCES)).items()
        }
        for name in signatures
    }

    arguments = [str(target), json.dumps(SENTENCES), json.dumps(signatures)]
    run = subprocess.run(
        [str(serving_image_python), "-c", _LOAD_AND_RUN, *arguments],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""},
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    there = json.loads(run.stdout.strip().splitlines()[-1])
    assert there["tensorflow"] == serving_image_tensorflow()
    for name, outputs in here.items():
        assert set(there[name]) == set(outputs)
        for key, value in outputs.items():
            if value.dtype.kind in "SO":
                decoded = np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(value)
                assert there[name][key] == decoded.tolist(), (name, key)
            else:
                np.testing.assert_allclose(
                    np.asarray(there[name][key]), value, rtol=1e-4, atol=1e-6, err_msg=name + key
                )
