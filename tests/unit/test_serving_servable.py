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


def test_a_tf1_graph_runs_as_stored_whatever_its_signatures_record(tmp_path: Path) -> None:
    from tests.fixtures.tfs_models import export_tf1_half_plus_three, tf_example

    with pytest.raises(ValueError, match="Shapes must be equal rank"):
        tf.saved_model.load(str(export_tf1_half_plus_three(tmp_path / "probe")))  # why a Session
    servable = Servable("half_plus_three", 1, export_tf1_half_plus_three(tmp_path / "m"))
    column = {"x": np.array([[2.0], [3.0]], dtype=np.float32)}
    for key in ("serving_default", "hand_written"):
        assert servable.run(servable.signature(key), column)["y"].tolist() == [[4.0], [4.5]]
    scalar = servable.run(servable.signature("scalar"), {"s": np.array(2.0, dtype=np.float32)})
    assert scalar["t"].tolist() == 4.0
    examples = np.array([tf_example(2.0), tf_example(4.0)], dtype=object)
    regress = servable.run(servable.signature("regress_x_to_y"), {"inputs": examples})
    assert regress["outputs"].tolist() == [[4.0], [5.0]]


def test_a_tf2_signature_takes_shapes_it_did_not_declare(tmp_path: Path) -> None:
    from tests.fixtures.tfs_models import export_half_plus_two

    servable = Servable("half_plus_two", 123, export_half_plus_two(tmp_path))
    signature = servable.signature("")
    signature.validate({"x": (np.array([2.0, 3.0]), signature.inputs["x"].dtype)})
    outputs = servable.run(signature, {"x": np.array([2.0, 3.0, 4.0], dtype=np.float32)})
    assert outputs["y"].tolist() == [3.0, 3.5, 4.0]
    assert sorted(servable.signature_def_map().signature_def) == [
        "__saved_model_init_op",
        "serving_default",
    ]
