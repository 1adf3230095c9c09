"""The operator's API client against the real API server, under its namespaced Role
(deploy/rbac/role.yaml): a training Job is created by a plain POST, and one whose name exists
already (a crash between creating and recording it) is converged by server-side apply."""

from __future__ import annotations

import uuid

import kubernetes
import pytest

from tests.integration.operator_harness import (
    create_restricted_namespace,
    install_crd,
    operator_kubeconfig,
)
from tfmaas.api import load_model_service
from tfmaas.dev.cluster import LocalCluster
from tfmaas.operator.config import OperatorConfig
from tfmaas.operator.kube import Kube, KubeError
from tfmaas.operator.manifests.job import build_training_job
from tfmaas.operator.naming import FIELD_MANAGER

pytestmark = pytest.mark.integration


def _kube(cluster: LocalCluster, namespace: str) -> Kube:
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(operator_kubeconfig(cluster, namespace)),
        client_configuration=configuration,
    )
    return Kube(kubernetes.client.ApiClient(configuration))


def test_a_training_job_is_created_once_and_converged_when_it_exists(
    cluster: LocalCluster,
) -> None:
    install_crd(cluster)
    namespace = f"kube-{uuid.uuid4().hex[:6]}"
    create_restricted_namespace(cluster, namespace)
    try:
        kube = _kube(cluster, namespace)
        service = load_model_service(
            {
                "apiVersion": "tfmaas.io/v1alpha1",
                "kind": "ModelService",
                "metadata": {"name": "sentiment", "namespace": namespace, "uid": "u-1"},
                "spec": {
                    "storage": {"uri": "s3://models/sentiment"},
                    "training": {"dataset": {"uri": "builtin:chinese-reviews"}},
                },
            }
        )
        job = build_training_job(service, 1, OperatorConfig())
        # The owner named by uid "u-1" does not exist: the garbage collector would delete the
        # Job at once. This test is about the client, so the Job stands alone.
        job["metadata"].pop("ownerReferences", None)
        created = kube.create_or_apply(job)
        assert created["metadata"]["name"] == "sentiment-train-1"
        (entry,) = created["metadata"]["managedFields"]
        assert (entry["manager"], entry["operation"]) == (FIELD_MANAGER, "Update")

        # Again with a label of ours changed: the POST meets 409, the apply converges it.
        # (on the Job only: its pod template is immutable)
        job["metadata"]["labels"] = {**job["metadata"]["labels"], "tfmaas.io/note": "converged"}
        again = kube.create_or_apply(job)
        assert again["metadata"]["uid"] == created["metadata"]["uid"]
        assert again["metadata"]["labels"]["tfmaas.io/note"] == "converged"
        assert any(e["operation"] == "Apply" for e in again["metadata"]["managedFields"])

        # Other refusals are not swallowed: a Job in a namespace the Role does not reach.
        job["metadata"]["namespace"] = "default"
        with pytest.raises(KubeError) as refused:
            kube.create_or_apply(job)
        assert refused.value.status == 403
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
