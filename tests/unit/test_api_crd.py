"""The CRD file is the single source of truth: its copies are the same bytes, its schema is
structural and documented, and every CEL rule has a Python twin with the same message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tfmaas.api import schema as crd_schema
from tfmaas.api.validation import CROSS_FIELD_RULES

ROOT = Path(__file__).resolve().parents[2]
COPIES = [
    ROOT / "deploy" / "crd" / "modelservices.tfmaas.io.yaml",
    *sorted((ROOT / "charts" / "tfmaas" / "crds").glob("modelservices.tfmaas.io.yaml")),
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


def test_every_cel_rule_has_a_python_twin_with_the_same_message() -> None:
    cel_messages = {message for _, _, message in crd_schema.cel_rules(crd_schema.open_api_schema())}
    python_messages = {message for _, _, message in CROSS_FIELD_RULES}
    assert cel_messages == python_messages


def test_identity_and_printer_columns() -> None:
    crd = crd_schema.crd()
    assert crd["metadata"]["name"] == "modelservices.tfmaas.io"
    assert crd["spec"]["names"]["shortNames"] == ["ms"]
    assert crd["spec"]["scope"] == "Namespaced"
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = [column["name"] for column in version["additionalPrinterColumns"]]
    assert columns == ["Phase", "Serving", "Latest", "Accuracy", "Ready", "Age"]
