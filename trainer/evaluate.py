"""Scores of a classifier on held-out data, as metrics.json records them."""

from __future__ import annotations

from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted ones."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]
) -> dict[str, Any]:
    """Accuracy; macro precision, recall and F1 (a class never predicted has precision 0)."""
    matrix = confusion_matrix(y_true, y_pred, len(classes))
    true_positives = np.diag(matrix).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    support = matrix.sum(axis=1).astype(float)
    per_class: dict[str, dict[str, float | int]] = {}
    for index, name in enumerate(classes):
        precision = _ratio(true_positives[index], predicted[index])
        recall = _ratio(true_positives[index], support[index])
        f1 = _ratio(2 * precision * recall, precision + recall)
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": int(support[index]),
        }
    total = int(matrix.sum())
    return {
        "accuracy": _ratio(true_positives.sum(), total),
        "precision": float(np.mean([m["precision"] for m in per_class.values()])),
        "recall": float(np.mean([m["recall"] for m in per_class.values()])),
        "f1": float(np.mean([m["f1"] for m in per_class.values()])),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "classes": list(classes),
    }


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    """The four figures the termination message and status carry."""
    return {key: round(float(metrics[key]), 6) for key in ("accuracy", "precision", "recall", "f1")}
