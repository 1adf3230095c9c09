"""The `explain` signature: why the model predicted what it did, computed inside the graph.

Every exported version carries it next to `serving_default`, so TensorFlow Serving (or
`tfmaas serve`) answers explanations with the same protocol and no Python at serving time.

Methods, one per architecture, each faithful to the model rather than a proxy:

- bag-of-ngrams: exact leave-one-out occlusion. The model is TF-IDF → Dense(relu) →
  softmax, so it is not linear before its softmax; but its first layer is, so removing
  n-gram j changes the hidden pre-activation by exactly `-x_j · W_j`. Every present n-gram
  is occluded at once as one [batch, units, hidden] tensor: the attribution of j is
  `p_c(x) - p_c(x without j)` for the predicted class c (positive: j pushed toward c).
- cnn and transformer: integrated gradients over the embedding output, from the embedding
  of an all-padding sentence (the baseline) to the sentence's, `IG_STEPS` midpoint
  steps batched as one tensor; summed over the embedding dimension per character token.
  The attributions add up to about `p_c(sentence) - p_c(empty sentence)`.

Characters: each original character gets the sum of the attributions of the model tokens
standardization turned it into (punctuation becomes the space the model sees; leading,
trailing and repeated ones are trimmed and get none). An n-gram's
attribution is shared equally between its occurrences and, within one, between its
characters (`a / (count · n)` each), so a sentence's character attributions add up to the
sum of its n-gram attributions.

Bounds: integrated gradients run one sentence at a time, so memory is that of one sentence
whatever the batch; only the first `MAX_EXPLAINED_CHARS` characters of a sentence are
explained and the class and score `explain` reports are the model's on those (identical to
`serving_default` for shorter sentences). Sequence models see `sequenceLength` tokens;
characters past them get 0, as they do not reach the model.
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
import tensorflow as tf

from tfmaas.trainer.vectorize import standardize, standardize_characters

SIGNATURE_NAME = "explain"
OUTPUT_KEYS = (
    "characters",
    "char_attributions",
    "units",
    "unit_attributions",
    "class_id",
    "label",
    "score",
)
MAX_EXPLAINED_CHARS = 512
TOP_UNITS = 10
IG_STEPS = 32


class CharacterAlignment:
    """Where each original character's model tokens lie in the standardized text.

    `standardize` lowercases, turns punctuation into spaces, squeezes runs of spaces and
    trims; done one character at a time it tells which characters survive and how many
    code points each becomes (lowercasing a few letters, e.g. "İ", yields two).
    """

    def __init__(self, texts: tf.Tensor) -> None:
        characters = tf.strings.unicode_split(texts, "UTF-8")
        self.characters = characters.to_tensor(default_value="")
        valid = tf.sequence_mask(characters.row_lengths(), tf.shape(self.characters)[1])
        pieces = standardize_characters(self.characters)
        is_space = tf.logical_and(tf.equal(pieces, " "), valid)
        solid = tf.logical_and(valid, tf.logical_not(is_space))
        solid_count = tf.cast(solid, tf.int32)
        solid_before = tf.cumsum(solid_count, axis=1, exclusive=True) > 0
        solid_after = tf.cumsum(solid_count, axis=1, exclusive=True, reverse=True) > 0
        space_before = tf.pad(is_space[:, :-1], [[0, 0], [1, 0]])
        kept_space = is_space & solid_before & solid_after & tf.logical_not(space_before)
        piece_length = tf.strings.length(pieces, unit="UTF8_CHAR")
        self.token_length = tf.where(
            solid, piece_length, tf.where(kept_space, tf.ones_like(piece_length), 0)
        )
        self.token_start = tf.cumsum(self.token_length, axis=1, exclusive=True)

    def character_attributions(self, token_attributions: tf.Tensor) -> tf.Tensor:
        """Sum each character's tokens' attributions (tokens past the tensor's end: 0)."""
        running = tf.pad(tf.cumsum(token_attributions, axis=1), [[0, 0], [1, 0]])
        last = tf.shape(running)[1] - 1
        start = tf.minimum(self.token_start, last)
        end = tf.minimum(self.token_start + self.token_length, last)
        return tf.gather(running, end, batch_dims=1) - tf.gather(running, start, batch_dims=1)


def truncate(texts: tf.Tensor) -> tf.Tensor:
    return tf.strings.substr(texts, 0, MAX_EXPLAINED_CHARS, unit="UTF8_CHAR")


def _top_units(
    units: tf.Tensor, attributions: tf.Tensor, *, present: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """The `TOP_UNITS` present units with the largest |attribution|, signed, "" padded."""
    strength = tf.where(present, tf.abs(attributions), -1.0)
    k = tf.minimum(TOP_UNITS, tf.shape(strength)[1])
    _, order = tf.math.top_k(strength, k=k)
    chosen_present = tf.gather(present, order, batch_dims=1)
    return (
        tf.where(chosen_present, tf.gather(units, order, batch_dims=1), ""),
        tf.where(chosen_present, tf.gather(attributions, order, batch_dims=1), 0.0),
    )


class LeaveOneOutExplainer(tf.Module):
    """Exact leave-one-out occlusion of each n-gram present, for the bag-of-ngrams model."""

    method = f"exact leave-one-out occlusion of each n-gram (first {MAX_EXPLAINED_CHARS} chars)"

    def __init__(self, vectorizer: keras.layers.TextVectorization, model: keras.Model) -> None:
        super().__init__(name="explainer")
        self.vectorizer = vectorizer
        self.hidden = model.get_layer("hidden")
        # Everything after the first Dense (dropout and the softmax): Dropout is the identity
        # when not training, so this is exactly the served computation.
        self.head = keras.Model(self.hidden.output, model.output, name="explain_head")
        vocabulary = vectorizer.get_vocabulary()
        self.vocabulary = tf.constant(vocabulary, dtype=tf.string)
        self.unknown_id = vocabulary.index("[UNK]") if "[UNK]" in vocabulary else 0
        self.ids = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                self.vocabulary, tf.range(len(vocabulary), dtype=tf.int64)
            ),
            default_value=self.unknown_id,
        )
        ngrams = vectorizer.get_config().get("ngrams") or 1
        self.widths = tuple(range(1, ngrams + 1)) if isinstance(ngrams, int) else tuple(ngrams)
        self.candidates = min(len(vocabulary), MAX_EXPLAINED_CHARS * len(self.widths))

    def __call__(self, texts: tf.Tensor) -> dict[str, tf.Tensor]:
        features = tf.cast(self.vectorizer(texts), tf.float32)
        kernel = tf.cast(self.hidden.kernel, tf.float32)
        pre_activation = features @ kernel + tf.cast(self.hidden.bias, tf.float32)
        scores = tf.cast(self.head(self.hidden.activation(pre_activation)), tf.float32)
        class_id = tf.argmax(scores, axis=-1, output_type=tf.int64)
        score = tf.gather(scores, class_id, batch_dims=1)

        # Present n-grams have a positive TF-IDF weight; at most `candidates` of them exist.
        weights, unit_ids = tf.math.top_k(features, k=self.candidates)
        present = weights > 0
        without = pre_activation[:, None, :] - weights[:, :, None] * tf.gather(kernel, unit_ids)
        occluded = self.head(self.hidden.activation(tf.reshape(without, [-1, kernel.shape[1]])))
        occluded = tf.reshape(
            tf.cast(occluded, tf.float32), [tf.shape(features)[0], -1, scores.shape[1]]
        )
        occluded_score = tf.gather(occluded, class_id, axis=2, batch_dims=1)
        attributions = tf.where(present, score[:, None] - occluded_score, 0.0)

        token_attributions = self._share_among_tokens(texts, unit_ids, attributions)
        units, unit_attributions = _top_units(
            tf.gather(self.vocabulary, unit_ids), attributions, present=present
        )
        return {
            "token_attributions": token_attributions,
            "units": units,
            "unit_attributions": unit_attributions,
            "class_id": class_id,
            "score": score,
        }

    def _share_among_tokens(
        self, texts: tf.Tensor, unit_ids: tf.Tensor, attributions: tf.Tensor
    ) -> tf.Tensor:
        """Per standardized token: each n-gram occurrence covering it adds a/(count·n)."""
        vocabulary_size = int(self.vocabulary.shape[0])
        batch = tf.shape(texts)[0]
        rows = tf.repeat(tf.range(batch, dtype=tf.int64)[:, None], tf.shape(unit_ids)[1], axis=1)
        by_id = tf.scatter_nd(
            tf.stack([rows, tf.cast(unit_ids, tf.int64)], axis=-1),
            attributions,
            tf.cast(tf.stack([batch, vocabulary_size]), tf.int64),
        )
        tokens = tf.strings.unicode_split(standardize(texts), "UTF-8")
        length = tf.shape(tokens.to_tensor(default_value=""))[1]
        occurrences = []
        for width in self.widths:
            grams = tf.strings.ngrams(tokens, width, separator=" ")
            dense = grams.to_tensor(default_value="")
            valid = tf.sequence_mask(grams.row_lengths(), tf.shape(dense)[1])
            occurrences.append((width, self.ids.lookup(dense), valid))
        all_ids = tf.concat(
            [tf.where(valid, ids, vocabulary_size) for _, ids, valid in occurrences], axis=1
        )
        counts = tf.math.bincount(
            tf.cast(all_ids, tf.int32), minlength=vocabulary_size + 1, axis=-1, dtype=tf.float32
        )
        shared = tf.zeros(tf.stack([batch, length]), tf.float32)
        for width, ids, valid in occurrences:
            share = tf.gather(by_id, ids, batch_dims=1) / (
                tf.gather(counts, ids, batch_dims=1) * float(width)
            )
            share = tf.where(valid, share, 0.0)
            for offset in range(width):
                shifted = tf.pad(share, [[0, 0], [offset, 0]])
                shared += _fit_columns(shifted, length)
        return shared


