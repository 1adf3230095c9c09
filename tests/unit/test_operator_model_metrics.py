"""Per-ModelService gauges: what each status says, and series that go with the ModelService."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tfmaas.operator import metrics
from tfmaas.operator.model_metrics import gauge_values, publish, remove


def series(namespace: str, name: str) -> dict[str, float]:
    """This ModelService's tfmaas_modelservice_* samples, by metric name."""
    found = {}
    for family in text_string_to_metric_families(generate_latest(metrics.REGISTRY).decode()):
        for sample in family.samples:
            if sample.name.startswith("tfmaas_modelservice_") and sample.labels == {
                "namespace": namespace,
                "modelservice": name,
            }:
                found[sample.name] = sample.value
    return found


def status(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "servingVersion": 2,
        "canaryVersion": 3,
        "latestVersion": 4,
        "versions": [
            {"version": 2, "state": "Succeeded", "metrics": {"accuracy": 0.91, "f1": 0.9}},
            {"version": 3, "state": "Succeeded", "metrics": {"accuracy": 0.93}, "promoted": True},
            {"version": 4, "state": "Training"},
        ],
        "conditions": [{"type": "Ready", "status": "True"}],
    }
    base.update(overrides)
    return base


def test_a_status_of_any_shape_gives_no_series_for_what_it_lacks() -> None:
    for hostile in (
        {},
        {"versions": "x", "conditions": {"Ready": "True"}, "servingVersion": "2"},
        {"versions": [None, {"version": True}, {"version": 1, "metrics": "0.9"}]},
        {"servingVersion": True, "canaryVersion": [3], "latestVersion": {"v": 4}},
    ):
        values = gauge_values(hostile)
        assert {k: v for k, v in values.items() if v is not None} == {
            "ready": 0.0,
            "training_running": 0.0,
            "training_failed": 0.0,
            "below_quality_gate": 0.0,
        }
    unscored = {"servingVersion": 1, "versions": [{"version": 1, "metrics": {"accuracy": "hi"}}]}
    assert gauge_values(unscored)["served_version"] == 1.0
    assert gauge_values(unscored)["served_accuracy"] is None


def test_the_served_version_scores_are_the_served_ones_not_the_newest() -> None:
    values = gauge_values(status())
    assert values == {
        "served_version": 2.0,
        "canary_version": 3.0,
        "latest_version": 4.0,
        "served_accuracy": 0.91,
        "served_f1": 0.9,
        "ready": 1.0,
        "training_running": 1.0,
        "training_failed": 0.0,
        "below_quality_gate": 0.0,
    }


def test_a_failed_or_gated_newest_version_is_flagged_until_a_newer_one_finishes() -> None:
    failed = status(
        versions=[
            {"version": 2, "state": "Succeeded", "promoted": True},
            {"version": 3, "state": "Failed", "message": "OOM"},
        ]
    )
    assert gauge_values(failed)["training_failed"] == 1.0
    assert gauge_values(failed)["below_quality_gate"] == 0.0
    gated = status(
        versions=[
            {"version": 2, "state": "Succeeded", "promoted": True},
            {"version": 3, "state": "Succeeded", "promoted": False},
            {"version": 4, "state": "Training"},
        ]
    )
    assert gauge_values(gated)["below_quality_gate"] == 1.0
    assert gauge_values(gated)["training_failed"] == 0.0
    fixed = status(versions=[*gated["versions"][:2], {"version": 4, "state": "Succeeded"}])
    assert gauge_values(fixed)["below_quality_gate"] == 0.0


def test_series_follow_the_status_and_go_with_the_model_service() -> None:
    publish(namespace="ml", name="sentiment", status=status())
    publish(namespace="ml", name="other", status=status())
    assert series("ml", "sentiment")["tfmaas_modelservice_canary_version"] == 3.0
    assert series("ml", "sentiment")["tfmaas_modelservice_served_accuracy"] == 0.91

    publish(namespace="ml", name="sentiment", status=status(canaryVersion=None))
    assert "tfmaas_modelservice_canary_version" not in series("ml", "sentiment")

    remove(namespace="ml", name="sentiment")
    remove(namespace="ml", name="sentiment")  # twice: a second DELETED event is harmless
    assert series("ml", "sentiment") == {}
    assert series("ml", "other")["tfmaas_modelservice_ready"] == 1.0
    remove(namespace="ml", name="other")
