"""The model architectures: each pairs a vectorizer (raw text → tensor) with a Keras model.

Training feeds the model vectorized batches from tf.data (string work stays on the CPU,
overlapped with the step); export chains the same vectorizer in front of the model.
The last layer is float32 softmax even under mixed precision, so scores are stable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras

from tfmaas.api.spec import ModelArchitectureSpec
from tfmaas.trainer.vectorize import bag_of_ngrams_vectorizer, sequence_vectorizer


@dataclass
class Architecture:
    name: str
    vectorizer: keras.layers.TextVectorization
    build_model: Callable[[int], keras.Model]
    """Builds the model once the vectorizer is adapted (the argument is its vocabulary size)."""
    cache_vectors: bool = False
    """Whether vectorized examples are small enough to compute once and keep in memory."""


def make_architecture(config: ModelArchitectureSpec, num_classes: int) -> Architecture:
    builders = {
        "bag-of-ngrams": _bag_of_ngrams,
        "cnn": _cnn,
        "transformer": _transformer,
    }
    return builders[config.architecture](config, num_classes)


def _softmax(num_classes: int) -> keras.layers.Dense:
    return keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="scores")


def _bag_of_ngrams(config: ModelArchitectureSpec, num_classes: int) -> Architecture:
    def build(vocabulary_size: int) -> keras.Model:
        inputs = keras.Input(shape=(vocabulary_size,), name="tfidf")
        x = keras.layers.Dropout(0.3)(inputs)
        x = keras.layers.Dense(config.embedding_dim, activation="relu", name="hidden")(x)
        x = keras.layers.Dropout(0.5)(x)
        return keras.Model(inputs, _softmax(num_classes)(x), name="bag_of_ngrams")

    vectorizer = bag_of_ngrams_vectorizer(config.max_tokens, config.ngrams)
    return Architecture("bag-of-ngrams", vectorizer, build)


def _cnn(config: ModelArchitectureSpec, num_classes: int) -> Architecture:
    # Kernel widths 1..ngrams+1: the character n-grams the spec asks for, and one wider.
    widths = tuple(range(1, config.ngrams + 2))

    def build(vocabulary_size: int) -> keras.Model:
        inputs = keras.Input(shape=(config.sequence_length,), dtype="int64", name="char_ids")
        embedded = keras.layers.Embedding(vocabulary_size, config.embedding_dim, name="embed")(
            inputs
        )
        embedded = keras.layers.Dropout(0.2)(embedded)
        pooled = []
        for width in widths:
            conv = keras.layers.Conv1D(128, width, activation="relu", name=f"conv{width}")(embedded)
            pooled.append(keras.layers.GlobalMaxPooling1D(name=f"max{width}")(conv))
        x = keras.layers.Concatenate()(pooled) if len(pooled) > 1 else pooled[0]
        x = keras.layers.Dropout(0.5)(x)
        return keras.Model(inputs, _softmax(num_classes)(x), name="cnn")

    vectorizer = sequence_vectorizer(config.max_tokens, config.sequence_length)
    return Architecture("cnn", vectorizer, build, cache_vectors=True)


class PositionalEmbedding(keras.layers.Layer):
    """Token plus learned position embeddings; padding (id 0) is masked."""

    def __init__(self, sequence_length: int, vocabulary_size: int, dim: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.tokens = keras.layers.Embedding(vocabulary_size, dim, mask_zero=True)
        self.positions = keras.layers.Embedding(sequence_length, dim)
        self.sequence_length = sequence_length

    def call(self, inputs):
        positions = keras.ops.arange(0, self.sequence_length, 1)
        return self.tokens(inputs) + self.positions(positions)

    def compute_mask(self, inputs, mask=None):
        return keras.ops.not_equal(inputs, 0)


def _transformer(config: ModelArchitectureSpec, num_classes: int) -> Architecture:
    dim = config.embedding_dim
    heads = 4 if dim % 4 == 0 else 1

    def build(vocabulary_size: int) -> keras.Model:
        inputs = keras.Input(shape=(config.sequence_length,), dtype="int64", name="char_ids")
        x = PositionalEmbedding(config.sequence_length, vocabulary_size, dim, name="embed")(inputs)
        attention = keras.layers.MultiHeadAttention(heads, dim // heads, dropout=0.1)(x, x)
        x = keras.layers.LayerNormalization(epsilon=1e-6)(x + attention)
        ffn = keras.layers.Dense(dim * 2, activation="relu")(x)
        ffn = keras.layers.Dense(dim)(ffn)
        x = keras.layers.LayerNormalization(epsilon=1e-6)(x + keras.layers.Dropout(0.1)(ffn))
        x = keras.layers.GlobalAveragePooling1D()(x)
        x = keras.layers.Dropout(0.3)(x)
        return keras.Model(inputs, _softmax(num_classes)(x), name="transformer")

    vectorizer = sequence_vectorizer(config.max_tokens, config.sequence_length)
    return Architecture("transformer", vectorizer, build, cache_vectors=True)
