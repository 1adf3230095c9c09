"""The serving steps of a reconcile: converge the ConfigMaps, Deployments, Services, autoscaler and
PDB of the planned versions, observe the rollout, and drop configurations no longer used."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tfmaas.api import ModelService
from tfmaas.api.spec import ACCESS_KUBERNETES
from tfmaas.operator.apply import Applier
from tfmaas.operator.autoscaling import converge_autoscaler
from tfmaas.operator.config import OperatorConfig
from tfmaas.operator.kube import Kube
from tfmaas.operator.manifests.access import (
    access_mode,
    build_gateway_cluster_role_binding,
    build_gateway_service_account,
    build_network_policy,
    guarded,
)
from tfmaas.operator.manifests.configmap import build_config_map, serving_config
from tfmaas.operator.manifests.deployment import build_deployment
from tfmaas.operator.manifests.pdb import build_pdb
from tfmaas.operator.manifests.service import build_headless_service, build_service
from tfmaas.operator.naming import (
    CANARY,
    COMPONENT_LABEL,
    MODEL_SERVICE_LABEL,
    SERVING_COMPONENT,
    STABLE,
    deployment_name,
)
from tfmaas.operator.status import DeploymentState
from tfmaas.operator.training import owned_by
from tfmaas.serving_policy import ServingPlan


@dataclass(frozen=True)
class ServingState:
    """What a serving pass found: each track's rollout, and the access mode it stands at."""

    stable: DeploymentState | None
    canary: DeploymentState | None
    access_mode: str


def deployment_state(kube: Kube, namespace: str, name: str) -> DeploymentState | None:
    found = kube.get("apps/v1", "Deployment", namespace, name)
    return DeploymentState.from_object(found) if found else None


def converge_serving(
    kube: Kube,
    applier: Applier,
    service: ModelService,
    stable: int,
    canary: int | None,
    config: OperatorConfig,
    had_canary: bool,
) -> tuple[set[str], bool]:
    """Apply everything serving needs; returns the ConfigMaps now in use, and whether this
    was a full pass (something changed, or the periodic re-send)."""
    namespace = service.namespace or "default"
    serving = service.spec.serving
    tracks: list[tuple[str, int, int | None]] = [
        (STABLE, stable, None if serving.autoscaling.enabled else serving.replicas)
    ]
    if canary is not None and serving.canary is not None:
        tracks.append((CANARY, canary, serving.canary.replicas))
    if guarded(service, config):
        # Before the Deployment, whose pods need the gateway's ServiceAccount to be created.
        for manifest in access_objects(service, config):
            applier.apply(manifest)
    in_use = set()
    sent = []
    for track, version, replicas in tracks:
        settings = serving_config(service, track, version)
        config_map = build_config_map(service, settings, config)
        applier.apply(config_map)
        in_use.add(config_map["metadata"]["name"])
        sent.append(applier.apply(build_deployment(service, settings, replicas, config)))
    # Deleting what must not exist costs calls that find nothing; do it only when something
    # changed or the stable Deployment was re-sent (after a start, then every max_age).
    full_pass = sent[0]
    if canary is None and (full_pass or had_canary):
        canary_name = deployment_name(service.name, CANARY)
        applier.delete("apps/v1", "Deployment", namespace, canary_name, service=service.name)
    applier.apply(build_service(service))
    applier.apply(build_headless_service(service))
    converge_autoscaler(applier, service, config, full_pass=full_pass)
    applier.apply(build_pdb(service))
    return in_use, full_pass


def access_objects(service: ModelService, config: OperatorConfig) -> list[dict[str, Any]]:
    return [
        build_gateway_service_account(service),
        build_gateway_cluster_role_binding(service),
        build_network_policy(service, config),
    ]


def converge_access(
    kube: Kube,
    applier: Applier,
    service: ModelService,
    config: OperatorConfig,
    *,
    previous_mode: str | None,
    rolled: bool,
) -> str:
    """The access mode the serving objects now stand at (status.accessMode). A ModelService
    switched back to none keeps its gateway's objects until no guarded pod is left: deleting
    the ServiceAccount earlier would revoke the token its gateways review calls with."""
    mode = access_mode(service, config)
    if mode == ACCESS_KUBERNETES or previous_mode != ACCESS_KUBERNETES:
        return mode
    if not rolled:
        return ACCESS_KUBERNETES
    for manifest in access_objects(service, config):
        meta = manifest["metadata"]
        namespace = meta.get("namespace", "")
        kube.delete(manifest["apiVersion"], manifest["kind"], namespace, meta["name"])
        applier.forget_object(manifest["apiVersion"], manifest["kind"], namespace, meta["name"])
    return mode


def prune_config_maps(kube: Kube, service: ModelService, in_use: set[str]) -> None:
    """Old serving configurations go once no rollout can still need them."""
    namespace = service.namespace or "default"
    selector = f"{MODEL_SERVICE_LABEL}={service.name},{COMPONENT_LABEL}={SERVING_COMPONENT}"
    for item in kube.list("v1", "ConfigMap", namespace, selector):
        name = item["metadata"]["name"]
        if name not in in_use and owned_by(item, service.uid):
            kube.delete("v1", "ConfigMap", namespace, name)


def _replicas_drifted(service: ModelService, stable: DeploymentState) -> bool:
    serving = service.spec.serving
    return not serving.autoscaling.enabled and stable.desired != serving.replicas


def apply_serving_objects(
    kube: Kube,
    applier: Applier,
    service: ModelService,
    plan: ServingPlan,
    config: OperatorConfig,
    had_canary: bool,
    versions_moved: bool = True,
    previous_access_mode: str | None = None,
) -> ServingState:
    """Converge serving for `plan` (which has a stable version)."""
    assert plan.stable is not None
    namespace = service.namespace or "default"
    in_use, full_pass = converge_serving(
        kube, applier, service, plan.stable, plan.canary, config, had_canary=had_canary
    )
    stable = deployment_state(kube, namespace, deployment_name(service.name, STABLE))
    if stable is not None and _replicas_drifted(service, stable):
        # Someone else set the stable Deployment's replicas while autoscaling is off: the
        # autoscaler this pass deletes (its last sync can land after the apply), or a hand
        # `kubectl scale deployment`. The applier would not send the unchanged manifest again
        # before its copy expires, and a settled ModelService is not reconciled again: send it.
        applier.forget_object(
            "apps/v1", "Deployment", namespace, deployment_name(service.name, STABLE)
        )
        converge_serving(
            kube, applier, service, plan.stable, plan.canary, config, had_canary=had_canary
        )
        stable = deployment_state(kube, namespace, deployment_name(service.name, STABLE))
    canary = None
    if plan.canary is not None:
        canary = deployment_state(kube, namespace, deployment_name(service.name, CANARY))
    rolled = stable is not None and stable.rolled_out(plan.stable)
    canary_rolled = plan.canary is None or (canary is not None and canary.rolled_out(plan.canary))
    # Listing ConfigMaps on every reconcile would be wasted: only after a change.
    if rolled and canary_rolled and (full_pass or versions_moved):
        prune_config_maps(kube, service, in_use)
    access = converge_access(
        kube,
        applier,
        service,
        config,
        previous_mode=previous_access_mode,
        rolled=rolled and canary_rolled,
    )
    return ServingState(stable=stable, canary=canary, access_mode=access)
