"""What the trainer takes as spec.training: the CRD's schema validates and defaults it
(tfmaas.api), so the contract's defaults hold and each mistake names the field and the fix."""

from __future__ import annotations

import pytest

from tfmaas.api import load_training_spec
from tfmaas.errors import UserError

MINIMAL = {"dataset": {"uri": "builtin:chinese-reviews"}}


def test_defaults_follow_the_contract() -> None:
    config = load_training_spec(MINIMAL)
    assert config.dataset.format == "auto"
    assert (config.dataset.text_field, config.dataset.label_field) == ("text", "label")
    model = config.model
    assert (model.architecture, model.max_tokens, model.sequence_length) == (
        "bag-of-ngrams",
        20000,
        128,
    )
    assert (model.ngrams, model.embedding_dim) == (2, 64)
    hp = config.hyperparameters
    assert (hp.epochs, hp.batch_size, hp.learning_rate) == (10, 64, 0.001)
    assert (hp.early_stopping_patience, hp.seed) == (2, 42)
    assert (hp.validation_fraction, hp.test_fraction, hp.max_examples) == (0.1, 0.1, 0)
    assert (config.resources.gpu, config.resources.cpu, config.resources.memory) == (0, "2", "4Gi")
    assert config.workers == 1
    assert config.quality_gate.min_accuracy is None
    assert config.image is None


def test_full_spec_is_parsed_and_round_trips_to_camel_case() -> None:
    spec = {
        "dataset": {
            "uri": "s3://data/r.csv",
            "format": "csv",
            "textField": "review",
            "labelField": "y",
        },
        "model": {
            "architecture": "cnn",
            "maxTokens": 500,
            "sequenceLength": 64,
            "ngrams": 3,
            "embeddingDim": 32,
        },
        "hyperparameters": {
            "epochs": 3,
            "batchSize": 16,
            "learningRate": 1,
            "earlyStoppingPatience": 0,
            "seed": 1,
            "validationFraction": 0.2,
            "testFraction": 0.2,
            "maxExamples": 100,
        },
        "resources": {"gpu": 1, "cpu": 4, "memory": "8Gi"},
        "workers": 2,
        "qualityGate": {"minAccuracy": 0.8, "minF1": 0.7},
        "image": "example/trainer:1",
    }
    config = load_training_spec(spec)
    assert config.model.architecture == "cnn" and config.hyperparameters.learning_rate == 1.0
    assert config.resources.cpu == "4"
    assert config.quality_gate.min_f1 == 0.7 and config.quality_gate.min_recall is None
    back = config.to_dict()
    assert back["dataset"]["textField"] == "review"
    assert back["hyperparameters"]["earlyStoppingPatience"] == 0
    assert back["qualityGate"] == {"minAccuracy": 0.8, "minF1": 0.7}
    assert load_training_spec(back) == config
    assert load_training_spec(config) is config


def test_null_values_take_defaults() -> None:
    # As on the apiserver: a null in a field that is not nullable is dropped, then defaulted.
    config = load_training_spec(
        {"dataset": {"uri": "builtin:chinese-reviews", "format": None}, "model": None}
    )
    assert config.dataset.format == "auto" and config.model.architecture == "bag-of-ngrams"


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ({}, ["training.dataset: is required"]),
        ({"dataset": {}}, ["training.dataset.uri: is required"]),
        ({"dataset": {"uri": "x", "textfield": "t"}}, ["textfield", "did you mean 'textField'"]),
        ({**MINIMAL, "epochs": 3}, ["training.epochs: unknown field", "hyperparameters"]),
        (
            {**MINIMAL, "model": {"architecture": "rnn"}},
            ["architecture", "bag-of-ngrams, cnn, transformer"],
        ),
        ({**MINIMAL, "model": {"ngrams": 4}}, ["ngrams", "at most 3"]),
        ({**MINIMAL, "hyperparameters": {"epochs": "10"}}, ["epochs: must be a whole number"]),
        ({**MINIMAL, "hyperparameters": {"epochs": True}}, ["epochs: must be a whole number"]),
        ({**MINIMAL, "hyperparameters": {"epochs": 2.5}}, ["epochs: must be a whole number"]),
        ({**MINIMAL, "hyperparameters": {"learningRate": 0}}, ["learningRate", "greater than 0"]),
        (
            {**MINIMAL, "hyperparameters": {"validationFraction": 0.5, "testFraction": 0.45}},
            ["validationFraction + testFraction must be at most 0.5", "left to train on"],
        ),
        ({**MINIMAL, "qualityGate": {"minAccuracy": 85}}, ["minAccuracy", "at most 1"]),
        (
            {**MINIMAL, "dataset": {"uri": "builtin:chinese-reviews", "format": "parquet"}},
            ["format", "auto, csv, jsonl"],
        ),
        ({**MINIMAL, "dataset": {"uri": "data.csv"}}, ["dataset.uri must be", "file:///"]),
        ({**MINIMAL, "workers": 0}, ["workers", "at least 1"]),
        ({"dataset": "builtin:chinese-reviews"}, ["training.dataset: must be a mapping"]),
    ],
)
def test_mistakes_name_the_field_and_the_fix(spec: dict, fragments: list[str]) -> None:
    with pytest.raises(UserError) as caught:
        load_training_spec(spec)
    for fragment in fragments:
        assert fragment in str(caught.value)
