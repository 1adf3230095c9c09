"""The CRD as data: its openAPIV3Schema, translated for local validation, and its defaults.

The apiserver validates a ModelService against the CRD's structural schema and fills in
its defaults; `tfmaas local run` has no apiserver, so the same schema is read from the
same file and applied here. Only the translation differs: a structural schema may not say
`additionalProperties: false`, yet a local typo should be an error, not silently pruned.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from importlib import resources
from typing import Any

import yaml

CRD_RESOURCE = "crd.yaml"
GROUP = "tfmaas.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelService"
PLURAL = "modelservices"
CRD_NAME = f"{PLURAL}.{GROUP}"

Schema = dict[str, Any]


def crd_text() -> str:
    """The CRD file's exact bytes, as text (what deploy/ and the chart copy)."""
    return resources.files("tfmaas.api").joinpath(CRD_RESOURCE).read_text(encoding="utf-8")


@functools.cache
def _crd() -> dict[str, Any]:
    loaded = yaml.safe_load(crd_text())
    if not isinstance(loaded, dict):
        raise RuntimeError("tfmaas/api/crd.yaml does not hold a CustomResourceDefinition")
    return loaded


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition as a fresh dict (safe to modify)."""
    return copy.deepcopy(_crd())


def open_api_schema() -> Schema:
    """The served version's openAPIV3Schema, exactly as in the CRD (a copy, safe to modify)."""
    return copy.deepcopy(served_schema())


@functools.cache
def served_schema() -> Schema:
    """The served version's openAPIV3Schema, shared: read it, never modify it. Validation
    reads it for every ModelService the operator reconciles, so it is not copied each time."""
    for version in _crd()["spec"]["versions"]:
        if version["name"] == VERSION:
            return dict(version["schema"]["openAPIV3Schema"])
    raise RuntimeError(f"the CRD has no version {VERSION}")


def subschema(schema: Schema, *path: str) -> Schema:
    """The schema of the field at `path` (property names from the root)."""
    node = schema
    for name in path:
        node = node["properties"][name]
    return node


def to_json_schema(schema: Schema) -> Schema:
    """Translate a structural schema to JSON Schema draft 4 for the jsonschema package.

    Objects with declared properties reject unknown fields (the apiserver would prune them
    with only a warning); Kubernetes extensions are dropped because they mean nothing here.
    """
    translated: Schema = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-") or key == "default":
            continue
        if key == "properties":
            translated[key] = {name: to_json_schema(child) for name, child in value.items()}
        elif key == "items" and isinstance(value, Mapping):
            translated[key] = to_json_schema(dict(value))
        elif key == "anyOf":
            translated[key] = [to_json_schema(dict(option)) for option in value]
        else:
            translated[key] = copy.deepcopy(value)
    if "properties" in schema and "additionalProperties" not in schema:
        translated["additionalProperties"] = False
    return translated


def apply_defaults(value: Any, schema: Schema) -> Any:
    """Fill in schema defaults top-down, as the apiserver does (a `default: {}` parent first
    appears, then its own fields' defaults). A null in a field that is not `nullable` is
    dropped first, so it takes the default, again as the apiserver does. Values of the
    wrong type are left for validation to report. Returns a new object; the input is not
    modified."""
    result = copy.deepcopy(value)
    _default_in_place(result, schema)
    return result


def _default_in_place(value: Any, schema: Schema) -> None:
    if isinstance(value, dict):
        for name, child_schema in schema.get("properties", {}).items():
            if name in value and value[name] is None and not child_schema.get("nullable"):
                del value[name]
            if name not in value and "default" in child_schema:
                value[name] = copy.deepcopy(child_schema["default"])
            if name in value:
                _default_in_place(value[name], child_schema)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for item in value:
            _default_in_place(item, schema["items"])


def cel_rules(
    schema: Schema, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], str, str, str]]:
    """Every `x-kubernetes-validations` rule as (field path, rule, message, fieldPath), for
    checking that the Python cross-field rules cover the CRD's."""
    found = [
        (path, rule["rule"], rule.get("message", ""), rule.get("fieldPath", ""))
        for rule in schema.get("x-kubernetes-validations", [])
    ]
    for name, child in schema.get("properties", {}).items():
        found.extend(cel_rules(child, (*path, name)))
    return found
