"""The operator's access-control objects against the real API server, with the operator's own
cluster RBAC (deploy/rbac/cluster_role.yaml): the gateway's ServiceAccount, its cluster-scoped
ClusterRoleBinding (deleted with the ModelService), the NetworkPolicy and the guarded
Deployment. No node runs here, so the pods themselves are the e2e suite's."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import kubernetes
import pytest
import yaml

from tests.integration.operator_harness import create_restricted_namespace, install_crd
from tfmaas.api import ModelService, load_model_service
from tfmaas.api.spec import AccessSpec
from tfmaas.dev.cluster import LocalCluster
from tfmaas.operator.apply import Applier
from tfmaas.operator.config import OperatorConfig
from tfmaas.operator.kube import Kube, KubeError
from tfmaas.operator.manifests.access import (
    GATEWAY_CLUSTER_ROLE,
    build_gateway_cluster_role_binding,
    build_gateway_service_account,
    build_network_policy,
)
from tfmaas.operator.manifests.configmap import serving_config
from tfmaas.operator.manifests.deployment import build_deployment
from tfmaas.operator.reconcile_runner import Reconciler
from tfmaas.operator.serving import access_objects, converge_access

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_ROLE = ROOT / "deploy" / "rbac" / "cluster_role.yaml"
CONFIG = OperatorConfig(access_gateway_image="gateway:test", serving_image="serving:test")


@dataclass
class Setup:
    kube: Kube
    namespace: str
    service: ModelService


def operator_kube(cluster: LocalCluster, namespace: str) -> Kube:
    """A client holding a token of a ServiceAccount bound to the operator's ClusterRole."""
    role = yaml.safe_load(CLUSTER_ROLE.read_text())
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "operator", "namespace": namespace},
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": f"test-operator-{namespace}"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": role["metadata"]["name"],
        },
        "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": namespace}],
    }
    # What the chart ships under this fixed name (charts/tfmaas/templates/access-rbac.yaml).
    gateway_role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": GATEWAY_CLUSTER_ROLE},
        "rules": [
            {
                "apiGroups": ["authentication.k8s.io"],
                "resources": ["tokenreviews"],
                "verbs": ["create"],
            },
            {
                "apiGroups": ["authorization.k8s.io"],
                "resources": ["subjectaccessreviews"],
                "verbs": ["create"],
            },
        ],
    }
    documents = "\n---\n".join(json.dumps(d) for d in (account, role, binding, gateway_role))
    cluster.kubectl("apply", "-f", "-", input=documents)
    kubeconfig = cluster.kubeconfig_for_service_account(namespace, "operator")
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(kubeconfig), client_configuration=configuration
    )
    return Kube(kubernetes.client.ApiClient(configuration))


@pytest.fixture(scope="module")
def setup(cluster: LocalCluster) -> Iterator[Setup]:
    install_crd(cluster)
    namespace = f"guarded-{uuid.uuid4().hex[:6]}"
    create_restricted_namespace(cluster, namespace)
    document = {
        "apiVersion": "tfmaas.io/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "sentiment", "namespace": namespace},
        "spec": {
            "storage": {"uri": "s3://models/sentiment"},
            "training": {"dataset": {"uri": "builtin:chinese-reviews"}},
            "serving": {"access": {"mode": "kubernetes", "tls": {"secretName": "sentiment-tls"}}},
        },
    }
    created = json.loads(
        cluster.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(document)).stdout
    )
    # The gateway's role has a fixed name, which a chart installed on this shared control plane
    # owns too: leave no copy of it behind for a later helm install to trip over.
    role_existed = (
        cluster.kubectl("get", "clusterrole", GATEWAY_CLUSTER_ROLE, check=False).returncode == 0
    )
    try:
        yield Setup(operator_kube(cluster, namespace), namespace, load_model_service(created))
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        cluster.kubectl("delete", "clusterrolebinding", f"test-operator-{namespace}", check=False)
        if not role_existed:
            cluster.kubectl("delete", "clusterrole", GATEWAY_CLUSTER_ROLE, check=False)


