"""Distillation and compression through `train_and_publish` into a real (file) store: the teacher
sees the training split only, quantized exports keep every signature's contract and agree with
the unquantized model, and a teacher that is not published fails before any training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tfmaas.api import load_training_spec
from tfmaas.errors import UserError

pytestmark = pytest.mark.slow

SENTENCES = ["质量很好，非常满意！", "太差了，完全不能用", "", "İstanbul 好"]
BASE: dict[str, Any] = {
    "dataset": {"uri": "builtin:chinese-reviews"},
    "model": {"maxTokens": 4000},
    "hyperparameters": {"epochs": 2, "batchSize": 32, "maxExamples": 1200, "seed": 5},
}


def _signatures(path: Path) -> dict[str, dict[str, Any]]:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    texts = tf.constant(SENTENCES)
    return {
        name: {k: v.numpy() for k, v in loaded.signatures[name](text=texts).items()}
        for name in ("serving_default", "explain")
    }


def test_a_missing_teacher_fails_before_training(tmp_path: Path) -> None:
    from tfmaas.trainer import train_and_publish

    student = {**BASE, "distillation": {"teacher": {"version": 3}}}
    with pytest.raises(UserError, match=r"teacher.version 3 is not published .*versions: none"):
        train_and_publish(student, name="m", store_uri=(tmp_path / "s").as_uri(), log=print)


def test_distilled_quantized_students_keep_the_contract_and_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tfmaas.trainer import distill, train_and_publish
    from tfmaas.trainer.training import prepare_data

    store = (tmp_path / "store").as_uri()
    quiet = lambda line: None  # noqa: E731
    teacher = train_and_publish(BASE, name="m", store_uri=store, log=quiet)
    taught: list[str] = []
    scores = distill.teacher_scores

    def recording(teacher: Any, texts: list[str], classes: list[str]) -> np.ndarray:
        taught.extend(texts)
        return scores(teacher, texts, classes)

    monkeypatch.setattr(distill, "teacher_scores", recording)
    reference = _signatures(teacher.export_dir)
    for quantize in ("int8", "float16"):
        student = {
            **BASE,
            "model": {"maxTokens": 4000, "embeddingDim": 16},
            "distillation": {"teacher": {"version": 1}, "temperature": 3, "alpha": 0.6},
            "compression": {"quantize": quantize, "pruneVocabulary": 1500},
        }
        result = train_and_publish(student, name="m", store_uri=store, log=quiet)
        metrics = json.loads((result.export_dir / "metrics.json").read_text(encoding="utf-8"))
        assert metrics["quantization"]["mode"] == quantize
        assert metrics["quantization"]["agreementWithUnquantized"] >= 0.99
        card = json.loads((result.export_dir / "model_card.json").read_text(encoding="utf-8"))
        assert card["teacher"]["version"] == 1 and card["vocabularySize"] <= 1501
        assert card["sizeBytes"] * 4 <= card["teacher"]["sizeBytes"]
        answers = _signatures(result.export_dir)
        for name, outputs in reference.items():
            assert set(answers[name]) == set(outputs), name
            for key, value in outputs.items():
                assert answers[name][key].dtype == value.dtype, (name, key)
                assert answers[name][key].shape[0] == value.shape[0], (name, key)

    splits = prepare_data(load_training_spec(BASE), log=quiet).splits
    assert set(taught) == set(splits.train.texts)
    assert not set(taught) & (set(splits.test.texts) | set(splits.validation.texts))
