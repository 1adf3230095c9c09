"""The servable's direct call into a loaded signature answers exactly as the public call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tfmaas.serving.servable import Servable, direct_call
from tfmaas.serving.testing import write_demo_model

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def demo_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_model(tmp_path_factory.mktemp("models"), 3)


def test_direct_call_matches_the_public_signature_call(demo_path: Path) -> None:
    function = tf.saved_model.load(str(demo_path)).signatures["serving_default"]
    fast = direct_call(function, ["text"])
    text = tf.constant(["短", "这是一个比较长的句子"])
    want = function(text=text)
    got = fast({"text": text})
    assert fast.__name__ == "flat"  # the installed TensorFlow has the internals it relies on
    assert sorted(got) == sorted(want)
    for alias in want:
        np.testing.assert_array_equal(got[alias].numpy(), want[alias].numpy())


def test_unknown_internals_fall_back_to_the_public_call() -> None:
    def signature(**feeds: object) -> dict[str, object]:
        return {"echo": feeds["text"]}

    call = direct_call(signature, ["text"])
    assert call.__name__ == "public"
    assert call({"text": "x"}) == {"echo": "x"}


def test_servable_runs_rows_through_the_direct_call(demo_path: Path) -> None:
    servable = Servable("demo", 3, demo_path)
    signature = servable.signature("")
    outputs = servable.run(signature, {"text": np.array([b"a", b"abcdefgh"], dtype=object)})
    assert outputs["label"].tolist() == [b"negative", b"positive"]
    assert outputs["scores"].shape == (2, 2)
