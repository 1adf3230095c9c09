"""The access gateway (tools/access-gateway) in front of `tfmaas serve`, deciding with the real
control plane: ServiceAccounts, Roles and RoleBindings, tokens from the TokenRequest API."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import tensorflow as tf
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tests.integration.test_serving_server import Running, start
from tfmaas.cli.main import main as cli_main
from tfmaas.client import GrpcClient, PredictionError, RestClient
from tfmaas.dev import tools
from tfmaas.dev.cluster import LocalCluster
from tfmaas.dev.pki import CertificateAuthority, CertRequest, certificate_pem, private_key_pem
from tfmaas.serving.testing import DEMO_CLASSES

pytestmark = pytest.mark.integration

MODEL_SERVICE = "sentiment"
# Short enough that revocation shows within a test, long enough that a burst hits the cache.
ALLOW_CACHE_TTL_S = 4
GATEWAY_RBAC = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRole",
    "metadata": {"name": "test-access-gateway"},
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


def caller_role(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "sentiment-caller", "namespace": namespace},
        "rules": [
            {
                "apiGroups": ["tfmaas.io"],
                "resources": ["modelservices/predict"],
                "resourceNames": [MODEL_SERVICE],
                "verbs": ["create"],
            },
            {"apiGroups": ["tfmaas.io"], "resources": ["modelservices"], "verbs": ["get"]},
        ],
    }


def role_binding(namespace: str, account: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": f"{account}-calls-sentiment", "namespace": namespace},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "sentiment-caller",
        },
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }


@dataclass
class Gateway:
    process: subprocess.Popen[str]
    ports: dict[str, int]
    namespace: str
    tokens: dict[str, str]

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.ports['grpc']}"

    def rest(self, path: str) -> str:
        return f"http://127.0.0.1:{self.ports['rest']}{path}"

    def counters(self) -> dict[str, int]:
        url = f"http://127.0.0.1:{self.ports['metrics']}/gateway/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        return {
            match[1]: int(match[2])
            for match in re.finditer(r'^\S+\{\w+="(\w+)"\} (\d+)$', text, re.MULTILINE)
        }


def start_gateway(
    binary: Path, server: Running, *, namespace: str, kubeconfig: Path, extra: list[str]
) -> tuple[subprocess.Popen[str], dict[str, int]]:
    process = subprocess.Popen(
        [
            str(binary),
            "--grpc-listen-address=127.0.0.1:0",
            "--rest-listen-address=127.0.0.1:0",
            "--metrics-listen-address=127.0.0.1:0",
            f"--grpc-upstream=127.0.0.1:{server.server.grpc_port}",
            f"--rest-upstream=127.0.0.1:{server.server.rest_port}",
            f"--namespace={namespace}",
            f"--model-service={MODEL_SERVICE}",
            f"--kubeconfig={kubeconfig}",
            f"--authentication-cache-ttl={ALLOW_CACHE_TTL_S}s",
            f"--authorization-allow-cache-ttl={ALLOW_CACHE_TTL_S}s",
            "--authorization-deny-cache-ttl=1s",
            *extra,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    banner = process.stdout.readline().split()
    assert banner and banner[0] == "listening", f"gateway did not start: {banner}"
    return process, {name: int(port) for name, port in (word.split("=") for word in banner[1:])}


@pytest.fixture(scope="module")
def access_gateway_binary() -> Path:
    return tools.ensure("access-gateway")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    running = start(tmp_path_factory.mktemp("serving"), frontend="python")
    yield running
    running.server.stop()


@pytest.fixture(scope="module")
def rbac(cluster: LocalCluster) -> Iterator[tuple[str, dict[str, str], Path]]:
    """A namespace with an allowed caller, a caller without the rule, and the gateway's own
    ServiceAccount holding exactly the RBAC the chart grants it."""
    namespace = f"access-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", namespace)
    for account in ("caller", "stranger", "gateway"):
        cluster.kubectl("create", "serviceaccount", account, "-n", namespace)
    binding_name = f"test-access-gateway-{namespace}"
    binding: dict[str, Any] = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": binding_name},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "test-access-gateway",
        },
        "subjects": [{"kind": "ServiceAccount", "name": "gateway", "namespace": namespace}],
    }
    documents = [GATEWAY_RBAC, binding, caller_role(namespace), role_binding(namespace, "caller")]
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": documents}),
    )
    tokens = {
        account: cluster.kubectl("create", "token", account, "-n", namespace).stdout.strip()
        for account in ("caller", "stranger")
    }
    kubeconfig = cluster.kubeconfig_for_service_account(namespace, "gateway")
    try:
        yield namespace, tokens, kubeconfig
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        cluster.kubectl("delete", "clusterrolebinding", binding_name, check=False)


@pytest.fixture(scope="module")
def gateway(
    access_gateway_binary: Path, served: Running, rbac: tuple[str, dict[str, str], Path]
) -> Iterator[Gateway]:
    namespace, tokens, kubeconfig = rbac
    process, ports = start_gateway(
        access_gateway_binary, served, namespace=namespace, kubeconfig=kubeconfig, extra=[]
    )
    try:
        yield Gateway(process, ports, namespace, tokens)
    finally:
        process.terminate()
        process.wait(timeout=30)


def predict(
    channel: grpc.Channel, texts: list[str], *, metadata: list[tuple[str, str]] | None = None
) -> predict_pb2.PredictResponse:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "demo"
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(texts, dtype=tf.string))
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return stub.Predict(request, metadata=metadata, timeout=10)


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def grpc_predict(target: str, metadata: list[tuple[str, str]]) -> Any:
    with grpc.insecure_channel(target) as channel:
        return predict(channel, ["great"], metadata=metadata)


def grpc_error(target: str, metadata: list[tuple[str, str]]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        grpc_predict(target, metadata)
    return caught.value


def rest_call(
    url: str, token: str | None, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode() if body is not None else None,
        method="POST" if body is not None else "GET",
    )
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_allowed_service_account_gets_answers(gateway: Gateway) -> None:
    token = gateway.tokens["caller"]
    response = grpc_predict(gateway.grpc_target, bearer(token))
    assert "scores" in response.outputs
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "demo"
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            request, metadata=bearer(token), timeout=10
        )
    assert status.model_version_status
    code, body = rest_call(gateway.rest("/v1/models/demo:predict"), token, {"instances": ["great"]})
    assert code == 200 and len(body["predictions"]) == 1
    code, body = rest_call(gateway.rest("/v1/models/demo"), token)
    assert code == 200 and body["model_version_status"]


def test_other_service_account_is_denied_with_the_missing_permission(gateway: Gateway) -> None:
    token = gateway.tokens["stranger"]
    error = grpc_error(gateway.grpc_target, bearer(token))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    for part in ('"create"', '"modelservices/predict"', f'"{MODEL_SERVICE}"', gateway.namespace):
        assert part in error.details()
    code, body = rest_call(gateway.rest("/v1/models/demo:predict"), token, {"instances": ["great"]})
    assert code == 403 and '"modelservices/predict"' in body["error"]
    code, body = rest_call(gateway.rest("/v1/models/demo/metadata"), token)
    assert code == 403 and '"get" on "modelservices"' in body["error"]


def test_reloading_the_config_is_refused_even_to_an_allowed_caller(gateway: Gateway) -> None:
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.HandleReloadConfigRequest(
                model_management_pb2.ReloadConfigRequest(),
                metadata=bearer(gateway.tokens["caller"]),
                timeout=10,
            )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def resigned(cluster: LocalCluster, token: str, **claims: int) -> str:
    """`token` with `claims` replaced, signed again with the cluster's real ServiceAccount key,
    so the API server rejects it only for what the claims now say."""
    header, payload, _ = token.split(".")

    def decode(part: str) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(
            base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        )
        return decoded

    def encode(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    body = {**decode(payload), **claims}
    signing_input = f"{header}.{encode(json.dumps(body).encode())}"
    key = serialization.load_pem_private_key(cluster.pki.service_account_key.read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{encode(signature)}"


def test_missing_bad_and_expired_tokens_are_unauthenticated(
    gateway: Gateway, cluster: LocalCluster
) -> None:
    caller = gateway.tokens["caller"]
    now = int(time.time())
    # The same claims re-signed are accepted: the expired one below fails for its expiry alone.
    # (TokenRequest's minimum lifetime is 10 minutes, too long to wait for in a test.)
    assert grpc_predict(gateway.grpc_target, bearer(resigned(cluster, caller, iat=now - 5)))
    expired = resigned(cluster, caller, iat=now - 7200, nbf=now - 7200, exp=now - 3600)
    for metadata in ([], bearer("not-a-token"), bearer(caller + "x"), bearer(expired)):
        assert grpc_error(gateway.grpc_target, metadata).code() == grpc.StatusCode.UNAUTHENTICATED
    for token in (None, "not-a-token", expired):
        code, body = rest_call(
            gateway.rest("/v1/models/demo:predict"), token, {"instances": ["great"]}
        )
        assert code == 401 and "Bearer" in body["error"]


def test_a_burst_with_one_token_costs_one_review_per_ttl(
    gateway: Gateway, cluster: LocalCluster
) -> None:
    # A token the gateway has not seen: its first call must miss both caches.
    token = cluster.kubectl("create", "token", "caller", "-n", gateway.namespace).stdout.strip()
    before = gateway.counters()
    started = time.monotonic()
    calls = 200
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        for _ in range(calls):
            predict(channel, ["great"], metadata=bearer(token))
    elapsed = time.monotonic() - started
    after = gateway.counters()
    reviews = {kind: after[kind] - before[kind] for kind in ("TokenReview", "SubjectAccessReview")}
    ttl_windows = int(elapsed // ALLOW_CACHE_TTL_S) + 1
    print(f"\n{calls} calls in {elapsed:.2f}s with one token: {reviews} (TTL {ALLOW_CACHE_TTL_S}s)")
    assert after["allowed"] - before["allowed"] == calls
    assert all(1 <= count <= ttl_windows for count in reviews.values()), reviews


def test_revoking_the_role_binding_takes_effect_within_the_cache_ttl(
    gateway: Gateway, cluster: LocalCluster
) -> None:
    token = gateway.tokens["caller"]
    grpc_predict(gateway.grpc_target, bearer(token))
    cluster.kubectl("delete", "rolebinding", "caller-calls-sentiment", "-n", gateway.namespace)
    revoked = time.monotonic()
    deadline = revoked + 60  # only against a hang; the figure printed is what matters
    while True:
        try:
            grpc_predict(gateway.grpc_target, bearer(token))
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED
            break
        assert time.monotonic() < deadline, "the revoked binding never took effect"
        time.sleep(0.2)
    print(
        f"\nrevoked RoleBinding took effect after {time.monotonic() - revoked:.1f}s "
        f"(allow-cache TTL {ALLOW_CACHE_TTL_S}s)"
    )
    cluster.kubectl("apply", "-f", "-", input=json.dumps(role_binding(gateway.namespace, "caller")))
    # Granted again, the caller gets answers once the 1 s deny cache lapses.
    while True:
        try:
            grpc_predict(gateway.grpc_target, bearer(token))
            break
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED
            assert time.monotonic() < deadline + 60, "the restored binding never took effect"
            time.sleep(0.2)


def test_metrics_and_probes_pass_without_a_token(gateway: Gateway) -> None:
    base = f"http://127.0.0.1:{gateway.ports['metrics']}"
    with urllib.request.urlopen(f"{base}/monitoring/prometheus/metrics", timeout=10) as response:
        assert ":tensorflow:serving:request_count" in response.read().decode()
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(base + path, timeout=10) as response:
            assert response.status == 200
    # Nothing else is open on it: the model's API is reachable only through the guarded ports.
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{base}/v1/models/demo", timeout=10)
    assert caught.value.code == 404


def test_tls_with_bearer_call_credentials(
    tmp_path: Path,
    access_gateway_binary: Path,
    served: Running,
    rbac: tuple[str, dict[str, str], Path],
) -> None:
    namespace, tokens, kubeconfig = rbac
    authority = CertificateAuthority.create("test-ca")
    certificate, key = authority.issue(
        CertRequest(common_name="sentiment", ip_addresses=("127.0.0.1",), server=True)
    )
    (tmp_path / "tls.crt").write_bytes(certificate_pem(certificate))
    (tmp_path / "tls.key").write_bytes(private_key_pem(key))
    process, ports = start_gateway(
        access_gateway_binary,
        served,
        namespace=namespace,
        kubeconfig=kubeconfig,
        extra=[
            f"--tls-cert-file={tmp_path / 'tls.crt'}",
            f"--tls-private-key-file={tmp_path / 'tls.key'}",
        ],
    )
    try:
        credentials = grpc.composite_channel_credentials(
            grpc.ssl_channel_credentials(root_certificates=certificate_pem(authority.certificate)),
            grpc.access_token_call_credentials(tokens["caller"]),
        )
        with grpc.secure_channel(f"127.0.0.1:{ports['grpc']}", credentials) as channel:
            assert "scores" in predict(channel, ["great"]).outputs
        with (
            grpc.secure_channel(
                f"127.0.0.1:{ports['grpc']}",
                grpc.ssl_channel_credentials(
                    root_certificates=certificate_pem(authority.certificate)
                ),
            ) as channel,
            pytest.raises(grpc.RpcError) as caught,
        ):
            predict(channel, ["great"])
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_tfmaas_clients_send_the_token(gateway: Gateway) -> None:
    token = gateway.tokens["caller"]
    with GrpcClient(gateway.grpc_target, token=token, retries=0) as client:
        assert client.predict("demo", ["great"])[0].label in DEMO_CLASSES
    client = GrpcClient(gateway.grpc_target, retries=0)
    with client, pytest.raises(PredictionError) as caught:
        client.predict("demo", ["great"])
    assert caught.value.code == "UNAUTHENTICATED"
    rest = RestClient(gateway.rest(""), token=token, retries=0)
    assert rest.predict("demo", ["great"])[0].label in DEMO_CLASSES
    with pytest.raises(PredictionError) as caught:
        RestClient(gateway.rest(""), token=gateway.tokens["stranger"], retries=0).predict(
            "demo", ["great"]
        )
    assert caught.value.code == "PERMISSION_DENIED"


def test_tfmaas_predict_with_token_file_and_ca_file(
    tmp_path: Path,
    access_gateway_binary: Path,
    served: Running,
    rbac: tuple[str, dict[str, str], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    namespace, tokens, kubeconfig = rbac
    authority = CertificateAuthority.create("test-ca")
    certificate, key = authority.issue(
        CertRequest(common_name="sentiment", ip_addresses=("127.0.0.1",), server=True)
    )
    (tmp_path / "tls.crt").write_bytes(certificate_pem(certificate))
    (tmp_path / "tls.key").write_bytes(private_key_pem(key))
    (tmp_path / "ca.crt").write_bytes(certificate_pem(authority.certificate))
    (tmp_path / "token").write_text(tokens["caller"] + "\n")
    process, ports = start_gateway(
        access_gateway_binary,
        served,
        namespace=namespace,
        kubeconfig=kubeconfig,
        extra=[
            f"--tls-cert-file={tmp_path / 'tls.crt'}",
            f"--tls-private-key-file={tmp_path / 'tls.key'}",
        ],
    )
    common = ["--model", "demo", "--token-file", str(tmp_path / "token")]
    common += ["--ca-file", str(tmp_path / "ca.crt"), "--retries", "0"]
    try:
        assert cli_main(["predict", "--target", f"127.0.0.1:{ports['grpc']}", *common, "ok"]) == 0
        rest_url = f"https://127.0.0.1:{ports['rest']}"
        assert cli_main(["predict", "--rest", rest_url, *common, "ok"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert [json.loads(line)["label"] in DEMO_CLASSES for line in lines] == [True, True]
        # Without the token file the same call is refused, and the token is never printed.
        assert cli_main(["predict", "--rest", rest_url, *common[:2], *common[4:], "ok"]) == 1
        assert tokens["caller"] not in capsys.readouterr().err
    finally:
        process.terminate()
        process.wait(timeout=30)
