"""The pure parts of distillation, pruning and quantization: softened labels, the loss's
targets, the chi-square ranking and int8's round trip."""

from __future__ import annotations

import numpy as np
import pytest

from tfmaas.trainer.distill import (
    UNLABELLED,
    accuracy,
    distillation_loss,
    hard_loss,
    soften,
    targets,
    vocabulary_labels,
)
from tfmaas.trainer.examples import Split, Splits
from tfmaas.trainer.prune import chi_square, most_useful
from tfmaas.trainer.quantize import int8_quantize
from tfmaas.trainer.training import PreparedData, vocabulary_split, with_unlabelled


def test_soften_keeps_the_ranking_flattens_with_temperature_and_survives_zeros() -> None:
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5]], dtype=np.float32)
    assert np.allclose(soften(scores, 1.0)[0, :2] / soften(scores, 1.0)[0, :2].sum(), [0.9, 0.1])
    warm = soften(scores, 4.0)
    assert np.all(np.isfinite(warm)) and np.allclose(warm.sum(axis=1), 1.0)
    assert (np.argsort(warm, axis=1) == np.argsort(scores, axis=1)).all()
    assert warm[0].max() < soften(scores, 1.0)[0].max()


def test_targets_put_the_label_first_and_zero_soft_labels_where_there_are_none() -> None:
    soft = np.array([[0.7, 0.3], [0.2, 0.8]], dtype=np.float32)
    expected = [[0, 0.7, 0.3], [1, 0.2, 0.8]]
    assert np.allclose(targets(np.array([0, 1]), soft, 2), expected)
    assert targets(np.array([1]), None, 2).tolist() == [[1.0, 0.0, 0.0]]


def test_chi_square_ranks_a_class_marker_above_a_unit_everywhere() -> None:
    # Units: 0 in every sentence, 1 only in class 0, 2 never, 3 mostly class 1.
    presence = np.array([[50, 50, 0, 5], [50, 0, 0, 40]])
    scores = chi_square(presence, np.array([50, 50]))
    assert scores[0] == 0 and scores[2] == 0 and scores[1] > scores[3] > 0
    assert most_useful(scores, 2).tolist() == [1, 3]


def test_int8_round_trip_is_within_half_a_step_and_an_all_zero_tensor_survives() -> None:
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(64, 32)).astype(np.float32)
    quantized, scale = int8_quantize(weights)
    assert quantized.dtype == np.int8 and np.abs(quantized).max() == 127
    assert np.abs(quantized * scale - weights).max() <= scale / 2 + 1e-6
    zeros, zero_scale = int8_quantize(np.zeros((4, 4), np.float32))
    assert not zeros.any() and zero_scale == 1.0


def test_an_unlabelled_text_learns_from_the_teacher_alone() -> None:
    soft = np.array([[0.9, 0.1], [0.9, 0.1]], dtype=np.float32)
    fitted = targets(np.array([1, UNLABELLED]), soft, 2)
    predicted = np.array([[0.2, 0.8], [0.2, 0.8]], dtype=np.float32)
    hard = hard_loss(fitted, predicted).numpy()
    assert np.isclose(hard[0], -np.log(0.8), atol=1e-5) and hard[1] == 0.0
    # Its accuracy is agreement with the teacher's choice (class 0), the labelled one's with
    # its label (class 1).
    assert accuracy(fitted, predicted).numpy().tolist() == [1.0, 0.0]
    # alpha weighs the teacher's term on a labelled text only; an unlabelled one has it whole.
    one = distillation_loss(temperature=1.0, alpha=0.25)(fitted, predicted).numpy()
    kl = float(np.sum(soft[0] * np.log(soft[0] / predicted[0])))
    assert np.allclose(one, [0.25 * kl + 0.75 * -np.log(0.8), kl], atol=1e-5)


def test_vocabulary_labels_keep_true_labels_and_give_left_out_texts_the_teachers_class() -> None:
    soft = np.array([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.6, 0.4]], dtype=np.float32)
    labels = np.array([1, 0, UNLABELLED, UNLABELLED])
    # A true label wins even where the teacher disagrees (the first row).
    assert vocabulary_labels(labels, soft).tolist() == [1, 0, 1, 0]
    assert vocabulary_labels(np.array([], dtype=np.int64), np.zeros((0, 2))).tolist() == []
    with pytest.raises(ValueError, match="2 label ids but 1 rows"):
        vocabulary_labels(np.array([0, 1]), soft[:1])


def _prepared(unlabelled: list[str]) -> PreparedData:
    def split(texts: list[str], labels: list[int]) -> Split:
        return Split(texts, np.array(labels, dtype=np.int64))

    splits = Splits(
        train=split(["a", "b"], [0, 1]),
        validation=split(["v"], [0]),
        test=split(["t"], [1]),
        classes=["neg", "pos"],
    )
    return PreparedData(splits, "fingerprint", {}, unlabelled)


def test_a_students_training_set_ends_with_its_left_out_texts_unlabelled() -> None:
    data = _prepared(["x", "y"])
    student = with_unlabelled(data.splits.train, data.unlabelled)
    assert student.texts == ["a", "b", "x", "y"]
    assert student.label_ids.tolist() == [0, 1, UNLABELLED, UNLABELLED]
    assert student.label_ids.dtype == data.splits.train.label_ids.dtype


def test_the_vocabulary_comes_from_the_training_split_and_the_teachers_left_out_texts() -> None:
    soft = np.array([[0.2, 0.8], [0.2, 0.8], [0.1, 0.9], [0.7, 0.3]], dtype=np.float32)
    chosen = vocabulary_split(_prepared(["x", "y"]), soft)
    assert chosen.texts == ["a", "b", "x", "y"]
    # True labels on the training split (not the teacher's), its top class on the rest.
    assert chosen.label_ids.tolist() == [0, 1, 1, 0]
    # Never the validation or test split's sentences.
    assert not {"v", "t"} & set(chosen.texts)


def test_without_a_teacher_or_left_out_texts_the_vocabulary_is_the_training_splits() -> None:
    with_texts, without = _prepared(["x"]), _prepared([])
    assert vocabulary_split(with_texts, None) is with_texts.splits.train
    soft = np.array([[0.2, 0.8], [0.9, 0.1]], dtype=np.float32)
    assert vocabulary_split(without, soft) is without.splits.train
