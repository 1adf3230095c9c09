"""`helm install` / `upgrade` / `uninstall` of charts/tfmaas into the real local control plane,
and the operator, started on the host with the chart's ServiceAccount token, reconciling the
sample ModelService."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.chart import (
    CHART_DIR,
    REPO_ROOT,
    adopt_crds,
    helm_binary,
    run_helm,
    set_args,
)
from tfmaas.dev.cluster import LocalCluster

pytestmark = pytest.mark.integration

RELEASE = "tfmaas"
NAMESPACE = "tfmaas-system"
MODELS = "models"
SELECTOR = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/managed-by=Helm"
# Every kind the chart can create; an object of these left after uninstall is an orphan.
CHART_KINDS = (
    "deployments,services,serviceaccounts,configmaps,networkpolicies,poddisruptionbudgets,"
    "roles,rolebindings,clusterroles,clusterrolebindings,"
    "clusterkopfpeerings.kopf.dev,kopfpeerings.kopf.dev"
)
MONITOR_KINDS = (
    "podmonitors.monitoring.coreos.com,servicemonitors.monitoring.coreos.com,"
    "prometheusrules.monitoring.coreos.com"
)
# The Prometheus Operator's CRDs come from its Go module (the only way to them here).
PROMETHEUS_OPERATOR_MODULE = "github.com/prometheus-operator/prometheus-operator@v0.85.0"


def eventually(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


class Helm:
    def __init__(self, binary: Path, cluster: LocalCluster, home: Path) -> None:
        self.binary = binary
        self.env = {
            "KUBECONFIG": str(cluster.kubeconfig),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_helm(self.binary, *args, env=self.env, check=check)


@pytest.fixture(scope="module")
def helm(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(helm_binary(), cluster, tmp_path_factory.mktemp("helm-home"))


def has_monitor_api(cluster: LocalCluster) -> bool:
    groups = cluster.kubectl("api-versions").stdout.split()
    return "monitoring.coreos.com/v1" in groups


def chart_objects(cluster: LocalCluster) -> list[str]:
    kinds = f"{CHART_KINDS},{MONITOR_KINDS}" if has_monitor_api(cluster) else CHART_KINDS
    listing = cluster.kubectl_json("get", kinds, "-A", "-l", SELECTOR)
    return sorted(
        f"{item['kind']}/{item['metadata'].get('namespace', '')}/{item['metadata']['name']}"
        for item in listing["items"]
    )


@pytest.fixture(scope="module")
def installed(cluster: LocalCluster, helm: Helm) -> Iterator[str]:
    """The chart installed (default values) in a namespace enforcing the restricted profile."""
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": NAMESPACE,
                    "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
                },
            }
        ),
    )
    # Other modules of the session apply the CRD with kubectl.
    adopt_crds(cluster.kubectl, release=RELEASE, namespace=NAMESPACE)
    output = helm("install", RELEASE, str(CHART_DIR), "-n", NAMESPACE).stdout
    yield output
    helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", check=False)


def test_install_creates_every_object_and_admits_restricted_pods(
    cluster: LocalCluster, installed: str
) -> None:
    # NOTES.txt tells the next commands.
    assert "kubectl apply -f deploy/samples/sentiment.yaml" in installed
    assert "kubectl get modelservices" in installed
    objects = chart_objects(cluster)
    kinds = sorted({o.split("/")[0] for o in objects})
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "Service",
        "ServiceAccount",
    ], objects
    for crd in (
        "modelservices.tfmaas.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    ):
        cluster.kubectl("get", "crd", crd)
    # The ReplicaSet's pod passes Pod Security admission at `restricted` (no node runs it).
    pods = eventually(
        lambda: cluster.kubectl_json(
            "get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=operator"
        )["items"],
        "the operator pod to be admitted",
    )
    assert len(pods) == 1
    # The NetworkPolicy's API server rule names the addresses behind the kubernetes Service, or
    # any address where there are none (an apiserver advertising loopback publishes none).
    slices = cluster.kubectl_json(
        "get", "endpointslices", "-n", "default", "-l", "kubernetes.io/service-name=kubernetes"
    )["items"]
    addresses = {a for s in slices for e in s.get("endpoints") or [] for a in e["addresses"]}
    policy = cluster.kubectl_json("get", "networkpolicy", "tfmaas", "-n", NAMESPACE)
    api_rule = policy["spec"]["egress"][0]
    allowed = {peer["ipBlock"]["cidr"] for peer in api_rule.get("to", [])}
    assert allowed == {f"{a}/32" for a in addresses}
    events = cluster.kubectl_json("get", "events", "-n", NAMESPACE)["items"]
    assert not [e["message"] for e in events if e.get("reason") == "FailedCreate"]


def operator_command() -> list[str]:
    return [sys.executable, "-m", "tfmaas", "operator", "run", "--standalone"]


def sample_model_service() -> dict[str, Any]:
    sample = yaml.safe_load((REPO_ROOT / "deploy" / "samples" / "sentiment.yaml").read_text())
    sample = copy.deepcopy(sample)
    sample["metadata"]["namespace"] = MODELS
    return dict(sample)


def test_operator_with_the_charts_permissions_reconciles_the_sample(
    cluster: LocalCluster, installed: str, tmp_path: Path
) -> None:
    cluster.kubectl("create", "namespace", MODELS)
    cluster.kubectl(
        "create",
        "secret",
        "generic",
        "model-store",
        "-n",
        MODELS,
        "--from-literal=AWS_ACCESS_KEY_ID=test",
        "--from-literal=AWS_SECRET_ACCESS_KEY=test-secret",
    )
    # The operator runs with exactly the ServiceAccount's RBAC and the chart's defaults.
    kubeconfig = cluster.kubeconfig_for_service_account(NAMESPACE, "tfmaas")
    defaults = cluster.kubectl_json("get", "configmap", "tfmaas-defaults", "-n", NAMESPACE)
    env = {
        **os.environ,
        **defaults["data"],
        "KUBECONFIG": str(kubeconfig),
        "POD_NAMESPACE": NAMESPACE,
    }
    log_path = tmp_path / "operator.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*operator_command(), f"--namespace={MODELS}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(sample_model_service()))

        def job() -> dict[str, Any] | None:
            assert process.poll() is None, log_path.read_text()[-4000:]
            jobs = cluster.kubectl_json("get", "jobs", "-n", MODELS)["items"]
            return jobs[0] if jobs else None

        created = eventually(job, "the operator to create the training Job", timeout=120)
        assert created["metadata"]["name"] == "sentiment-train-1"
        owner = created["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"]) == ("ModelService", "sentiment")
        container = created["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == defaults["data"]["TFMAAS_TRAINER_IMAGE"]
        forbidden = [
            line
            for line in log_path.read_text().splitlines()
            if "403" in line or "Forbidden" in line
        ]
        assert not forbidden, forbidden
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        cluster.kubectl("delete", "namespace", MODELS, "--wait=false", check=False)


def test_upgrade_to_two_replicas_and_back_leaves_no_orphan(
    cluster: LocalCluster, helm: Helm, installed: str
) -> None:
    before = chart_objects(cluster)
    checksum = "checksum/defaults"

    def annotations() -> dict[str, str]:
        deployment = cluster.kubectl_json("get", "deployment", "tfmaas", "-n", NAMESPACE)
        return dict(deployment["spec"]["template"]["metadata"]["annotations"])

    installed_checksum = annotations()[checksum]
    changed = {"operator.replicas": 2, "defaults.storage.endpoint": "http://minio.models:9000"}
    helm("upgrade", RELEASE, str(CHART_DIR), "-n", NAMESPACE, *set_args(changed))
    deployment = cluster.kubectl_json("get", "deployment", "tfmaas", "-n", NAMESPACE)
    assert deployment["spec"]["replicas"] == 2
    # Changed defaults roll the operator so it reads them.
    assert annotations()[checksum] != installed_checksum
    defaults = cluster.kubectl_json("get", "configmap", "tfmaas-defaults", "-n", NAMESPACE)
    assert defaults["data"]["TFMAAS_DEFAULT_STORE_ENDPOINT"] == "http://minio.models:9000"
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--peering=tfmaas" in args
    cluster.kubectl("get", "clusterkopfpeering", "tfmaas")
    cluster.kubectl("get", "poddisruptionbudget", "tfmaas", "-n", NAMESPACE)

    helm("upgrade", RELEASE, str(CHART_DIR), "-n", NAMESPACE, "--reset-values")
    assert chart_objects(cluster) == before
    deployment = cluster.kubectl_json("get", "deployment", "tfmaas", "-n", NAMESPACE)
    assert deployment["spec"]["replicas"] == 1
    assert annotations()[checksum] == installed_checksum


def test_namespace_scope_release_is_confined_to_its_namespaces(
    cluster: LocalCluster, helm: Helm, installed: str
) -> None:
    for namespace in ("team-a", "team-b"):
        cluster.kubectl("create", "namespace", namespace)
    try:
        helm(
            "install",
            "tenant",
            str(CHART_DIR),
            "-n",
            "team-a",
            *set_args(
                {"rbac.scope": "namespace", "networkPolicy.enabled": False, "crds.install": False}
            ),
        )
        account = "system:serviceaccount:team-a:tenant-tfmaas"

        def can(verb: str, resource: str, namespace: str, *extra: str) -> bool:
            answer = cluster.kubectl(
                "auth",
                "can-i",
                verb,
                resource,
                *extra,
                "-n",
                namespace,
                f"--as={account}",
                check=False,
            )
            return answer.stdout.strip() == "yes"

        assert can("create", "jobs.batch", "team-a")
        assert can("patch", "modelservices.tfmaas.io", "team-a", "--subresource=status")
        assert not can("list", "modelservices.tfmaas.io", "team-b")
        assert not can("create", "jobs.batch", "team-b")
        cluster_scoped = cluster.kubectl_json(
            "get", "clusterroles,clusterrolebindings", "-l", "app.kubernetes.io/instance=tenant"
        )
        assert cluster_scoped["items"] == []
    finally:
        helm("uninstall", "tenant", "-n", "team-a", "--wait", check=False)
        for namespace in ("team-a", "team-b"):
            cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def prometheus_operator_crds() -> list[Path]:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    try:
        downloaded = subprocess.run(
            [go, "mod", "download", "-json", PROMETHEUS_OPERATOR_MODULE],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"cannot fetch {PROMETHEUS_OPERATOR_MODULE}: {exc}")
        pytest.skip(f"cannot fetch {PROMETHEUS_OPERATOR_MODULE}: {exc}")
    crds = Path(json.loads(downloaded.stdout)["Dir"]) / "example" / "prometheus-operator-crd"
    return [
        crds / f"monitoring.coreos.com_{kind}.yaml"
        for kind in ("podmonitors", "servicemonitors", "prometheusrules")
    ]


def test_monitors_appear_once_the_prometheus_operator_api_exists(
    cluster: LocalCluster, helm: Helm, installed: str
) -> None:
    for crd in prometheus_operator_crds():
        cluster.kubectl("apply", "--server-side", "-f", str(crd))
    for name in ("podmonitors", "servicemonitors", "prometheusrules"):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}.monitoring.coreos.com")
    eventually(lambda: has_monitor_api(cluster), "the monitoring.coreos.com/v1 API")
    # The same values: Helm sees the new API in the cluster's capabilities.
    helm("upgrade", RELEASE, str(CHART_DIR), "-n", NAMESPACE, "--reuse-values")
    pod_monitor = cluster.kubectl_json("get", "podmonitor", "tfmaas-serving", "-n", NAMESPACE)
    # The serving container's REST port, and the access gateway's metrics port for guarded pods.
    endpoints = [(e["port"], e["path"]) for e in pod_monitor["spec"]["podMetricsEndpoints"]]
    assert endpoints == [
        ("http", "/monitoring/prometheus/metrics"),
        ("metrics", "/monitoring/prometheus/metrics"),
    ]
    cluster.kubectl("get", "servicemonitor", "tfmaas", "-n", NAMESPACE)
    # The alerts, accepted by the Prometheus Operator's own schema for PrometheusRules.
    rule = cluster.kubectl_json("get", "prometheusrule", "tfmaas", "-n", NAMESPACE)
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert len([r for g in rule["spec"]["groups"] for r in g["rules"]]) == 8


def test_uninstall_leaves_no_orphan_and_keeps_the_crds(
    cluster: LocalCluster, helm: Helm, installed: str
) -> None:
    helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait")
    eventually(lambda: chart_objects(cluster) == [], "every chart object to be deleted")
    releases = cluster.kubectl_json(
        "get", "secrets", "-n", NAMESPACE, "-l", f"owner=helm,name={RELEASE}"
    )
    assert releases["items"] == []
    cluster.kubectl("get", "crd", "modelservices.tfmaas.io")
    cluster.kubectl("get", "crd", "kopfpeerings.kopf.dev")
