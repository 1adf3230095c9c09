"""spec.training.distillation and spec.training.compression: hostile and careless values are
refused naming the field, sane ones parse, and both reach the training fingerprint."""

from __future__ import annotations

from typing import Any

import pytest

from tfmaas.api import load_training_spec
from tfmaas.errors import UserError

MINIMAL: dict[str, Any] = {"dataset": {"uri": "builtin:chinese-reviews"}}


def _with(**fields: Any) -> dict[str, Any]:
    return {**MINIMAL, **fields}


def test_absent_means_no_distillation_and_no_compression_and_an_unchanged_hash() -> None:
    config = load_training_spec(MINIMAL)
    assert config.distillation is None
    assert (config.compression.quantize, config.compression.prune_vocabulary) == ("none", None)
    assert "distillation" not in config.document and "compression" not in config.document


def test_defaults_and_parsing() -> None:
    config = load_training_spec(
        _with(distillation={"teacher": {"version": 7}}, compression={"pruneVocabulary": 5000})
    )
    assert config.distillation is not None
    assert (config.distillation.teacher_version, config.distillation.temperature) == (7, 2.0)
    assert config.distillation.alpha == 0.5
    # Absent, no left-out text is used, and the defaulted document does not grow a field
    # (so the fingerprint of a student spec written before the field existed is unchanged).
    assert config.distillation.unlabelled_examples == 0
    assert "unlabelledExamples" not in config.document["distillation"]
    asked = load_training_spec(
        _with(distillation={"teacher": {"version": 7}, "unlabelledExamples": 9000})
    )
    assert asked.distillation is not None and asked.distillation.unlabelled_examples == 9000
    assert asked.fingerprint() != config.fingerprint()
    assert (config.compression.quantize, config.compression.prune_vocabulary) == ("none", 5000)


@pytest.mark.parametrize(
    ("fields", "fragments"),
    [
        ({"distillation": {}}, ["training.distillation.teacher", "is required"]),
        ({"distillation": {"teacher": {}}}, ["training.distillation.teacher.version"]),
        ({"distillation": {"teacher": {"version": 0}}}, ["teacher.version", "at least 1"]),
        ({"distillation": {"teacher": {"version": -3}}}, ["teacher.version"]),
        ({"distillation": {"teacher": {"version": 10**19}}}, ["teacher.version", "at most"]),
        ({"distillation": {"teacher": {"version": "7"}}}, ["teacher.version", "whole number"]),
        ({"distillation": {"teacher": {"version": 2.5}}}, ["teacher.version", "whole number"]),
        ({"distillation": {"teacher": {"version": True}}}, ["teacher.version"]),
        ({"distillation": {"teacher": {"version": 1}, "temperature": 0}}, ["temperature"]),
        ({"distillation": {"teacher": {"version": 1}, "temperature": -1.0}}, ["temperature"]),
        ({"distillation": {"teacher": {"version": 1}, "temperature": 1e9}}, ["temperature"]),
        ({"distillation": {"teacher": {"version": 1}, "temperature": "hot"}}, ["temperature"]),
        ({"distillation": {"teacher": {"version": 1}, "alpha": 1.5}}, ["alpha", "at most 1"]),
        ({"distillation": {"teacher": {"version": 1}, "alpha": -0.1}}, ["alpha", "at least 0"]),
        ({"distillation": {"teacher": {"version": 1}, "teacher2": 1}}, ["unknown field"]),
        (
            {"distillation": {"teacher": {"version": 1}, "unlabelledExamples": -1}},
            ["unlabelledExamples", "at least 0"],
        ),
        (
            {"distillation": {"teacher": {"version": 1}, "unlabelledExamples": 10**7}},
            ["unlabelledExamples", "at most 1000000"],
        ),
        (
            {"distillation": {"teacher": {"version": 1}, "unlabelledExamples": "all"}},
            ["unlabelledExamples", "whole number"],
        ),
        (
            {"distillation": {"teacher": {"version": 1}, "unlabelledExamples": 1.5}},
            ["unlabelledExamples", "whole number"],
        ),
        (
            {"distillation": {"teacher": {"version": 1}}, "workers": 2},
            ["training.distillation needs workers: 1"],
        ),
        ({"compression": {"quantize": "int4"}}, ["quantize", "none, float16, int8"]),
        ({"compression": {"quantize": ""}}, ["quantize"]),
        ({"compression": {"pruneVocabulary": 0}}, ["pruneVocabulary", "at least 100"]),
        ({"compression": {"pruneVocabulary": 10**12}}, ["pruneVocabulary", "at most"]),
        ({"compression": {"pruneVocabulary": "5000"}}, ["pruneVocabulary"]),
        (
            {"compression": {"pruneVocabulary": 20000}},
            ["pruneVocabulary must be below model.maxTokens"],
        ),
        ({"compression": {"quantise": "int8"}}, ["did you mean 'quantize'"]),
    ],
)
def test_hostile_values_name_the_field(fields: dict[str, Any], fragments: list[str]) -> None:
    with pytest.raises(UserError) as caught:
        load_training_spec(_with(**fields))
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message


def test_distillation_and_compression_change_the_fingerprint_but_the_gate_does_not() -> None:
    base = load_training_spec(MINIMAL).fingerprint()
    teacher = load_training_spec(_with(distillation={"teacher": {"version": 3}})).fingerprint()
    other_teacher = load_training_spec(
        _with(distillation={"teacher": {"version": 4}})
    ).fingerprint()
    warmer = load_training_spec(
        _with(distillation={"teacher": {"version": 3}, "temperature": 4})
    ).fingerprint()
    int8 = load_training_spec(_with(compression={"quantize": "int8"})).fingerprint()
    float16 = load_training_spec(_with(compression={"quantize": "float16"})).fingerprint()
    pruned = load_training_spec(_with(compression={"pruneVocabulary": 500})).fingerprint()
    hashes = [base, teacher, other_teacher, warmer, int8, float16, pruned]
    assert len(set(hashes)) == len(hashes)
    gated = load_training_spec(_with(qualityGate={"minAccuracy": 0.9})).fingerprint()
    assert gated == base
