"""The cluster-wide operator under deploy/rbac/cluster_role.yaml: it follows ModelServices in
any namespace, including one created after it started."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml

from tests.integration.operator_harness import (
    ROOT,
    OperatorProcess,
    create_restricted_namespace,
    install_crd,
    wait_for,
)
from tfmaas.dev.cluster import LocalCluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_cluster_wide_operator_with_the_cluster_role(cluster: LocalCluster, tmp_path: Path) -> None:
    install_crd(cluster)
    suffix = uuid.uuid4().hex[:6]
    home, watched = f"op-{suffix}", f"late-{suffix}"
    cluster.kubectl("create", "namespace", home)
    role = yaml.safe_load((ROOT / "deploy" / "rbac" / "cluster_role.yaml").read_text())
    role["metadata"]["name"] = f"tfmaas-operator-{suffix}"
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": role["metadata"]["name"]},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": role["metadata"]["name"],
        },
        "subjects": [{"kind": "ServiceAccount", "name": "tfmaas-operator", "namespace": home}],
    }
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "tfmaas-operator", "namespace": home},
    }
    documents = "\n---\n".join(json.dumps(d) for d in (account, role, binding))
    cluster.kubectl("apply", "-f", "-", input=documents)
    kubeconfig = cluster.kubeconfig_for_service_account(home, "tfmaas-operator")
    operator = OperatorProcess(kubeconfig, "", tmp_path / "operator.log")
    operator.start()
    try:
        create_restricted_namespace(cluster, watched)
        service = {
            "apiVersion": "tfmaas.io/v1alpha1",
            "kind": "ModelService",
            "metadata": {"name": "anywhere", "namespace": watched},
            "spec": {
                "storage": {"uri": "s3://models/anywhere"},
                "training": {"dataset": {"uri": "builtin:chinese-reviews"}},
            },
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(service))
        try:
            wait_for(
                lambda: (
                    cluster.kubectl(
                        "get", "job", "anywhere-train-1", "-n", watched, check=False
                    ).returncode
                    == 0
                ),
                "a Job in a namespace created after the operator started",
                90,
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{operator.log_tail()}") from None
    finally:
        operator.stop()
        for namespace in (home, watched):
            cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        cluster.kubectl(
            "delete", "clusterrole,clusterrolebinding", role["metadata"]["name"], check=False
        )
