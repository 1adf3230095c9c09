"""`helm lint` and `helm template` of charts/tfmaas with default and non-default values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.chart import (
    CHART_DIR,
    REPO_ROOT,
    find,
    helm_binary,
    kube_version_args,
    one,
    render,
    run_helm,
    set_args,
)

MONITORING_API = "monitoring.coreos.com/v1"

VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespace-scope": {"rbac.scope": "namespace", "watchNamespaces": ["team-a", "team-b"]},
    "replicas-2": {"operator.replicas": 2},
    "replicas-2-namespace": {"operator.replicas": 2, "rbac.scope": "namespace"},
    "monitoring-off": {
        "monitoring.podMonitor.enabled": False,
        "monitoring.serviceMonitor.enabled": False,
        "monitoring.prometheusRule.enabled": False,
        "monitoring.adapterRule.enabled": False,
        "monitoring.grafanaDashboard.enabled": False,
        "networkPolicy.enabled": False,
    },
}


@pytest.fixture(scope="module")
def helm() -> Path:
    return helm_binary()


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = one(objects, "Deployment")
    (operator,) = deployment["spec"]["template"]["spec"]["containers"]
    return operator


def restricted_violations(pod_spec: dict[str, Any]) -> list[str]:
    """What keeps a pod spec out of a namespace enforcing the restricted Pod Security Standard."""
    problems = []
    pod_sc = pod_spec.get("securityContext", {})
    for c in pod_spec.get("initContainers", []) + pod_spec["containers"]:
        sc = c.get("securityContext", {})
        name = c["name"]
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            problems.append(f"{name}: capabilities must drop ALL")
        if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot must be true")
        seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}
        if seccomp.get("type") not in {"RuntimeDefault", "Localhost"}:
            problems.append(f"{name}: seccompProfile must be RuntimeDefault")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem must be true")
    return problems


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_helm_lint_passes(helm: Path, variant: str) -> None:
    result = run_helm(
        helm, "lint", "--strict", str(CHART_DIR), *kube_version_args(), *set_args(VARIANTS[variant])
    )
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("monitoring_api", [False, True])
def test_every_variant_renders_restricted_pods(
    helm: Path, variant: str, monitoring_api: bool
) -> None:
    objects = render(
        helm, VARIANTS[variant], api_versions=[MONITORING_API] if monitoring_api else []
    )
    pod_spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert restricted_violations(pod_spec) == []
    for o in objects:
        assert o["metadata"]["labels"]["app.kubernetes.io/instance"] == "tfmaas"


def test_defaults_render_the_operator_cluster_wide(helm: Path) -> None:
    objects = render(helm)
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRole",  # tfmaas-access-gateway
            "ClusterRole",  # tfmaas-model-caller
            "ClusterRole",  # tfmaas-model-viewer
            "ClusterRoleBinding",
            "ConfigMap",  # operator defaults
            "ConfigMap",  # adapter rule
            "ConfigMap",  # grafana dashboard
            "Deployment",
            "Service",
            "NetworkPolicy",
            "CustomResourceDefinition",  # modelservices.tfmaas.io
            "CustomResourceDefinition",  # clusterkopfpeerings.kopf.dev
            "CustomResourceDefinition",  # kopfpeerings.kopf.dev
        ]
    )
    operator = container(objects)
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert operator["image"] == f"tfmaas/operator:{chart['appVersion']}"
    assert "--standalone" in operator["args"]
    assert "--all-namespaces" in operator["args"]
    assert "--log-format=text" in operator["args"]
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    binding = one(objects, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "tfmaas", "namespace": "tfmaas-system"}
    ]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "tfmaas"
    defaults = one(objects, "ConfigMap", "tfmaas-defaults")["data"]
    assert defaults["TFMAAS_TRAINER_IMAGE"] == f"tfmaas/trainer:{chart['appVersion']}"
    assert defaults["TFMAAS_SERVING_IMAGE"].startswith("tensorflow/serving:")
    # Without the Prometheus Operator's API there is nothing to hold a PodMonitor.
    assert not find(objects, "PodMonitor") and not find(objects, "ServiceMonitor")


def test_image_tags_and_defaults_follow_values(helm: Path) -> None:
    objects = render(
        helm,
        {
            "image.repository": "example/operator",
            "image.tag": "dev",
            "image.pullPolicy": "Never",
            "defaults.trainer.image.tag": "gpu",
            "defaults.storage.endpoint": "http://minio.tfmaas-system:9000",
            "defaults.storage.secretName": "model-store",
            "operator.logFormat": "json",
        },
    )
    operator = container(objects)
    assert operator["image"] == "example/operator:dev"
    assert "--log-format=json" in operator["args"]
    assert operator["imagePullPolicy"] == "Never"
    defaults = one(objects, "ConfigMap", "tfmaas-defaults")["data"]
    assert defaults["TFMAAS_TRAINER_IMAGE"].endswith(":gpu")
    assert defaults["TFMAAS_STORAGE_INITIALIZER_IMAGE"] == "example/operator:dev"
    assert defaults["TFMAAS_DEFAULT_STORE_ENDPOINT"] == "http://minio.tfmaas-system:9000"
    assert defaults["TFMAAS_DEFAULT_STORE_SECRET"] == "model-store"


def test_namespace_scope_grants_roles_only_in_watched_namespaces(helm: Path) -> None:
    objects = render(helm, VARIANTS["namespace-scope"])
    assert not find(objects, "ClusterRole") and not find(objects, "ClusterRoleBinding")
    roles = find(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    bindings = find(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for b in bindings:
        assert b["subjects"][0]["namespace"] == "tfmaas-system"
    args = container(objects)["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args
    assert "--all-namespaces" not in args


def test_namespace_scope_defaults_to_the_release_namespace(helm: Path) -> None:
    objects = render(helm, {"rbac.scope": "namespace"}, namespace="models")
    (role,) = find(objects, "Role")
    assert role["metadata"]["namespace"] == "models"
    assert "--namespace=models" in container(objects)["args"]


def test_two_replicas_use_kopf_peering(helm: Path) -> None:
    objects = render(helm, VARIANTS["replicas-2"])
    args = container(objects)["args"]
    assert "--peering=tfmaas" in args and "--standalone" not in args
    assert one(objects, "ClusterKopfPeering")["metadata"]["name"] == "tfmaas"
    assert one(objects, "Deployment")["spec"]["replicas"] == 2
    assert one(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1

    namespaced = render(helm, {"operator.replicas": 2, "watchNamespaces": ["a", "b"]})
    assert sorted(p["metadata"]["namespace"] for p in find(namespaced, "KopfPeering")) == [
        "a",
        "b",
    ]
    assert not find(namespaced, "ClusterKopfPeering")


def test_crds_render_as_their_sources_kept_on_uninstall(helm: Path) -> None:
    objects = render(helm)
    crds = {o["metadata"]["name"]: o for o in find(objects, "CustomResourceDefinition")}
    assert set(crds) == {
        "modelservices.tfmaas.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }
    sources = [
        doc
        for path in (
            REPO_ROOT / "tfmaas" / "api" / "crd.yaml",
            CHART_DIR / "files" / "crds" / "kopf-peering.yaml",
        )
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    for source in sources:
        rendered = dict(crds[source["metadata"]["name"]])
        meta = rendered.pop("metadata")
        # Everything but metadata as written, numbers included (no float round trip).
        assert rendered == {k: v for k, v in source.items() if k != "metadata"}
        assert meta["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert meta["labels"]["app.kubernetes.io/component"] == "crd"
        assert meta["labels"]["app.kubernetes.io/instance"] == "tfmaas"
    # The `--include-crds` path Helm would use for a crds/ dir adds nothing: there is none.
    assert len(find(render(helm, include_crds=True), "CustomResourceDefinition")) == 3


def test_a_second_release_can_leave_the_crds_to_the_first(helm: Path) -> None:
    objects = render(helm, {"crds.install": False, "rbac.scope": "namespace"}, release="tenant")
    assert not find(objects, "CustomResourceDefinition")
    assert find(objects, "Deployment")


def test_monitors_render_only_with_the_prometheus_operator_api(helm: Path) -> None:
    objects = render(helm, api_versions=[MONITORING_API])
    pod_monitor = one(objects, "PodMonitor")
    endpoints = pod_monitor["spec"]["podMetricsEndpoints"]
    assert {e["path"] for e in endpoints} == {"/monitoring/prometheus/metrics"}
    assert pod_monitor["spec"]["namespaceSelector"] == {"any": True}
    service_monitor = one(objects, "ServiceMonitor")
    assert service_monitor["spec"]["endpoints"][0]["port"] == "metrics"

    scoped = render(helm, {"watchNamespaces": ["team-a"]}, api_versions=[MONITORING_API])
    assert one(scoped, "PodMonitor")["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}

    off = render(helm, VARIANTS["monitoring-off"], api_versions=[MONITORING_API])
    assert {o["kind"] for o in off} == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "Service",
        "CustomResourceDefinition",
    }


def test_adapter_rule_configmap_matches_the_values_snippet(helm: Path) -> None:
    objects = render(helm)
    config = yaml.safe_load(one(objects, "ConfigMap", "tfmaas-adapter-rule")["data"]["config.yaml"])
    snippet = yaml.safe_load((CHART_DIR / "files" / "prometheus-adapter-values.yaml").read_text())
    assert config["rules"] == snippet["rules"]["custom"]

    renamed = render(helm, {"monitoring.requestRateMetric": "rps", "monitoring.rateWindow": "1m"})
    config = yaml.safe_load(one(renamed, "ConfigMap", "tfmaas-adapter-rule")["data"]["config.yaml"])
    assert config["rules"][0]["name"]["as"] == "rps"
    assert "[1m]" in config["rules"][0]["metricsQuery"]


def test_dashboard_configmap_carries_the_sidecar_label(helm: Path) -> None:
    dashboard = one(render(helm), "ConfigMap", "tfmaas-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"]["grafana_folder"] == "tfmaas"
    unfiled = one(
        render(helm, {"monitoring.grafanaDashboard.folder": ""}), "ConfigMap", "tfmaas-dashboard"
    )
    assert "annotations" not in unfiled["metadata"]
    expected = (CHART_DIR / "files" / "grafana-dashboard.json").read_text().rstrip("\n")
    assert dashboard["data"]["tfmaas-serving.json"] == expected


def test_network_policy_allows_dns_apiserver_and_metrics(helm: Path) -> None:
    policy = one(render(helm), "NetworkPolicy")["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    egress_ports = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    assert {(53, "UDP"), (53, "TCP"), (443, "TCP"), (6443, "TCP")} <= egress_ports
    ingress_ports = {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
    assert ingress_ports == {"health", "metrics"}

    pinned = one(render(helm, {"networkPolicy.apiServer.cidrs": ["10.0.0.1/32"]}), "NetworkPolicy")
    api_rule = pinned["spec"]["egress"][0]
    assert api_rule["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]


def normalized_rules(rules: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Rules as a set of (group, resource, verb) grants, so ordering and grouping don't matter."""
    return sorted(
        {
            (group, resource, verb)
            for rule in rules
            for group in rule.get("apiGroups", [])
            for resource in rule.get("resources", [])
            for verb in rule.get("verbs", [])
        }
    )


