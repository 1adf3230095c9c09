"""Serving policy: which version the stable and canary tracks serve, and the TF Serving config
files that say so.

Owned here once so that the operator (in a cluster) and `tfmaas local run` (on one machine)
decide and render the same way. Pure, and importing neither TensorFlow nor kopf: the operator
image carries neither.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from tfmaas.api import BatchingSpec, QualityGate, ServingSpec

STABLE = "stable"
CANARY = "canary"
MODEL_CONFIG_FILE = "models.config"
MONITORING_CONFIG_FILE = "monitoring.config"
BATCHING_CONFIG_FILE = "batching.config"
METRICS_PATH = "/monitoring/prometheus/metrics"


class KnownVersion(Protocol):
    """A version with its recorded result: whether it can be served at all (it trained and
    was published) and whether the quality gate promoted it when its training finished."""

    @property
    def version(self) -> int: ...

    @property
    def servable(self) -> bool: ...

    @property
    def promoted(self) -> bool | None: ...


def judge_gate(
    version: int, metrics: Mapping[str, float], gate: QualityGate
) -> tuple[bool, str | None]:
    """(promoted, why not). Judged once, when the version's training finishes; the verdict is
    then recorded, so a later gate change re-judges nothing."""
    problems = gate.failures(metrics)
    if not problems:
        return True, None
    return False, f"version {version} is below the quality gate: {'; '.join(problems)}"


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str


@dataclass(frozen=True)
class ServingPlan:
    stable: int | None
    canary: int | None
    problems: tuple[Problem, ...] = ()


def plan_serving(
    records: Sequence[KnownVersion], serving: ServingSpec, current_stable: int | None
) -> ServingPlan:
    """Which version the stable and canary tracks serve.

    A pinned version wins over promotion (and may be one the gate refused). `latest` serves
    the newest promoted version. When neither can be honoured the current version keeps
    serving: a failed training or a refused version never takes a model down.
    """
    servable = sorted(record.version for record in records if record.servable)
    promoted = [record.version for record in records if record.servable and record.promoted]
    fallback = current_stable if current_stable in servable else None
    problems: list[Problem] = []
    pinned = serving.pinned_version
    stable: int | None
    if pinned is not None:
        if pinned in servable:
            stable = pinned
        else:
            stable = fallback
            problems.append(
                Problem(
                    "PinnedVersionUnavailable",
                    f"spec.serving.version pins version {pinned}, which has not been trained "
                    f"successfully (servable: {_listing(servable)}); pin one of those or set "
                    "it to latest",
                )
            )
    else:
        stable = max(promoted) if promoted else fallback
    canary: int | None = None
    if serving.canary is not None:
        wanted = serving.canary.version
        if wanted == stable:
            problems.append(
                Problem(
                    "CanaryIsStable",
                    f"spec.serving.canary.version {wanted} is already the stable version; "
                    "remove the canary or pick another version",
                )
            )
        elif wanted in servable:
            canary = wanted
        else:
            problems.append(
                Problem(
                    "CanaryVersionUnavailable",
                    f"spec.serving.canary.version {wanted} has not been trained successfully "
                    f"(servable: {_listing(servable)}); pick one of those or remove the canary",
                )
            )
    return ServingPlan(stable=stable, canary=canary, problems=tuple(problems))


def _listing(versions: Sequence[int]) -> str:
    return ", ".join(map(str, versions)) if versions else "none yet"


def model_config_text(*, name: str, base_path: str, labels: Mapping[str, int]) -> str:
    """TF Serving's ModelServerConfig: load exactly the labelled versions, and label them.

    The operator gives each track its own server (one label each); the local run serves both
    tracks from one server (both labels)."""
    versions = " ".join(f"versions: {version}" for version in sorted(set(labels.values())))
    label_lines = [
        f'    version_labels {{ key: "{label}" value: {version} }}\n'
        for label, version in labels.items()
    ]
    return (
        "model_config_list {\n"
        "  config {\n"
        f'    name: "{name}"\n'
        f'    base_path: "{base_path}"\n'
        '    model_platform: "tensorflow"\n'
        f"    model_version_policy {{ specific {{ {versions} }} }}\n"
        + "".join(label_lines)
        + "  }\n"
        "}\n"
    )


def monitoring_config_text() -> str:
    return f'prometheus_config {{\n  enable: true\n  path: "{METRICS_PATH}"\n}}\n'


def batching_config_text(batching: BatchingSpec, *, num_batch_threads: int) -> str:
    """TF Serving's BatchingParameters. `num_batch_threads` is the caller's: the operator
    sizes it to the pod's CPUs, where the server would count the node's."""
    return (
        f"max_batch_size {{ value: {batching.max_batch_size} }}\n"
        f"batch_timeout_micros {{ value: {batching.batch_timeout_micros} }}\n"
        f"max_enqueued_batches {{ value: {batching.max_enqueued_batches} }}\n"
        f"num_batch_threads {{ value: {num_batch_threads} }}\n"
    )
