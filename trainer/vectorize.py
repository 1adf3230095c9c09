"""Turning raw sentences into model inputs with TensorFlow ops, so they travel inside the model.

Chinese has no spaces between words, so tokens are characters and character n-grams: no
word segmenter, no vocabulary of words, and nothing to install at serving time.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

# Unicode punctuation (ASCII and CJK: ，。！？、《》「」…) and symbols become spaces; spaces
# are then squeezed so a sentence's characters and their n-grams are what is counted.
_PUNCTUATION = r"[\p{P}\p{S}]+"
_SPACES = r"\s+"


def standardize(texts: tf.Tensor) -> tf.Tensor:
    """Lowercase (full Unicode), punctuation to spaces, runs of spaces to one, trimmed."""
    return tf.strings.strip(standardize_characters(texts))


def standardize_characters(texts: tf.Tensor) -> tf.Tensor:
    """`standardize` without the trim: applied to single characters it says what each becomes
    (explanations map the model's tokens back to the original characters with it)."""
    lowered = tf.strings.lower(texts, encoding="utf-8")
    no_punctuation = tf.strings.regex_replace(lowered, _PUNCTUATION, " ")
    return tf.strings.regex_replace(no_punctuation, _SPACES, " ")


def bag_of_ngrams_vectorizer(max_tokens: int, ngrams: int) -> keras.layers.TextVectorization:
    """TF-IDF weights over character 1..`ngrams`-grams."""
    return keras.layers.TextVectorization(
        max_tokens=max_tokens,
        standardize=standardize,
        split="character",
        ngrams=ngrams if ngrams > 1 else None,
        output_mode="tf_idf",
        name="char_ngram_tfidf",
    )


def sequence_vectorizer(max_tokens: int, sequence_length: int) -> keras.layers.TextVectorization:
    """Character ids, padded/truncated to `sequence_length`.

    No n-gram tokens here: TextVectorization appends them after the unigrams, so truncation
    would cut them off first. Sequence models learn n-grams with their convolutions or
    attention over the character ids instead.
    """
    return keras.layers.TextVectorization(
        max_tokens=max_tokens,
        standardize=standardize,
        split="character",
        output_mode="int",
        output_sequence_length=sequence_length,
        name="char_ids",
    )


def adapt(vectorizer: keras.layers.TextVectorization, texts: list[str], batch_size: int) -> Any:
    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(texts, dtype=tf.string))
    vectorizer.adapt(dataset.batch(max(batch_size, 256)))
    return vectorizer