def deploy_rbac_objects() -> list[dict[str, Any]]:
    folder = REPO_ROOT / "deploy" / "rbac"
    return [
        doc
        for path in sorted(folder.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def test_chart_rbac_rules_equal_deploy_rbac(helm: Path) -> None:
    deploy = deploy_rbac_objects()
    for kind, values in (("ClusterRole", {}), ("Role", {"rbac.scope": "namespace"})):
        deploy_roles = [o for o in deploy if o["kind"] == kind]
        assert len(deploy_roles) == 1, f"deploy/rbac/ should hold one {kind}"
        chart_rules = one(render(helm, values), kind, "tfmaas")["rules"]
        assert normalized_rules(chart_rules) == normalized_rules(deploy_roles[0]["rules"]), kind


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"rbac.scope": "everywhere"}, "scope"),
        ({"operator.replicas": "two"}, "replicas"),
        ({"operator.replicaCount": 2}, "replicaCount"),
        ({"image.pullPolicy": "Sometimes"}, "pullPolicy"),
        ({"monitoring.rateWindow": "2 minutes"}, "rateWindow"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "watchNamespaces"),
        ({"monitoring.podMonitor.enabled": "yes"}, "enabled"),
        ({"defaults.storage.endpoint": "minio:9000"}, "endpoint"),
        ({"allowedImages": "registry.example/team/"}, "allowedImages"),
        ({"operator.logFormat": "yaml"}, "logFormat"),
        ({"defaults.serving.gpuMemoryFraction": 0}, "gpuMemoryFraction"),
        ({"defaults.serving.gpuMemoryFraction": 1.5}, "gpuMemoryFraction"),
        ({"defaults.serving.gpuMemoryFraction": "0"}, "gpuMemoryFraction"),
        ({"defaults.serving.gpuMemoryFraction": "1.5"}, "gpuMemoryFraction"),
        ({"defaults.serving.gpuMemoryFraction": "most"}, "gpuMemoryFraction"),
        ({"defaults.serving.gpuImage.repository": ""}, "repository"),
        ({"defaults.serving.pod": {"hostNetwork": True}}, "hostNetwork"),
        ({"defaults.training.pod": {"tolerations": [{"operator": "Maybe"}]}}, "operator"),
        ({"defaults.training.pod": {"serviceAccountName": "Team SA"}}, "serviceAccountName"),
        ({"defaults.serving.pod": {"nodeSelector": {"pool": "bad value!"}}}, "pool"),
        ({"defaults.gpu": {"tolerations": [{"effect": "Sometimes"}]}}, "effect"),
    ],
)
def test_schema_rejects_bad_values_with_a_message_naming_them(
    helm: Path, values: dict[str, Any], named: str
) -> None:
    bad = run_helm(
        helm,
        "template",
        "tfmaas",
        str(CHART_DIR),
        *kube_version_args(),
        *set_args(values),
        check=False,
    )
    assert bad.returncode != 0, f"{values} was accepted"
    assert "values don't meet the specifications of the schema" in bad.stderr
    assert named in bad.stderr, bad.stderr


