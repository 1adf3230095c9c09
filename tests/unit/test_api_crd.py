"""The CRD file is the single source of truth: its copies are the same bytes, its schema is
structural and documented, and every CEL rule has a Python twin with the same message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.crd_cases import HOSTILE, VALID, minimal, uri_corpus, with_value
from tfmaas.api import SpecError, validate_model_service
from tfmaas.api import schema as crd_schema
from tfmaas.api.validation import CROSS_FIELD_RULES, REGEXES
from tfmaas.errors import UserError
from tfmaas.storage.uri import S3Location, parse_uri

ROOT = Path(__file__).resolve().parents[2]
COPIES = [
    ROOT / "deploy" / "crd" / "modelservices.tfmaas.io.yaml",
    ROOT / "charts" / "tfmaas" / "files" / "crds" / "modelservices.tfmaas.io.yaml",
]


@pytest.mark.parametrize("copy_path", COPIES, ids=lambda p: str(p.relative_to(ROOT)))
def test_crd_copies_are_byte_identical(copy_path: Path) -> None:
    assert copy_path.read_text(encoding="utf-8") == crd_schema.crd_text(), (
        f"{copy_path.relative_to(ROOT)} differs from tfmaas/api/crd.yaml; copy it over"
    )


def _walk(schema: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    found = [(path, schema)]
    for name, child in schema.get("properties", {}).items():
        found.extend(_walk(child, f"{path}.{name}"))
    if isinstance(schema.get("items"), dict):
        found.extend(_walk(schema["items"], f"{path}[]"))
    return found


def test_every_spec_and_status_field_has_a_description() -> None:
    root = crd_schema.open_api_schema()
    undocumented = [
        path
        for path, node in _walk(root, "")
        if path.startswith((".spec", ".status")) and not node.get("description")
    ]
    assert undocumented == []


def test_every_node_is_structural() -> None:
    """Each node has a type, or is an int-or-string, as the apiserver requires."""
    root = crd_schema.open_api_schema()
    untyped = [
        path
        for path, node in _walk(root, "")
        if "type" not in node and not node.get("x-kubernetes-int-or-string")
    ]
    assert untyped == []


def test_every_cel_rule_has_a_python_twin_with_the_same_message_and_field() -> None:
    cel = {
        (path, field_path, message)
        for path, _, message, field_path in crd_schema.cel_rules(crd_schema.open_api_schema())
    }
    python = {(rule.on, rule.field, rule.message) for rule in CROSS_FIELD_RULES}
    assert cel == python


def test_every_twin_regex_is_the_crd_rules_own() -> None:
    rules = " ".join(rule for _, rule, _, _ in crd_schema.cel_rules(crd_schema.open_api_schema()))
    missing = [
        pattern
        for pattern in REGEXES
        if f'r"{pattern}"' not in rules and f"'{pattern}'" not in rules
    ]
    assert missing == []


def test_identity_and_printer_columns() -> None:
    crd = crd_schema.crd()
    assert crd["metadata"]["name"] == "modelservices.tfmaas.io"
    assert crd["spec"]["names"]["shortNames"] == ["ms"]
    assert crd["spec"]["scope"] == "Namespaced"
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1"
    columns = [
        (column["name"], column["jsonPath"], column.get("priority", 0))
        for column in version["additionalPrinterColumns"]
    ]
    ready = '.status.conditions[?(@.type=="Ready")]'
    assert columns == [
        ("Phase", ".status.phase", 0),
        ("Serving", ".status.servingVersion", 0),
        ("Latest", ".status.latestVersion", 0),
        ("Accuracy", ".status.accuracy", 0),
        ("Ready", f"{ready}.status", 0),
        ("Age", ".metadata.creationTimestamp", 0),
        ("Canary", ".status.canaryVersion", 1),
        ("Endpoint", ".status.endpoint.grpc", 1),
        ("Reason", f"{ready}.reason", 1),
        ("Size", ".status.servingSizeBytes", 1),
    ]


def test_printer_columns_and_scale_point_at_fields_the_schema_has() -> None:
    root = crd_schema.open_api_schema()
    (version,) = crd_schema.crd()["spec"]["versions"]
    paths = [column["jsonPath"] for column in version["additionalPrinterColumns"]]
    scale = version["subresources"]["scale"]
    paths += [scale["specReplicasPath"], scale["statusReplicasPath"]]
    for path in paths:
        names = path.split("[")[0].strip(".").split(".")
        if names[0] == "metadata":
            continue
        node = crd_schema.subschema(root, *names)  # KeyError when the field does not exist
        assert node["type"] in ("string", "integer", "number", "array"), path


def test_scale_drives_the_fixed_replica_count_and_all_is_left_alone() -> None:
    crd = crd_schema.crd()
    (version,) = crd["spec"]["versions"]
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.serving.replicas",
            "statusReplicasPath": ".status.replicas",
        },
    }
    assert "all" not in crd["spec"]["names"]["categories"]
    assert crd["spec"]["names"]["categories"] == ["tfmaas"]


def _runtime_refuses(field: str, uri: str) -> bool:
    """Whether the pod would refuse `uri`: parse_uri for both fields, and read_uri's "names a
    bucket, not a file" for a dataset."""
    try:
        location = parse_uri(uri)
    except UserError:
        return True
    return field.endswith("dataset.uri") and isinstance(location, S3Location) and not location.key


