"""Where training runs: one device, all local GPUs, or several workers named by TF_CONFIG."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tfmaas.errors import UserError


@dataclass(frozen=True)
class ClusterRole:
    """This process's place in a TF_CONFIG cluster (a single process when there is none)."""

    workers: int
    task_type: str
    task_index: int
    has_chief: bool = False

    @property
    def is_chief(self) -> bool:
        # With no explicit chief, worker 0 is the one that saves and publishes.
        if self.task_type == "chief":
            return True
        return not self.has_chief and self.task_type == "worker" and self.task_index == 0

    @property
    def distributed(self) -> bool:
        return self.workers > 1


def cluster_role(environ: Mapping[str, str] | None = None) -> ClusterRole:
    raw = (environ if environ is not None else os.environ).get("TF_CONFIG", "").strip()
    if not raw:
        return ClusterRole(1, "worker", 0)
    try:
        tf_config = json.loads(raw)
        cluster = tf_config.get("cluster", {})
        task = tf_config.get("task", {})
        workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
        return ClusterRole(
            workers=max(workers, 1),
            task_type=str(task.get("type", "worker")),
            task_index=int(task.get("index", 0)),
            has_chief=bool(cluster.get("chief")),
        )
    except (ValueError, AttributeError, TypeError) as exc:
        raise UserError(
            f"TF_CONFIG is not valid ({exc}); it must be JSON like "
            '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}'
        ) from None


@dataclass
class Placement:
    strategy: Any
    role: ClusterRole
    gpus: int
    mixed_precision: bool

    def describe(self) -> str:
        kind = type(self.strategy).__name__
        devices = f"{self.gpus} GPU(s)" if self.gpus else "CPU"
        precision = "mixed_float16" if self.mixed_precision else "float32"
        where = (
            f", worker {self.role.task_type}/{self.role.task_index} of {self.role.workers}"
            if self.role.distributed
            else ""
        )
        return f"training on {devices} with {kind} ({precision}){where}"


def choose_placement(log: Callable[[str], Any] = print) -> Placement:
    """Pick the strategy; must run before any other TensorFlow op (collectives need it)."""
    import keras
    import tensorflow as tf

    role = cluster_role()
    # Memory growth has to be set before anything (the strategy included) starts the GPUs.
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
    if role.distributed:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    mixed = bool(gpus)
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    placement = Placement(strategy, role, len(gpus), mixed)
    log(placement.describe())
    return placement
