"""Checkpoints of a training run, kept in the store so a replacement pod resumes the run.

TensorFlow's own `tf.train.Checkpoint`/`CheckpointManager` writes the model, the optimizer
(its slots and step count), the best weights so far and the run's `Progress` to a local
directory after every epoch (and when SIGTERM arrives); the chief then syncs that directory
to the version's checkpoint area (`tfmaas.storage.checkpoints`). Under
MultiWorkerMirroredStrategy every worker saves — the save reads mirrored variables — but
only the chief's copy is uploaded.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tfmaas.errors import TfmaasError
from tfmaas.redact import safe_message
from tfmaas.storage import ModelStore
from tfmaas.trainer.progress_state import Progress

Log = Callable[[str], Any]
# The exit status of a process ended by SIGTERM, which a trainer that saved and stopped keeps.
TERMINATED_EXIT_CODE = 128 + signal.SIGTERM
_STATE_KEY = "state/.ATTRIBUTES/VARIABLE_VALUE"


class Terminated(Exception):
    """SIGTERM arrived during training; the checkpoint was saved, the process should exit."""


class Checkpointer:
    """The run's variables and progress; `store=None` keeps the best weights only in memory
    (a plain `train()` call that publishes nothing)."""

    def __init__(
        self,
        *,
        store: ModelStore | None,
        version: int,
        run_key: str,
        model: Any,
        optimizer: Any,
        strategy: Any,
        is_chief: bool,
        epochs: int,
        log: Log,
    ) -> None:
        import tensorflow as tf

        self._store, self._version, self._run_key = store, version, run_key
        self._is_chief, self._epochs, self._log = is_chief, epochs, log
        self._model = model
        self.optimizer = optimizer
        # Without a store nothing is written: the best weights live in the variables below.
        self._root = (
            Path(tempfile.mkdtemp(prefix=f"tfmaas-checkpoint-{version}-")) if store else Path()
        )
        with strategy.scope():
            self._best = [tf.Variable(w, trainable=False) for w in model.get_weights()]
        self._state = tf.Variable("", dtype=tf.string, trainable=False)
        self._checkpoint = tf.train.Checkpoint(
            model=model, optimizer=optimizer, best=self._best, state=self._state
        )
        self._manager = tf.train.CheckpointManager(
            self._checkpoint, str(self._root / "current"), max_to_keep=1
        )

    @property
    def uri(self) -> str:
        return self._store.checkpoint_uri(self._version) if self._store else ""

    def restore(self) -> Progress:
        """The run's progress from the store's checkpoint (variables restored), else a
        fresh start. A checkpoint that cannot be used is reported and ignored."""
        import tensorflow as tf

        fresh = Progress(run_key=self._run_key)
        if self._store is None:
            return fresh
        restored = self._root / "restored"
        try:
            found = self._store.load_checkpoint(self._version, restored)
        except TfmaasError as exc:
            self._log(f"checkpoint at {self.uri} not read ({_short(exc)}); training from epoch 1")
            return fresh
        latest = tf.train.latest_checkpoint(str(restored)) if found else None
        if latest is None:
            return fresh
        try:
            raw = tf.train.load_variable(latest, _STATE_KEY)
            progress = Progress.from_json(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
        except (ValueError, tf.errors.OpError) as exc:
            self._log(
                f"checkpoint at {self.uri} is unusable ({_short(exc)}); training from epoch 1"
            )
            return fresh
        if progress.run_key != self._run_key:
            self._log(
                f"checkpoint at {self.uri} is of another training spec or dataset; "
                "training from epoch 1"
            )
            return fresh
        self._checkpoint.restore(latest).assert_existing_objects_matched()
        shutil.rmtree(restored, ignore_errors=True)
        then = (
            "training had finished"
            if progress.finished
            else f"continuing at epoch {progress.epochs_done + 1}/{self._epochs}"
        )
        self._log(f"resumed from epoch {progress.epochs_done} ({self.uri}); {then}")
        return progress

    def learning_rate(self) -> float:
        # A variable, or a tensor under a schedule: both are eager here.
        return float(self.optimizer.learning_rate.numpy())

    def keep_best(self) -> None:
        for variable, value in zip(self._best, self._model.get_weights(), strict=True):
            variable.assign(value)

    def best_weights(self) -> list[Any]:
        return [variable.numpy() for variable in self._best]

    def save(self, progress: Progress) -> None:
        """Write the checkpoint locally (every worker) and sync it to the store (the chief).
        A store that fails now costs only the resume point, so training goes on."""
        if self._store is None:
            return
        self._state.assign(progress.to_json())
        directory = self._root / ("current" if self._is_chief else "worker")
        if self._is_chief:
            self._manager.save()
        else:
            # Non-chief workers save too (the save reads mirrored variables), to throwaway files.
            directory.mkdir(parents=True, exist_ok=True)
            self._checkpoint.write(str(directory / "ckpt"))
            return
        try:
            self._store.save_checkpoint(self._version, directory)
        except TfmaasError as exc:
            self._log(
                f"checkpoint of epoch {progress.epochs_done} not saved to {self.uri} "
                f"({_short(exc)}); training goes on"
            )

    def discard(self) -> None:
        """Delete the store's checkpoint area (the version is published) and the local copy."""
        if self._store is None:
            return
        shutil.rmtree(self._root, ignore_errors=True)
        if self._is_chief:
            discard_checkpoint(self._store, self._version, self._log)


