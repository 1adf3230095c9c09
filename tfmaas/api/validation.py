"""Validate a ModelService (or its spec.training) the way the apiserver would.

Two layers, as in the apiserver: the openAPIV3Schema (types, enums, bounds, patterns),
then the cross-field rules the CRD states in CEL. CEL cannot run here, so each rule has a
Python twin below carrying the very same message; a unit test checks the two lists match.
Every problem is collected, so one run tells the user everything to fix.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import jsonschema

from tfmaas.api import schema as crd_schema
from tfmaas.api.spec import TUNABLE_PARAMETERS
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
    if validator in ("maxProperties", "maxItems"):
        count = len(value) if isinstance(value, Mapping | list) else value
        return parts, f"must have at most {expected} entries (got {count})"
    if validator in ("minLength", "maxLength"):
        relation = "at least" if validator == "minLength" else "at most"
        return parts, f"must be {relation} {expected} characters long (got {_describe(value)})"
    if validator == "pattern":
        return parts, f"has the wrong form: got {_describe(value)}{hint}"
    return parts, f"{error.message}{hint}"


@functools.cache
def _validator(at: tuple[str, ...]) -> jsonschema.Draft4Validator:
    # Translating the schema costs several times what validating one document does, and the
    # operator validates every ModelService it reconciles: one validator per field, kept.
    schema = crd_schema.subschema(crd_schema.served_schema(), *at)
    return jsonschema.Draft4Validator(crd_schema.to_json_schema(schema))


def schema_errors(document: Any, *, at: tuple[str, ...] = (), prefix: str = "") -> list[FieldError]:
    """Where `document` breaks the served schema of the field at `at` (property names from the
    root; the whole ModelService when empty), its paths prefixed with `prefix`."""
    validator = _validator(at)
    found: list[FieldError] = []
    for error in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.path))):
        parts, message = _schema_error_message(error)
        found.append(FieldError(_path(prefix, parts), message))
    return found


# The CEL rules' twins: (the object the rule sits on, check, message, fieldPath). The message
# is the CEL rule's word for word and the fieldPath the same, so both layers tell the user the
# same thing about the same field. The regular expressions are the CEL rules' (a unit test
# finds each in crd.yaml); CEL's matches() searches, so the twins use re.search too.
Check = Callable[[Any], bool]


@dataclass(frozen=True)
class Rule:
    on: tuple[str, ...]
    check: Check
    message: str
    field: str = ""  # the CEL rule's fieldPath (".uri"): where the error points, below `on`

    @property
    def error_path(self) -> tuple[str, ...]:
        return (*self.on, *(part for part in self.field.split(".") if part))


S3_BUCKET = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/|$)"
S3_BUCKET_AND_KEY = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[^/]"
S3_BAD_BUCKET = r"^s3://([^/]*\.\.|[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+(/|$))"
DOT_SEGMENT = r"/\.\.?(/|$)"
S3_EMPTY_SEGMENT = r"^s3://.*//"
QUERY_OR_FRAGMENT = r"[?#]"
ZERO_CPU = r"^0*(\.0*)?m?$"
ZERO_MEMORY = r"^0*(\.0*)?[A-Za-z]*$"
WHOLE_NUMBER = "^[0-9]+$"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
# The container image reference grammar (registry[:port]/path[:tag][@digest]) the kubelet
# parses; a spec whose image fails it would only fail as InvalidImageName inside a pod.
IMAGE_REFERENCE = (
    rf"^(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?/)?{_PATH_PART}(?:/{_PATH_PART})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
# Kubernetes' label and annotation key syntax ([prefix/]name) and label value syntax.
LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
# The keys the operator's selectors, rollouts and scraping rest on.
RESERVED_LABEL = r"^(tfmaas\.io|app\.kubernetes\.io|batch\.kubernetes\.io)/"
RESERVED_ANNOTATION = r"^(tfmaas\.io|prometheus\.io|batch\.kubernetes\.io)/"
REGEXES = (
    S3_BUCKET,
    S3_BUCKET_AND_KEY,
    S3_BAD_BUCKET,
    DOT_SEGMENT,
    S3_EMPTY_SEGMENT,
    QUERY_OR_FRAGMENT,
    ZERO_CPU,
    ZERO_MEMORY,
    WHOLE_NUMBER,
    IMAGE_REFERENCE,
    LABEL_KEY,
    RESERVED_LABEL,
    RESERVED_ANNOTATION,
)


def _matches(text: str, pattern: str) -> bool:
    return re.search(pattern, text) is not None


def _uri(node: Mapping[str, Any]) -> str:
    uri = node["uri"]
    if not isinstance(uri, str):
        raise TypeError("reported by the schema layer")
    return uri


def _uri_scheme_ok(storage: Mapping[str, Any]) -> bool:
    return _uri(storage).startswith(("s3://", "file:///"))


def _bucket_ok(bucket_pattern: str) -> Check:
    def check(node: Mapping[str, Any]) -> bool:
        uri = _uri(node)
        return not uri.startswith("s3://") or (
            _matches(uri, bucket_pattern) and not _matches(uri, S3_BAD_BUCKET)
        )

    return check


def _segments_plain(node: Mapping[str, Any]) -> bool:
    uri = _uri(node)
    return not _matches(uri, DOT_SEGMENT) and not _matches(uri, S3_EMPTY_SEGMENT)


def _no_query_or_escapes(node: Mapping[str, Any]) -> bool:
    uri = _uri(node)
    return not _matches(uri, QUERY_OR_FRAGMENT) and not (uri.startswith("file:") and "%" in uri)


def _kms_key_needs_sse_kms(storage: Mapping[str, Any]) -> bool:
    return "kmsKeyId" not in storage or storage.get("encryption") == "sse-kms"


def _s3_only_settings(storage: Mapping[str, Any]) -> bool:
    uses = "encryption" in storage or "caBundle" in storage
    return not uses or _uri(storage).startswith("s3://")


def _one_ca_source(ca_bundle: Mapping[str, Any]) -> bool:
    return ("configMapRef" in ca_bundle) != ("secretRef" in ca_bundle)


def _dataset_scheme_ok(dataset: Mapping[str, Any]) -> bool:
    return _uri(dataset).startswith(("builtin:", "file:///", "s3://"))


def _builtin_known(dataset: Mapping[str, Any]) -> bool:
    uri = _uri(dataset)
    return not uri.startswith("builtin:") or uri == "builtin:chinese-reviews"


def _fractions_leave_training_data(training: Mapping[str, Any]) -> bool:
    hyper = training["hyperparameters"]
    return float(hyper["validationFraction"]) + float(hyper["testFraction"]) <= 0.5


def _distillation_on_one_worker(training: Mapping[str, Any]) -> bool:
    return "distillation" not in training or int(training.get("workers", 1)) == 1


def _prune_below_max_tokens(training: Mapping[str, Any]) -> bool:
    prune = (training.get("compression") or {}).get("pruneVocabulary")
    return prune is None or int(prune) < int(training["model"]["maxTokens"])


def _tuning_has_validation(training: Mapping[str, Any]) -> bool:
    hyper = training.get("hyperparameters") or {}
    return "tuning" not in training or float(hyper.get("validationFraction", 0.1)) > 0


def _tuning_without_distillation(training: Mapping[str, Any]) -> bool:
    return "tuning" not in training or "distillation" not in training


def _parallel_within_max(tuning: Mapping[str, Any]) -> bool:
    return int(tuning.get("parallelTrials", 1)) <= int(tuning.get("maxTrials", 50))


def _range_or_choices(parameter: Mapping[str, Any]) -> bool:
    if "choices" in parameter:
        return "min" not in parameter and "max" not in parameter
    return "min" in parameter and "max" in parameter


def _min_below_max(parameter: Mapping[str, Any]) -> bool:
    if "min" not in parameter or "max" not in parameter:
        return True
    return float(parameter["min"]) < float(parameter["max"])


def _tuning_parameter_rules() -> list[Rule]:
    rules = []
    for name in TUNABLE_PARAMETERS:
        on = (*TUNING, "parameters", name)
        label = f"training.tuning.parameters.{name}"
        rules.append(
            Rule(
                on,
                _range_or_choices,
                f"{label} needs either min and max (a range) or choices, not both",
            )
        )
        rules.append(Rule(on, _min_below_max, f"{label}.max must be above min", ".max"))
    return rules


def _canary_differs(serving: Mapping[str, Any]) -> bool:
    canary, version = serving.get("canary"), serving["version"]
    return canary is None or isinstance(version, str) or canary["version"] != version


def _version_latest_or_positive(version: Any) -> bool:
    if isinstance(version, str):
        return version == "latest" or _matches(version, WHOLE_NUMBER)
    return int(version) >= 1


def _version_not_quoted(version: Any) -> bool:
    return not isinstance(version, str) or not _matches(version, WHOLE_NUMBER)


def _quantity_above_zero(zero_pattern: str) -> Check:
    def check(value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise TypeError("reported by the schema layer")
        return value > 0 if isinstance(value, int) else not _matches(value, zero_pattern)

    return check


def _image_reference(image: Any) -> bool:
    if not isinstance(image, str):
        raise TypeError("reported by the schema layer")
    return _matches(image, IMAGE_REFERENCE)


def _keys_ok(keys: Any) -> bool:
    if not isinstance(keys, Mapping):
        raise TypeError("reported by the schema layer")
    return all(
        len(key) <= 317 and key.find("/") <= 253 and _matches(key, LABEL_KEY) for key in keys
    )


def _none_reserved(pattern: str) -> Check:
    def check(keys: Any) -> bool:
        if not isinstance(keys, Mapping):
            raise TypeError("reported by the schema layer")
        return not any(_matches(key, pattern) for key in keys)

    return check


def _tolerations(check: Callable[[Mapping[str, Any]], bool]) -> Check:
    def all_pass(tolerations: Any) -> bool:
        if not isinstance(tolerations, list) or not all(
            isinstance(t, Mapping) for t in tolerations
        ):
            raise TypeError("reported by the schema layer")
        return all(check(toleration) for toleration in tolerations)

    return all_pass


def _exists_has_no_value(toleration: Mapping[str, Any]) -> bool:
    return toleration.get("value", "") == "" or toleration.get("operator") != "Exists"


def _keyless_means_exists(toleration: Mapping[str, Any]) -> bool:
    return toleration.get("key", "") != "" or toleration.get("operator") == "Exists"


_KEY_WORDS = (
    "[prefix/]name, the name 1-63 letters, digits, '-', '_' or '.' starting and ending with "
    "a letter or digit, the prefix a lowercase DNS name of at most 253 characters"
)


def _pod_rules(on: tuple[str, ...], *, label: str) -> list[Rule]:
    """spec.training.pod's and spec.serving.pod's rules, as in the CRD."""
    return [
        Rule(
            (*on, "nodeSelector"),
            _keys_ok,
            f"{label}.nodeSelector keys must be label keys: {_KEY_WORDS}",
        ),
        Rule(
            (*on, "tolerations"),
            _tolerations(_exists_has_no_value),
            f"{label}.tolerations: operator Exists takes no value",
        ),
        Rule(
            (*on, "tolerations"),
            _tolerations(_keyless_means_exists),
            f"{label}.tolerations: a toleration without a key needs operator Exists (it then "
            "tolerates every taint)",
        ),
        Rule((*on, "labels"), _keys_ok, f"{label}.labels keys must be label keys: {_KEY_WORDS}"),
        Rule(
            (*on, "labels"),
            _none_reserved(RESERVED_LABEL),
            f"{label}.labels may not set the operator's own labels (keys under tfmaas.io/, "
            "app.kubernetes.io/ or batch.kubernetes.io/): its selectors depend on them",
        ),
        Rule(
            (*on, "annotations"),
            _keys_ok,
            f"{label}.annotations keys must be annotation keys: {_KEY_WORDS}",
        ),
        Rule(
            (*on, "annotations"),
            _none_reserved(RESERVED_ANNOTATION),
            f"{label}.annotations may not set the operator's own annotations (keys under "
            "tfmaas.io/, prometheus.io/ or batch.kubernetes.io/)",
        ),
    ]


def _own_account_unguarded(serving: Mapping[str, Any]) -> bool:
    account = (serving.get("pod") or {}).get("serviceAccountName")
    return account is None or (serving.get("access") or {}).get("mode") != "kubernetes"


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


_BUCKET_WORDS = (
    "needs a bucket name right after s3:// (3-63 lowercase letters, digits, dots and hyphens, "
    "starting and ending with a letter or digit, not an IP address)"
)


def _uri_rules(
    on: tuple[str, ...], *, label: str, bucket_pattern: str, bucket_tail: str
) -> list[Rule]:
    """The rules every store or dataset URI shares, as in the CRD."""
    return [
        Rule(on, _bucket_ok(bucket_pattern), f"{label} s3:// {_BUCKET_WORDS}{bucket_tail}", ".uri"),
        Rule(
            on,
            _segments_plain,
            f"{label} may not hold empty, '.' or '..' path segments: write the path plainly",
            ".uri",
        ),
        Rule(
            on,
            _no_query_or_escapes,
            f"{label} may not hold a query or fragment (? or #), nor %-escapes in a file:/// "
            "path: write the path plainly",
            ".uri",
        ),
    ]


def _resource_rules(on: tuple[str, ...], *, label: str) -> list[Rule]:
    return [
        Rule(
            (*on, "cpu"),
            _quantity_above_zero(ZERO_CPU),
            f'{label}.cpu must be more than zero, e.g. "2" or "500m"',
        ),
        Rule(
            (*on, "memory"),
            _quantity_above_zero(ZERO_MEMORY),
            f'{label}.memory must be more than zero, e.g. "2Gi"',
        ),
    ]


def _image_rule(on: tuple[str, ...], *, label: str) -> Rule:
    return Rule(
        on,
        _image_reference,
        f"{label} must be an image reference like team/trainer:1.2 or "
        "team/trainer@sha256:<digest>: no spaces, a lowercase repository",
    )


STORAGE = ("spec", "storage")
TRAINING = ("spec", "training")
DATASET = (*TRAINING, "dataset")
TUNING = (*TRAINING, "tuning")
SERVING = ("spec", "serving")

CROSS_FIELD_RULES: list[Rule] = [
    Rule(
        (),
        _name_ok,
        "metadata.name must be at most 40 characters of lowercase letters, digits and '-', "
        "starting with a letter, because it names the Service, Deployments and training Jobs",
    ),
    Rule(
        STORAGE,
        _uri_scheme_ok,
        "storage.uri must start with s3:// (s3://bucket/prefix) or file:/// "
        "(an absolute local path)",
        ".uri",
    ),
    *_uri_rules(
        STORAGE,
        label="storage.uri",
        bucket_pattern=S3_BUCKET,
        bucket_tail=", e.g. s3://models/sentiment",
    ),
    Rule(
        STORAGE,
        _kms_key_needs_sse_kms,
        "storage.kmsKeyId needs storage.encryption: sse-kms",
        ".kmsKeyId",
    ),
    Rule(
        STORAGE,
        _s3_only_settings,
        "storage.encryption and storage.caBundle apply to s3:// stores only",
    ),
    Rule(
        (*STORAGE, "caBundle"),
        _one_ca_source,
        "storage.caBundle needs exactly one of configMapRef or secretRef",
    ),
    Rule(
        TRAINING,
        _fractions_leave_training_data,
        "training.hyperparameters.validationFraction + testFraction must be at most 0.5, "
        "so at least half the data is left to train on",
        ".hyperparameters.testFraction",
    ),
    Rule(
        TRAINING,
        _distillation_on_one_worker,
        "training.distillation needs workers: 1; a student is trained on one worker",
        ".workers",
    ),
    Rule(
        TRAINING,
        _prune_below_max_tokens,
        "training.compression.pruneVocabulary must be below model.maxTokens, or it prunes nothing",
        ".compression.pruneVocabulary",
    ),
    Rule(
        TRAINING,
        _tuning_has_validation,
        "training.tuning needs hyperparameters.validationFraction above 0: trials are judged on "
        "the validation split",
        ".hyperparameters.validationFraction",
    ),
    Rule(
        TRAINING,
        _tuning_without_distillation,
        "training.tuning and training.distillation cannot be combined; tune the teacher instead",
        ".tuning",
    ),
    Rule(
        TUNING,
        _parallel_within_max,
        "training.tuning.parallelTrials must not exceed maxTrials",
        ".parallelTrials",
    ),
    *_tuning_parameter_rules(),
    Rule(
        DATASET,
        _dataset_scheme_ok,
        "training.dataset.uri must be builtin:chinese-reviews, file:///path/to/data.csv "
        "(three slashes, an absolute path) or s3://bucket/key",
        ".uri",
    ),
    Rule(
        DATASET,
        _builtin_known,
        "training.dataset.uri: the only builtin dataset is builtin:chinese-reviews",
        ".uri",
    ),
    *_uri_rules(
        DATASET,
        label="training.dataset.uri",
        bucket_pattern=S3_BUCKET_AND_KEY,
        bucket_tail=" and the object's key, e.g. s3://datasets/reviews.csv",
    ),
    *_resource_rules((*TRAINING, "resources"), label="training.resources"),
    _image_rule((*TRAINING, "image"), label="training.image"),
    *_pod_rules((*TRAINING, "pod"), label="training.pod"),
    Rule(
        SERVING,
        _canary_differs,
        "serving.canary.version must differ from serving.version: the canary is a second "
        "version next to the pinned one",
        ".canary.version",
    ),
    Rule(
        SERVING,
        _own_account_unguarded,
        "serving.pod.serviceAccountName cannot be used with access.mode kubernetes: guarded "
        "serving pods run as the access gateway's ServiceAccount, which its RBAC binds",
        ".pod.serviceAccountName",
    ),
    Rule(
        (*SERVING, "version"),
        _version_latest_or_positive,
        "serving.version must be latest or a positive version number such as 3",
    ),
    Rule(
        (*SERVING, "version"),
        _version_not_quoted,
        "serving.version is a number written as a string; drop the quotes (version: 3, not "
        'version: "3"): only latest is a string',
    ),
    Rule(
        (*SERVING, "autoscaling"),
        _replica_bounds,
        "serving.autoscaling.minReplicas must not exceed maxReplicas",
        ".minReplicas",
    ),
    *_resource_rules((*SERVING, "resources"), label="serving.resources"),
    _image_rule((*SERVING, "image"), label="serving.image"),
    Rule(
        (*SERVING, "access"),
        _tls_needs_gateway,
        "serving.access.tls needs access.mode kubernetes: the access gateway is what "
        "terminates TLS",
        ".tls",
    ),
    *_pod_rules((*SERVING, "pod"), label="serving.pod"),
]


def cross_field_errors(
    document: Mapping[str, Any], root: tuple[str, ...] = (), prefix: str = ""
) -> list[FieldError]:
    """Apply the cross-field rules under `root` (a document validated from spec.training
    passes root=("spec", "training")). A rule whose fields have the wrong type is skipped:
    the schema layer already reported them, as the apiserver does."""
    found: list[FieldError] = []
    for rule in CROSS_FIELD_RULES:
        if rule.on[: len(root)] != root or (not rule.on and root):
            continue
        node: Any = document
        try:
            for name in rule.on:
                node = node[name]
            passed = rule.check(node)
        except (KeyError, TypeError, ValueError):
            continue
        if not passed:
            relative = rule.error_path[len(root) :] if rule.on else ("metadata", "name")
            found.append(FieldError(_path(prefix, relative), rule.message))
    return found
