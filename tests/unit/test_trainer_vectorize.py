"""Standardization for Chinese text: punctuation of every script goes, characters stay."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def standardize():
    tf = pytest.importorskip("tensorflow")
    from tfmaas.trainer.vectorize import standardize as fn

    return lambda texts: [t.decode() for t in fn(tf.constant(texts)).numpy()]


def test_cjk_and_ascii_punctuation_and_case(standardize) -> None:
    assert standardize(["《三体》很好看！！还行吧……", "Hello, WORLD…  ok?", " 全角，标点。 "]) == [
        "三体 很好看 还行吧",
        "hello world ok",
        "全角 标点",
    ]


def test_characters_and_their_bigrams_are_the_tokens() -> None:
    tf = pytest.importorskip("tensorflow")
    from tfmaas.trainer.vectorize import adapt, bag_of_ngrams_vectorizer, sequence_vectorizer

    bag = adapt(bag_of_ngrams_vectorizer(100, 2), ["我爱北京", "北京好！"], 8)
    vocabulary = set(bag.get_vocabulary())
    assert {"我", "北", "北 京", "我 爱"} <= vocabulary
    assert "！" not in vocabulary
    ids = adapt(sequence_vectorizer(100, 6), ["我爱北京"], 8)(tf.constant(["北京北京北京北京"]))
    assert ids.shape == (1, 6)  # truncated to sequenceLength
