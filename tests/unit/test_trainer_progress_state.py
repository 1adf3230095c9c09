"""The checkpoint's progress record and the early-stopping rule both training loops share."""

from __future__ import annotations

import json
import math

import pytest

from tfmaas.trainer.progress_state import MAX_STATE_CHARS, Progress, run_key

KEY = run_key(spec_json='{"a":1}', dataset_fingerprint="abc")


def _valid() -> dict:
    return json.loads(Progress(run_key=KEY).to_json())


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"format": 2}, "format"),
        ({"runKey": "short"}, "runKey"),
        ({"epochsDone": -1}, "epochsDone"),
        ({"epochsDone": True}, "epochsDone"),
        ({"epochsDone": 10**9}, "epochsDone"),
        ({"bestLoss": "NaN"}, "bestLoss"),
        ({"waited": 1.5}, "waited"),
        ({"finished": "yes"}, "finished"),
        ({"history": []}, "history"),
        ({"history": {"loss": [0.5]}}, "history.loss"),  # one value, zero epochs done
        ({"epochsDone": 1, "history": {"loss": ["x"]}}, "history.loss"),
        ({"history": {f"m{i}": [] for i in range(40)}}, "history"),
    ],
)
def test_a_damaged_or_foreign_state_is_refused_naming_the_field(change: dict, field: str) -> None:
    document = {**_valid(), **change}
    with pytest.raises(ValueError, match=field.split(".")[0]):
        Progress.from_json(json.dumps(document))


def test_state_that_is_not_an_object_or_too_long_is_refused() -> None:
    with pytest.raises(ValueError, match="not a JSON object"):
        Progress.from_json("[1, 2]")
    with pytest.raises(ValueError, match="characters"):
        Progress.from_json(" " * (MAX_STATE_CHARS + 1))


def test_round_trip_keeps_every_field_and_infinity() -> None:
    fresh = Progress.from_json(Progress(run_key=KEY).to_json())
    assert fresh.best_loss == math.inf and fresh.epochs_done == 0 and not fresh.finished
    progress = Progress(run_key=KEY)
    progress.record_epoch({"loss": 0.7, "val_loss": 0.5}, monitor="val_loss", patience=2, epochs=5)
    again = Progress.from_json(progress.to_json())
    assert again == progress


def test_early_stopping_counts_epochs_without_strict_improvement() -> None:
    progress = Progress(run_key=KEY)
    improved = [
        progress.record_epoch({"val_loss": value}, monitor="val_loss", patience=2, epochs=10)
        for value in (0.5, 0.4, 0.4, 0.45)
    ]
    assert improved == [True, True, False, False]
    assert progress.finished and progress.epochs_done == 4 and progress.best_loss == 0.4
    assert progress.history == {"val_loss": [0.5, 0.4, 0.4, 0.45]}


def test_the_last_epoch_finishes_training() -> None:
    progress = Progress(run_key=KEY)
    for value in (0.5, 0.4):
        progress.record_epoch({"loss": value}, monitor="loss", patience=5, epochs=2)
    assert progress.finished and progress.waited == 0


def test_patience_zero_turns_early_stopping_off() -> None:
    """The CRD's promise: 0 runs every epoch, however the validation loss moves."""
    progress = Progress(run_key=KEY)
    for value in (0.5, 0.6, 0.7):
        progress.record_epoch({"val_loss": value}, monitor="val_loss", patience=0, epochs=4)
        assert not progress.finished
    progress.record_epoch({"val_loss": 0.8}, monitor="val_loss", patience=0, epochs=4)
    assert progress.finished and progress.epochs_done == 4


def test_a_missing_monitor_is_an_error_not_an_improvement() -> None:
    with pytest.raises(ValueError, match="val_loss"):
        Progress(run_key=KEY).record_epoch({"loss": 1.0}, monitor="val_loss", patience=1, epochs=1)


def test_run_key_changes_with_spec_or_data() -> None:
    assert run_key(spec_json='{"a":2}', dataset_fingerprint="abc") != KEY
    assert run_key(spec_json='{"a":1}', dataset_fingerprint="abd") != KEY
    assert run_key(spec_json='{"a":1}', dataset_fingerprint="abc") == KEY
    # The same tokens in another order are another model's weights.
    ordered = run_key(spec_json="{}", dataset_fingerprint="x", vocabulary=["a", "b"])
    assert ordered != run_key(spec_json="{}", dataset_fingerprint="x", vocabulary=["b", "a"])
    assert ordered != run_key(spec_json="{}", dataset_fingerprint="x", vocabulary=["ab"])
