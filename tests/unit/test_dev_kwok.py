"""kwok's configuration: the Stage that stands in for the trainer must say what the trainer says."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tfmaas.dev import kwok
from tfmaas.operator.versions import parse_termination_message


def _render_message(template: str, *, version: str, now: str) -> str:
    """What kwok's Go template engine makes of the two actions the message holds."""
    rendered = template.replace("{{ index $.metadata.labels `tfmaas.io/version` }}", version)
    rendered = rendered.replace("{{ $now }}", now)
    assert "{{" not in rendered, f"an action the test does not render: {rendered}"
    return rendered


def test_the_simulated_training_reports_what_the_operator_reads() -> None:
    message = _render_message(
        kwok.termination_message_template(0.85), version="7", now="2026-01-01T00:00:00Z"
    )
    document = json.loads(message)
    assert document["version"] == 7
    result = parse_termination_message(message)
    assert result.metrics["accuracy"] == pytest.approx(0.85)
    assert result.trained_at == "2026-01-01T00:00:00Z"


def test_the_training_stage_quotes_the_message_for_yaml_without_breaking_the_action() -> None:
    stage = next(s for s in kwok.pod_stages() if s["metadata"]["name"] == "training-complete")
    template = stage["spec"]["next"]["statusTemplate"]
    # A backslash inside an action is a Go template syntax error: the label name must be a
    # raw string, not a quoted one that YAML quoting escapes.
    for action in re.findall(r"\{\{.*?\}\}", template):
        assert "\\" not in action, action
        # The message sits in a range over the containers, where `.` is a container: the
        # pod's labels are `$.metadata`, or kwok fails every pod with "index of untyped nil".
        assert ".metadata" not in action.replace("$.metadata", ""), action
    line = next(line for line in template.splitlines() if "message:" in line)
    quoted = line.split("message:", 1)[1].strip()
    rendered = _render_message(yaml.safe_load(quoted), version="1", now="t")
    assert json.loads(rendered)["metrics"]["accuracy"] == kwok.SIMULATED_ACCURACY


def test_only_job_pods_finish_and_deleted_pods_never_start() -> None:
    stages = {s["metadata"]["name"]: s["spec"] for s in kwok.pod_stages()}
    assert set(stages) == {"pod-ready", "training-complete", "pod-delete"}
    finish = stages["training-complete"]["selector"]["matchExpressions"]
    assert {"key": ".metadata.ownerReferences.[].kind", "operator": "In", "values": ["Job"]} in (
        finish
    )
    for name in ("pod-ready", "training-complete"):
        expressions = stages[name]["selector"]["matchExpressions"]
        assert {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"} in expressions


@pytest.mark.parametrize("accuracy", [-0.1, 1.5, float("nan")])
def test_an_accuracy_outside_zero_to_one_is_refused(accuracy: float) -> None:
    with pytest.raises(ValueError, match="accuracy"):
        kwok.pod_stages(accuracy=accuracy)


@pytest.mark.parametrize("count", [0, -1, kwok.MAX_NODES + 1])
def test_the_node_count_is_bounded(count: int) -> None:
    with pytest.raises(ValueError, match="node count"):
        kwok.node_names(count)


def test_nodes_are_marked_for_kwok_and_named_in_order() -> None:
    names = kwok.node_names(3)
    assert names == ["kwok-node-0000", "kwok-node-0001", "kwok-node-0002"]
    node = kwok.node_manifest(names[0])
    assert node["metadata"]["annotations"] == {kwok.NODE_ANNOTATION: kwok.NODE_ANNOTATION_VALUE}
    args = kwok.kwok_args(kubeconfig=Path("k"), config=Path("c"))
    assert "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake" in args
    assert not any(arg.startswith("--manage-all-nodes") for arg in args)