def test_defaults_configmap_is_what_the_operator_config_reads(helm: Path) -> None:
    from tfmaas.operator.config import OperatorConfig

    objects = render(
        helm,
        {
            "defaults.storage.endpoint": "http://minio:9000",
            "defaults.serving.command": ["tfmaas", "serve"],
            "operator.extraConfig": {"trainingBackoffLimit": 3, "gpuNodeSelector": {"gpu": "a"}},
        },
    )
    data = one(objects, "ConfigMap", "tfmaas-defaults")["data"]
    config = OperatorConfig.load(environ=data)
    fields = {f"TFMAAS_{name.upper()}" for name in OperatorConfig.__dataclass_fields__}
    assert set(data) <= fields, f"settings the operator does not know: {set(data) - fields}"
    assert config.trainer_image == data["TFMAAS_TRAINER_IMAGE"]
    assert config.storage_initializer_image == container(objects)["image"]
    assert config.default_store_endpoint == "http://minio:9000"
    assert config.default_store_secret is None
    assert config.serving_command == ("tfmaas", "serve")
    assert config.training_backoff_limit == 3
    assert dict(config.gpu_node_selector) == {"gpu": "a"}
    assert config.request_rate_metric == "tfserving_requests_per_second"


def test_gpu_serving_values_reach_the_operator_config(helm: Path) -> None:
    from tfmaas.operator.config import OperatorConfig

    default = OperatorConfig.load(environ=one(render(helm), "ConfigMap", "tfmaas-defaults")["data"])
    assert default.serving_gpu_image == default.serving_image + "-gpu"
    assert default.serving_gpu_memory_fraction == 0.9
    values = {
        "defaults.serving.gpuImage.repository": "registry.example/serving",
        "defaults.serving.gpuImage.tag": "2.19.0-gpu",
        "defaults.serving.gpuMemoryFraction": 0.3,
    }
    data = one(render(helm, values), "ConfigMap", "tfmaas-defaults")["data"]
    config = OperatorConfig.load(environ=data)
    assert config.serving_gpu_image == "registry.example/serving:2.19.0-gpu"
    assert config.serving_gpu_memory_fraction == 0.3
    # Plain --set, as an admin types it, makes a decimal a string.
    out = run_helm(
        helm,
        "template",
        "tfmaas",
        str(CHART_DIR),
        *kube_version_args(),
        "--set",
        "defaults.serving.gpuMemoryFraction=0.45",
    ).stdout
    rendered = [doc for doc in yaml.safe_load_all(out) if doc]
    data = one(rendered, "ConfigMap", "tfmaas-defaults")["data"]
    assert OperatorConfig.load(environ=data).serving_gpu_memory_fraction == 0.45


