"""Where a training or serving pod runs and who it runs as: the operator's default (the chart's
defaults.<part>.pod) under the ModelService's spec.<part>.pod, and for a GPU pod the GPU pool's
selector and tolerations on top.

Merge rules, one place for all of them: a scalar (serviceAccountName, priorityClassName) in the
spec replaces the default; a map (nodeSelector, labels, annotations) merges key by key, the
spec winning; a list (tolerations, imagePullSecrets) in the spec replaces the default's list
(so a spec can drop a default toleration; `[]` clears it); affinity merges by kind
(nodeAffinity, podAffinity, podAntiAffinity), each kind the spec gives replacing the
default's. GPU pods then add the GPU selector under their own (the pod's label wins) and each
GPU toleration not already there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tfmaas.operator.config import OperatorConfig

MERGED_MAPS = ("nodeSelector", "labels", "annotations", "affinity")


def merge_pod_settings(default: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    """spec.<part>.pod over the operator's default, by the rules above (camelCase)."""
    merged: dict[str, Any] = {key: value for key, value in default.items()}
    for key, value in spec.items():
        if key in MERGED_MAPS:
            merged[key] = {**dict(default.get(key) or {}), **dict(value)}
        else:
            merged[key] = value
    return merged


@dataclass(frozen=True)
class Placement:
    service_account_name: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    affinity: Mapping[str, Any] = field(default_factory=dict)
    priority_class_name: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    def pod_spec_fields(self) -> dict[str, Any]:
        """The pod spec fields this placement sets (serviceAccountName too, when given);
        absent ones are left out, so a pod without settings renders as before."""
        fields: dict[str, Any] = {}
        if self.service_account_name:
            fields["serviceAccountName"] = self.service_account_name
        if self.image_pull_secrets:
            fields["imagePullSecrets"] = [{"name": name} for name in self.image_pull_secrets]
        if self.node_selector:
            fields["nodeSelector"] = dict(self.node_selector)
        if self.tolerations:
            fields["tolerations"] = [dict(toleration) for toleration in self.tolerations]
        if self.affinity:
            fields["affinity"] = dict(self.affinity)
        if self.priority_class_name:
            fields["priorityClassName"] = self.priority_class_name
        return fields


def placement(
    default: Mapping[str, Any], spec: Mapping[str, Any], *, gpu: bool, config: OperatorConfig
) -> Placement:
    merged = merge_pod_settings(default, spec)
    node_selector = dict(merged.get("nodeSelector") or {})
    tolerations = [dict(toleration) for toleration in merged.get("tolerations") or []]
    if gpu:
        node_selector = {**dict(config.gpu_node_selector), **node_selector}
        tolerations += [dict(t) for t in config.gpu_tolerations if dict(t) not in tolerations]
    return Placement(
        service_account_name=merged.get("serviceAccountName"),
        image_pull_secrets=tuple(
            str(secret["name"]) for secret in merged.get("imagePullSecrets") or []
        ),
        node_selector=node_selector,
        tolerations=tuple(tolerations),
        affinity=dict(merged.get("affinity") or {}),
        priority_class_name=merged.get("priorityClassName"),
        labels=dict(merged.get("labels") or {}),
        annotations=dict(merged.get("annotations") or {}),
    )


def training_placement(
    spec_pod: Mapping[str, Any], *, gpu: bool, config: OperatorConfig
) -> Placement:
    return placement(config.training_pod, spec_pod, gpu=gpu, config=config)


def serving_placement(
    spec_pod: Mapping[str, Any], *, gpu: bool, config: OperatorConfig
) -> Placement:
    return placement(config.serving_pod, spec_pod, gpu=gpu, config=config)
