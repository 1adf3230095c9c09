"""The `serving_default` signature: raw sentences in, scores, class id and label out,
and `explain` next to it (see `tfmaas.trainer.explaining`).

It is a plain `tf.Module` around the vectorizer and the Keras model, so the SavedModel
depends on nothing Keras-specific at load time (TensorFlow Serving and
`tf.saved_model.load` see ordinary functions and resources).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfmaas.trainer.explaining import explanation, make_explainer

INPUT_KEY = "text"
OUTPUT_KEYS = ("scores", "class_id", "label")


class ServingModule(tf.Module):
    def __init__(
        self,
        vectorizer: keras.layers.TextVectorization,
        model: keras.Model,
        classes: list[str],
        *,
        architecture: str,
    ) -> None:
        super().__init__(name="tfmaas_classifier")
        self.vectorizer = vectorizer
        self.model = model
        self.class_names = tf.constant(classes, dtype=tf.string)
        self.explainer = make_explainer(architecture, vectorizer, model)

    @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string, name=INPUT_KEY)])
    def serve(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        features = self.vectorizer(text)
        scores = tf.cast(self.model(features, training=False), tf.float32)
        class_id = tf.argmax(scores, axis=-1, output_type=tf.int64)
        return {
            "scores": scores,
            "class_id": class_id,
            "label": tf.gather(self.class_names, class_id),
        }

    @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string, name=INPUT_KEY)])
    def explain(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        return explanation(self.explainer, text, self.class_names)