class ResumableRun:
    """What both training loops do at the end of an epoch: account for it (early stopping),
    keep the best weights, checkpoint, and stop when asked to."""

    def __init__(
        self,
        checkpointer: Checkpointer,
        progress: Progress,
        *,
        monitor: str,
        patience: int,
        epochs: int,
        stop_requested: threading.Event,
        summaries: Any = None,
    ) -> None:
        self.checkpointer, self.progress = checkpointer, progress
        self.summaries = summaries
        """A `summaries.TrainingSummaries`, or None to write no TensorBoard logs."""
        self.resumed_from = progress.epochs_done if progress.epochs_done else None
        self._monitor, self._patience, self._epochs = monitor, patience, epochs
        self._stop_requested = stop_requested

    def end_epoch(self, logs: dict[str, Any]) -> bool:
        """Account for a finished epoch and checkpoint it; True when training is over."""
        figures = {key: float(value) for key, value in logs.items()}
        if self.progress.record_epoch(
            figures, monitor=self._monitor, patience=self._patience, epochs=self._epochs
        ):
            self.checkpointer.keep_best()
        if self.summaries is not None:
            self.summaries.write_epoch(
                self.progress.epochs_done, figures, self.checkpointer.learning_rate()
            )
        self.checkpointer.save(self.progress)
        if self._stop_requested.is_set():
            raise self._terminated()
        return self.progress.finished

    def check_stop(self) -> None:
        """Between batches: on SIGTERM, save what the current epoch has done and stop. The
        epoch counts as not done, so a resumed run repeats it from these weights."""
        if self._stop_requested.is_set():
            self.checkpointer.save(self.progress)
            raise self._terminated()

    def _terminated(self) -> Terminated:
        return Terminated(
            f"stopped by SIGTERM after {self.progress.epochs_done} epoch(s); checkpoint "
            f"saved to {self.checkpointer.uri or 'nowhere (no store)'}"
        )

    def restore_best(self, model: Any) -> None:
        if self.progress.epochs_done:
            model.set_weights(self.checkpointer.best_weights())


def discard_checkpoint(store: ModelStore, version: int, log: Log) -> None:
    try:
        store.delete_checkpoint(version)
    except TfmaasError as exc:
        log(
            f"checkpoint at {store.checkpoint_uri(version)} not deleted ({_short(exc)}); "
            "`tfmaas store gc` removes it within the hour"
        )


@contextlib.contextmanager
def sigterm_requests() -> Iterator[threading.Event]:
    """While training, SIGTERM (a pod being stopped) sets the event instead of killing the
    process, so the training loop can save a checkpoint within the grace period."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested  # signals reach the main thread only; nothing to install
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: requested.set())
    try:
        yield requested
    finally:
        signal.signal(signal.SIGTERM, previous)


def _short(error: BaseException) -> str:
    return safe_message(f"{type(error).__name__}: {error}", limit=300)
