"""The autoscaler of the stable track: which object (our HPA, a KEDA ScaledObject, none), what
the ScaledObject says, and that switching engines deletes the other object."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.unit.test_operator_manifests import CONFIG, service
from tfmaas.api.validation import SpecError
from tfmaas.errors import UserError
from tfmaas.operator.apply import Applier
from tfmaas.operator.autoscaling import converge_autoscaler, wanted_autoscaler
from tfmaas.operator.config import OperatorConfig
from tfmaas.operator.kube import KubeError
from tfmaas.operator.manifests.hpa import build_hpa
from tfmaas.operator.manifests.scaledobject import (
    build_scaled_object,
    request_rate_query,
    threshold,
)
from tfmaas.operator.serving import apply_serving_objects
from tfmaas.serving_policy import ServingPlan

KEDA = {"engine": "keda", "minReplicas": 2, "maxReplicas": 7, "targetRequestsPerSecond": 12.5}


@pytest.mark.parametrize("engine", ["KEDA", "knative", "", "hpa "])
def test_an_unknown_engine_is_refused_naming_the_field(engine: str) -> None:
    with pytest.raises(SpecError, match=r"serving\.autoscaling\.engine"):
        service(serving={"autoscaling": {"engine": engine}})


def test_scale_to_zero_is_refused_with_either_engine() -> None:
    # gRPC has no activator: a model at zero replicas would never be woken by a call.
    for engine in ("hpa", "keda"):
        with pytest.raises(SpecError, match=r"serving\.autoscaling\.minReplicas"):
            service(serving={"autoscaling": {"engine": engine, "minReplicas": 0}})


def test_the_default_engine_is_our_hpa() -> None:
    model = service()
    assert model.spec.serving.autoscaling.engine == "hpa"
    assert wanted_autoscaler(model, CONFIG) == build_hpa(model)


def test_autoscaling_off_wants_no_autoscaler_whatever_the_engine() -> None:
    model = service(serving={"autoscaling": {"enabled": False, "engine": "keda"}})
    assert wanted_autoscaler(model, CONFIG) is None


def test_the_scaled_object_targets_the_hpas_rate_bounds_and_behavior() -> None:
    model = service(serving={"autoscaling": KEDA})
    config = OperatorConfig(
        keda_prometheus_address="http://prom.monitoring.svc:9090", rate_window="90s"
    )
    scaled = build_scaled_object(model, config)
    hpa = build_hpa(model)
    assert (scaled["apiVersion"], scaled["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    meta = scaled["metadata"]
    assert (meta["name"], meta["namespace"]) == ("reviews", "ml")
    assert meta["ownerReferences"] == hpa["metadata"]["ownerReferences"]
    assert meta["labels"] == hpa["metadata"]["labels"]
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == hpa["spec"]["scaleTargetRef"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 7)
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == hpa["spec"]["behavior"]
    (trigger,) = spec["triggers"]
    assert (trigger["type"], trigger["metricType"]) == ("prometheus", "AverageValue")
    assert trigger["metadata"] == {
        "serverAddress": "http://prom.monitoring.svc:9090",
        "query": 'sum(rate(:tensorflow:serving:request_count{namespace="ml",'
        'model_service="reviews",track="stable"}[90s]))',
        "threshold": "12.5",
        "ignoreNullValues": "true",
    }


def test_the_query_counts_only_the_stable_track_of_this_model_service() -> None:
    query = request_rate_query(namespace="a", name="b", window="2m")
    assert 'track="stable"' in query and 'model_service="b"' in query
    assert 'namespace="a"' in query and "[2m]" in query


@pytest.mark.parametrize(
    ("value", "text"), [(50.0, "50"), (12.5, "12.5"), (0.25, "0.25"), (1e6, "1000000")]
)
def test_thresholds_are_plain_decimals(value: float, text: str) -> None:
    assert threshold(value) == text


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("rate_window", "2 m"),
        ("rate_window", "0m"),
        ("rate_window", "2m]) or vector(1e9"),
        ("keda_prometheus_address", "prometheus:9090"),
        ("keda_prometheus_address", "file:///etc/passwd"),
        ("keda_prometheus_address", 'http://p:9090"\nquery: x'),
    ],
)
def test_operator_settings_that_go_into_every_scaled_object_are_checked(
    setting: str, value: str
) -> None:
    with pytest.raises(UserError, match=setting):
        OperatorConfig.from_mapping({setting: value})


class RecordingKube:
    """An API server with a set of objects; `served` says which kinds it knows."""

    def __init__(self, *, served: set[str]) -> None:
        self.served = served
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("apply", manifest["kind"]))
        if manifest["kind"] not in self.served:
            raise KubeError(404, "Not Found", '{"message": "the server could not find it"}')
        self.objects[(manifest["kind"], manifest["metadata"]["name"])] = manifest
        return manifest

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        self.calls.append(("delete", kind))
        return self.objects.pop((kind, name), None) is not None


def _converge(applier: Applier, engine: str, *, full_pass: bool) -> None:
    model = service(serving={"autoscaling": {**KEDA, "engine": engine}})
    converge_autoscaler(applier, model, CONFIG, full_pass=full_pass)


def test_switching_engines_leaves_exactly_one_autoscaler() -> None:
    kube = RecordingKube(served={"HorizontalPodAutoscaler", "ScaledObject"})
    applier = Applier(kube)  # type: ignore[arg-type]
    _converge(applier, "hpa", full_pass=True)
    assert set(kube.objects) == {("HorizontalPodAutoscaler", "reviews")}
    # Not a full pass: the changed ScaledObject being sent is reason enough to clean up.
    _converge(applier, "keda", full_pass=False)
    assert set(kube.objects) == {("ScaledObject", "reviews")}
    _converge(applier, "hpa", full_pass=False)
    assert set(kube.objects) == {("HorizontalPodAutoscaler", "reviews")}
    # Unchanged and not a full pass: no calls at all.
    kube.calls.clear()
    _converge(applier, "hpa", full_pass=False)
    assert kube.calls == []


def test_turning_autoscaling_off_deletes_both_on_the_next_full_pass() -> None:
    kube = RecordingKube(served={"HorizontalPodAutoscaler", "ScaledObject"})
    applier = Applier(kube)  # type: ignore[arg-type]
    _converge(applier, "keda", full_pass=True)
    model = service(serving={"autoscaling": {"enabled": False}})
    converge_autoscaler(applier, model, CONFIG, full_pass=False)  # type: ignore[arg-type]
    assert kube.objects  # nothing changed that the autoscaler step sent
    converge_autoscaler(applier, model, CONFIG, full_pass=True)  # type: ignore[arg-type]
    assert kube.objects == {}


def test_keda_asked_for_where_it_is_not_installed_says_so() -> None:
    kube = RecordingKube(served={"HorizontalPodAutoscaler"})
    applier = Applier(kube)  # type: ignore[arg-type]
    with pytest.raises(KubeError, match=r"KEDA is not installed.*engine to hpa"):
        _converge(applier, "keda", full_pass=True)
    # And without KEDA the default engine works: deleting a ScaledObject finds nothing.
    _converge(applier, "hpa", full_pass=True)
    assert set(kube.objects) == {("HorizontalPodAutoscaler", "reviews")}


def test_a_full_pass_does_not_ask_again_for_what_it_knows_absent() -> None:
    now = [0.0]
    kube = RecordingKube(served={"HorizontalPodAutoscaler", "ScaledObject"})
    applier = Applier(kube, max_age=60, absent_max_age=3600, clock=lambda: now[0])  # type: ignore[arg-type]
    _converge(applier, "hpa", full_pass=True)
    assert kube.calls.count(("delete", "ScaledObject")) == 1
    for minute in range(1, 10):
        now[0] = 60.0 * minute
        _converge(applier, "hpa", full_pass=True)
    # The HPA is re-sent as it ages; the ScaledObject known absent is not asked about again
    assert kube.calls.count(("delete", "ScaledObject")) == 1
    # until the drift resync's age passes,
    now[0] = 3601.0
    _converge(applier, "hpa", full_pass=True)
    assert kube.calls.count(("delete", "ScaledObject")) == 2
    # or a watch reports it there (someone made one by hand).
    applier.present("keda.sh/v1alpha1", "ScaledObject", "ml", "reviews")
    _converge(applier, "hpa", full_pass=True)
    assert kube.calls.count(("delete", "ScaledObject")) == 3


class ScalingKube(RecordingKube):
    """Deployments get a status; the autoscaler being deleted writes its replica count once
    more just after the operator's apply, as an HPA's last sync can."""

    def __init__(self) -> None:
        kinds = {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"}
        super().__init__(served={*kinds, "HorizontalPodAutoscaler", "ScaledObject"})
        self.late_autoscaler_write: int | None = None

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        stored = super().apply(copy.deepcopy(manifest))
        if manifest["kind"] == "Deployment" and self.late_autoscaler_write is not None:
            stored["spec"]["replicas"] = self.late_autoscaler_write
            self.late_autoscaler_write = None
        return stored

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Any:
        return self.objects.get((kind, name))

    def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[Any]:
        return []


def test_replicas_an_autoscaler_set_are_taken_back_when_autoscaling_is_turned_off() -> None:
    kube = ScalingKube()
    applier = Applier(kube)  # type: ignore[arg-type]
    plan = ServingPlan(stable=1, canary=None)
    scaled = service(serving={"autoscaling": {"enabled": True, "maxReplicas": 2}})
    apply_serving_objects(kube, applier, scaled, plan, CONFIG, had_canary=False)  # type: ignore[arg-type]
    assert "replicas" not in kube.objects[("Deployment", "reviews")]["spec"]
    kube.objects[("Deployment", "reviews")]["spec"]["replicas"] = 2  # the HPA scaled out

    fixed = service(serving={"replicas": 1, "autoscaling": {"enabled": False}})
    kube.late_autoscaler_write = 2
    state = apply_serving_objects(kube, applier, fixed, plan, CONFIG, had_canary=False)  # type: ignore[arg-type]
    assert ("HorizontalPodAutoscaler", "reviews") not in kube.objects
    assert kube.objects[("Deployment", "reviews")]["spec"]["replicas"] == 1
    assert state.stable is not None and state.stable.desired == 1
    # Settled: the next pass sends nothing the applier sent a moment ago.
    kube.calls.clear()
    apply_serving_objects(kube, applier, fixed, plan, CONFIG, had_canary=False)  # type: ignore[arg-type]
    assert ("apply", "Deployment") not in kube.calls
