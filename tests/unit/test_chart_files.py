"""Checks of the chart's static files that need no helm: copies, values and their schema."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from tests.fixtures.chart import CHART_DIR, REPO_ROOT

CRD_SOURCE = REPO_ROOT / "tfmaas" / "api" / "crd.yaml"


def load_schema() -> dict:
    return json.loads((CHART_DIR / "values.schema.json").read_text())


def test_chart_crd_is_the_same_bytes_as_the_api_source() -> None:
    # templates/crds.yaml renders this copy; test_chart_render checks what it renders.
    chart_copy = CHART_DIR / "files" / "crds" / "modelservices.tfmaas.io.yaml"
    assert chart_copy.read_bytes() == CRD_SOURCE.read_bytes(), (
        "charts/tfmaas/files/crds/modelservices.tfmaas.io.yaml differs from tfmaas/api/crd.yaml: "
        "copy the source over it"
    )


def test_chart_has_no_crds_dir_helm_would_never_upgrade() -> None:
    # Helm installs crds/ once and skips it on upgrade: a CRD there would silently go stale.
    assert not (CHART_DIR / "crds").exists()


def test_chart_version_and_app_version_follow_the_package() -> None:
    from tfmaas import __version__

    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == __version__


def test_default_values_satisfy_the_schema() -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    jsonschema.Draft7Validator(load_schema()).validate(values)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("rbac", "scope"), "everywhere"),
        (("operator", "replicas"), "two"),
        (("image", "pullPolicy"), "Sometimes"),
        (("monitoring", "rateWindow"), "2 minutes"),
        (("watchNamespaces",), ["Not_A_Namespace"]),
        (("operator", "replicaCount"), 2),
    ],
)
def test_schema_rejects_wrong_values(path: tuple[str, ...], value: object) -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    target = values
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(load_schema()).validate(values)


def test_every_value_has_a_schema_entry() -> None:
    """additionalProperties false everywhere means a value missing from the schema is rejected."""

    def walk(values: dict, schema: dict, where: str) -> None:
        props = schema.get("properties", {})
        for key, value in values.items():
            assert key in props, f"{where}{key} is in values.yaml but not in values.schema.json"
            if isinstance(value, dict) and props[key].get("properties"):
                walk(value, props[key], f"{where}{key}.")

    walk(yaml.safe_load((CHART_DIR / "values.yaml").read_text()), load_schema(), "")


def test_every_value_is_in_the_readme_table() -> None:
    readme = (CHART_DIR / "README.md").read_text()

    def keys(values: dict, prefix: str = "") -> list[str]:
        out = []
        for key, value in values.items():
            if isinstance(value, dict) and value and key not in {"labels", "resources"}:
                out += keys(value, f"{prefix}{key}.")
            else:
                out.append(f"{prefix}{key}")
        return out

    missing = [
        k
        for k in keys(yaml.safe_load((CHART_DIR / "values.yaml").read_text()))
        if f"`{k}`" not in readme
    ]
    assert not missing, f"values missing from charts/tfmaas/README.md: {missing}"


def test_grafana_dashboard_has_the_operations_panels() -> None:
    dashboard = json.loads((CHART_DIR / "files" / "grafana-dashboard.json").read_text())
    panels = {p["title"]: p for p in dashboard["panels"]}
    assert set(panels) == {
        "Request rate by track and version",
        "Error ratio by track",
        "Latency p50 / p99 by track and version",
        "Replicas vs desired",
        "Batch size p50 / p99",
        "Model load time",
        "Versions",
        "Test metrics of the served version",
        "Training",
        "Operator reconciles",
    }
    latency = [t["expr"] for t in panels["Latency p50 / p99 by track and version"]["targets"]]
    assert all(":tensorflow:serving:request_latency_bucket" in e for e in latency)
    assert [e.split("(", 2)[1].split(",")[0] for e in latency] == ["0.5", "0.99"]
    # Stable and canary side by side: the serving panels keep the track label apart.
    for title in ("Request rate by track and version", "Error ratio by track"):
        assert "track" in panels[title]["targets"][0]["expr"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    # "All" needs no listed values: the variables come from the operator's gauges, and the
    # serving panels must not go blank where the operator is not scraped.
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["model"]["allValue"] == variables["namespace"]["allValue"] == ".*"
    for panel in dashboard["panels"]:
        assert [t["refId"] for t in panel["targets"]] == [
            chr(65 + i) for i in range(len(panel["targets"]))
        ]


def test_adapter_values_snippet_is_a_prometheus_adapter_chart_values_file() -> None:
    snippet = yaml.safe_load((CHART_DIR / "files" / "prometheus-adapter-values.yaml").read_text())
    assert snippet["rules"]["default"] is False
    (rule,) = snippet["rules"]["custom"]
    assert rule["name"]["as"] == "tfserving_requests_per_second"
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
        assert placeholder in rule["metricsQuery"]


@pytest.mark.parametrize("part", ["training", "serving"])
def test_pod_defaults_schema_is_the_crd_s_own(part: str) -> None:
    """defaults.<part>.pod reaches every pod, so helm holds it to spec.<part>.pod's schema,
    copied from the CRD: change the CRD and this says to copy it again."""
    from tfmaas.api import schema as crd_schema

    crd = crd_schema.to_json_schema(
        crd_schema.subschema(crd_schema.open_api_schema(), "spec", part, "pod")
    )
    values = load_schema()["properties"]["defaults"]["properties"][part]["properties"]["pod"]
    assert {k: v for k, v in values.items() if k != "description"} == {
        k: v for k, v in crd.items() if k != "description"
    }
