"""One log line per epoch that a person and a log collector can both follow."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import keras


class EpochLog(keras.callbacks.Callback):
    """Logs loss/accuracy (train and validation) and examples per second after each epoch.

    Keras' own progress bar rewrites its line with carriage returns, which turns into
    noise in a pod's log; this writes whole lines only.
    """

    def __init__(self, log: Callable[[str], Any], epochs: int, examples_per_epoch: int) -> None:
        super().__init__()
        self._log = log
        self._epochs = epochs
        self._examples = examples_per_epoch
        self._started = 0.0
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        seconds = time.perf_counter() - self._started
        self.seconds.append(seconds)
        logs = logs or {}
        figures = " ".join(
            f"{key}={float(logs[key]):.4f}"
            for key in ("loss", "accuracy", "val_loss", "val_accuracy")
            if key in logs
        )
        rate = self._examples / seconds if seconds > 0 else 0.0
        self._log(
            f"epoch {epoch + 1}/{self._epochs} {figures} time={seconds:.1f}s examples/s={rate:.0f}"
        )

    @property
    def examples_per_second(self) -> float:
        total = sum(self.seconds)
        return self._examples * len(self.seconds) / total if total > 0 else 0.0


class CheckpointHook(keras.callbacks.Callback):
    """Hands Keras `fit`'s epochs to a `ResumableRun` (early stopping, checkpoints, SIGTERM)."""

    def __init__(self, run: Any) -> None:
        super().__init__()
        self._run = run

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._run.check_stop()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._run.end_epoch(dict(logs or {})):
            self.model.stop_training = True
