"""A search's trial in the trainer: scored on the validation split, the test split never
read, nothing published, and `tfmaas train --trial` reports it as its termination message."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_trainer_run import _tfmaas_train, _tiny

pytestmark = pytest.mark.slow


class _Untouchable(list):  # type: ignore[type-arg]
    """A split's texts that fail the test if anything reads them (its length may be logged)."""

    def __iter__(self) -> Any:
        raise AssertionError("a trial read the test split")

    def __getitem__(self, index: Any) -> Any:
        raise AssertionError("a trial read the test split")


def test_a_trial_never_reads_the_test_split(monkeypatch: pytest.MonkeyPatch) -> None:
    from tfmaas.trainer import training
    from tfmaas.trainer.entrypoint import run_trial

    real_split = training.split_examples

    def poisoned(*args: Any, **kwargs: Any) -> Any:
        splits = real_split(*args, **kwargs)
        test = dataclasses.replace(splits.test, texts=_Untouchable(splits.test.texts))
        return dataclasses.replace(splits, test=test)

    monkeypatch.setattr(training, "split_examples", poisoned)
    result = run_trial(_tiny("bag-of-ngrams"), trial=3, log=lambda _: None)
    assert result.metrics["evaluated_on"] == "validation"
    # Every validation example, and nothing else, was scored.
    assert (
        sum(map(sum, result.metrics["confusion_matrix"]))
        == result.metrics["examples"]["validation"]
    )
    # A version does read it (TensorFlow wraps the error while converting the texts).
    with pytest.raises((AssertionError, ValueError), match="read the test split"):
        training.train(_tiny("bag-of-ngrams"), log=lambda _: None)


def test_tfmaas_train_trial_reports_validation_scores_and_publishes_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    spec = tmp_path / "training.json"
    spec.write_text(json.dumps(_tiny("bag-of-ngrams")), encoding="utf-8")
    log = tmp_path / "termination-log"
    args = ("--name", "tiny", "--trial", "2", "--store", store.as_uri())
    run = _tfmaas_train(
        *args, "--training-json", f"@{spec}", "--termination-log", str(log), cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    assert "trial 2: training on the training split, scoring on the validation split" in run.stdout
    message = json.loads(log.read_text(encoding="utf-8"))
    assert (message["trial"], message["evaluatedOn"], message["epochs"]) == (2, "validation", 1)
    assert set(message["metrics"]) == {"accuracy", "precision", "recall", "f1"}
    assert not store.exists() or not any(store.iterdir())
