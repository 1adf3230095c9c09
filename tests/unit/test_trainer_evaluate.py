"""Held-out metrics against figures worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from tfmaas.trainer.evaluate import classification_metrics, confusion_matrix, headline


def test_two_classes_by_hand() -> None:
    # true:  a a a a b b      pred: a a a b b a
    # a: tp 3, predicted 4, support 4 → p .75 r .75 f1 .75
    # b: tp 1, predicted 2, support 2 → p .5  r .5  f1 .5
    y_true = np.array([0, 0, 0, 0, 1, 1])
    y_pred = np.array([0, 0, 0, 1, 1, 0])
    metrics = classification_metrics(y_true, y_pred, ["a", "b"])
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["per_class"]["a"] == pytest.approx(
        {"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4}
    )
    assert metrics["per_class"]["b"] == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    )
    assert metrics["precision"] == pytest.approx(0.625)
    assert metrics["recall"] == pytest.approx(0.625)
    assert metrics["f1"] == pytest.approx(0.625)
    assert metrics["confusion_matrix"] == [[3, 1], [1, 1]]
    assert metrics["classes"] == ["a", "b"]


def test_three_classes_with_a_class_never_predicted() -> None:
    # true: x x y y z z   pred: x x x y y y
    # x: tp2 pred3 sup2 → p 2/3 r 1 f1 .8 ; y: tp1 pred3 sup2 → p 1/3 r .5 f1 .4 ; z: 0 0 0
    metrics = classification_metrics(
        np.array([0, 0, 1, 1, 2, 2]), np.array([0, 0, 0, 1, 1, 1]), ["x", "y", "z"]
    )
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert metrics["per_class"]["x"]["f1"] == pytest.approx(0.8)
    assert metrics["per_class"]["y"]["f1"] == pytest.approx(0.4)
    assert metrics["per_class"]["z"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert metrics["precision"] == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)
    assert metrics["recall"] == pytest.approx(0.5)
    assert metrics["f1"] == pytest.approx(0.4)
    assert confusion_matrix(np.array([0, 2]), np.array([2, 2]), 3).tolist() == [
        [0, 0, 1],
        [0, 0, 0],
        [0, 0, 1],
    ]


def test_headline_keeps_the_four_figures() -> None:
    metrics = classification_metrics(np.array([0, 1]), np.array([0, 1]), ["n", "p"])
    assert headline(metrics) == {"accuracy": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0}
