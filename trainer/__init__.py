"""The trainer: a text classifier from raw sentences, exported as a servable model version.

`train_and_publish` is what `tfmaas train` (a training Job) and `tfmaas local run` call;
`train` and `export` are its two halves. Each takes `spec.training` as a dict or as the
`tfmaas.api.TrainingSpec` the CRD's schema validated and defaulted; TensorFlow is imported
on first use, so importing the package is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tfmaas.trainer.entrypoint import TrainResult, train_and_publish
    from tfmaas.trainer.exporting import export
    from tfmaas.trainer.training import TrainedModel, train

__all__ = [
    "TrainResult",
    "TrainedModel",
    "export",
    "train",
    "train_and_publish",
]

_LAZY = {
    "TrainResult": "tfmaas.trainer.entrypoint",
    "train_and_publish": "tfmaas.trainer.entrypoint",
    "export": "tfmaas.trainer.exporting",
    "TrainedModel": "tfmaas.trainer.training",
    "train": "tfmaas.trainer.training",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tfmaas.trainer' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
