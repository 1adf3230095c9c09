"""A training loop for MultiWorkerMirroredStrategy, which Keras 3's `fit` cannot drive.

Keras 3 `fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585): it
reduces whole data batches and per-replica logs in ways collective ops reject. This loop
does what `fit` does for us single-process — shuffled epochs, validation loss, early
stopping with the best weights restored, a checkpoint and one log line an epoch — with
`strategy.run`.
Every decision is taken from values all-reduced across workers, so all workers stop
at the same epoch and hold the same weights.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfmaas.trainer.checkpointing import ResumableRun
from tfmaas.trainer.progress import EpochLog


def fit_multi_worker(
    model: keras.Model,
    strategy: tf.distribute.Strategy,
    train: tf.data.Dataset,
    validation: tf.data.Dataset | None,
    *,
    epochs: int,
    optimizer: Any,
    global_batch: int,
    epoch_log: EpochLog,
    run: ResumableRun,
) -> dict[str, list[float]]:
    """Train from the run's next epoch; `optimizer` is built (training.py's `_compile`)."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(reduction=None)

    def sums(probabilities: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, ...]:
        per_example = loss_fn(labels, probabilities)
        predicted = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        correct = tf.cast(tf.equal(predicted, tf.cast(labels, tf.int64)), tf.float32)
        count = tf.cast(tf.size(labels), tf.float32)
        return per_example, tf.reduce_sum(correct), count

    @tf.function
    def train_step(batch: Any) -> list[tf.Tensor]:
        def step(features: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, ...]:
            with tf.GradientTape() as tape:
                probabilities = model(features, training=True)
                per_example, correct, count = sums(probabilities, labels)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
                scaled = optimizer.scale_loss(loss)
            gradients = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
            return tf.reduce_sum(per_example), correct, count

        results = strategy.run(step, args=batch)
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, r, axis=None) for r in results]

    @tf.function
    def evaluate_step(batch: Any) -> list[tf.Tensor]:
        def step(features: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, ...]:
            per_example, correct, count = sums(model(features, training=False), labels)
            return tf.reduce_sum(per_example), correct, count

        results = strategy.run(step, args=batch)
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, r, axis=None) for r in results]

    def run_epoch(step: Any, dataset: Any) -> tuple[float, float]:
        totals = np.zeros(3)
        for batch in dataset:
            totals += np.array([float(value) for value in step(batch)])
        loss_sum, correct, count = totals
        return loss_sum / max(count, 1.0), correct / max(count, 1.0)

    train_distributed = strategy.experimental_distribute_dataset(train)
    validation_distributed = (
        strategy.experimental_distribute_dataset(validation) if validation is not None else None
    )
    for epoch in range(run.progress.epochs_done, epochs):
        if run.progress.finished:
            break
        epoch_log.on_epoch_begin(epoch)
        logs: dict[str, float] = {}
        logs["loss"], logs["accuracy"] = run_epoch(train_step, train_distributed)
        if validation_distributed is not None:
            logs["val_loss"], logs["val_accuracy"] = run_epoch(
                evaluate_step, validation_distributed
            )
        epoch_log.on_epoch_end(epoch, logs)
        # Every worker decides from the same all-reduced figures, so all stop together.
        if run.end_epoch(logs):
            break
    run.restore_best(model)
    return {key: list(values) for key, values in run.progress.history.items()}


def predict_locally(model: keras.Model, dataset: tf.data.Dataset) -> np.ndarray:
    """Scores for every example, computed on this worker alone (no collectives)."""
    return np.concatenate([np.asarray(model(features, training=False)) for features, _ in dataset])