def _errors(document: dict[str, Any]) -> dict[str, list[str]]:
    try:
        validate_model_service(document)
    except SpecError as refused:
        found: dict[str, list[str]] = {}
        for error in refused.errors:
            found.setdefault(error.path, []).append(error.message)
        return found
    return {}


@pytest.mark.parametrize(
    ("path", "value", "reported_at", "says"),
    HOSTILE,
    ids=[f"{path}={value!r}" for path, value, _, _ in HOSTILE],
)
def test_hostile_value_is_refused_naming_its_field(
    path: str, value: Any, reported_at: str, says: str
) -> None:
    errors = _errors(with_value(minimal(), path, value))
    assert list(errors) == [reported_at], errors
    assert any(says in message for message in errors[reported_at]), errors


@pytest.mark.parametrize(
    ("path", "value", "reported_at", "says"),
    [case for case in HOSTILE if case[0].endswith(".uri")],
    ids=[f"{path}={value!r}" for path, value, _, _ in HOSTILE if path.endswith(".uri")],
)
def test_hostile_uri_is_refused_by_the_runtime_parser_too(
    path: str, value: Any, reported_at: str, says: str
) -> None:
    assert _runtime_refuses(path, value)


def test_a_quoted_version_is_not_told_to_write_what_it_wrote() -> None:
    errors = _errors(with_value(minimal(), "spec.serving.version", "3"))
    (message,) = errors["spec.serving.version"]
    assert "such as 3" not in message and "drop the quotes" in message


@pytest.mark.parametrize(
    ("path", "value"), VALID, ids=[f"{path}={value!r}" for path, value in VALID]
)
def test_valid_value_at_the_edge_is_accepted(path: str, value: Any) -> None:
    assert _errors(with_value(minimal(), path, value)) == {}


@pytest.mark.parametrize("field", ["spec.storage.uri", "spec.training.dataset.uri"])
def test_the_crd_accepts_no_uri_the_runtime_parser_refuses(field: str) -> None:
    """Agreement in the direction that matters: a URI past the API server parses in the pod.
    (The CRD may be stricter: it refuses `file://localhost/...` and %-escapes outright.)"""
    accepted_but_broken = [
        uri
        for uri in uri_corpus()
        if not _errors(with_value(minimal(), field, uri)) and _runtime_refuses(field, uri)
    ]
    assert accepted_but_broken == []


def test_the_corpus_has_uris_on_both_sides() -> None:
    verdicts = {bool(_errors(with_value(minimal(), "spec.storage.uri", u))) for u in uri_corpus()}
    assert verdicts == {True, False}
