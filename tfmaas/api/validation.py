"""Validate a ModelService (or its spec.training) the way the apiserver would.

Two layers, as in the apiserver: the openAPIV3Schema (types, enums, bounds, patterns),
then the cross-field rules the CRD states in CEL. CEL cannot run here, so each rule has a
Python twin below carrying the very same message; a unit test checks the two lists match.
Every problem is collected, so one run tells the user everything to fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import jsonschema

from tfmaas.api import schema as crd_schema
from tfmaas.errors import UserError


@dataclass(frozen=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SpecError(UserError):
    """A ModelService that the apiserver would reject; lists every field error."""

    def __init__(self, source: str, errors: list[FieldError], what: str = "ModelService") -> None:
        self.errors = errors
        lines = "\n".join(f"  - {error}" for error in errors)
        super().__init__(f"{source} is not a valid {what} ({len(errors)} problem(s)):\n{lines}")


def _path(prefix: str, parts: Iterable[Any]) -> str:
    text = prefix
    for part in parts:
        text = f"{text}[{part}]" if isinstance(part, int) else (f"{text}.{part}" if text else part)
    return text


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_TYPE_WORDS = {
    "integer": "a whole number",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "object": "a mapping of fields",
    "array": "a list",
}


def _schema_error_message(error: jsonschema.ValidationError) -> tuple[list[Any], str]:
    """Turn one jsonschema error into (path parts, message saying what to write instead)."""
    parts = list(error.absolute_path)
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    hint = f" ({schema['description']})" if schema.get("description") else ""
    validator, expected, value = error.validator, error.validator_value, error.instance
    if validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else str(expected)
        child = schema.get("properties", {}).get(missing, {})
        child_hint = f" ({child['description']})" if child.get("description") else ""
        return [*parts, missing], f"is required: add it{child_hint}"
    if validator == "additionalProperties":
        known = sorted(schema.get("properties", {}))
        unknown = sorted(set(value) - set(known)) if isinstance(value, Mapping) else []
        messages = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=1)
            suggestion = (
                f"did you mean {close[0]!r}?" if close else f"known fields: {', '.join(known)}"
            )
            messages.append((name, f"unknown field; {suggestion}"))
        if len(messages) == 1:
            return [*parts, messages[0][0]], messages[0][1]
        return parts, "; ".join(f"{name}: {text}" for name, text in messages)
    if validator == "enum":
        choices = ", ".join(str(choice) for choice in cast(list[Any], expected))
        return parts, f"must be one of {choices} (got {_describe(value)})"
    if validator == "type":
        return parts, f"must be {_TYPE_WORDS.get(str(expected), expected)} (got {_describe(value)})"
    if validator == "anyOf":
        return parts, f"must be a whole number or a string (got {_describe(value)}){hint}"
    if validator == "minimum":
        relation = "greater than" if schema.get("exclusiveMinimum") else "at least"
        return parts, f"must be {relation} {expected} (got {_describe(value)}){hint}"
    if validator == "maximum":
        relation = "less than" if schema.get("exclusiveMaximum") else "at most"
        return parts, f"must be {relation} {expected} (got {_describe(value)}){hint}"
    if validator in ("minLength", "maxLength"):
        relation = "at least" if validator == "minLength" else "at most"
        return parts, f"must be {relation} {expected} characters long (got {_describe(value)})"
    if validator == "pattern":
        return parts, f"has the wrong form: got {_describe(value)}{hint}"
    return parts, f"{error.message}{hint}"


def schema_errors(document: Any, schema: crd_schema.Schema, prefix: str = "") -> list[FieldError]:
    validator = jsonschema.Draft4Validator(crd_schema.to_json_schema(schema))
    found: list[FieldError] = []
    for error in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.path))):
        parts, message = _schema_error_message(error)
        found.append(FieldError(_path(prefix, parts), message))
    return found


# Cross-field rules: (path of the object the rule sits on, check, message). The message is
# the CEL rule's message word for word, so both layers tell the user the same thing.
Check = Callable[[Any], bool]


def _uri_scheme_ok(storage: Mapping[str, Any]) -> bool:
    uri = str(storage["uri"])
    return uri.startswith("s3://") or uri.startswith("file:///")


def _s3_has_bucket(storage: Mapping[str, Any]) -> bool:
    uri = str(storage["uri"])
    return not uri.startswith("s3://") or len(uri) > 5


def _kms_key_needs_sse_kms(storage: Mapping[str, Any]) -> bool:
    return "kmsKeyId" not in storage or storage.get("encryption") == "sse-kms"


def _s3_only_settings(storage: Mapping[str, Any]) -> bool:
    uses = "encryption" in storage or "caBundle" in storage
    return not uses or str(storage["uri"]).startswith("s3://")


def _one_ca_source(ca_bundle: Mapping[str, Any]) -> bool:
    return ("configMapRef" in ca_bundle) != ("secretRef" in ca_bundle)


def _dataset_scheme_ok(dataset: Mapping[str, Any]) -> bool:
    uri = str(dataset["uri"])
    return uri.startswith(("builtin:", "file://", "s3://"))


def _builtin_known(dataset: Mapping[str, Any]) -> bool:
    uri = str(dataset["uri"])
    return not uri.startswith("builtin:") or uri == "builtin:chinese-reviews"


def _fractions_leave_training_data(training: Mapping[str, Any]) -> bool:
    hyper = training["hyperparameters"]
    return float(hyper["validationFraction"]) + float(hyper["testFraction"]) <= 0.5


def _distillation_on_one_worker(training: Mapping[str, Any]) -> bool:
    return "distillation" not in training or int(training.get("workers", 1)) == 1


def _prune_below_max_tokens(training: Mapping[str, Any]) -> bool:
    prune = (training.get("compression") or {}).get("pruneVocabulary")
    return prune is None or int(prune) < int(training["model"]["maxTokens"])


def _canary_differs(serving: Mapping[str, Any]) -> bool:
    canary, version = serving.get("canary"), serving["version"]
    return canary is None or isinstance(version, str) or canary["version"] != version


def _version_latest_or_positive(version: Any) -> bool:
    return version == "latest" if isinstance(version, str) else int(version) >= 1


def _replica_bounds(autoscaling: Mapping[str, Any]) -> bool:
    return int(autoscaling["minReplicas"]) <= int(autoscaling["maxReplicas"])


def _tls_needs_gateway(access: Mapping[str, Any]) -> bool:
    return "tls" not in access or access.get("mode", "kubernetes") == "kubernetes"


_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-")


def _name_ok(document: Mapping[str, Any]) -> bool:
    name = str(document["metadata"]["name"])
    return (
        0 < len(name) <= 40
        and set(name) <= _NAME_CHARS
        and name[0].isalpha()
        and not name.endswith("-")
    )


CROSS_FIELD_RULES: list[tuple[tuple[str, ...], Check, str]] = [
    (
        (),
        _name_ok,
        "metadata.name must be at most 40 characters of lowercase letters, digits and '-', "
        "starting with a letter, because it names the Service, Deployments and training Jobs",
    ),
    (
        ("spec", "storage"),
        _uri_scheme_ok,
        "storage.uri must start with s3:// (s3://bucket/prefix) or file:/// "
        "(an absolute local path)",
    ),
    (
        ("spec", "storage"),
        _s3_has_bucket,
        "storage.uri s3:// needs a bucket name, e.g. s3://models/sentiment",
    ),
    (
        ("spec", "storage"),
        _kms_key_needs_sse_kms,
        "storage.kmsKeyId needs storage.encryption: sse-kms",
    ),
    (
        ("spec", "storage"),
        _s3_only_settings,
        "storage.encryption and storage.caBundle apply to s3:// stores only",
    ),
    (
        ("spec", "storage", "caBundle"),
        _one_ca_source,
        "storage.caBundle needs exactly one of configMapRef or secretRef",
    ),
    (
        ("spec", "training"),
        _fractions_leave_training_data,
        "training.hyperparameters.validationFraction + testFraction must be at most 0.5, "
        "so at least half the data is left to train on",
    ),
    (
        ("spec", "training"),
        _distillation_on_one_worker,
        "training.distillation needs workers: 1; a student is trained on one worker",
    ),
    (
        ("spec", "training"),
        _prune_below_max_tokens,
        "training.compression.pruneVocabulary must be below model.maxTokens, or it prunes nothing",
    ),
    (
        ("spec", "training", "dataset"),
        _dataset_scheme_ok,
        "training.dataset.uri must be builtin:chinese-reviews, file:///path/to/data.csv "
        "or s3://bucket/key",
    ),
    (
        ("spec", "training", "dataset"),
        _builtin_known,
        "training.dataset.uri: the only builtin dataset is builtin:chinese-reviews",
    ),
    (
        ("spec", "serving"),
        _canary_differs,
        "serving.canary.version must differ from serving.version: the canary is a second "
        "version next to the pinned one",
    ),
    (
        ("spec", "serving", "version"),
        _version_latest_or_positive,
        "serving.version must be latest or a positive version number such as 3",
    ),
    (
        ("spec", "serving", "autoscaling"),
        _replica_bounds,
        "serving.autoscaling.minReplicas must not exceed maxReplicas",
    ),
    (
        ("spec", "serving", "access"),
        _tls_needs_gateway,
        "serving.access.tls needs access.mode kubernetes: the access gateway is what "
        "terminates TLS",
    ),
]


def cross_field_errors(
    document: Mapping[str, Any], root: tuple[str, ...] = (), prefix: str = ""
) -> list[FieldError]:
    """Apply the cross-field rules under `root` (a document validated from spec.training
    passes root=("spec", "training")). A rule whose fields have the wrong type is skipped:
    the schema layer already reported them, as the apiserver does."""
    found: list[FieldError] = []
    for path, check, message in CROSS_FIELD_RULES:
        if path[: len(root)] != root or (not path and root):
            continue
        node: Any = document
        try:
            for name in path:
                node = node[name]
            passed = check(node)
        except (KeyError, TypeError, ValueError):
            continue
        if not passed:
            relative = path[len(root) :] if path else ("metadata", "name")
            found.append(FieldError(_path(prefix, relative), message))
    return found
