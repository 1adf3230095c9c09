"""The CRD on a real API server: it is accepted, defaults what the Python loader defaults,
and rejects invalid ModelServices with a message naming the field, storing nothing."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.operator_harness import install_crd
from tfmaas.api import SpecError, load_model_service, validate_model_service
from tfmaas.dev.cluster import LocalCluster

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "samples" / "sentiment.yaml"


@pytest.fixture(scope="module")
def namespace(cluster: LocalCluster) -> Iterator[str]:
    install_crd(cluster)
    name = f"crd-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def minimal(name: str = "valid") -> dict[str, Any]:
    return {
        "apiVersion": "tfmaas.io/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": name},
        "spec": {
            "storage": {"uri": "s3://models/m"},
            "training": {"dataset": {"uri": "builtin:chinese-reviews"}},
        },
    }


def test_sample_is_accepted_with_the_same_defaults_as_python(
    cluster: LocalCluster, namespace: str
) -> None:
    stored = cluster.kubectl_json("create", "--dry-run=server", "-n", namespace, "-f", str(SAMPLE))
    local = validate_model_service(yaml.safe_load(SAMPLE.read_text()))
    assert stored["spec"] == local["spec"]


def test_minimal_spec_defaults_match(cluster: LocalCluster, namespace: str) -> None:
    stored = json.loads(
        cluster.kubectl(
            "create",
            "--dry-run=server",
            "-n",
            namespace,
            "-o",
            "json",
            "-f",
            "-",
            input=json.dumps(minimal()),
        ).stdout
    )
    assert stored["spec"] == validate_model_service(minimal())["spec"]


def set_path(document: dict[str, Any], path: str, value: Any) -> None:
    node = document
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    if value is DELETE:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value


class _Delete:
    def __repr__(self) -> str:
        return "<deleted>"


DELETE = _Delete()

# (what to change, value, text the API server's message must contain)
INVALID: list[tuple[str, Any, str]] = [
    ("spec.storage.uri", "gs://bucket/m", "storage.uri must start with s3://"),
    ("spec.storage.uri", "s3://", "needs a bucket name"),
    ("spec.storage", DELETE, "spec.storage"),
    ("spec.storage.endpoint", "minio:9000", "spec.storage.endpoint"),
    ("spec.storage.secretRef", {"key": "x"}, "spec.storage.secretRef"),
    ("spec.training.dataset.uri", "http://example/x.csv", "training.dataset.uri must be"),
    ("spec.training.dataset.uri", "builtin:imdb", "only builtin dataset"),
    ("spec.training.dataset.format", "parquet", "spec.training.dataset.format"),
    ("spec.training.model.architecture", "rnn", "spec.training.model.architecture"),
    ("spec.training.model.ngrams", 4, "spec.training.model.ngrams"),
    ("spec.training.model.archtecture", "cnn", "archtecture"),
    ("spec.training.hyperparameters.learningRate", 0, "learningRate"),
    ("spec.training.hyperparameters.epochs", 0, "spec.training.hyperparameters.epochs"),
    (
        "spec.training.hyperparameters",
        {"validationFraction": 0.4, "testFraction": 0.3},
        "validationFraction + testFraction",
    ),
    ("spec.training.resources.cpu", "lots", "spec.training.resources.cpu"),
    ("spec.training.resources.gpu", -1, "spec.training.resources.gpu"),
    ("spec.training.workers", 0, "spec.training.workers"),
    ("spec.training.distillation", {}, "spec.training.distillation.teacher"),
    ("spec.training.distillation", {"teacher": {"version": 0}}, "teacher.version"),
    (
        "spec.training.distillation",
        {"teacher": {"version": 1}, "temperature": 0},
        "spec.training.distillation.temperature",
    ),
    (
        "spec.training.distillation",
        {"teacher": {"version": 1}, "alpha": 1.5},
        "spec.training.distillation.alpha",
    ),
    (
        "spec.training",
        {
            "dataset": {"uri": "builtin:chinese-reviews"},
            "workers": 2,
            "distillation": {"teacher": {"version": 1}},
        },
        "training.distillation needs workers: 1",
    ),
    ("spec.training.compression.quantize", "int4", "spec.training.compression.quantize"),
    ("spec.training.compression.pruneVocabulary", 10, "pruneVocabulary"),
    (
        "spec.training.compression.pruneVocabulary",
        20000,
        "pruneVocabulary must be below model.maxTokens",
    ),
    ("spec.training.qualityGate.minAccuracy", 1.5, "minAccuracy"),
    ("spec.training.qualityGate.minF1", -0.1, "minF1"),
    ("spec.serving.version", "newest", "serving.version must be latest"),
    ("spec.serving.version", 0, "serving.version must be latest"),
    ("spec.serving", {"version": 3, "canary": {"version": 3}}, "canary.version must differ"),
    ("spec.serving.canary", {"replicas": 1}, "spec.serving.canary.version"),
    (
        "spec.serving.autoscaling",
        {"minReplicas": 5, "maxReplicas": 2},
        "minReplicas must not exceed",
    ),
    ("spec.serving.autoscaling.targetRequestsPerSecond", 0, "targetRequestsPerSecond"),
    ("spec.serving.batching.maxBatchSize", 0, "spec.serving.batching.maxBatchSize"),
    ("spec.serving.replicas", 0, "spec.serving.replicas"),
    ("metadata.name", "m" * 41, "metadata.name must be at most 40"),
]


@pytest.mark.parametrize(
    ("path", "value", "says"), INVALID, ids=[f"{p}={v!r}"[:60] for p, v, _ in INVALID]
)
def test_invalid_model_service_is_rejected_by_both_layers(
    cluster: LocalCluster, namespace: str, path: str, value: Any, says: str
) -> None:
    document = minimal(f"bad-{uuid.uuid4().hex[:6]}")
    set_path(document, path, value if value is DELETE else copy.deepcopy(value))
    applied = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=json.dumps(document), check=False
    )
    assert applied.returncode != 0, f"the API server accepted {path}={value!r}"
    assert says in applied.stderr, applied.stderr
    with pytest.raises(SpecError):
        load_model_service(document)


def test_rejections_leave_nothing_behind(cluster: LocalCluster, namespace: str) -> None:
    left = cluster.kubectl_json("get", "modelservices", "-n", namespace)["items"]
    assert [item["metadata"]["name"] for item in left] == []


def test_kubectl_explain_teaches_the_fields(cluster: LocalCluster, namespace: str) -> None:
    explained = cluster.kubectl("explain", "modelservice.spec.training.qualityGate").stdout
    assert "promoted" in explained and "minAccuracy" in explained


def test_printer_columns_and_short_name(cluster: LocalCluster, namespace: str) -> None:
    document = minimal("columns")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(document))
    try:
        table = cluster.kubectl("get", "ms", "-n", namespace).stdout
        header = table.splitlines()[0].split()
        assert header == ["NAME", "PHASE", "SERVING", "LATEST", "ACCURACY", "READY", "AGE"]
    finally:
        cluster.kubectl("delete", "ms", "columns", "-n", namespace, check=False)
