"""The serving policy shared by the operator and `tfmaas local run`: pure, and the files it
renders are the ones TF Serving (and `tfmaas serve`) read."""

from __future__ import annotations

import os
import subprocess
import sys

from tfmaas.api import BatchingSpec
from tfmaas.serving.config import parse_batching_parameters, parse_model_server_config
from tfmaas.serving_policy import batching_config_text, model_config_text


def test_importable_without_tensorflow_or_kopf() -> None:
    """The operator image carries neither, and the policy is the operator's too."""
    probe = (
        "import sys, tfmaas.serving_policy\n"
        "heavy = sorted({'tensorflow', 'kopf'} & set(sys.modules))\n"
        "print(','.join(heavy))\n"
    )
    answer = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONSAFEPATH": "1"},
    )
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() == ""


def test_both_tracks_in_one_model_config() -> None:
    text = model_config_text(name="m", base_path="/x/m", labels={"stable": 2, "canary": 1})
    (model,) = parse_model_server_config(text).model_config_list.config
    assert (model.name, model.base_path) == ("m", "/x/m")
    assert list(model.model_version_policy.specific.versions) == [1, 2]
    assert dict(model.version_labels) == {"stable": 2, "canary": 1}


def test_batching_file_reads_back() -> None:
    spec = BatchingSpec(
        enabled=True,
        max_batch_size=64,
        batch_timeout_micros=2000,
        max_enqueued_batches=100,
        num_batch_threads=0,
    )
    options = parse_batching_parameters(batching_config_text(spec, num_batch_threads=3))
    assert (options.max_batch_size, options.num_batch_threads) == (64, 3)
    assert options.batch_timeout_micros == 2000 and options.max_enqueued_batches == 100
