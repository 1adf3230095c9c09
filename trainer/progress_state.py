"""What a checkpoint records besides the variables — epochs done, early stopping's state, the
history so far — and the early-stopping rule itself, as pure code both training loops share.

A checkpoint is only resumed by a run of the same training spec on the same data: `run_key`
says which run wrote it, so a hand-run `tfmaas train --version 3` with another spec starts
afresh instead of continuing someone else's weights.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

FORMAT = 1
# Bounds on what a checkpoint's state may hold: a trainer writes one float per metric and
# epoch, and the spec bounds epochs far below this.
MAX_EPOCHS = 100_000
MAX_METRICS = 32
MAX_STATE_CHARS = 8 * 1024 * 1024


def run_key(*, spec_json: str, dataset_fingerprint: str, vocabulary: Sequence[str] = ()) -> str:
    """Which run a checkpoint belongs to. The vocabulary counts too: weights restored under
    a vocabulary ordered differently would load without error and mean something else."""
    digest = hashlib.sha256()
    for part in (spec_json, dataset_fingerprint, *vocabulary):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


@dataclass
class Progress:
    """Training's state after `epochs_done` whole epochs."""

    run_key: str
    epochs_done: int = 0
    best_loss: float = math.inf
    waited: int = 0
    finished: bool = False
    """Early stopping (or the last epoch) ended training: a resumed run trains no more."""
    history: dict[str, list[float]] = field(default_factory=dict)

    def record_epoch(
        self, logs: dict[str, float], *, monitor: str, patience: int, epochs: int
    ) -> bool:
        """Account for one finished epoch; return whether its weights are the best so far.

        Early stopping as Keras' (min_delta 0): an epoch improves on `monitor` when its value
        is strictly lower; `patience` epochs in a row without improvement stop training (0: never).
        """
        if monitor not in logs:
            raise ValueError(f"the epoch's logs have no {monitor!r}; they have {sorted(logs)}")
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        self.epochs_done += 1
        value = float(logs[monitor])
        improved = value < self.best_loss
        if improved:
            self.best_loss, self.waited = value, 0
        else:
            self.waited += 1
        # patience 0 turns early stopping off (the CRD says so), not "stop after any epoch".
        stopped_early = patience > 0 and self.waited >= patience
        self.finished = stopped_early or self.epochs_done >= epochs
        return improved

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "runKey": self.run_key,
                "epochsDone": self.epochs_done,
                # JSON has no infinity; before the first epoch there is no best.
                "bestLoss": self.best_loss if math.isfinite(self.best_loss) else None,
                "waited": self.waited,
                "finished": self.finished,
                "history": self.history,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Progress:
        """Parse a checkpoint's state; ValueError naming the field that is wrong."""
        if len(text) > MAX_STATE_CHARS:
            raise ValueError(f"the checkpoint's state is over {MAX_STATE_CHARS} characters")
        document = json.loads(text)
        if not isinstance(document, dict):
            raise ValueError("the checkpoint's state is not a JSON object")
        if document.get("format") != FORMAT:
            raise ValueError(f"the checkpoint's state has format {document.get('format')!r}")
        key = document.get("runKey")
        if not isinstance(key, str) or len(key) != 64:
            raise ValueError("the checkpoint's state has no runKey")
        epochs = _count(document, "epochsDone")
        best = document.get("bestLoss")
        if best is None:
            best_loss = math.inf
        elif isinstance(best, int | float) and not isinstance(best, bool) and math.isfinite(best):
            best_loss = float(best)
        else:
            raise ValueError("the checkpoint's state has a bestLoss that is not a number")
        history = document.get("history")
        if not isinstance(history, dict) or len(history) > MAX_METRICS:
            raise ValueError(f"the checkpoint's history is not an object of ≤{MAX_METRICS} keys")
        parsed: dict[str, list[float]] = {}
        for name, values in history.items():
            if not isinstance(values, list) or len(values) != epochs:
                raise ValueError(f"the checkpoint's history.{name!s:.40} has not {epochs} values")
            if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
                raise ValueError(f"the checkpoint's history.{name!s:.40} holds a non-number")
            parsed[str(name)] = [float(v) for v in values]
        finished = document.get("finished")
        if not isinstance(finished, bool):
            raise ValueError("the checkpoint's state has no finished flag")
        return cls(
            run_key=key,
            epochs_done=epochs,
            best_loss=best_loss,
            waited=_count(document, "waited"),
            finished=finished,
            history=parsed,
        )


def _count(document: dict[str, Any], name: str) -> int:
    value = document.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_EPOCHS:
        raise ValueError(f"the checkpoint's state has {name} {value!r:.40}, not 0..{MAX_EPOCHS}")
    return value
