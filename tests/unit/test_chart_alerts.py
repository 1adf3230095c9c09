"""The chart's alerts, as `promtool check rules` and `promtool test rules` judge them.

The rules are the ones `helm template` renders into the PrometheusRule; the unit cases feed
each alert the series it reads (with the labels the operator, the PodMonitor and
kube-state-metrics give them) and check when it fires and when it must not.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.chart import CHART_DIR, helm_binary, one, render

MONITORING_API = "monitoring.coreos.com/v1"
RULE_API = "monitoring.coreos.com/v1/PrometheusRule"
README = CHART_DIR / "README.md"


@pytest.fixture(scope="module")
def helm() -> Path:
    return helm_binary()


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed: run .ci/install-system-packages")
    return found


def rule_groups(helm: Path, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    rule = one(render(helm, values, api_versions=[MONITORING_API, RULE_API]), "PrometheusRule")
    return list(rule["spec"]["groups"])


def alerts(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def test_the_rule_carries_the_release_label_kube_prometheus_stack_selects(helm: Path) -> None:
    assert not [o for o in render(helm) if o["kind"] == "PrometheusRule"], (
        "rendered without the Prometheus Operator's API"
    )
    # Only the PodMonitor and ServiceMonitor CRDs installed: no PrometheusRule to hold it.
    partial = render(helm, api_versions=[MONITORING_API])
    assert not [o for o in partial if o["kind"] == "PrometheusRule"]
    assert one(partial, "ServiceMonitor")
    rendered = render(helm, api_versions=[MONITORING_API, RULE_API])
    assert one(rendered, "PrometheusRule")["metadata"]["labels"]["release"] == (
        "kube-prometheus-stack"
    )
    mine = render(
        helm,
        {"monitoring.prometheusRule.labels": {"release": "monitoring"}},
        api_versions=[MONITORING_API, RULE_API],
    )
    assert one(mine, "PrometheusRule")["metadata"]["labels"]["release"] == "monitoring"
    off = render(
        helm, {"monitoring.prometheusRule.enabled": False}, api_versions=[MONITORING_API, RULE_API]
    )
    assert not [o for o in off if o["kind"] == "PrometheusRule"]
    # honorLabels keeps the per-ModelService gauges' namespace label the ModelService's.
    monitor = one(rendered, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True


def test_every_alert_has_a_runbook_paragraph(helm: Path) -> None:
    readme = README.read_text()
    for name, rule in alerts(rule_groups(helm)).items():
        assert rule["annotations"]["runbook"] == f"charts/tfmaas/README.md#{name.lower()}"
        assert f"#### {name}\n" in readme, f"no runbook paragraph for {name}"
        assert "runbook_url" not in rule["annotations"]
    linked = alerts(rule_groups(helm, {"monitoring.prometheusRule.runbookBaseUrl": "https://x/r"}))
    assert linked["TfmaasTrainingFailed"]["annotations"]["runbook_url"] == (
        "https://x/r#tfmaastrainingfailed"
    )


def test_promtool_checks_the_rendered_rules(helm: Path, promtool: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule_groups(helm)}))
    checked = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 8 rules found" in checked.stdout


def test_promtool_refuses_a_broken_rule(promtool: str, tmp_path: Path) -> None:
    """The check above can fail: a rule with an unparsable expression does."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        yaml.safe_dump({"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "rate(x[5m]"}]}]})
    )
    checked = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    assert checked.returncode != 0


OPERATOR = {"job": "tfmaas", "instance": "10.0.0.5:9090", "pod": "tfmaas-0"}
SERVING = {"job": "serving", "pod": "s-1", "model_service": "s", "track": "stable"}
REQUESTS = ":tensorflow:serving:request_count"
LATENCY = ":tensorflow:serving:request_latency_bucket"
KSM = "kube_horizontalpodautoscaler_"
RECONCILES = "tfmaas_operator_reconciles_total"


def series(metric: str, values: str, *labelsets: dict[str, str], **labels: str) -> dict[str, str]:
    merged = {k: v for labelset in labelsets for k, v in labelset.items()} | labels
    text = ", ".join(f'{key}="{value}"' for key, value in merged.items())
    return {"series": f"{metric}{{{text}}}", "values": values}


def gauge(name: str, service: str, values: str) -> dict[str, str]:
    return series(
        f"tfmaas_modelservice_{name}", values, OPERATOR, namespace="ml", modelservice=service
    )


def alert(name: str, at: str, *firing: dict[str, str]) -> dict[str, Any]:
    return {
        "alertname": name,
        "eval_time": at,
        "exp_alerts": [{"exp_labels": labels} for labels in firing],
    }


def fired(**labels: str) -> dict[str, str]:
    return {"severity": "warning", "namespace": "ml"} | labels


