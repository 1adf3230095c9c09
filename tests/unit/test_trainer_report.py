"""The version report: self-contained, escaped, every figure drawn from the recorded numbers."""

from __future__ import annotations

import re

from tfmaas.trainer.report import MAX_HEATMAP_CLASSES, render_report

HOSTILE = "<script>alert(1)</script>"


def _inputs(classes: list[str]) -> tuple[dict, dict, dict]:
    size = len(classes)
    matrix = [[10 if row == column else 1 for column in range(size)] for row in range(size)]
    per_class = {
        name: {"precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 11} for name in classes
    }
    metrics = {
        "accuracy": 0.9,
        "precision": 0.9,
        "recall": 0.8,
        "f1": 0.85,
        "classes": classes,
        "confusion_matrix": matrix,
        "per_class": per_class,
        "examples": {"train": 80, "validation": 10, "test": 10},
    }
    card = {
        "name": "sentiment",
        "version": 3,
        "architecture": "bag-of-ngrams",
        "trainedAt": "2026-01-01T00:00:00Z",
        "globalExplanation": {
            "how": "mean attribution",
            "topUnitsPerClass": {
                name: [{"unit": HOSTILE, "meanAttribution": 0.5, "sentences": 2}]
                for name in classes
            },
        },
    }
    history = {
        "loss": [0.7, 0.4, 0.3],
        "val_loss": [0.6, 0.5, 0.55],
        "accuracy": [0.6, 0.8, 0.9],
        "val_accuracy": [0.7, 0.75, 0.74],
    }
    return card, metrics, history


def test_user_text_is_escaped_and_nothing_is_fetched() -> None:
    page = render_report(*_inputs([HOSTILE, "positive"]))
    assert "<script" not in page
    assert "&lt;script&gt;" in page
    # Self-contained: no script, stylesheet, image or font from anywhere.
    assert not re.search(r"<(script|link|img|iframe)\b", page)
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page


def test_every_figure_is_drawn_from_the_numbers() -> None:
    page = render_report(*_inputs(["negative", "positive"]))
    assert page.count("class='curve'") == 4  # train and validation, loss and accuracy
    assert page.count("class='cell'") == 4  # 2 x 2 heatmap
    assert page.count("<tr>") == 3  # header + 2 classes
    assert page.count("<figcaption>toward ") == 2  # top units of each class
    assert "accuracy</b> 0.9000" in page
    # The diagonal (10 of 11) is darker than the rest (1 of 11).
    shades = re.findall(r"class='cell'[^>]*fill='rgb\((\d+), (\d+), (\d+)\)'", page)
    assert int(shades[0][0]) < int(shades[1][0])


def test_missing_or_inconsistent_records_say_so_instead_of_failing() -> None:
    card, metrics, _ = _inputs(["a", "b"])
    metrics["confusion_matrix"] = [[1, 2, 3]]  # not 2 x 2
    page = render_report(card, metrics, {})
    assert "no epochs recorded" in page and "no confusion matrix recorded" in page
    many = [f"c{i}" for i in range(MAX_HEATMAP_CLASSES + 1)]
    assert "too many to draw" in render_report(*_inputs(many))
