"""The exported SavedModel, reloaded as TF Serving would see it, honours the signature contract."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SENTENCES = ["很好，非常满意", "太差了，退货", "一般"]


def test_version_folder_holds_savedmodel_metrics_and_card(exported_model) -> None:
    version_dir = exported_model.version_path
    assert (version_dir / "saved_model.pb").is_file()
    assert (version_dir / "variables").is_dir()
    metrics = json.loads((version_dir / "metrics.json").read_text(encoding="utf-8"))
    assert set(metrics) >= {
        "accuracy",
        "precision",
        "recall",
        "f1",
        "per_class",
        "confusion_matrix",
        "classes",
        "examples",
        "training_seconds",
        "architecture",
    }
    card = json.loads((version_dir / "model_card.json").read_text(encoding="utf-8"))
    assert card["classes"] == exported_model.classes == ["negative", "positive"]
    assert card["version"] == 1 and card["name"] == "sentiment"
    assert card["dataset"]["fingerprint"].startswith("sha256:")
    assert card["dataset"]["uri"] == "builtin:chinese-reviews"
    assert card["hyperparameters"]["epochs"] == 3 and card["architecture"] == "bag-of-ngrams"
    assert card["examples"] == metrics["examples"] == {"train": 800, "validation": 100, "test": 100}
    assert card["trainedAt"].endswith("Z") and card["tensorflowVersion"]


def test_serving_default_signature_matches_contract(exported_model) -> None:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(exported_model.version_path))
    signature = loaded.signatures["serving_default"]
    _, inputs = signature.structured_input_signature
    assert list(inputs) == ["text"]
    assert inputs["text"].dtype == tf.string and inputs["text"].shape.as_list() == [None]
    outputs = signature.structured_outputs
    assert outputs["scores"].dtype == tf.float32
    assert outputs["scores"].shape.as_list() == [None, 2]
    assert outputs["class_id"].dtype == tf.int64
    assert outputs["label"].dtype == tf.string

    result = {k: v.numpy() for k, v in signature(text=tf.constant(SENTENCES)).items()}
    np.testing.assert_allclose(result["scores"].sum(axis=1), 1.0, rtol=1e-5)
    assert result["class_id"].tolist() == result["scores"].argmax(axis=1).tolist()
    labels = [label.decode() for label in result["label"]]
    assert labels == [exported_model.classes[i] for i in result["class_id"]]
    # A clearly positive review scores above a clearly negative one.
    positive = exported_model.classes.index("positive")
    assert result["scores"][0, positive] > result["scores"][1, positive]
