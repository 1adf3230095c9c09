"""The explain signature's columns become Explanations; the CLI marks their decisive spans."""

from __future__ import annotations

import numpy as np
import pytest

from tfmaas.cli.explain import render, spans
from tfmaas.client import Explanation, PredictionError, to_explanations


def _outputs() -> dict[str, np.ndarray]:
    return {
        "characters": np.array([[b"\xe5\xa4\xaa", b"\xe5\xb7\xae", b"!"], [b"a", b"", b""]]),
        "char_attributions": np.array([[0.05, 0.6, 0.0], [-0.1, 0.0, 0.0]], np.float32),
        "units": np.array([[b"\xe5\xb7\xae", b"\xe5\xa4\xaa"], [b"a", b""]]),
        "unit_attributions": np.array([[0.6, 0.05], [-0.1, 0.0]], np.float32),
        "class_id": np.array([0, 1]),
        "label": np.array([b"negative", b"positive"]),
        "score": np.array([0.9, 0.6], np.float32),
    }


def test_columns_become_one_explanation_per_sentence_without_padding() -> None:
    first, second = to_explanations(_outputs())
    assert first.characters == ["太", "差", "!"] and first.label == "negative"
    assert first.char_attributions == pytest.approx([0.05, 0.6, 0.0])
    assert [unit for unit, _ in first.units] == ["差", "太"]
    assert second.characters == ["a"] and second.units == [("a", pytest.approx(-0.1))]
    assert second.class_id == 1 and second.score == pytest.approx(0.6)


def test_a_model_without_the_explain_outputs_is_a_clear_error() -> None:
    outputs = _outputs()
    del outputs["units"]
    with pytest.raises(PredictionError, match=r"lacks \['units'\]"):
        to_explanations(outputs)


def test_spans_merge_runs_and_skip_faint_characters() -> None:
    runs = spans(list("很好但贵了"), [0.5, 0.6, 0.01, -0.3, -0.2])
    assert runs == [("很好", 1), ("但", 0), ("贵了", -1)]
    assert spans(list("ab"), [0.0, 0.0]) == [("ab", 0)]
    assert spans([], []) == []


def test_render_marks_without_a_terminal_and_colours_with_one() -> None:
    explanation = Explanation("negative", 0, 0.9, list("太差了"), [0.05, 0.6, -0.2], [])
    assert render(explanation, colour=False) == "negative 0.900\t太[+差][-了]"
    coloured = render(explanation, colour=True)
    assert coloured.startswith("negative 0.900\t太\x1b[") and "[+" not in coloured
