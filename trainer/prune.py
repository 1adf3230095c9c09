"""Vocabulary pruning: keep the n units (character n-grams or characters) whose presence in
a sentence says most about its class on the training split.

Usefulness is the chi-square statistic of a unit's presence against the class (as
scikit-learn's `chi2` computes it on binary features): a unit frequent everywhere scores
low, one concentrated in a class scores high. The vectorizer keeps its TF-IDF weights for the
units it keeps, so the pruned layer gives a kept unit exactly the weight it had.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BATCH = 512


def chi_square(presence_by_class: np.ndarray, class_sizes: np.ndarray) -> np.ndarray:
    """Per unit, chi-square of its document counts per class (`presence_by_class`, shape
    [classes, units]) against what the class sizes predict."""
    observed = presence_by_class.astype(np.float64)
    total_presence = observed.sum(axis=0, keepdims=True)
    expected = total_presence * (class_sizes[:, None] / max(float(class_sizes.sum()), 1.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(expected > 0, (observed - expected) ** 2 / expected, 0.0)
    scores: np.ndarray = terms.sum(axis=0)
    return scores


def most_useful(scores: np.ndarray, keep: int) -> np.ndarray:
    """Indices of the `keep` highest scores, in their original order (ties: lower index)."""
    order = np.argsort(-scores, kind="stable")[:keep]
    return np.sort(order)


def prune_vocabulary(
    adapted: Any,
    fresh: Any,
    texts: list[str],
    label_ids: np.ndarray,
    num_classes: int,
    *,
    keep: int,
) -> Any:
    """`fresh` (a vectorizer like `adapted`, never called) holding the `keep` most useful units
    of `adapted`'s vocabulary; `adapted` itself when it has no more than `keep`.

    A new layer, because a TF-IDF layer's size is fixed once it has been called."""
    import tensorflow as tf

    tokens = adapted.get_vocabulary(include_special_tokens=False)
    if len(tokens) <= keep:
        return adapted
    special = int(adapted.vocabulary_size()) - len(tokens)
    presence = np.zeros((num_classes, len(tokens)), dtype=np.int64)
    tfidf = adapted.get_config()["output_mode"] == "tf_idf"
    for start in range(0, len(texts), BATCH):
        batch = adapted(tf.constant(texts[start : start + BATCH], dtype=tf.string)).numpy()
        labels = np.asarray(label_ids[start : start + BATCH], dtype=np.int64)
        present = np.zeros((len(batch), special + len(tokens)), dtype=bool)
        if tfidf:
            present |= batch > 0
        else:
            rows = np.repeat(np.arange(len(batch)), batch.shape[1])
            present[rows, batch.reshape(-1)] = True
        np.add.at(presence, labels, present[:, special:].astype(np.int64))
    class_sizes = np.bincount(np.asarray(label_ids, np.int64), minlength=num_classes)
    kept = most_useful(chi_square(presence, class_sizes), keep)
    vocabulary = [tokens[i] for i in kept]
    if tfidf:
        # The formula TextVectorization.adapt uses, from the same document counts. The
        # out-of-vocabulary slot weighs 0: pruned units are gone, not pooled into one
        # large feature the model never saw so crowded in training.
        documents = float(len(texts))
        idf = np.log1p(documents / (1.0 + presence.sum(axis=0)[kept]))
        unknown = adapted.get_vocabulary()[:special]
        fresh.set_vocabulary(unknown + vocabulary, idf_weights=np.concatenate([[0.0], idf]))
    else:
        fresh.set_vocabulary(vocabulary)
    return fresh
