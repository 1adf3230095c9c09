"""spec.training.tuning: hostile and careless searches are refused naming the field, sane ones
parse, a trial's spec is the user's with the sampled values, and tuning reaches the hash."""

from __future__ import annotations

from typing import Any

import pytest

from tfmaas.api import load_training_spec
from tfmaas.errors import UserError

MINIMAL: dict[str, Any] = {"dataset": {"uri": "builtin:chinese-reviews"}}


def _tuning(**fields: Any) -> dict[str, Any]:
    parameters = fields.pop("parameters", {"learningRate": {"min": 0.0001, "max": 0.01}})
    return {**MINIMAL, "tuning": {"parameters": parameters, **fields}}


@pytest.mark.parametrize(
    ("document", "fragments"),
    [
        ({**MINIMAL, "tuning": {}}, ["training.tuning.parameters", "is required"]),
        (_tuning(parameters={}), ["training.tuning.parameters"]),
        (_tuning(parameters={"dropout": {"min": 0.1, "max": 0.5}}), ["unknown field"]),
        (_tuning(parameters={"learningrate": {"min": 0.1, "max": 0.5}}), ["learningRate"]),
        (_tuning(maxTrials=0), ["training.tuning.maxTrials", "at least 1"]),
        (_tuning(maxTrials=51), ["training.tuning.maxTrials", "at most 50"]),
        (_tuning(maxTrials=10**12), ["maxTrials", "at most 50"]),
        (_tuning(maxTrials="5"), ["maxTrials", "whole number"]),
        (_tuning(parallelTrials=0), ["parallelTrials", "at least 1"]),
        (_tuning(parallelTrials=11), ["parallelTrials", "at most 10"]),
        (
            _tuning(maxTrials=2, parallelTrials=4),
            ["training.tuning.parallelTrials must not exceed maxTrials"],
        ),
        (_tuning(objective="testAccuracy"), ["objective", "valAccuracy, valMacroF1"]),
        (_tuning(parameters={"learningRate": {"min": 0, "max": 0.1}}), ["learningRate.min"]),
        (_tuning(parameters={"learningRate": {"min": 0.1, "max": 2}}), ["learningRate.max"]),
        (
            _tuning(parameters={"learningRate": {"min": 0.1, "max": 0.01}}),
            ["training.tuning.parameters.learningRate.max must be above min"],
        ),
        (
            _tuning(parameters={"batchSize": {"min": 32}}),
            ["training.tuning.parameters.batchSize needs either min and max"],
        ),
        (
            _tuning(parameters={"batchSize": {"choices": [32], "max": 64}}),
            ["batchSize needs either min and max (a range) or choices, not both"],
        ),
        (_tuning(parameters={"batchSize": {"choices": []}}), ["batchSize.choices"]),
        (_tuning(parameters={"batchSize": {"choices": list(range(1, 18))}}), ["choices"]),
        (_tuning(parameters={"batchSize": {"choices": [0]}}), ["batchSize.choices[0]"]),
        (_tuning(parameters={"batchSize": {"choices": [2.5]}}), ["whole number"]),
        (_tuning(parameters={"ngrams": {"min": 1, "max": 4}}), ["ngrams.max", "at most 3"]),
        (_tuning(parameters={"maxTokens": {"min": 10, "max": 100}}), ["maxTokens.min"]),
        (_tuning(parameters={"embeddingDim": {"min": 8, "max": 10**9}}), ["embeddingDim.max"]),
        (
            {**_tuning(), "hyperparameters": {"validationFraction": 0}},
            ["training.tuning needs hyperparameters.validationFraction above 0"],
        ),
        (
            {**_tuning(), "distillation": {"teacher": {"version": 1}}},
            ["training.tuning and training.distillation cannot be combined"],
        ),
    ],
)
def test_hostile_searches_name_the_field(document: dict[str, Any], fragments: list[str]) -> None:
    with pytest.raises(UserError) as caught:
        load_training_spec(document)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message


def test_defaults_and_parsing() -> None:
    config = load_training_spec(
        _tuning(
            parameters={
                "learningRate": {"min": 0.0001, "max": 0.01},
                "batchSize": {"choices": [64, 32, 64]},
                "ngrams": {"min": 1, "max": 3},
            }
        )
    )
    tuning = config.tuning
    assert tuning is not None
    assert (tuning.objective, tuning.metric) == ("valAccuracy", "accuracy")
    assert (tuning.max_trials, tuning.parallel_trials) == (10, 2)
    by_name = {p.name: p for p in tuning.parameters}
    assert by_name["learningRate"].log is True and by_name["learningRate"].is_float
    assert (by_name["learningRate"].low, by_name["learningRate"].high) == (0.0001, 0.01)
    # Repeated choices are searched once.
    assert by_name["batchSize"].choices == (32, 64)
    assert (by_name["ngrams"].low, by_name["ngrams"].high, by_name["ngrams"].log) == (1, 3, False)
    assert isinstance(by_name["ngrams"].low, int)


def test_a_trials_spec_is_the_users_with_the_sampled_values_and_no_tuning() -> None:
    config = load_training_spec(
        {**_tuning(), "hyperparameters": {"epochs": 3}, "model": {"architecture": "cnn"}}
    )
    trial = config.with_parameters({"learningRate": 0.005, "batchSize": 128.0, "ngrams": 3})
    assert trial.tuning is None and "tuning" not in trial.document
    assert trial.hyperparameters.learning_rate == 0.005
    assert trial.hyperparameters.batch_size == 128 and isinstance(
        trial.document["hyperparameters"]["batchSize"], int
    )
    assert trial.model.ngrams == 3
    assert (trial.hyperparameters.epochs, trial.model.architecture) == (3, "cnn")
    assert config.tuning is not None  # the original is untouched
    with pytest.raises(KeyError):
        config.with_parameters({"epochs": 5})


def test_tuning_is_hashed_so_changing_only_tuning_retrains() -> None:
    base = load_training_spec(MINIMAL).fingerprint()
    tuned = load_training_spec(_tuning()).fingerprint()
    more = load_training_spec(_tuning(maxTrials=20)).fingerprint()
    f1 = load_training_spec(_tuning(objective="valMacroF1")).fingerprint()
    assert len({base, tuned, more, f1}) == 4
    # Absent, the hash of a spec from before tuning existed is unchanged.
    assert "tuning" not in load_training_spec(MINIMAL).document
