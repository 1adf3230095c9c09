"""The operator on a real control plane records the TensorFlow that exported each version and
says, with a condition and a Warning Event, when one served was exported by a TensorFlow newer
than the serving image's. The test plays the kubelet, as in test_operator_lifecycle."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.operator_harness import (
    termination_message,
    wait_for,
)
from tests.integration.test_operator_lifecycle import (
    TIMEOUT,
    Harness,
    model_service,
    operator_harness,
)
from tfmaas.dev.cluster import LocalCluster
from tfmaas.release import SERVING_TENSORFLOW_VERSION

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

CONDITION = "ServingTensorFlowCompatible"


@pytest.fixture(scope="module")
def harness(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    # The operator's own default: the serving image's TensorFlow is the release's.
    with operator_harness(cluster, tmp_path_factory, "tfv") as harness:
        yield harness


def finish(harness: Harness, name: str, version: int, tensorflow: Any) -> None:
    message = json.loads(termination_message(version, 0.9))
    message["tensorflowVersion"] = tensorflow
    pod = harness.training_pod(name, version)
    harness.cluster.finish_pod(harness.namespace, pod, termination_message=json.dumps(message))


def events(harness: Harness, name: str, reason: str) -> list[dict[str, Any]]:
    found = json.loads(
        harness.kubectl(
            "get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json"
        ).stdout
    )["items"]
    return [e for e in found if e.get("reason") == reason]


def test_a_version_from_a_newer_tensorflow_is_served_with_a_warning(harness: Harness) -> None:
    harness.apply(model_service("newer"))
    wait_for(lambda: harness.get("job", "newer-train-1"), "Job newer-train-1", TIMEOUT)
    finish(harness, "newer", 1, "2.99.0")
    harness.serve("newer", 1)
    status = harness.status("newer")
    # The CRD's status schema keeps the field (an unknown one would be pruned).
    assert status["versions"][0]["tensorflowVersion"] == "2.99.0"
    found = harness.condition("newer", CONDITION)
    assert (found["status"], found["reason"]) == ("False", "ExportedByNewerTensorFlow")
    assert "2.99.0" in found["message"] and SERVING_TENSORFLOW_VERSION in found["message"]
    # It warns; it does not stop serving.
    assert harness.condition("newer", "Ready")["status"] == "True"
    (warning,) = wait_for(
        lambda: events(harness, "newer", "ExportedByNewerTensorFlow"), "the Warning Event", 30
    )
    assert warning["type"] == "Warning"


def test_a_version_from_the_serving_tensorflow_is_compatible(harness: Harness) -> None:
    harness.apply(model_service("same"))
    wait_for(lambda: harness.get("job", "same-train-1"), "Job same-train-1", TIMEOUT)
    finish(harness, "same", 1, SERVING_TENSORFLOW_VERSION)
    harness.serve("same", 1)
    found = harness.condition("same", CONDITION)
    assert (found["status"], found["reason"]) == ("True", "Compatible")
    assert not events(harness, "same", "ExportedByNewerTensorFlow")


def test_a_forged_version_string_is_not_recorded_or_shown(harness: Harness) -> None:
    harness.apply(model_service("forged"))
    wait_for(lambda: harness.get("job", "forged-train-1"), "Job forged-train-1", TIMEOUT)
    finish(harness, "forged", 1, "9.9.9 AWS_SECRET_ACCESS_KEY=hunter2")
    harness.serve("forged", 1)
    status = harness.status("forged")
    assert "tensorflowVersion" not in status["versions"][0]
    found = harness.condition("forged", CONDITION)
    assert (found["status"], found["reason"]) == ("Unknown", "ExportTensorFlowUnknown")
    assert "hunter2" not in json.dumps(status)
