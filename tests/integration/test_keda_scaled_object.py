"""The real KEDA operator (built from the pinned module, run as a host process) takes the
ScaledObject tfmaas renders for a ModelService with autoscaling engine keda and creates its
own HPA for the stable Deployment: same bounds, the request rate as an external metric,
owned by the ScaledObject, which the ModelService owns."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.operator_harness import install_crd
from tfmaas.api import load_model_service
from tfmaas.dev import keda
from tfmaas.dev.cluster import LocalCluster
from tfmaas.operator.autoscaling import wanted_autoscaler
from tfmaas.operator.config import OperatorConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def keda_operator(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    install_crd(cluster)
    keda.install_crds(cluster)
    directory = tmp_path_factory.mktemp("keda")
    process = keda.start_operator(cluster, directory)
    try:
        yield directory / "keda-operator.log"
    finally:
        process.stop()


def _deployment(name: str, namespace: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "serving:test"}]},
            },
        },
    }


def test_keda_makes_its_hpa_from_our_scaled_object(
    cluster: LocalCluster, keda_operator: Path
) -> None:
    namespace, name = f"keda-{uuid.uuid4().hex[:6]}", "reviews"
    cluster.kubectl("create", "namespace", namespace)
    document = {
        "apiVersion": "tfmaas.io/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "storage": {"uri": "s3://models/reviews"},
            "training": {"dataset": {"uri": "builtin:chinese-reviews"}},
            "serving": {
                "autoscaling": {
                    "engine": "keda",
                    "minReplicas": 2,
                    "maxReplicas": 5,
                    "targetRequestsPerSecond": 7.5,
                }
            },
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(document))
    created = cluster.kubectl_json("get", "modelservice", name, "-n", namespace)
    service = load_model_service(created)
    cluster.kubectl("apply", "-f", "-", input=json.dumps(_deployment(name, namespace)))
    scaled_object = wanted_autoscaler(service, OperatorConfig())
    assert scaled_object is not None and scaled_object["kind"] == "ScaledObject"
    # What the operator sends: server-side apply of the rendered object, no defaulting by us.
    cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(scaled_object))

    hpa: dict[str, Any] = {}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not hpa:
        found = cluster.kubectl(
            "get", "hpa", f"keda-hpa-{name}", "-n", namespace, "-o", "json", check=False
        )
        hpa = json.loads(found.stdout) if found.returncode == 0 else {}
        time.sleep(1)
    assert hpa, keda_operator.read_text()[-4000:]
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 5)
    (metric,) = spec["metrics"]
    assert metric["type"] == "External"
    target = metric["external"]["target"]
    # KEDA writes the threshold as a decimal quantity ("7.500"): the per-pod target we set.
    assert target["type"] == "AverageValue" and float(target["averageValue"]) == 7.5
    selector = metric["external"]["metric"]["selector"]["matchLabels"]
    assert selector["scaledobject.keda.sh/name"] == name
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    (owner,) = hpa["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"]) == ("ScaledObject", name)
    owned = cluster.kubectl_json("get", "scaledobject", name, "-n", namespace)
    assert owned["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    cluster.kubectl("delete", "namespace", namespace, "--wait=false")
