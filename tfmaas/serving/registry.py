"""Which model versions are loaded, their states and labels, kept equal to the desired state.

Each config (at start, from a reload, or the single `--model_base_path` model) is the complete
desired state, as in TF Serving: models left out are unloaded. Every poll of the base paths
re-applies each model's version policy: new versions load first, and only then do versions that
fell out of the policy unload, so a model never goes without an available version during a
rollout. Labels are applied after the loads and before the unloads, and may only name AVAILABLE
versions.
"""

from __future__ import annotations

import enum
import logging
import re
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from tensorflow_serving.config import model_server_config_pb2

from tfmaas.serving.errors import (
    ServingError,
    failed_precondition,
    invalid_argument,
    not_found,
)
from tfmaas.serving.runner import ServedVersion

log = logging.getLogger(__name__)

Loader = Callable[[str, int, Path], ServedVersion]
# ASCII digits only: str.isdigit() would take "١٢٣" too, which TF Serving's strtoll does not.
_VERSION_FOLDER = re.compile(r"[0-9]{1,18}")


class VersionState(enum.IntEnum):
    """Numbered as tensorflow.serving.ModelVersionStatus.State."""

    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass
class VersionEntry:
    version: int
    state: VersionState
    error: str = ""
    served: ServedVersion | None = None


@dataclass
class ModelRecord:
    config: model_server_config_pb2.ModelConfig
    versions: dict[int, VersionEntry] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name

    def available(self) -> list[int]:
        return sorted(v for v, r in self.versions.items() if r.state == VersionState.AVAILABLE)


def local_base_path(base_path: str) -> Path:
    if base_path.startswith("file://"):
        return Path(base_path.removeprefix("file://"))
    scheme, sep, _ = base_path.partition("://")
    if sep:
        # Same answer as TF Serving >= 2.7; models are pulled into a local volume first.
        raise invalid_argument(f"File system scheme '{scheme}' not implemented (file: {base_path})")
    return Path(base_path)


def versions_on_disk(base: Path) -> dict[int, str]:
    """Version number -> the folder it is loaded from, for numeric subdirectories holding a
    complete SavedModel or a TFLite model (served with --prefer_tflite_model).

    The folder keeps the name it was found under (`00000123/` is version 123, loaded from
    `00000123/`), and of two folders naming one version the one listed last in sorted order
    wins, with a warning: TF Serving's file_system_storage_path_source.cc
    (IndexChildrenByVersion over the sorted children).
    """
    try:
        entries = sorted(base.iterdir())
    except OSError:
        return {}
    found: dict[int, str] = {}
    for entry in entries:
        model_files = (entry / "saved_model.pb", entry / "model.tflite")
        if _VERSION_FOLDER.fullmatch(entry.name) and any(file.is_file() for file in model_files):
            version = int(entry.name)
            if version in found:
                log.warning(
                    "Duplicate version directories detected. Version %d will be loaded from %s, "
                    "%s will be ignored.",
                    version,
                    entry.name,
                    found[version],
                )
            found[version] = entry.name
    return found


def aspired_versions(
    config: model_server_config_pb2.ModelConfig, on_disk: Collection[int]
) -> set[int]:
    ordered = sorted(on_disk)
    policy = config.model_version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return set(ordered)
    if kind == "specific":
        return set(policy.specific.versions) & set(ordered)
    count = policy.latest.num_versions if kind == "latest" and policy.latest.num_versions else 1
    return set(ordered[-count:])


def _labelled_version(record: ModelRecord | None, label: str) -> int:
    """The version `label` points at; an unknown label is the caller's mistake, as in TF Serving."""
    if record is None or label not in record.labels:
        raise invalid_argument(f"Unrecognized servable version label: {label}")
    return record.labels[label]


