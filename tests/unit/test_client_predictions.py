"""Rows of scores/class_id/label become one Prediction per sentence."""

from __future__ import annotations

import numpy as np
import pytest

from tfmaas.client.predictions import PredictionError, to_predictions

OUTPUTS = {
    "scores": np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32),
    "class_id": np.array([0, 1]),
    "label": np.array([b"negative", b"positive"], dtype=object),
}


def test_class_names_from_the_model_card() -> None:
    first, second = to_predictions(OUTPUTS, ["negative", "positive"])
    assert first.label == "negative" and first.class_id == 0
    assert second.scores == pytest.approx({"negative": 0.2, "positive": 0.8})


def test_without_class_names_the_label_output_names_what_it_can() -> None:
    (only,) = to_predictions({k: v[:1] for k, v in OUTPUTS.items()})
    assert only.label == "negative"
    assert set(only.scores) == {"negative", "1"}


def test_rest_json_columns_work_too() -> None:
    outputs = {"scores": [[0.3, 0.7]], "class_id": [1], "label": ["positive"]}
    (only,) = to_predictions(outputs, ["negative", "positive"])
    assert only.label == "positive" and only.scores["positive"] == pytest.approx(0.7)


def test_a_model_without_scores_is_a_clear_error() -> None:
    with pytest.raises(PredictionError, match="no 'scores' output"):
        to_predictions({"logits": [[1.0]]})
