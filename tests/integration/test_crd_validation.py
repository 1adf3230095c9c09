"""The CRD on a real API server: it is accepted, defaults what the Python loader defaults,
and rejects invalid ModelServices with a message naming the field, storing nothing."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.crd_cases import HOSTILE, VALID, minimal, uri_corpus, with_value
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
    ("spec.serving.resources.gpu", -1, "spec.serving.resources.gpu"),
    ("spec.serving.resources.gpu", 2, "spec.serving.resources.gpu"),
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


def _with_status(cluster: LocalCluster, namespace: str, name: str) -> None:
    """Write the status an operator would, through the status subresource."""
    status = {
        "phase": "Serving",
        "servingVersion": 2,
        "latestVersion": 3,
        "canaryVersion": 3,
        "accuracy": 0.91,
        "servingSizeBytes": 2718281,
        "replicas": 2,
        "readyReplicas": 2,
        "endpoint": {"grpc": f"{name}.{namespace}.svc:8500", "rest": "http://x:8501"},
        "conditions": [
            {"type": "Trained", "status": "True", "reason": "Succeeded"},
            {"type": "Ready", "status": "True", "reason": "Serving"},
        ],
    }
    cluster.kubectl(
        "patch",
        "ms",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def test_printer_columns_show_the_ready_condition_and_wide_adds_canary_endpoint_reason_size(
    cluster: LocalCluster, namespace: str
) -> None:
    document = minimal("columns")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(document))
    try:
        _with_status(cluster, namespace, "columns")
        table = cluster.kubectl("get", "ms", "columns", "-n", namespace).stdout.splitlines()
        assert table[0].split() == [
            "NAME",
            "PHASE",
            "SERVING",
            "LATEST",
            "ACCURACY",
            "READY",
            "AGE",
        ]
        assert table[1].split()[:6] == ["columns", "Serving", "2", "3", "0.91", "True"]
        wide = cluster.kubectl("get", "ms", "columns", "-n", namespace, "-o", "wide").stdout
        header, row = wide.splitlines()
        assert header.split()[-4:] == ["CANARY", "ENDPOINT", "REASON", "SIZE"]
        assert row.split()[-4:] == ["3", f"columns.{namespace}.svc:8500", "Serving", "2718281"]
    finally:
        cluster.kubectl("delete", "ms", "columns", "-n", namespace, check=False)


def test_kubectl_scale_sets_the_fixed_replica_count(cluster: LocalCluster, namespace: str) -> None:
    document = with_value(minimal("scaled"), "spec.serving.autoscaling", {"enabled": False})
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(document))
    try:
        _with_status(cluster, namespace, "scaled")
        cluster.kubectl("scale", "ms", "scaled", "-n", namespace, "--replicas=3")
        stored = cluster.kubectl_json("get", "ms", "scaled", "-n", namespace)
        assert stored["spec"]["serving"]["replicas"] == 3
        scale = cluster.kubectl_json("get", "ms", "scaled", "-n", namespace, "--subresource=scale")
        assert (scale["kind"], scale["spec"]["replicas"]) == ("Scale", 3)
        assert scale["status"]["replicas"] == 2  # what the operator last reported
        # The scale subresource is held to the same bounds as the field.
        refused = cluster.kubectl(
            "scale", "ms", "scaled", "-n", namespace, "--replicas=0", check=False
        )
        assert refused.returncode != 0 and "spec.serving.replicas" in refused.stderr
    finally:
        cluster.kubectl("delete", "ms", "scaled", "-n", namespace, check=False)


def test_modelservices_are_not_in_the_all_category(cluster: LocalCluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(minimal("hidden")))
    try:
        listed = cluster.kubectl("get", "all", "-n", namespace, "-o", "name").stdout
        assert "modelservice" not in listed
        assert "hidden" in cluster.kubectl("get", "tfmaas", "-n", namespace, "-o", "name").stdout
    finally:
        cluster.kubectl("delete", "ms", "hidden", "-n", namespace, check=False)


def _server_dry_run(
    cluster: LocalCluster, namespace: str, document: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    """`kubectl create --dry-run=server` of `document`: the API server's verdict, nothing kept."""
    return cluster.kubectl(
        "create",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(document),
        check=False,
    )


@pytest.mark.parametrize(
    ("path", "value", "reported_at", "says"),
    HOSTILE,
    ids=[f"{path}={value!r}"[:60] for path, value, _, _ in HOSTILE],
)
def test_hostile_value_is_refused_by_the_api_server_naming_its_field(
    cluster: LocalCluster, namespace: str, path: str, value: Any, reported_at: str, says: str
) -> None:
    document = with_value(minimal(f"bad-{uuid.uuid4().hex[:6]}"), path, value)
    applied = _server_dry_run(cluster, namespace, document)
    assert applied.returncode != 0, f"the API server accepted {path}={value!r}"
    assert f"{reported_at}: " in applied.stderr, applied.stderr
    assert says in applied.stderr, applied.stderr


def test_a_quoted_version_is_not_told_to_write_what_it_wrote(
    cluster: LocalCluster, namespace: str
) -> None:
    document = with_value(minimal("quoted"), "spec.serving.version", "3")
    applied = _server_dry_run(cluster, namespace, document)
    assert "drop the quotes" in applied.stderr and "such as 3" not in applied.stderr


def _verdicts(cluster: LocalCluster, namespace: str, documents: list[dict[str, Any]]) -> set[str]:
    """The names of `documents` the API server refuses, from one dry-run create of them all."""
    listed = {"apiVersion": "v1", "kind": "List", "items": documents}
    created = cluster.kubectl(
        "create",
        "--dry-run=server",
        "-n",
        namespace,
        "-o",
        "name",
        "-f",
        "-",
        input=json.dumps(listed),
        check=False,
    )
    accepted = set(re.findall(r"modelservice\.tfmaas\.io/([-a-z0-9]+)", created.stdout))
    names = {document["metadata"]["name"] for document in documents}
    assert accepted <= names, created.stdout
    return names - accepted


def test_valid_values_at_the_edge_are_accepted(cluster: LocalCluster, namespace: str) -> None:
    documents = [
        with_value(minimal(f"edge-{index}"), path, value)
        for index, (path, value) in enumerate(VALID)
    ]
    refused = _verdicts(cluster, namespace, documents)
    assert sorted(VALID[int(name.split("-")[1])] for name in refused) == []


@pytest.mark.parametrize("field", ["spec.storage.uri", "spec.training.dataset.uri"])
def test_api_server_and_python_twins_agree_on_every_uri(
    cluster: LocalCluster, namespace: str, field: str
) -> None:
    corpus = uri_corpus()
    documents = [
        with_value(minimal(f"uri-{index}"), field, uri) for index, uri in enumerate(corpus)
    ]
    refused_by_server = _verdicts(cluster, namespace, documents)
    refused_by_python = set()
    for document in documents:
        try:
            validate_model_service(document)
        except SpecError:
            refused_by_python.add(document["metadata"]["name"])
    disagree = sorted(
        (corpus[int(name.split("-")[1])], name in refused_by_server)
        for name in refused_by_server ^ refused_by_python
    )
    assert disagree == [], "(uri, refused by the API server) where the twins differ"
