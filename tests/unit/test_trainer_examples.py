"""Clean-up, deduplication, sampling and the stratified split."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from tfmaas.errors import UserError
from tfmaas.trainer.datasets import RawExamples
from tfmaas.trainer.examples import (
    clean_examples,
    left_out_texts,
    sample_examples,
    split_examples,
)


def test_clean_strips_dedups_and_drops_conflicting_texts() -> None:
    raw = RawExamples(
        texts=[" 好 ", "好", "", "   ", "坏", "一般", "一般", "无标签", "好"],
        labels=["pos", "pos", "pos", "neg", "neg", "pos", "neg", "", "pos"],
    )
    cleaned = clean_examples(raw)
    assert cleaned.texts == ["好", "坏"]
    assert cleaned.classes == ["neg", "pos"]
    assert cleaned.label_ids.tolist() == [1, 0]
    assert cleaned.dropped == {"empty": 2, "unlabelled": 1, "duplicates": 3, "conflicting": 1}


def test_builtin_sized_leak_is_removed() -> None:
    texts = [f"句子{i}" for i in range(50)]
    raw = RawExamples(texts * 2, ["a" if i % 2 else "b" for i in range(50)] * 2)
    cleaned = clean_examples(raw)
    assert len(cleaned) == 50 and len(set(cleaned.texts)) == 50


def test_one_class_is_rejected() -> None:
    with pytest.raises(UserError, match=r"only one class.*labelField"):
        clean_examples(RawExamples(["a", "b"], ["x", "x"]))


def test_empty_after_cleanup_is_rejected() -> None:
    with pytest.raises(UserError, match="no usable examples"):
        clean_examples(RawExamples(["", " ", "a", "a"], ["x", "y", "x", "y"]))


def _dataset(n_a: int, n_b: int, n_c: int = 0):
    texts = [f"t{i}" for i in range(n_a + n_b + n_c)]
    labels = ["a"] * n_a + ["b"] * n_b + ["c"] * n_c
    return clean_examples(RawExamples(texts, labels))


def test_split_is_deterministic_by_seed_and_disjoint() -> None:
    data = _dataset(300, 100)
    first = split_examples(data, validation_fraction=0.1, test_fraction=0.2, seed=3)
    again = split_examples(data, validation_fraction=0.1, test_fraction=0.2, seed=3)
    other = split_examples(data, validation_fraction=0.1, test_fraction=0.2, seed=4)
    assert first.test.texts == again.test.texts and first.train.texts == again.train.texts
    assert first.test.texts != other.test.texts
    parts = [set(first.train.texts), set(first.validation.texts), set(first.test.texts)]
    assert sum(map(len, parts)) == 400 and len(set.union(*parts)) == 400
    assert first.counts() == {"train": 280, "validation": 40, "test": 80}


def test_split_is_stratified() -> None:
    data = _dataset(300, 100, 20)
    splits = split_examples(data, validation_fraction=0.1, test_fraction=0.2, seed=0)
    assert Counter(splits.test.label_ids.tolist()) == {0: 60, 1: 20, 2: 4}
    assert Counter(splits.validation.label_ids.tolist()) == {0: 30, 1: 10, 2: 2}
    by_text = dict(zip(data.texts, data.label_ids.tolist(), strict=True))
    for split in (splits.train, splits.validation, splits.test):
        assert [by_text[t] for t in split.texts] == split.label_ids.tolist()


def test_split_that_leaves_no_test_example_is_rejected() -> None:
    with pytest.raises(UserError, match="no test example"):
        split_examples(_dataset(2, 2), validation_fraction=0.0, test_fraction=0.1, seed=0)


def test_sampling_is_deterministic_and_keeps_input_order() -> None:
    data = _dataset(500, 500)
    sample = sample_examples(data, 100, seed=9)
    assert sample.texts == sample_examples(data, 100, seed=9).texts
    assert sample.texts != sample_examples(data, 100, seed=10).texts
    positions = [data.texts.index(t) for t in sample.texts]
    assert positions == sorted(positions) and len(sample) == 100
    assert sample_examples(data, 0, seed=9) is data
    assert sample.fingerprint() != data.fingerprint()
    assert sample.fingerprint() == sample_examples(data, 100, seed=9).fingerprint()


def test_left_out_texts_never_overlap_the_sample_and_are_bounded() -> None:
    data = _dataset(500, 500)
    used = set(sample_examples(data, 100, seed=9).texts)
    everything_else = left_out_texts(data, 100, 9, limit=10**6)
    assert len(everything_else) == 900 and not used & set(everything_else)
    some = left_out_texts(data, 100, 9, limit=50)
    assert len(some) == 50 and set(some) <= set(everything_else)
    assert some == left_out_texts(data, 100, 9, limit=50)
    positions = [data.texts.index(t) for t in some]
    assert positions == sorted(positions)
    # Nothing is left out when the run uses every example, or none are asked for.
    assert left_out_texts(data, 0, 9, limit=50) == []
    assert left_out_texts(data, 1000, 9, limit=50) == []
    assert left_out_texts(data, 100, 9, limit=0) == []
    assert left_out_texts(data, 100, 9, limit=-5) == []


def test_sampling_down_to_one_class_is_rejected() -> None:
    data = clean_examples(RawExamples([f"t{i}" for i in range(100)], ["a"] * 99 + ["b"]))
    with pytest.raises(UserError, match="maxExamples=1 leaves only one class"):
        sample_examples(data, 1, seed=0)


def test_fingerprint_covers_labels() -> None:
    a = clean_examples(RawExamples(["x", "y"], ["p", "n"]))
    b = clean_examples(RawExamples(["x", "y"], ["n", "p"]))
    assert a.fingerprint() != b.fingerprint()
    assert np.array_equal(a.label_ids, [1, 0])