class Registry:
    def __init__(
        self,
        loader: Loader,
        *,
        allow_labels_for_unavailable: bool = False,
        allow_version_labels: bool = True,
    ) -> None:
        self._load = loader
        self._allow_version_labels = allow_version_labels
        self._allow_unavailable_labels = allow_labels_for_unavailable
        self._models: dict[str, ModelRecord] = {}
        self._state_lock = threading.RLock()  # guards _models for readers
        self._change_lock = threading.Lock()  # one reload or poll at a time
        self.on_change: Callable[[], None] = lambda: None

    # --- desired state -------------------------------------------------------------------

    def apply_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Converge on `config`; raises FAILED_PRECONDITION for a label on an unloaded version."""
        wanted = {model.name: model for model in config.model_config_list.config}
        for model in wanted.values():
            local_base_path(model.base_path)  # reject s3:// etc. before changing anything
            if model.version_labels and not self._allow_version_labels:
                # --allow_version_labels=false, in TF Serving's words (server_core.cc).
                raise failed_precondition(
                    "Model version labels are not currently allowed by the server."
                )
        with self._change_lock:
            with self._state_lock:
                removed = [name for name in self._models if name not in wanted]
                for name, model in wanted.items():
                    record = self._models.get(name)
                    if record is None:
                        self._models[name] = ModelRecord(config=model)
                    else:
                        record.config = model
            for name in removed:
                self._unload_all(self._models[name])
                with self._state_lock:
                    del self._models[name]
            aspired = {name: self._load_aspired(self._models[name]) for name in wanted}
            try:
                self._apply_labels(wanted)
            finally:
                # Unloading only after relabelling: a request by label never meets a label that
                # still names the version being unloaded.
                for name, versions in aspired.items():
                    self._unload_unaspired(self._models[name], versions)
                self.on_change()

    def poll(self) -> None:
        with self._change_lock:
            for record in list(self._models.values()):
                self._sync(record)
            self.on_change()

    def close(self) -> None:
        with self._change_lock:
            for record in list(self._models.values()):
                self._unload_all(record)

    def _sync(self, record: ModelRecord) -> None:
        self._unload_unaspired(record, self._load_aspired(record))

    def _load_aspired(self, record: ModelRecord) -> set[int]:
        """Loads the versions the policy wants that are not loaded yet; returns those wanted."""
        base = local_base_path(record.config.base_path)
        on_disk = versions_on_disk(base)
        aspired = aspired_versions(record.config, on_disk)
        if not on_disk and not record.versions:
            log.warning("No versions of servable %s found under base path %s", record.name, base)
        for version in sorted(aspired):
            known = record.versions.get(version)
            if known is not None and (known.state == VersionState.AVAILABLE or known.error):
                continue  # loaded, or failed to load (not retried, like TF Serving after retries)
            self._load_version(record, version, base / on_disk[version])
        return aspired

    def _unload_unaspired(self, record: ModelRecord, aspired: set[int]) -> None:
        if not aspired & set(record.available()):
            return  # availability preserving: keep the old version until a new one is up
        for version, known in list(record.versions.items()):
            if version not in aspired and known.state == VersionState.AVAILABLE:
                self._unload(record, known)

    def _load_version(self, record: ModelRecord, version: int, path: Path) -> None:
        entry = VersionEntry(version=version, state=VersionState.LOADING)
        with self._state_lock:
            record.versions[version] = entry
        log.info("Loading servable: {name: %s version: %d} from %s", record.name, version, path)
        try:
            served = self._load(record.name, version, path)
        except Exception as exc:
            log.error(
                "Loading servable: {name: %s version: %d} failed: %s", record.name, version, exc
            )
            with self._state_lock:
                entry.state, entry.error = VersionState.END, f"{type(exc).__name__}: {exc}"
            return
        with self._state_lock:
            entry.served, entry.state = served, VersionState.AVAILABLE
        log.info(
            "Successfully loaded servable version {name: %s version: %d}", record.name, version
        )

    def _unload(self, record: ModelRecord, entry: VersionEntry) -> None:
        with self._state_lock:
            entry.state = VersionState.UNLOADING
            served, entry.served = entry.served, None
        if served is not None:
            served.close()
        with self._state_lock:
            entry.state = VersionState.END
        log.info("Unloaded servable version {name: %s version: %d}", record.name, entry.version)

    def _unload_all(self, record: ModelRecord) -> None:
        for entry in list(record.versions.values()):
            if entry.state == VersionState.AVAILABLE:
                self._unload(record, entry)

    def _apply_labels(self, wanted: dict[str, model_server_config_pb2.ModelConfig]) -> None:
        new_labels: dict[str, dict[str, int]] = {}
        for name, model in wanted.items():
            record = self._models[name]
            for label, version in model.version_labels.items():
                entry = record.versions.get(version)
                available = entry is not None and entry.state == VersionState.AVAILABLE
                if not available and not self._allow_unavailable_labels:
                    raise failed_precondition(
                        f"Request to assign label to version {version} of model {name}, "
                        "which is not currently available for inference"
                    )
                new_labels.setdefault(name, {})[label] = version
        with self._state_lock:
            for name, record in self._models.items():
                record.labels = new_labels.get(name, {})

    # --- lookups for requests ------------------------------------------------------------

    def resolve(self, name: str, version: int | None = None, label: str = "") -> ServedVersion:
        with self._state_lock:
            record = self._models.get(name)
            if label:
                version = _labelled_version(record, label)
            if version is None:
                available = record.available() if record else []
                if not available:
                    raise not_found(f"Servable not found for request: Latest({name})")
                version = available[-1]
            entry = record.versions.get(version) if record else None
            if entry is None or entry.state != VersionState.AVAILABLE or entry.served is None:
                raise not_found(f"Servable not found for request: Specific({name}, {version})")
            return entry.served

    def status(self, name: str, version: int | None = None, label: str = "") -> list[VersionEntry]:
        with self._state_lock:
            record = self._models.get(name)
            if label:
                version = _labelled_version(record, label)
            if record is None or not record.versions:
                raise not_found(f"Could not find any versions of model {name}")
            if version is not None:
                entry = record.versions.get(version)
                if entry is None:
                    raise not_found(f"Could not find version {version} of model {name}")
                return [VersionEntry(entry.version, entry.state, entry.error)]
            return [
                VersionEntry(e.version, e.state, e.error)
                for e in sorted(record.versions.values(), key=lambda e: -e.version)
            ]

    def load_failures(self) -> list[tuple[str, int, str]]:
        """(model, version, error) for every version whose load failed and is not loaded."""
        with self._state_lock:
            return [
                (record.name, entry.version, entry.error)
                for record in self._models.values()
                for entry in sorted(record.versions.values(), key=lambda e: e.version)
                if entry.error and entry.state == VersionState.END
            ]

    def model_names(self) -> list[str]:
        with self._state_lock:
            return sorted(self._models)

    def has_model(self, name: str) -> bool:
        """Whether `name` is one of the configured models (loaded or not)."""
        with self._state_lock:
            return name in self._models

    def has_available(self, name: str) -> bool:
        with self._state_lock:
            record = self._models.get(name)
            return bool(record and record.available())

    def labels(self, name: str) -> dict[str, int]:
        with self._state_lock:
            record = self._models.get(name)
            return dict(record.labels) if record else {}


__all__ = ["ModelRecord", "Registry", "ServingError", "VersionEntry", "VersionState"]
