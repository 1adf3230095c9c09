"""Read a ModelService (or a bare spec.training) from a file, text or dict: default it as the
apiserver would, validate it, and return the typed spec or a UserError naming every problem."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tfmaas.api import schema as crd_schema
from tfmaas.api.spec import ModelService, TrainingSpec
from tfmaas.api.validation import FieldError, SpecError, cross_field_errors, schema_errors
from tfmaas.errors import UserError

PathOrDocument = str | os.PathLike[str] | Mapping[str, Any]


def _read_yaml_documents(path: Path) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; pass a ModelService YAML file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from None


def _pick_model_service(documents: list[Any], source: str) -> Mapping[str, Any]:
    services = [
        doc for doc in documents if isinstance(doc, Mapping) and doc.get("kind") == crd_schema.KIND
    ]
    if len(services) == 1:
        return services[0]
    if not services:
        raise UserError(
            f"{source} holds no ModelService: add a document with "
            f"apiVersion: {crd_schema.API_VERSION} and kind: {crd_schema.KIND}"
        )
    names = ", ".join(str((doc.get("metadata") or {}).get("name")) for doc in services)
    raise UserError(f"{source} holds {len(services)} ModelServices ({names}); keep one per file")


def validate_model_service(document: Any, source: str = "ModelService") -> dict[str, Any]:
    """The defaulted document, or SpecError listing every field error."""
    if not isinstance(document, Mapping):
        raise SpecError(source, [FieldError("", "must be a mapping with apiVersion, kind, spec")])
    defaulted = crd_schema.apply_defaults(document, crd_schema.served_schema())
    errors: list[FieldError] = []
    if defaulted.get("apiVersion") != crd_schema.API_VERSION:
        errors.append(
            FieldError(
                "apiVersion",
                f"must be {crd_schema.API_VERSION} (got {defaulted.get('apiVersion')!r})",
            )
        )
    if defaulted.get("kind") != crd_schema.KIND:
        errors.append(FieldError("kind", f"must be {crd_schema.KIND}"))
    metadata = defaulted.get("metadata")
    if not isinstance(metadata, Mapping) or not metadata.get("name"):
        errors.append(FieldError("metadata.name", "is required: give the ModelService a name"))
    errors.extend(schema_errors(defaulted))
    errors.extend(cross_field_errors(defaulted))
    if errors:
        raise SpecError(source, errors)
    return defaulted


def load_model_service(source: PathOrDocument) -> ModelService:
    """Load a ModelService from a YAML file path or a dict, defaulted and validated.

    Raises UserError (SpecError for field problems) saying what to fix.
    """
    if isinstance(source, Mapping):
        document: Any = source
        label = "the ModelService"
    else:
        path = Path(source)
        label = str(path)
        document = _pick_model_service(_read_yaml_documents(path), label)
    return ModelService.from_dict(validate_model_service(document, label))


def validate_training(document: Any, source: str = "spec.training") -> dict[str, Any]:
    """A defaulted, validated spec.training document (what `tfmaas train` receives)."""
    at = ("spec", "training")
    defaulted = crd_schema.apply_defaults(
        document, crd_schema.subschema(crd_schema.served_schema(), *at)
    )
    errors = schema_errors(defaulted, at=at, prefix="training")
    if isinstance(defaulted, Mapping):
        wrapped = {"spec": {"training": defaulted}}
        errors.extend(cross_field_errors(wrapped, root=("spec", "training"), prefix="training"))
    if errors:
        raise SpecError(source, errors, what="spec.training")
    return dict(defaulted)


def load_training_spec(source: str | Mapping[str, Any] | TrainingSpec) -> TrainingSpec:
    """Parse `--training-json` (a JSON object, or `@path` to a JSON/YAML file), a dict, or
    pass a spec that was already loaded through."""
    if isinstance(source, TrainingSpec):
        return source
    if isinstance(source, Mapping):
        return TrainingSpec.from_dict(validate_training(source))
    label = "--training-json"
    text = source
    if source.startswith("@"):
        path = Path(source[1:])
        label = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(
                f"{path}: cannot read the training spec ({exc.strerror}); check the path"
            ) from None
        except UnicodeDecodeError:
            raise UserError(f"{path}: not UTF-8 text; save the training spec as UTF-8") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UserError(f"{label}: neither JSON nor YAML: {exc}") from None
    return TrainingSpec.from_dict(validate_training(document, label))


def validate_pod_settings(document: Any, part: str, source: str) -> dict[str, Any]:
    """A `pod` mapping of spec.`part` (training or serving) held to the CRD's very rules: the
    chart's defaults.<part>.pod reach every pod, so they must not be laxer than a spec's."""
    root = ("spec", part, "pod")
    errors = schema_errors(document, at=root, prefix=source)
    if isinstance(document, Mapping):
        wrapped = {"spec": {part: {"pod": document}}}
        errors.extend(cross_field_errors(wrapped, root=root, prefix=source))
    if errors:
        raise SpecError(source, errors, what=f"spec.{part}.pod")
    return dict(document)
