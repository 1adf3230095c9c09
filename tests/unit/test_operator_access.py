"""spec.serving.access rendered: the access gateway container, its ServiceAccount and
ClusterRoleBinding, the NetworkPolicy, and TF Serving moved off the public ports."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.test_operator_manifests import restricted_violations, service
from tfmaas.api.validation import SpecError
from tfmaas.errors import UserError
from tfmaas.operator.config import OperatorConfig
from tfmaas.operator.manifests.access import (
    access_mode,
    build_gateway_cluster_role_binding,
    build_gateway_service_account,
    build_network_policy,
)
from tfmaas.operator.manifests.configmap import serving_config
from tfmaas.operator.manifests.deployment import build_deployment
from tfmaas.operator.manifests.service import build_service

CONFIG = OperatorConfig(
    serving_image="serving:test",
    access_gateway_image="gateway:test",
    metrics_namespaces=("monitoring", "prometheus"),
)


def pod_spec(access: dict[str, Any] | None = None, config: OperatorConfig = CONFIG) -> Any:
    model = service(serving={"access": access}) if access is not None else service()
    deployment = build_deployment(model, serving_config(model, "stable", 3), 1, config)
    return deployment["spec"]["template"]


def containers(template: Any) -> dict[str, Any]:
    return {c["name"]: c for c in template["spec"]["containers"]}


def test_mode_comes_from_the_spec_then_tls_then_the_operator_default() -> None:
    guarded_default = OperatorConfig(access_mode="kubernetes")
    assert access_mode(service(), CONFIG) == "none"
    assert access_mode(service(), guarded_default) == "kubernetes"
    assert access_mode(service(serving={"access": {"mode": "none"}}), guarded_default) == "none"
    with_tls = service(serving={"access": {"tls": {"secretName": "reviews-tls"}}})
    assert access_mode(with_tls, CONFIG) == "kubernetes"


def test_without_access_control_the_pod_is_unchanged() -> None:
    template = pod_spec()
    assert list(containers(template)) == ["tfserving"]
    server = containers(template)["tfserving"]
    assert "--port=8500" in server["args"] and "--rest_api_port=8501" in server["args"]
    assert [p["name"] for p in server["ports"]] == ["grpc", "http"]
    assert "serviceAccountName" not in template["spec"]
    assert template["metadata"]["annotations"]["prometheus.io/port"] == "8501"


def test_the_gateway_takes_the_public_ports_and_tf_serving_moves_behind_it() -> None:
    template = pod_spec({"mode": "kubernetes"})
    server, gateway = containers(template)["tfserving"], containers(template)["access-gateway"]
    assert "--port=9000" in server["args"] and "--rest_api_port=9001" in server["args"]
    assert server["ports"] == []
    assert server["startupProbe"]["tcpSocket"]["port"] == 9000
    assert server["livenessProbe"]["tcpSocket"]["port"] == 9000
    assert server["readinessProbe"]["httpGet"] == {
        "path": "/v1/models/reviews/labels/stable",
        "port": 9001,
    }
    assert gateway["image"] == "gateway:test"
    assert gateway["command"] == ["access-gateway"]
    assert {p["name"]: p["containerPort"] for p in gateway["ports"]} == {
        "grpc": 8500,
        "http": 8501,
        "metrics": 8502,
    }
    # The Service targets the named ports, which are now the gateway's.
    assert {p["targetPort"] for p in build_service(service())["spec"]["ports"]} <= {"grpc", "http"}
    assert gateway["args"] == [
        "--grpc-listen-address=:8500",
        "--rest-listen-address=:8501",
        "--metrics-listen-address=:8502",
        "--grpc-upstream=127.0.0.1:9000",
        "--rest-upstream=127.0.0.1:9001",
        "--namespace=ml",
        "--model-service=reviews",
        "--upstream-readiness-path=/v1/models/reviews/labels/stable",
    ]
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert template["metadata"]["annotations"]["prometheus.io/port"] == "8502"
    assert template["spec"]["serviceAccountName"] == "reviews-access-gateway"
    assert not restricted_violations(template["spec"])


def test_only_the_gateway_holds_a_token_and_it_is_short_lived() -> None:
    template = pod_spec({"mode": "kubernetes"})
    assert template["spec"]["automountServiceAccountToken"] is False
    token_mounts = {
        name
        for name, container in containers(template).items()
        for mount in container["volumeMounts"]
        if mount["name"] == "gateway-token"
    }
    assert token_mounts == {"access-gateway"}
    volume = next(v for v in template["spec"]["volumes"] if v["name"] == "gateway-token")
    sources = volume["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["expirationSeconds"] <= 3607
    assert sources[1]["configMap"]["name"] == "kube-root-ca.crt"


def test_tls_mounts_the_secret_and_passes_its_files() -> None:
    template = pod_spec({"mode": "kubernetes", "tls": {"secretName": "reviews-tls"}})
    gateway = containers(template)["access-gateway"]
    assert "--tls-cert-file=/etc/tfmaas/tls/tls.crt" in gateway["args"]
    assert "--tls-private-key-file=/etc/tfmaas/tls/tls.key" in gateway["args"]
    assert {"name": "gateway-tls", "mountPath": "/etc/tfmaas/tls", "readOnly": True} in gateway[
        "volumeMounts"
    ]
    assert {"name": "gateway-tls", "secret": {"secretName": "reviews-tls"}} in template["spec"][
        "volumes"
    ]


def test_tls_without_the_gateway_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match=r"serving\.access\.tls needs access\.mode kubernetes"):
        service(serving={"access": {"mode": "none", "tls": {"secretName": "reviews-tls"}}})
    with pytest.raises(SpecError, match="mode"):
        service(serving={"access": {"mode": "rbac"}})


def test_gateway_identity_and_its_review_rights() -> None:
    account = build_gateway_service_account(service())
    assert account["metadata"]["name"] == "reviews-access-gateway"
    assert account["metadata"]["namespace"] == "ml"
    assert account["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert account["automountServiceAccountToken"] is False
    binding = build_gateway_cluster_role_binding(service())
    assert "namespace" not in binding["metadata"] and "ownerReferences" not in binding["metadata"]
    assert binding["metadata"]["name"] == "tfmaas-access-gateway:ml:reviews"
    assert binding["roleRef"]["name"] == "tfmaas-access-gateway"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "reviews-access-gateway", "namespace": "ml"}
    ]


def test_network_policy_admits_only_the_gateway_and_metrics_ports() -> None:
    policy = build_network_policy(service(), CONFIG)
    spec = policy["spec"]
    assert policy["metadata"]["namespace"] == "ml"
    assert spec["podSelector"]["matchLabels"] == {
        "tfmaas.io/model-service": "reviews",
        "app.kubernetes.io/component": "serving",
    }
    assert spec["policyTypes"] == ["Ingress"]
    api, metrics = spec["ingress"]
    assert "from" not in api  # anyone may try; the gateway decides
    assert [p["port"] for p in api["ports"]] == [8500, 8501]
    assert [p["port"] for p in metrics["ports"]] == [8502]
    selector = metrics["from"][0]["namespaceSelector"]["matchExpressions"][0]
    assert selector == {
        "key": "kubernetes.io/metadata.name",
        "operator": "In",
        "values": ["monitoring", "prometheus"],
    }
    open_ports = {p["port"] for rule in spec["ingress"] for p in rule["ports"]}
    assert not open_ports & {9000, 9001}


def test_a_mistyped_access_mode_is_refused() -> None:
    with pytest.raises(UserError, match="access_mode must be none or kubernetes"):
        OperatorConfig.load({"TFMAAS_ACCESS_MODE": "kubernets"})


def test_operator_config_reads_the_access_settings() -> None:
    config = OperatorConfig.load(
        {
            "TFMAAS_ACCESS_MODE": "kubernetes",
            "TFMAAS_ACCESS_GATEWAY_IMAGE": "registry.example/gw:1",
            "TFMAAS_METRICS_NAMESPACES": '["monitoring", "obs"]',
        }
    )
    assert config.access_mode == "kubernetes"
    assert config.access_gateway_image == "registry.example/gw:1"
    assert config.metrics_namespaces == ("monitoring", "obs")


class NoCallsKube:
    """Any API call fails the test: a converged unguarded ModelService must cost none."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected API call: {name}")


@pytest.mark.parametrize("previous", [None, "none"])
def test_an_unguarded_model_service_costs_no_access_calls(previous: str | None) -> None:
    from tfmaas.operator.apply import Applier
    from tfmaas.operator.serving import converge_access

    kube = NoCallsKube()
    mode = converge_access(
        kube,  # type: ignore[arg-type]
        Applier(kube),  # type: ignore[arg-type]
        service(),
        OperatorConfig(),
        previous_mode=previous,
        rolled=True,
    )
    assert mode == "none"


def test_the_endpoint_says_https_only_where_the_gateway_terminates_tls() -> None:
    from tfmaas.operator.manifests.service import endpoint

    tls = {"mode": "kubernetes", "tls": {"secretName": "s"}}
    assert endpoint(service(serving={"access": tls}))["rest"].startswith("https://")
    assert endpoint(service(serving={"access": {"mode": "kubernetes"}}))["rest"].startswith(
        "http://"
    )
