"""Knowledge distillation (Hinton et al., 2015): the student learns from the teacher's softened
scores as well as the true labels.

The teacher is a published version of the same ModelService: its SavedModel is pulled from
the store and run here on the training split only (the validation split stops training early
and the test split judges the student, so neither may leak the teacher's view into training).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tfmaas.errors import UserError

MODEL_CARD_FILE = "model_card.json"
HEADLINE = ("accuracy", "precision", "recall", "f1")
# Probabilities are clipped before their log: softmax can underflow to exactly 0.
EPSILON = 1e-7
TEACHER_BATCH = 256
UNLABELLED = -1
"""The label id of a left-out text (distillation.unlabelledExamples): it has soft labels only."""


@dataclass(frozen=True)
class Teacher:
    """A published version pulled into a local directory, with what its model card says."""

    version: int
    directory: Path
    classes: list[str]
    metrics: dict[str, float]
    architecture: str


def pull_teacher(store: Any, version: int) -> Teacher:
    """Pull `version` from `store`; UserError naming the field when it is not published."""
    published = store.list_versions()
    if version not in published:
        shown = ", ".join(str(v) for v in published) or "none"
        raise UserError(
            f"training.distillation.teacher.version {version} is not published in this "
            f"ModelService's store (published versions: {shown}); name a published version"
        )
    directory = store.pull(version, Path(tempfile.mkdtemp(prefix="tfmaas-teacher-")))
    card_path = directory / MODEL_CARD_FILE
    card: dict[str, Any] = {}
    if card_path.is_file():
        loaded = json.loads(card_path.read_text(encoding="utf-8"))
        card = loaded if isinstance(loaded, dict) else {}
    classes = card.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise UserError(
            f"training.distillation.teacher.version {version} has no model card listing its "
            "classes; distil from a version this trainer published"
        )
    found = card.get("metrics")
    metrics: dict[str, Any] = found if isinstance(found, dict) else {}
    return Teacher(
        version=version,
        directory=directory,
        classes=list(classes),
        metrics={k: float(metrics[k]) for k in HEADLINE if isinstance(metrics.get(k), int | float)},
        architecture=str(card.get("architecture", "")),
    )


def soften(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(p) / T): the scores a softmax at temperature T would have given (the
    logits are log p up to a constant, which softmax ignores)."""
    logits = np.log(np.clip(probabilities.astype(np.float64), EPSILON, 1.0)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    exp = np.exp(logits)
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


def teacher_scores(teacher: Teacher, texts: list[str], classes: list[str]) -> np.ndarray:
    """The teacher's serving_default scores for `texts`, columns in the student's class order."""
    import tensorflow as tf

    if sorted(teacher.classes) != sorted(classes):
        raise UserError(
            f"training.distillation.teacher.version {teacher.version} was trained on classes "
            f"{teacher.classes[:20]} but this dataset has {classes[:20]}; a teacher must know "
            "the same classes"
        )
    serve = tf.saved_model.load(str(teacher.directory)).signatures["serving_default"]
    chunks = [
        serve(text=tf.constant(texts[start : start + TEACHER_BATCH], dtype=tf.string))["scores"]
        for start in range(0, len(texts), TEACHER_BATCH)
    ]
    scores = np.concatenate([chunk.numpy() for chunk in chunks], axis=0)
    order = [teacher.classes.index(name) for name in classes]
    return scores[:, order]


def targets(label_ids: np.ndarray, soft: np.ndarray | None, num_classes: int) -> np.ndarray:
    """What the student is fitted to: column 0 the true class id (UNLABELLED for a left-out
    text), then the soft labels (zeros where there are none, as on the validation split, whose
    loss reads only column 0)."""
    rows = len(label_ids)
    soft = soft if soft is not None else np.zeros((rows, num_classes), dtype=np.float32)
    return np.concatenate([np.asarray(label_ids, np.float32)[:, None], soft], axis=1)


def vocabulary_labels(label_ids: np.ndarray, soft: np.ndarray) -> np.ndarray:
    """The class each text of the student's training set counts for when its vocabulary is
    chosen: its true label, or for a left-out text (UNLABELLED) the teacher's top class.

    `soft` holds the teacher's (softened) scores row by row; softening keeps the top class."""
    label_ids = np.asarray(label_ids, dtype=np.int64)
    if len(label_ids) != len(soft):
        raise ValueError(f"{len(label_ids)} label ids but {len(soft)} rows of soft labels")
    if not len(label_ids):
        return label_ids
    return np.where(label_ids == UNLABELLED, np.argmax(soft, axis=-1), label_ids)


def distillation_loss(*, temperature: float, alpha: float) -> Callable[[Any, Any], Any]:
    """alpha · T² · KL(teacher_T ‖ student_T) + (1 − alpha) · cross-entropy(labels, student);
    an unlabelled text has no label term, and its teacher term weighs 1: the teacher is all
    it has to learn from.

    T² keeps the soft term's gradients on the scale of the hard one's as T grows."""
    import tensorflow as tf

    def loss(y_true: Any, y_pred: Any) -> Any:
        weight = tf.where(_labelled(y_true), alpha, 1.0)
        soft_term = weight * temperature**2 * _soft_loss(y_true, y_pred, temperature)
        return soft_term + (1.0 - alpha) * hard_loss(y_true, y_pred)

    loss.__name__ = "distillation_loss"
    return loss


def _soft_loss(y_true: Any, y_pred: Any, temperature: float) -> Any:
    import tensorflow as tf

    soft = tf.cast(y_true[:, 1:], tf.float32)
    log_student = tf.nn.log_softmax(_log(y_pred) / temperature, axis=-1)
    return tf.reduce_sum(soft * (_log(soft) - log_student), axis=-1)


def hard_loss(y_true: Any, y_pred: Any) -> Any:
    """Cross-entropy against the true labels alone (what early stopping watches); 0 for an
    unlabelled text."""
    import keras
    import tensorflow as tf

    labelled = _labelled(y_true)
    labels = tf.maximum(tf.cast(y_true[:, 0], tf.int64), 0)
    cross_entropy = keras.losses.sparse_categorical_crossentropy(
        labels, tf.cast(y_pred, tf.float32)
    )
    return tf.where(labelled, cross_entropy, tf.zeros_like(cross_entropy))


def accuracy(y_true: Any, y_pred: Any) -> Any:
    """Agreement with the true label, or with the teacher's choice for an unlabelled text."""
    import tensorflow as tf

    reference = tf.where(
        _labelled(y_true),
        tf.cast(y_true[:, 0], tf.int64),
        tf.argmax(y_true[:, 1:], axis=-1),
    )
    return tf.cast(tf.equal(tf.argmax(y_pred, axis=-1), reference), tf.float32)


def _labelled(y_true: Any) -> Any:
    return y_true[:, 0] >= 0


def _log(values: Any) -> Any:
    import tensorflow as tf

    return tf.math.log(tf.clip_by_value(tf.cast(values, tf.float32), EPSILON, 1.0))