def test_allowed_images_reach_the_operator_config(helm: Path) -> None:
    from tfmaas.operator.config import OperatorConfig

    default = one(render(helm), "ConfigMap", "tfmaas-defaults")["data"]
    assert OperatorConfig.load(environ=default).allowed_images == ()
    prefixes = ["registry.example/team/", "tensorflow/serving:"]
    data = one(render(helm, {"allowedImages": prefixes}), "ConfigMap", "tfmaas-defaults")["data"]
    assert OperatorConfig.load(environ=data).allowed_images == tuple(prefixes)


def test_chart_sets_every_default_the_kustomize_deploy_sets(helm: Path) -> None:
    deploy = yaml.safe_load((REPO_ROOT / "deploy" / "operator" / "defaults.yaml").read_text())
    chart = one(render(helm), "ConfigMap", "tfmaas-defaults")["data"]
    assert set(deploy["data"]) <= set(chart)
    for key in deploy["data"]:
        if key.endswith("_IMAGE") or key.startswith("TFMAAS_SERVING_GPU"):
            assert chart[key] == deploy["data"][key], key


def test_access_control_roles_and_defaults(helm: Path) -> None:
    objects = render(helm)
    gateway = one(objects, "ClusterRole", "tfmaas-access-gateway")
    assert normalized_rules(gateway["rules"]) == normalized_rules(
        [
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
        ]
    )
    caller = one(objects, "ClusterRole", "tfmaas-model-caller")
    assert caller["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert {
        "apiGroups": ["tfmaas.io"],
        "resources": ["modelservices/predict"],
        "verbs": ["create"],
    } in caller["rules"]
    viewer = one(objects, "ClusterRole", "tfmaas-model-viewer")
    assert viewer["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert viewer["rules"] == [
        {"apiGroups": ["tfmaas.io"], "resources": ["modelservices"], "verbs": ["get"]}
    ]
    defaults = one(objects, "ConfigMap", "tfmaas-defaults")["data"]
    assert defaults["TFMAAS_ACCESS_MODE"] == "none"
    assert defaults["TFMAAS_ACCESS_GATEWAY_IMAGE"].startswith("tfmaas/access-gateway:")
    assert defaults["TFMAAS_METRICS_NAMESPACES"] == '["monitoring"]'
    guarded = render(helm, {"access.mode": "kubernetes", "access.aggregatedClusterRoles": False})
    assert (
        one(guarded, "ConfigMap", "tfmaas-defaults")["data"]["TFMAAS_ACCESS_MODE"] == "kubernetes"
    )
    assert not find(guarded, "ClusterRole", "tfmaas-model-caller")
    assert one(guarded, "ClusterRole", "tfmaas-access-gateway")