def _fit_columns(values: tf.Tensor, length: tf.Tensor) -> tf.Tensor:
    """Pad or cut `values` [batch, n] to [batch, length] columns."""
    values = values[:, :length]
    return tf.pad(values, [[0, 0], [0, length - tf.shape(values)[1]]])


class IntegratedGradientsExplainer(tf.Module):
    """Integrated gradients over the embedding output, for the cnn and transformer models."""

    method = f"integrated gradients over the character embeddings, {IG_STEPS} steps"

    def __init__(self, vectorizer: keras.layers.TextVectorization, model: keras.Model) -> None:
        super().__init__(name="explainer")
        self.vectorizer = vectorizer
        self.embedding = model.get_layer("embed")
        self.head = keras.Model(self.embedding.output, model.output, name="explain_head")

    def __call__(self, texts: tf.Tensor) -> dict[str, tf.Tensor]:
        ids = self.vectorizer(texts)
        mask = self.embedding.compute_mask(ids)
        # tf.identity drops the mask Keras attaches to the layer's output: it is passed
        # explicitly, and the interpolated path must not inherit a stale one.
        embedded = tf.identity(tf.cast(self.embedding(ids), tf.float32))
        baseline = tf.identity(tf.cast(self.embedding(tf.zeros_like(ids)), tf.float32))
        scores = tf.cast(self._head(embedded, mask), tf.float32)
        class_id = tf.argmax(scores, axis=-1, output_type=tf.int64)
        score = tf.gather(scores, class_id, batch_dims=1)

        # One sentence at a time: the path holds IG_STEPS copies of its embeddings and the
        # model's activations for each, so memory stays that of one sentence whatever the
        # batch (TF Serving puts no bound on a request's rows).
        has_mask = mask is not None
        token_attributions = tf.map_fn(
            lambda row: self._integrated_gradients(*row, has_mask=has_mask),
            (embedded, baseline, tf.ones_like(ids, tf.bool) if mask is None else mask, class_id),
            fn_output_signature=tf.float32,
            parallel_iterations=1,
        )
        tokens = tf.strings.unicode_split(standardize(texts), "UTF-8")
        tokens = _fit_columns(tokens.to_tensor(default_value=""), tf.shape(ids)[1])
        units, unit_attributions = _top_units(
            tokens, token_attributions, present=tf.not_equal(ids, 0)
        )
        return {
            "token_attributions": token_attributions,
            "units": units,
            "unit_attributions": unit_attributions,
            "class_id": class_id,
            "score": score,
        }

    def _integrated_gradients(
        self,
        embedded: tf.Tensor,
        baseline: tf.Tensor,
        mask: tf.Tensor,
        class_id: tf.Tensor,
        *,
        has_mask: bool,
    ) -> tf.Tensor:
        """Per token of one sentence: mean gradient along the path × (input − baseline),
        summed over the embedding; IG_STEPS midpoint steps batched as one tensor."""
        alphas = (tf.range(IG_STEPS, dtype=tf.float32) + 0.5) / IG_STEPS
        difference = embedded - baseline
        path = baseline[None] + alphas[:, None, None] * difference[None]
        path_mask = tf.tile(mask[None], [IG_STEPS, 1]) if has_mask else None
        with tf.GradientTape() as tape:
            tape.watch(path)
            path_scores = tf.cast(self._head(path, path_mask), tf.float32)
            target = tf.reduce_sum(path_scores[:, class_id])
        gradients = tape.gradient(target, path)
        return tf.reduce_sum(tf.reduce_mean(gradients, axis=0) * difference, axis=-1)

    def _head(self, embedded: tf.Tensor, mask: tf.Tensor | None) -> tf.Tensor:
        with warnings.catch_warnings():
            # Keras warns that a Functional model "destroys" a mask passed to it; the
            # functional call does apply it to the inner layers (the tests compare the score
            # with serving_default's), so the warning is noise here.
            warnings.filterwarnings("ignore", message=".*does not support masking.*")
            return self.head(embedded, mask=mask)


EXPLAINERS: dict[str, type[LeaveOneOutExplainer] | type[IntegratedGradientsExplainer]] = {
    "bag-of-ngrams": LeaveOneOutExplainer,
    "cnn": IntegratedGradientsExplainer,
    "transformer": IntegratedGradientsExplainer,
}


def make_explainer(
    architecture: str, vectorizer: keras.layers.TextVectorization, model: keras.Model
) -> LeaveOneOutExplainer | IntegratedGradientsExplainer:
    return EXPLAINERS[architecture](vectorizer, model)


def explanation(explainer: Any, texts: tf.Tensor, class_names: tf.Tensor) -> dict[str, tf.Tensor]:
    """The signature's outputs for `texts`, shaped for clients to render directly."""
    texts = truncate(texts)
    found = explainer(texts)
    alignment = CharacterAlignment(texts)
    return {
        "characters": alignment.characters,
        "char_attributions": alignment.character_attributions(found["token_attributions"]),
        "units": found["units"],
        "unit_attributions": found["unit_attributions"],
        "class_id": found["class_id"],
        "label": tf.gather(class_names, found["class_id"]),
        "score": found["score"],
    }
