"""TensorBoard summaries of a training run, written with TensorFlow's own summary writer and
synced to the version's logs in the store (`<store>/logs/<version>/{train,validation}`)
after every epoch, so a run can be watched while it trains and compared with others later."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tfmaas.errors import TfmaasError
from tfmaas.redact import safe_message

Log = Callable[[str], Any]
# Keras' names for the figures, split into TensorBoard's two runs of the same tag.
_SPLITS = {"train": "", "validation": "val_"}


class TrainingSummaries:
    """Per-epoch scalars: loss and accuracy of each split, and the learning rate."""

    def __init__(self, *, store: Any, version: int, is_chief: bool, log: Log) -> None:
        import tensorflow as tf

        self._store, self._version, self._log = store, version, log
        # Only the chief's figures are written: every worker computes the same all-reduced ones.
        self._enabled = store is not None and is_chief
        self._root = Path(tempfile.mkdtemp(prefix=f"tfmaas-logs-{version}-"))
        self._writers = {
            split: tf.summary.create_file_writer(str(self._root / split)) for split in _SPLITS
        }
        self._failed = False

    @property
    def uri(self) -> str:
        return self._store.logs_uri(self._version) if self._store is not None else ""

    def write_epoch(self, epoch: int, logs: dict[str, float], learning_rate: float) -> None:
        """Record epoch `epoch` (1-based: TensorBoard's step) and sync the logs to the store."""
        if not self._enabled:
            return
        import tensorflow as tf

        for split, prefix in _SPLITS.items():
            with self._writers[split].as_default(step=epoch):
                for name in ("loss", "accuracy"):
                    if prefix + name in logs:
                        tf.summary.scalar(f"epoch_{name}", float(logs[prefix + name]))
                if split == "train":
                    tf.summary.scalar("learning_rate", learning_rate)
            self._writers[split].flush()
        try:
            self._store.save_logs(self._version, self._root)
        except TfmaasError as exc:
            if not self._failed:  # said once: the store's state is the same every epoch
                self._log(
                    f"training logs not saved to {self.uri} "
                    f"({safe_message(str(exc), limit=300)}); training goes on"
                )
            self._failed = True

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        shutil.rmtree(self._root, ignore_errors=True)
