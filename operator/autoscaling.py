"""The one place that decides which autoscaler object a ModelService's stable track has: our
HPA (engine hpa), a KEDA ScaledObject (engine keda), or none (autoscaling off). Whatever it
applies, it deletes the other kinds, so switching engines never leaves two scalers fighting
over one Deployment."""

from __future__ import annotations

from typing import Any

from tfmaas.api import ModelService
from tfmaas.api.spec import AUTOSCALING_KEDA
from tfmaas.operator.apply import Applier
from tfmaas.operator.config import OperatorConfig
from tfmaas.operator.kube import KubeError
from tfmaas.operator.manifests.common import namespace_of
from tfmaas.operator.manifests.hpa import build_hpa
from tfmaas.operator.manifests.scaledobject import (
    SCALED_OBJECT,
    SCALED_OBJECT_API,
    build_scaled_object,
)
from tfmaas.operator.naming import STABLE, deployment_name

HPA_API, HPA = "autoscaling/v2", "HorizontalPodAutoscaler"
AUTOSCALER_KINDS: tuple[tuple[str, str], ...] = ((HPA_API, HPA), (SCALED_OBJECT_API, SCALED_OBJECT))


def wanted_autoscaler(service: ModelService, config: OperatorConfig) -> dict[str, Any] | None:
    autoscaling = service.spec.serving.autoscaling
    if not autoscaling.enabled:
        return None
    if autoscaling.engine == AUTOSCALING_KEDA:
        return build_scaled_object(service, config)
    return build_hpa(service, config.request_rate_metric)


def converge_autoscaler(
    applier: Applier,
    service: ModelService,
    config: OperatorConfig,
    *,
    full_pass: bool,
) -> None:
    """Apply the wanted autoscaler; delete the others when something changed (the wanted one
    was sent) or on a full pass, unless this process already knows them absent."""
    wanted = wanted_autoscaler(service, config)
    sent = False
    if wanted is not None:
        try:
            sent = applier.apply(wanted)
        except KubeError as exc:
            if exc.status == 404 and wanted["kind"] == SCALED_OBJECT:
                raise KubeError(
                    404,
                    "KEDA is not installed (the API server serves no keda.sh/v1alpha1 "
                    "ScaledObject): install KEDA, or set spec.serving.autoscaling.engine to hpa",
                ) from None
            raise
    if not (sent or full_pass):
        return
    namespace = namespace_of(service)
    name = deployment_name(service.name, STABLE)
    for api_version, kind in AUTOSCALER_KINDS:
        if wanted is not None and (api_version, kind) == (wanted["apiVersion"], wanted["kind"]):
            continue
        try:
            applier.delete(api_version, kind, namespace, name, service=service.name)
        except KubeError as exc:
            # Without KEDA's CRD the API server answers 404 for the whole resource type, which
            # delete already reads as absent; RBAC without keda.sh is the same: nothing to clean.
            if kind == SCALED_OBJECT and exc.status == 403:
                applier.absent(api_version, kind, namespace, name, service=service.name)
                continue
            raise
