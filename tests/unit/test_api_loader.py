"""load_model_service / load_training_spec: defaults as the apiserver applies them, and every
field error reported with its path and a fix."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tfmaas.api import SpecError, load_model_service, load_training_spec
from tfmaas.errors import UserError

SAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "samples" / "sentiment.yaml"


def minimal() -> dict[str, Any]:
    return {
        "apiVersion": "tfmaas.io/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "reviews"},
        "spec": {
            "storage": {"uri": "s3://models/reviews"},
            "training": {"dataset": {"uri": "builtin:chinese-reviews"}},
        },
    }


def errors_of(document: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        load_model_service(document)
    return {error.path: error.message for error in caught.value.errors}


def test_sample_loads() -> None:
    service = load_model_service(SAMPLE)
    assert service.name == "sentiment"
    # The quickstart trains on any cluster: no GPU (sentiment-gpu.yaml asks for one).
    assert service.spec.training.resources.gpu == 0
    assert service.spec.training.quality_gate.min_accuracy == 0.8
    assert service.spec.serving.batching.max_batch_size == 32
    assert service.spec.serving.pinned_version is None


def test_gpu_sample_loads() -> None:
    service = load_model_service(SAMPLE.with_name("sentiment-gpu.yaml"))
    assert service.name == "sentiment-gpu"
    assert service.spec.training.resources.gpu == 1
    assert service.spec.serving.resources.gpu == 1


def test_minimal_spec_gets_contract_defaults() -> None:
    spec = load_model_service(minimal()).spec
    model, hyper, training = spec.training.model, spec.training.hyperparameters, spec.training
    assert (model.architecture, model.max_tokens, model.sequence_length) == (
        "bag-of-ngrams",
        20000,
        128,
    )
    assert (model.ngrams, model.embedding_dim) == (2, 64)
    assert (hyper.epochs, hyper.batch_size, hyper.learning_rate) == (10, 64, 0.001)
    assert (hyper.early_stopping_patience, hyper.seed, hyper.max_examples) == (2, 42, 0)
    assert (hyper.validation_fraction, hyper.test_fraction) == (0.1, 0.1)
    assert (training.resources.gpu, training.resources.cpu, training.resources.memory) == (
        0,
        "2",
        "4Gi",
    )
    assert training.workers == 1 and training.quality_gate.thresholds() == {}
    assert training.dataset.format == "auto"
    assert (training.dataset.text_field, training.dataset.label_field) == ("text", "label")
    serving = spec.serving
    assert serving.version == "latest" and serving.canary is None
    assert serving.autoscaling.enabled and serving.autoscaling.max_replicas == 10
    assert serving.autoscaling.target_requests_per_second == 50
    assert serving.batching.enabled and serving.batching.batch_timeout_micros == 2000
    assert serving.batching.max_enqueued_batches == 100 and serving.batching.num_batch_threads == 0


def test_loading_does_not_modify_the_input() -> None:
    document = minimal()
    before = copy.deepcopy(document)
    load_model_service(document)
    assert document == before


def test_training_fingerprint_ignores_serving_and_sees_training() -> None:
    base = load_model_service(minimal()).spec.training.fingerprint()
    serving_changed = minimal()
    serving_changed["spec"]["serving"] = {"replicas": 3, "autoscaling": {"enabled": False}}
    assert load_model_service(serving_changed).spec.training.fingerprint() == base
    explicit_default = minimal()
    explicit_default["spec"]["training"]["hyperparameters"] = {"epochs": 10}
    assert load_model_service(explicit_default).spec.training.fingerprint() == base
    gate_only = minimal()
    gate_only["spec"]["training"]["qualityGate"] = {"minAccuracy": 0.9}
    assert load_model_service(gate_only).spec.training.fingerprint() == base
    retrain = minimal()
    retrain["spec"]["training"]["hyperparameters"] = {"epochs": 3}
    assert load_model_service(retrain).spec.training.fingerprint() != base


def test_every_problem_is_reported_with_its_path() -> None:
    document = minimal()
    spec = document["spec"]
    spec["training"]["model"] = {"archtecture": "cnn", "ngrams": 5}
    spec["training"]["hyperparameters"] = {"learningRate": 0, "epochs": "ten"}
    spec["serving"] = {"version": "newest", "autoscaling": {"minReplicas": 9, "maxReplicas": 3}}
    errors = errors_of(document)
    assert "did you mean 'architecture'" in errors["spec.training.model.archtecture"]
    assert "at most 3" in errors["spec.training.model.ngrams"]
    assert "greater than 0" in errors["spec.training.hyperparameters.learningRate"]
    assert "whole number" in errors["spec.training.hyperparameters.epochs"]
    assert "latest or a positive version" in errors["spec.serving.version"]
    assert "minReplicas must not exceed" in errors["spec.serving.autoscaling.minReplicas"]


@pytest.mark.parametrize(
    ("path", "value", "reported_at", "says"),
    [
        (("storage", "uri"), "gs://bucket/x", "spec.storage.uri", "s3://"),
        (("storage", "uri"), "s3://", "spec.storage.uri", "bucket name"),
        (("storage", "endpoint"), "minio:9000", "spec.storage.endpoint", "wrong form"),
        (("training", "dataset", "uri"), "http://x/y.csv", "spec.training.dataset.uri", "builtin:"),
        (
            ("training", "dataset", "uri"),
            "builtin:imdb",
            "spec.training.dataset.uri",
            "only builtin",
        ),
        (("training", "dataset", "format"), "parquet", "spec.training.dataset.format", "one of"),
        (("training", "workers"), 0, "spec.training.workers", "at least 1"),
        (("training", "resources"), {"cpu": "lots"}, "spec.training.resources.cpu", "quantity"),
        (
            ("training", "qualityGate"),
            {"minAccuracy": 2},
            "spec.training.qualityGate.minAccuracy",
            "at most 1",
        ),
        (("serving", "version"), 0, "spec.serving.version", "positive version"),
        (("serving", "canary"), {"replicas": 1}, "spec.serving.canary.version", "required"),
        (("serving", "replicas"), -1, "spec.serving.replicas", "at least 1"),
        (("serving", "resources"), {"gpu": -1}, "spec.serving.resources.gpu", "at least 0"),
        (("serving", "resources"), {"gpu": 2}, "spec.serving.resources.gpu", "at most 1"),
        (("serving", "resources"), {"gpu": "1"}, "spec.serving.resources.gpu", "whole number"),
        (("serving", "resources"), {"gpu": 0.5}, "spec.serving.resources.gpu", "whole number"),
        (("storage",), "s3://models/x", "spec.storage", "mapping"),
        # The apiserver drops a null in a non-nullable field, so it counts as absent.
        (("storage",), None, "spec.storage", "is required"),
    ],
)
def test_single_field_errors(
    path: tuple[str, ...], value: Any, reported_at: str, says: str
) -> None:
    document = minimal()
    node = document["spec"]
    for name in path[:-1]:
        node = node.setdefault(name, {})
    node[path[-1]] = value
    errors = errors_of(document)
    assert says in errors[reported_at], errors


def test_canary_on_the_pinned_version_is_refused() -> None:
    document = minimal()
    document["spec"]["serving"] = {"version": 3, "canary": {"version": 3}}
    assert "must differ" in errors_of(document)["spec.serving.canary.version"]
    document["spec"]["serving"] = {"version": 3, "canary": {"version": 4}}
    assert load_model_service(document).spec.serving.canary.version == 4  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["Sentiment", "9lives", "a" * 41, "under_score", "dash-"])
def test_names_that_cannot_name_services_are_refused(name: str) -> None:
    document = minimal()
    document["metadata"]["name"] = name
    assert "metadata.name" in errors_of(document)


def test_missing_required_fields_say_what_to_add() -> None:
    document = minimal()
    del document["spec"]["storage"]
    document["spec"]["training"]["dataset"] = {}
    errors = errors_of(document)
    assert errors["spec.storage"].startswith("is required")
    assert errors["spec.training.dataset.uri"].startswith("is required")


def test_file_errors_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such file"):
        load_model_service(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_model_service(bad)
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap"}))
    with pytest.raises(UserError, match="holds no ModelService"):
        load_model_service(other)


def test_multi_document_file_picks_the_model_service(tmp_path: Path) -> None:
    path = tmp_path / "all.yaml"
    path.write_text(yaml.safe_dump_all([{"apiVersion": "v1", "kind": "Secret"}, minimal()]))
    assert load_model_service(path).name == "reviews"


def test_training_json_round_trip_and_errors(tmp_path: Path) -> None:
    training = load_model_service(minimal()).spec.training
    assert load_training_spec(training.to_json()) == training
    file = tmp_path / "training.json"
    file.write_text(training.to_json())
    assert load_training_spec(f"@{file}").fingerprint() == training.fingerprint()
    with pytest.raises(SpecError) as caught:
        load_training_spec(
            '{"dataset": {"uri": "x"}, '
            '"hyperparameters": {"validationFraction": 0.3, "testFraction": 0.4}}'
        )
    paths = {error.path for error in caught.value.errors}
    assert paths == {"training.hyperparameters.testFraction", "training.dataset.uri"}
