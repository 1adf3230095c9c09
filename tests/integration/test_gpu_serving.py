"""A GPU serving Deployment, as the operator builds it, on the real control plane: admitted
under the restricted Pod Security Standard, stored with its `nvidia.com/gpu` limit, and
scheduled only where a GPU is free (a tainted GPU node; never a CPU node)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.operator_harness import create_restricted_namespace, install_crd
from tests.integration.test_helm_install import eventually
from tfmaas.api import load_model_service
from tfmaas.dev.cluster import LocalCluster
from tfmaas.operator.config import OperatorConfig
from tfmaas.operator.manifests.configmap import serving_config
from tfmaas.operator.manifests.deployment import build_deployment

pytestmark = pytest.mark.integration

GPU = "nvidia.com/gpu"


@pytest.fixture
def namespace(cluster: LocalCluster) -> Iterator[str]:
    install_crd(cluster)
    name = f"gpu-{uuid.uuid4().hex[:8]}"
    create_restricted_namespace(cluster, name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def _gpu_model_service(cluster: LocalCluster, namespace: str) -> dict[str, Any]:
    """A stored ModelService asking for a GPU per replica: the Deployment's owner, so the
    garbage collector leaves the Deployment alone (no operator runs in this test)."""
    document = {
        "apiVersion": "tfmaas.io/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "reviews", "namespace": namespace},
        "spec": {
            "storage": {"uri": "s3://models/reviews"},
            "training": {"dataset": {"uri": "builtin:chinese-reviews"}},
            "serving": {
                "autoscaling": {"enabled": False},
                "resources": {"gpu": 1, "cpu": "500m", "memory": "1Gi"},
            },
        },
    }
    created = cluster.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(document))
    stored = json.loads(created.stdout)
    assert stored["spec"]["serving"]["resources"]["gpu"] == 1
    return dict(stored)


def _pods(cluster: LocalCluster, namespace: str) -> list[dict[str, Any]]:
    listing = cluster.kubectl_json(
        "get", "pods", "-n", namespace, "-l", "app.kubernetes.io/component=serving"
    )
    return list(listing["items"])


def test_a_gpu_replica_is_admitted_and_lands_only_on_a_free_gpu(
    cluster: LocalCluster, namespace: str
) -> None:
    model = load_model_service(_gpu_model_service(cluster, namespace))
    config = OperatorConfig()
    # Two replicas, one GPU in the cluster: the second must wait for a GPU, not take a CPU node.
    deployment = build_deployment(model, serving_config(model, "stable", 1), 2, config)
    suffix = uuid.uuid4().hex[:6]
    cpu_node, gpu_node = f"cpu-{suffix}", f"gpu-{suffix}"
    cluster.register_fake_node(cpu_node)
    cluster.register_fake_node(gpu_node, gpus=1)
    try:
        # GPU pools are usually tainted; the operator's default toleration lets the pod in.
        cluster.kubectl("taint", "node", gpu_node, f"{GPU}=present:NoSchedule")
        cluster.kubectl("apply", "-f", "-", input=json.dumps(deployment))
        stored = cluster.kubectl_json("get", "deployment", "reviews", "-n", namespace)
        (server,) = stored["spec"]["template"]["spec"]["containers"]
        assert server["resources"]["limits"][GPU] == "1"
        assert server["image"] == config.serving_gpu_image
        assert "--per_process_gpu_memory_fraction=0.9" in server["args"]

        def placed() -> bool:
            pods = _pods(cluster, namespace)
            return len(pods) == 2 and any(pod["spec"].get("nodeName") for pod in pods)

        eventually(placed, "the scheduler to bind one GPU replica")
        eventually(
            lambda: any(
                condition.get("reason") == "Unschedulable"
                for pod in _pods(cluster, namespace)
                for condition in pod["status"].get("conditions", [])
            ),
            "the scheduler to report the second replica unschedulable",
        )
        pods = _pods(cluster, namespace)
        assert sorted(pod["spec"].get("nodeName", "") for pod in pods) == ["", gpu_node]
        (waiting,) = [pod for pod in pods if not pod["spec"].get("nodeName")]
        # The Pod's request for the extended resource is defaulted from its limit.
        assert waiting["spec"]["containers"][0]["resources"]["requests"][GPU] == "1"
        (unscheduled,) = [
            condition
            for condition in waiting["status"]["conditions"]
            if condition["type"] == "PodScheduled"
        ]
        assert f"Insufficient {GPU}" in unscheduled["message"]
    finally:
        cluster.kubectl("delete", "node", cpu_node, gpu_node, "--wait=false")
