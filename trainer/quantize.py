"""Weight quantization at export: a SavedModel whose large weights are stored as float16, or as
int8 with one float32 scale per tensor, that TensorFlow Serving loads like any other.

The serving functions dequantize the stored weights and run the very same Keras layers on
them (`keras.StatelessScope` maps each layer variable to its dequantized value), so every
signature, `explain` included, keeps its code and its input/output contract. The float32
variables are not reachable from the exported module, so they are not saved: a capture of
one would make `tf.saved_model.save` fail rather than quietly grow the export.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfmaas.api.spec import QUANTIZE_NONE
from tfmaas.trainer.explaining import explanation
from tfmaas.trainer.signature import INPUT_KEY, ServingModule

FLOAT16 = "float16"
INT8 = "int8"
# Biases, norms and small heads stay float32: they are a rounding error of the size, and the
# scores' last layer is where precision matters most.
MIN_QUANTIZED_ELEMENTS = 1024
INT8_LEVELS = 127.0


def int8_quantize(weights: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """Symmetric per-tensor quantization: int8 values and the scale that restores them."""
    largest = float(np.max(np.abs(weights))) if weights.size else 0.0
    scale = np.float32(largest / INT8_LEVELS if largest > 0 else 1.0)
    quantized = np.clip(np.rint(weights / scale), -INT8_LEVELS, INT8_LEVELS).astype(np.int8)
    return quantized, scale


def quantizes(variable: Any) -> bool:
    """Whether `variable` is stored quantized (a large float weight)."""
    dtype = tf.as_dtype(variable.dtype)
    return dtype.is_floating and int(np.prod(variable.shape)) >= MIN_QUANTIZED_ELEMENTS


class _StoredWeight(tf.Module):
    """One model variable as exported: quantized values (+ scale) or an unchanged copy."""

    def __init__(self, variable: Any, mode: str, index: int) -> None:
        super().__init__(name=f"weight_{index}")
        value = np.asarray(keras.ops.convert_to_numpy(variable.value))
        self.dtype = tf.as_dtype(variable.dtype)
        self.scale: tf.Variable | None = None
        if not quantizes(variable):
            self.values = tf.Variable(value, trainable=False, dtype=self.dtype)
        elif mode == FLOAT16:
            self.values = tf.Variable(value.astype(np.float16), trainable=False)
        else:
            quantized, scale = int8_quantize(value)
            self.values = tf.Variable(quantized, trainable=False)
            self.scale = tf.Variable(scale, trainable=False)

    def dequantized(self) -> tf.Tensor:
        restored = tf.cast(self.values, self.dtype)
        return restored * tf.cast(self.scale, self.dtype) if self.scale is not None else restored


@dataclass(frozen=True)
class _Network:
    """The Keras model and explainer, held where tf.Module tracking does not look, so their
    float32 variables stay out of the SavedModel."""

    model: Any
    explainer: Any
    variables: Sequence[Any]


class QuantizedServingModule(tf.Module):
    """`ServingModule`'s signatures over quantized weights."""

    def __init__(self, base: ServingModule, *, mode: str) -> None:
        if mode not in (FLOAT16, INT8):
            raise ValueError(f"unknown quantization {mode!r}")
        super().__init__(name="tfmaas_classifier")
        self.mode = mode
        self.vectorizer = base.vectorizer
        self.class_names = base.class_names
        variables = list(base.model.variables)
        self.weights = [_StoredWeight(v, mode, i) for i, v in enumerate(variables)]
        self._network = _Network(base.model, base.explainer, variables)
        # The explainer's own lookup tables travel; its Keras parts are the model's layers.
        self.explainer_tables = [
            value
            for value in vars(base.explainer).values()
            if isinstance(value, tf.saved_model.experimental.TrackableResource)
        ]

    @contextmanager
    def _dequantized(self) -> Iterator[None]:
        pairs = zip(self._network.variables, self.weights, strict=True)
        with keras.StatelessScope(state_mapping=[(v, w.dequantized()) for v, w in pairs]):
            yield

    @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string, name=INPUT_KEY)])
    def serve(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        features = self.vectorizer(text)
        with self._dequantized():
            scores = tf.cast(self._network.model(features, training=False), tf.float32)
        class_id = tf.argmax(scores, axis=-1, output_type=tf.int64)
        return {
            "scores": scores,
            "class_id": class_id,
            "label": tf.gather(self.class_names, class_id),
        }

    @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string, name=INPUT_KEY)])
    def explain(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        with self._dequantized():
            return explanation(self._network.explainer, text, self.class_names)


def quantize(module: ServingModule, mode: str) -> Any:
    """The module to export: `module` itself for "none", else its quantized twin."""
    return module if mode == QUANTIZE_NONE else QuantizedServingModule(module, mode=mode)