UNIT_CASES: list[dict[str, Any]] = [
    {
        "name": "model services",
        "interval": "1m",
        "input_series": [
            gauge("ready", "s", "1x10 0x40"),  # Ready for 10 minutes, then not
            gauge("ready", "ok", "1x50"),
            gauge("training_failed", "s", "0x5 1x10 0x30"),
            gauge("below_quality_gate", "ok", "0x20 1x30"),
        ],
        "alert_rule_test": [
            alert("TfmaasModelServiceNotReady", "20m"),  # not Ready for 10m: not yet
            alert("TfmaasModelServiceNotReady", "30m", fired(modelservice="s")),
            alert("TfmaasTrainingFailed", "4m"),
            alert("TfmaasTrainingFailed", "6m", fired(modelservice="s")),
            alert("TfmaasTrainingFailed", "20m"),  # a newer version trained
            alert("TfmaasVersionBelowQualityGate", "25m", fired(modelservice="ok")),
        ],
    },
    {
        "name": "serving errors and latency",
        "interval": "1m",
        "input_series": [
            series(REQUESTS, "0+90x40", SERVING, namespace="ml", model_name="s", status="OK"),
            series(REQUESTS, "0+10x40", SERVING, namespace="ml", model_name="s", status="INTERNAL"),
            # Another model with as many client mistakes: not the model's fault, no alert.
            series(REQUESTS, "0+90x40", namespace="ml", model_service="c", status="OK"),
            series(REQUESTS, "0+10x40", namespace="ml", model_service="c", status="NOT_FOUND"),
            # Half the requests of s take between 0.1 s and 1 s: p99 about 0.98 s.
            series(LATENCY, "0+50x40", SERVING, namespace="ml", le="100000"),
            series(LATENCY, "0+100x40", SERVING, namespace="ml", le="1000000"),
            series(LATENCY, "0+100x40", SERVING, namespace="ml", le="+Inf"),
        ],
        "alert_rule_test": [
            alert("TfmaasServingErrorRatioHigh", "8m"),
            alert("TfmaasServingErrorRatioHigh", "20m", fired(model_service="s")),
            alert("TfmaasServingLatencyHigh", "10m"),
            alert("TfmaasServingLatencyHigh", "25m", fired(model_service="s")),
        ],
    },
    {
        "name": "autoscaling",
        "interval": "1m",
        "input_series": [
            gauge("ready", "s", "1x60"),
            gauge("ready", "busy", "1x60"),
            series(
                f"{KSM}status_current_replicas", "3x60", namespace="ml", horizontalpodautoscaler="s"
            ),
            series(f"{KSM}spec_max_replicas", "3x60", namespace="ml", horizontalpodautoscaler="s"),
            # Not a tfmaas HPA: never alerted on here.
            series(
                f"{KSM}status_current_replicas",
                "5x60",
                namespace="ml",
                horizontalpodautoscaler="web",
            ),
            series(
                f"{KSM}spec_max_replicas", "5x60", namespace="ml", horizontalpodautoscaler="web"
            ),
            # busy's pods export requests; s's export nothing.
            series(REQUESTS, "0+60x60", namespace="ml", model_service="busy", status="OK"),
        ],
        "alert_rule_test": [
            alert("TfmaasAutoscalerAtMaxReplicas", "20m"),
            alert("TfmaasAutoscalerAtMaxReplicas", "40m", fired(horizontalpodautoscaler="s")),
            alert("TfmaasRequestRateMissing", "10m"),
            alert("TfmaasRequestRateMissing", "20m", fired(modelservice="s")),
        ],
    },
    {
        "name": "operator",
        "interval": "1m",
        "input_series": [
            series(RECONCILES, "0+5x40", OPERATOR, namespace="tfmaas-system", result="ok"),
            series(RECONCILES, "0+5x40", OPERATOR, namespace="tfmaas-system", result="invalid"),
            series(RECONCILES, "0x10 0+1x30", OPERATOR, namespace="tfmaas-system", result="error"),
        ],
        "alert_rule_test": [
            alert("TfmaasOperatorReconcileErrors", "20m"),  # invalid specs alone: no alert
            alert(
                "TfmaasOperatorReconcileErrors",
                "30m",
                fired(namespace="tfmaas-system", pod="tfmaas-0"),
            ),
        ],
    },
]


def test_promtool_unit_cases(helm: Path, promtool: str, tmp_path: Path) -> None:
    groups = rule_groups(helm)
    # Annotations are checked by `check rules`; the cases here are about when alerts fire.
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    cases = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": UNIT_CASES}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(cases, sort_keys=False))
    tested = subprocess.run(
        [promtool, "test", "rules", "tests.yaml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    covered = {case["alertname"] for group in UNIT_CASES for case in group["alert_rule_test"]}
    assert covered == set(alerts(groups))
