"""The chart's monitoring glue fits what the operator builds: the PodMonitor selects the
serving pods and scrapes a port they have, and the adapter publishes the metric the HPA
targets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.chart import CHART_DIR, helm_binary, one, render

MONITORING_API = "monitoring.coreos.com/v1"


@pytest.fixture(scope="module")
def helm() -> Path:
    return helm_binary()


def serving_objects(
    access: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stable serving Deployment and HPA the operator builds for the sample ModelService."""
    from tfmaas.api import load_model_service
    from tfmaas.operator.config import OperatorConfig
    from tfmaas.operator.manifests.configmap import serving_config
    from tfmaas.operator.manifests.deployment import build_deployment
    from tfmaas.operator.manifests.hpa import build_hpa

    sample = yaml.safe_load(
        (CHART_DIR.parents[1] / "deploy" / "samples" / "sentiment.yaml").read_text()
    )
    sample["metadata"].update(namespace="models", uid="uid-1")
    if access is not None:
        sample["spec"]["serving"]["access"] = access
    model = load_model_service(sample)
    config = OperatorConfig()
    deployment = build_deployment(model, serving_config(model, "stable", 1), None, config)
    return deployment, build_hpa(model, config.request_rate_metric)


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        if operator == "Exists" and key not in labels:
            return False
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def scrape_targets(endpoints: list[dict[str, Any]], template: dict[str, Any]) -> list[int]:
    """The container ports the Prometheus Operator's PodMonitor endpoints make targets of in a
    pod: a port of the endpoint's name, kept by the endpoint's keep rules on the container."""
    targets = []
    for endpoint in endpoints:
        for container in template["spec"]["containers"]:
            meta = {"__meta_kubernetes_pod_container_name": container["name"]}
            kept = all(
                re.fullmatch(rule["regex"], meta[rule["sourceLabels"][0]])
                for rule in endpoint["relabelings"]
                if rule.get("action") == "keep"
            )
            targets += [
                port["containerPort"]
                for port in container["ports"]
                if port["name"] == endpoint["port"] and kept
            ]
    return targets


@pytest.mark.parametrize("guarded", [False, True])
def test_pod_monitor_scrapes_each_serving_pod_once_at_its_metrics_port(
    helm: Path, guarded: bool
) -> None:
    deployment, _ = serving_objects(access={"mode": "kubernetes"} if guarded else None)
    template = deployment["spec"]["template"]
    pod_monitor = one(render(helm, api_versions=[MONITORING_API]), "PodMonitor")
    assert selects(pod_monitor["spec"]["selector"], template["metadata"]["labels"])
    endpoints = pod_monitor["spec"]["podMetricsEndpoints"]
    # The same port and path the pod advertises for annotation-based scraping: TF Serving's
    # REST port, or with access control on the gateway's metrics port (a token-free path).
    annotations = template["metadata"]["annotations"]
    assert scrape_targets(endpoints, template) == [int(annotations["prometheus.io/port"])]
    assert {e["path"] for e in endpoints} == {annotations["prometheus.io/path"]}
    # The relabelled pod labels exist on the pods.
    for endpoint in endpoints:
        for relabel in endpoint["relabelings"]:
            (source,) = relabel["sourceLabels"]
            if not source.startswith("__meta_kubernetes_pod_label_"):
                continue
            label = source.removeprefix("__meta_kubernetes_pod_label_")
            assert any(
                key.replace(".", "_").replace("/", "_").replace("-", "_") == label
                for key in template["metadata"]["labels"]
            ), source


def test_pod_monitor_does_not_select_the_operator(helm: Path) -> None:
    objects = render(helm, api_versions=[MONITORING_API])
    operator_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert not selects(one(objects, "PodMonitor")["spec"]["selector"], operator_labels)


def test_adapter_publishes_the_metric_the_hpa_targets(helm: Path) -> None:
    _, hpa = serving_objects()
    (metric,) = hpa["spec"]["metrics"]
    config = yaml.safe_load(
        one(render(helm), "ConfigMap", "tfmaas-adapter-rule")["data"]["config.yaml"]
    )
    (rule,) = config["rules"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == rule["name"]["as"]
    # A Pods metric is looked up per pod: the rule must map the pod label to the pod resource.
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
