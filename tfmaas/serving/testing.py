"""A tiny real SavedModel with the tfmaas signature, for tests and benchmarks of serving.

It answers like a trained sentiment model (`text` in; `scores`, `class_id`, `label` out) but
needs no training: the positive score grows with the sentence length plus the version number,
so tests can tell versions and rows apart from the outputs alone.
"""

from __future__ import annotations

from pathlib import Path

DEMO_CLASSES = ("negative", "positive")


def child_pids(pid: int | str = "self") -> set[int]:
    """Live child processes of `pid` (Linux /proc), such as a server's native gRPC front end."""
    return {
        int(child)
        for task in Path(f"/proc/{pid}/task").glob("*/children")
        for child in task.read_text().split()
    }


def write_demo_model(base_path: Path, version: int) -> Path:
    """Export version `version` under `base_path/<version>/` and return that folder."""
    import tensorflow as tf

    class Demo(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.offset = tf.Variable(float(version), trainable=False)
            self.classes = tf.constant(list(DEMO_CLASSES))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
            length = tf.cast(tf.strings.length(text, unit="UTF8_CHAR"), tf.float32)
            positive = tf.sigmoid((length + self.offset - 6.0) / 4.0)
            scores = tf.stack([1.0 - positive, positive], axis=1)
            class_id = tf.argmax(scores, axis=1)
            return {
                "scores": scores,
                "class_id": class_id,
                "label": tf.gather(self.classes, class_id),
            }

    module = Demo()
    target = Path(base_path) / str(version)
    tf.saved_model.save(module, str(target), signatures={"serving_default": module.serve})
    return target


def demo_scores(text: str, version: int) -> tuple[float, float]:
    """What the demo model answers for `text`, computed without TensorFlow (for assertions)."""
    import math

    positive = 1.0 / (1.0 + math.exp(-((len(text) + version - 6.0) / 4.0)))
    return 1.0 - positive, positive