def test_the_operator_applies_the_guarded_objects(setup: Setup, cluster: LocalCluster) -> None:
    service = setup.service
    for manifest in (
        build_gateway_service_account(service),
        build_gateway_cluster_role_binding(service),
        build_network_policy(service, CONFIG),
        build_deployment(service, serving_config(service, "stable", 1), 1, CONFIG),
    ):
        setup.kube.apply(manifest)
    binding_name = f"tfmaas-access-gateway:{setup.namespace}:sentiment"
    binding = cluster.kubectl_json("get", "clusterrolebinding", binding_name)
    assert binding["subjects"][0]["name"] == "sentiment-access-gateway"
    policy = cluster.kubectl_json(
        "get", "networkpolicy", "sentiment-serving", "-n", setup.namespace
    )
    assert [p["port"] for p in policy["spec"]["ingress"][0]["ports"]] == [8500, 8501]
    deployment = cluster.kubectl_json("get", "deployment", "sentiment", "-n", setup.namespace)
    pod = deployment["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["tfserving", "access-gateway"]
    assert pod["serviceAccountName"] == "sentiment-access-gateway"
    # The restricted namespace admits the pod as the operator renders it (server dry run).
    pod_object = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe", "namespace": setup.namespace},
        "spec": pod,
    }
    cluster.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pod_object))


def test_the_operator_may_bind_no_other_cluster_role(setup: Setup) -> None:
    binding = build_gateway_cluster_role_binding(setup.service)
    binding["metadata"]["name"] = f"escalation-{setup.namespace}"
    binding["roleRef"]["name"] = "cluster-admin"
    with pytest.raises(KubeError) as caught:
        setup.kube.apply(binding)
    assert caught.value.status == 403


def test_forgetting_the_model_service_deletes_its_cluster_role_binding(
    setup: Setup, cluster: LocalCluster
) -> None:
    setup.kube.apply(build_gateway_cluster_role_binding(setup.service))
    asyncio.run(Reconciler(setup.kube, CONFIG).forget(setup.namespace, "sentiment"))
    name = f"tfmaas-access-gateway:{setup.namespace}:sentiment"
    assert cluster.kubectl("get", "clusterrolebinding", name, check=False).returncode != 0


def _unguarded(service: ModelService) -> ModelService:
    return replace(
        service,
        spec=replace(
            service.spec,
            serving=replace(
                service.spec.serving, access=AccessSpec(mode="none", tls_secret_name=None)
            ),
        ),
    )


def test_switching_back_to_none_removes_the_gateway_objects_once_rolled_out(
    setup: Setup, cluster: LocalCluster
) -> None:
    service = setup.service
    applier = Applier(setup.kube)
    for manifest in access_objects(service, CONFIG):
        applier.apply(manifest)
    unguarded = _unguarded(service)
    binding = f"tfmaas-access-gateway:{setup.namespace}:sentiment"
    objects = (
        ("serviceaccount", "sentiment-access-gateway", "-n", setup.namespace),
        ("networkpolicy", "sentiment-serving", "-n", setup.namespace),
        ("clusterrolebinding", binding),
    )

    def present() -> list[bool]:
        return [cluster.kubectl("get", *o, check=False).returncode == 0 for o in objects]

    # Guarded pods may still be serving: their gateways review calls with that ServiceAccount.
    mode = converge_access(
        setup.kube, applier, unguarded, CONFIG, previous_mode="kubernetes", rolled=False
    )
    assert mode == "kubernetes" and present() == [True, True, True]
    mode = converge_access(
        setup.kube, applier, unguarded, CONFIG, previous_mode="kubernetes", rolled=True
    )
    assert mode == "none" and present() == [False, False, False]
    # Switched on again, the same applier sends them again (it forgot what it had sent).
    assert all(applier.apply(manifest) for manifest in access_objects(service, CONFIG))
    assert present() == [True, True, True]