def test_pod_defaults_and_the_gpu_pool_reach_the_operator_config(helm: Path) -> None:
    from tfmaas.operator.config import OperatorConfig

    default = OperatorConfig.load(environ=one(render(helm), "ConfigMap", "tfmaas-defaults")["data"])
    assert default.training_pod == {} and default.serving_pod == {}
    assert default.gpu_tolerations == (
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    )
    training = {
        "serviceAccountName": "irsa-trainer",
        "imagePullSecrets": [{"name": "registry"}],
        "priorityClassName": "batch-low",
        "labels": {"kueue.x-k8s.io/queue-name": "ml"},
    }
    serving = {
        "nodeSelector": {"pool": "serving"},
        "tolerations": [{"key": "pool", "operator": "Equal", "value": "serving"}],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        "annotations": {"example.com/owner": "ml platform"},
    }
    gpu = {"nodeSelector": {"accelerator": "h100"}, "tolerations": [{"operator": "Exists"}]}
    values = {
        "defaults.training.pod": training,
        "defaults.serving.pod": serving,
        "defaults.gpu": gpu,
    }
    config = OperatorConfig.load(
        environ=one(render(helm, values), "ConfigMap", "tfmaas-defaults")["data"]
    )
    assert config.training_pod == training
    assert config.serving_pod == serving
    assert dict(config.gpu_node_selector) == {"accelerator": "h100"}
    assert config.gpu_tolerations == ({"operator": "Exists"},)


def test_extra_config_s_older_gpu_spelling_still_wins_without_a_second_key(helm: Path) -> None:
    from tfmaas.operator.config import OperatorConfig

    old = {
        "gpuNodeSelector": {"gpu": "a"},
        "gpuTolerations": [{"key": "gpu", "operator": "Exists"}],
    }
    values = {"operator.extraConfig": old, "defaults.gpu": {"nodeSelector": {"gpu": "b"}}}
    out = run_helm(
        helm, "template", "tfmaas", str(CHART_DIR), *kube_version_args(), *set_args(values)
    ).stdout
    # A ConfigMap key written twice would be refused by the API server (or one silently lost).
    assert out.count("TFMAAS_GPU_NODE_SELECTOR:") == 1
    assert out.count("TFMAAS_GPU_TOLERATIONS:") == 1
    rendered = [doc for doc in yaml.safe_load_all(out) if doc]
    config = OperatorConfig.load(environ=one(rendered, "ConfigMap", "tfmaas-defaults")["data"])
    assert dict(config.gpu_node_selector) == {"gpu": "a"}
    assert config.gpu_tolerations == ({"key": "gpu", "operator": "Exists"},)
