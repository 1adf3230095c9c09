"""The whole loop with pods that run: the sample ModelService is applied, the operator (a pod,
installed by the chart) starts the training Job, the trainer container publishes version 1 to
MinIO, the serving pods become Ready and gRPC Predict through the Service answers."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from tests.e2e.conftest import NodeCluster
from tests.fixtures.plain_load import PlainLoad
from tfmaas.dev import images, stack
from tfmaas.dev.minio import MinioServer
from tfmaas.dev.monitoring import LocalPrometheus
from tfmaas.dev.pki import CertificateAuthority, CertRequest, certificate_pem, private_key_pem
from tfmaas.operator.naming import SERVING_CONTAINER

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SAMPLE = images.REPO_ROOT / "deploy" / "samples" / "sentiment.yaml"
NAME = "sentiment"
NAMESPACE = "default"


@dataclass
class Loop:
    minio: MinioServer
    prometheus: LocalPrometheus
    built: dict[str, images.BuiltImage]


@pytest.fixture(scope="module")
def loop(node_cluster: NodeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    cluster, node = node_cluster.cluster, node_cluster.node
    try:
        built = images.project_images()
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the project's images cannot be built: {exc}")
        pytest.skip(f"the project's images cannot be built here: {exc}")
    for image in built.values():
        node.import_image(image)
    minio = MinioServer(data_dir=tmp_path_factory.mktemp("e2e-minio"))
    minio.start()
    try:
        minio.bucket(stack.MODELS_BUCKET)
        stack.publish_host_service(
            cluster,
            node,
            namespace=stack.SYSTEM_NAMESPACE,
            name="minio",
            service_port=stack.MINIO_SERVICE_PORT,
            host_port=minio.port,
        )
        stack.create_store_secret(cluster, minio, NAMESPACE)
        stack.install_chart(cluster, built, extra_values={"networkPolicy.enabled": "false"})
        prometheus = stack.start_prometheus(cluster, tmp_path_factory.mktemp("e2e-prometheus"))
        adapter = stack.install_metrics_adapter(cluster, node, prometheus)
        try:
            yield Loop(minio=minio, prometheus=prometheus, built=built)
        finally:
            adapter.stop()
            prometheus.stop()
    finally:
        minio.stop()


def _small_sample() -> dict[str, Any]:
    """The sample as shipped, with a training budget and requests that fit a 2-CPU node."""
    spec = yaml.safe_load(SAMPLE.read_text())
    training = spec["spec"]["training"]
    training["hyperparameters"].update({"epochs": 2, "maxExamples": 6000})
    training["resources"].update({"cpu": "1", "memory": "3Gi"})
    # This checks the loop, not the model: a small budget must still pass the gate.
    training["qualityGate"] = {"minAccuracy": 0.6}
    serving = spec["spec"]["serving"]
    serving["autoscaling"].update({"minReplicas": 1, "maxReplicas": 2})
    serving["resources"] = {"cpu": "250m", "memory": "1Gi"}
    return spec  # type: ignore[no-any-return]


def _wait(what: str, predicate: Any, timeout: float, diagnose: Any) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(3)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{diagnose()}")


def test_the_sample_trains_publishes_and_serves_through_the_service(
    node_cluster: NodeCluster, loop: Loop, figures: dict[str, str]
) -> None:
    cluster = node_cluster.cluster

    def diagnose() -> str:
        parts = []
        for args in (
            ("get", "ms,jobs,pods,deploy,svc", "-A", "-o", "wide"),
            ("get", "events", "-A", "--sort-by=.lastTimestamp"),
            ("logs", "-n", stack.SYSTEM_NAMESPACE, "deploy/tfmaas", "--tail=40"),
            ("get", "ms", NAME, "-o", "jsonpath={.status}"),
        ):
            parts.append(cluster.kubectl(*args, check=False).stdout[-4000:])
        return "\n".join(parts)

    applied = time.monotonic()
    cluster.kubectl("apply", "-f", "-", input=json.dumps(_small_sample()))

    def job_done() -> bool:
        job = cluster.kubectl("get", "job", f"{NAME}-train-1", "-o", "json", check=False)
        if job.returncode != 0:
            return False
        status = json.loads(job.stdout).get("status", {})
        if status.get("failed"):
            pytest.fail(f"the training Job failed\n{diagnose()}")
        return bool(status.get("succeeded"))

    _wait("training Job sentiment-train-1 to succeed", job_done, 1200, diagnose)

    from tfmaas.storage import open_store

    with pytest.MonkeyPatch.context() as patch:
        for key, value in loop.minio.env.items():
            patch.setenv(key, value)
        store = open_store(f"s3://{stack.MODELS_BUCKET}/{NAME}", endpoint=loop.minio.endpoint)
        assert store.list_versions() == [1]
        assert set(store.read_json(1, "metrics.json")) >= {"accuracy", "precision", "recall"}

    def serving_ready() -> dict[str, Any] | None:
        ms = cluster.kubectl_json("get", "modelservice", NAME)
        status = ms.get("status", {})
        ready = any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
        )
        return status if ready and status.get("servingVersion") == 1 else None

    status = _wait("ModelService Ready serving version 1", serving_ready, 600, diagnose)
    assert status["phase"]

    service = cluster.kubectl_json("get", "service", NAME)
    address = f"{service['spec']['clusterIP']}:8500"
    from tfmaas.client.grpc_client import GrpcClient

    with GrpcClient(address, timeout=30, retries=5) as client:
        predictions = client.predict(NAME, ["这个东西很好，非常满意", "质量太差了，很失望"])
    assert len(predictions) == 2
    figures["apply → first gRPC answer (training Job included)"] = (
        f"{time.monotonic() - applied:.0f} s"
    )
    labels = {prediction.label for prediction in predictions}
    assert labels <= set(store_classes(loop.minio)) and labels
    # The serving image carries the native gRPC front end, and `tfmaas serve` picks it up.
    logs = cluster.kubectl("logs", f"deploy/{NAME}", "-c", SERVING_CONTAINER).stdout
    assert "(native front end)" in logs, logs[-2000:]

    # Prometheus, discovering pods through the API server, scrapes the request it served.
    def scraped() -> list[dict[str, Any]]:
        return loop.prometheus.query(
            f'sum by (pod) (:tensorflow:serving:request_count{{model_name="{NAME}"}})'
        )

    series = _wait("Prometheus to scrape the serving pod", scraped, 120, diagnose)
    assert any(float(s["value"][1]) >= 1 for s in series)


def store_classes(minio: MinioServer) -> list[str]:
    from tfmaas.storage import open_store

    with pytest.MonkeyPatch.context() as patch:
        for key, value in minio.env.items():
            patch.setenv(key, value)
        store = open_store(f"s3://{stack.MODELS_BUCKET}/{NAME}", endpoint=minio.endpoint)
        card = store.read_json(1, "model_card.json")
    return list(card["classes"])


def test_sample_file_is_what_the_loop_applies() -> None:
    spec = _small_sample()
    assert spec["metadata"]["name"] == NAME
    assert spec["spec"]["storage"]["endpoint"] == (
        f"http://minio.{stack.SYSTEM_NAMESPACE}:{stack.MINIO_SERVICE_PORT}"
    )
    assert spec["spec"]["storage"]["secretRef"]["name"] == stack.STORE_SECRET
    assert Path(SAMPLE).is_file()


def _ready_serving_pods(env: NodeCluster) -> list[str]:
    pods = env.cluster.kubectl_json(
        "get", "pods", "-l", f"tfmaas.io/model-service={NAME},app.kubernetes.io/component=serving"
    )["items"]
    return [
        pod["metadata"]["name"]
        for pod in pods
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in pod.get("status", {}).get("conditions", [])
        )
    ]


def _service_address(cluster: Any) -> str:
    service = cluster.kubectl_json("get", "service", NAME)
    return f"{service['spec']['clusterIP']}:8500"


def test_request_rate_scales_the_serving_deployment_out(
    node_cluster: NodeCluster, loop: Loop, figures: dict[str, str]
) -> None:
    """Bounded load (about 8 requests/s for at most 4 minutes) against a target of 2 per pod:
    Prometheus scrapes the rate, the custom metrics API serves it, the HPA adds a replica."""
    cluster = node_cluster.cluster
    patch = {"spec": {"serving": {"autoscaling": {"targetRequestsPerSecond": 2}}}}
    cluster.kubectl("patch", "modelservice", NAME, "--type=merge", "-p", json.dumps(patch))
    load = PlainLoad(_service_address(cluster), NAME, threads=2, text="还不错")

    def scaled_out() -> bool:
        return len(_ready_serving_pods(node_cluster)) >= 2

    def diagnose() -> str:
        return (
            "\n".join(
                cluster.kubectl(*args, check=False).stdout[-3000:]
                for args in (
                    ("get", "hpa", "-o", "wide"),
                    ("describe", "hpa"),
                    ("get", "--raw", "/apis/custom.metrics.k8s.io/v1beta2"),
                    ("get", "pods", "-o", "wide"),
                )
            )
            + f"\nrequests: {load.summary()} {dict(load.errors)}"
        )

    with load:
        load_started = time.monotonic()
        _wait("a second Ready serving replica", scaled_out, 240, diagnose)
        figures["scale-out reaction (load start → second replica Ready)"] = (
            f"{time.monotonic() - load_started:.0f} s"
        )
        # Keep the load on past one connection age (30 s), so clients reconnect and the
        # new replica's share of the traffic shows.
        load.wait(45)
    assert load.ok > 0
    assert load.failed == 0, (load.summary(), dict(load.errors))
    time.sleep(10)  # one more scrape
    per_pod = loop.prometheus.query(
        f'sum by (pod) (:tensorflow:serving:request_count{{model_name="{NAME}"}})'
    )
    figures["requests per serving pod after scale-out"] = ", ".join(
        f"{series['metric'].get('pod', '?')}: {float(series['value'][1]):.0f}" for series in per_pod
    )


def _serving_pods(env: NodeCluster) -> list[str]:
    pods = env.cluster.kubectl_json(
        "get", "pods", "-l", f"tfmaas.io/model-service={NAME},app.kubernetes.io/component=serving"
    )["items"]
    return [pod["metadata"]["name"] for pod in pods]


def test_scale_in_under_load_fails_no_request_of_a_plain_client(
    node_cluster: NodeCluster, loop: Loop, figures: dict[str, str]
) -> None:
    """From two replicas to one while plain stubs (no retries), one channel each, keep calling
    through the ClusterIP: the removed pod leaves the endpoints during its preStop wait, then
    drains its calls and sends GOAWAY, so no call fails."""
    cluster = node_cluster.cluster
    assert len(_ready_serving_pods(node_cluster)) >= 2, "the scale-out test leaves two replicas"
    # Enough channels that, through the ClusterIP, both replicas hold some of them.
    load = PlainLoad(_service_address(cluster), NAME, threads=6, interval=0.2)

    def diagnose() -> str:
        return (
            cluster.kubectl("get", "pods,deploy,hpa", "-o", "wide", check=False).stdout[-3000:]
            + f"\nrequests: {load.summary()} {dict(load.errors)}"
        )

    with load:
        load.wait(5)  # every channel connected and calling before the scale-in
        patch = {"spec": {"serving": {"replicas": 1, "autoscaling": {"enabled": False}}}}
        cluster.kubectl("patch", "modelservice", NAME, "--type=merge", "-p", json.dumps(patch))
        _wait("one serving pod left", lambda: len(_serving_pods(node_cluster)) == 1, 180, diagnose)
        load.wait(5)  # and calls keep flowing after it
    figures["requests during scale-in 2 → 1 (plain stub, no retries)"] = load.summary()
    assert load.ok > 0
    assert load.failed == 0, (load.summary(), dict(load.errors))


def test_rollout_under_load_with_the_operator_killed_midway_fails_no_request(
    node_cluster: NodeCluster, loop: Loop, figures: dict[str, str]
) -> None:
    """A new training spec makes version 2; while it rolls out under bounded load (about 8
    requests/s from plain stubs that never retry), the operator pod is deleted. No call fails,
    and version 2 ends up serving."""
    from tfmaas.client.grpc_client import GrpcClient

    cluster = node_cluster.cluster
    address = _service_address(cluster)
    load = PlainLoad(address, NAME, threads=2)

    def diagnose() -> str:
        return (
            "\n".join(
                cluster.kubectl(*args, check=False).stdout[-3000:]
                for args in (
                    ("get", "ms,jobs,pods,rs", "-A", "-o", "wide"),
                    ("get", "ms", NAME, "-o", "jsonpath={.status}"),
                )
            )
            + f"\nrequests: {load.summary()} {dict(load.errors)}"
        )

    def status() -> dict[str, Any]:
        return dict(cluster.kubectl_json("get", "modelservice", NAME).get("status", {}))

    with load:
        patch = {"spec": {"serving": {"version": "latest"}, "training": {
            "hyperparameters": {"seed": 7}}}}  # fmt: skip
        cluster.kubectl("patch", "modelservice", NAME, "--type=merge", "-p", json.dumps(patch))
        _wait(
            "version 2 to be trained",
            lambda: any(v.get("version") == 2 for v in status().get("versions", [])),
            900,
            diagnose,
        )
        cluster.kubectl(
            "delete",
            "pod",
            "-n",
            stack.SYSTEM_NAMESPACE,
            "-l",
            "app.kubernetes.io/component=operator",
            "--wait=false",
        )

        def serving_two() -> bool:
            current = status()
            ready = any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in current.get("conditions", [])
            )
            return ready and current.get("servingVersion") == 2

        _wait("version 2 serving after the operator restarted", serving_two, 600, diagnose)
        # The old pods are still terminating when Ready flips: keep calling until they are gone.
        _wait(
            "the version 1 pods to be gone",
            lambda: len(_serving_pods(node_cluster)) == 1,
            180,
            diagnose,
        )
        load.wait(5)
    figures["requests during the v1 → v2 rollout with the operator pod deleted (plain stub)"] = (
        load.summary()
    )
    assert load.ok > 0
    assert load.failed == 0, (load.summary(), dict(load.errors))
    with GrpcClient(address, timeout=30) as client:
        assert client.predict(NAME, ["很好"], version=2)


GATEWAY_ACCOUNT = f"{NAME}-access-gateway"
CA_MOUNT = "/etc/tfmaas-ca"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _tls_objects(authority: CertificateAuthority) -> list[dict[str, Any]]:
    """The Secret the gateways serve with, and the CA bundle clients trust, as a ConfigMap."""
    host = f"{NAME}.{NAMESPACE}.svc"
    certificate, key = authority.issue(
        CertRequest(common_name=host, dns_names=(host, f"{host}.cluster.local"), server=True)
    )
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": f"{NAME}-tls", "namespace": NAMESPACE},
            "data": {
                "tls.crt": _b64(certificate_pem(certificate)),
                "tls.key": _b64(private_key_pem(key)),
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{NAME}-ca", "namespace": NAMESPACE},
            "data": {"ca.crt": certificate_pem(authority.certificate).decode()},
        },
    ]


def _callers() -> list[dict[str, Any]]:
    """ServiceAccount `caller`, bound to the chart's tfmaas-model-caller role in this
    namespace, and `stranger`, bound to nothing."""
    accounts = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": n, "namespace": NAMESPACE},
        }
        for n in ("caller", "stranger")
    ]
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "caller-may-call-models", "namespace": NAMESPACE},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "tfmaas-model-caller",
        },
        "subjects": [{"kind": "ServiceAccount", "name": "caller", "namespace": NAMESPACE}],
    }
    return [*accounts, binding]


def _client_pod(name: str, account: str, image: str) -> dict[str, Any]:
    """`tfmaas predict` in a pod, with its ServiceAccount's projected token, over TLS through
    the Service's DNS name."""
    command = [
        "tfmaas", "predict", "--target", f"{NAME}.{NAMESPACE}.svc:8500", "--model", NAME,
        "--token-file", "/var/run/secrets/kubernetes.io/serviceaccount/token",
        "--ca-file", f"{CA_MOUNT}/ca.crt", "--timeout", "20", "这个东西很好，非常满意",
    ]  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "serviceAccountName": account,
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "client",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": command,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "volumeMounts": [{"name": "ca", "mountPath": CA_MOUNT, "readOnly": True}],
                }
            ],
            "volumes": [{"name": "ca", "configMap": {"name": f"{NAME}-ca"}}],
        },
    }


def _finished_pod(cluster: Any, name: str, diagnose: Any) -> tuple[str, str]:
    def finished() -> str | None:
        pod = cluster.kubectl_json("get", "pod", name)
        phase = pod.get("status", {}).get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = _wait(f"client pod {name} to finish", finished, 240, diagnose)
    return phase, cluster.kubectl("logs", name, check=False).stdout


def _pods_guarded(env: NodeCluster) -> list[str] | None:
    """The serving pods' names once every one runs the access gateway and is Ready."""
    pods = env.cluster.kubectl_json(
        "get", "pods", "-l", f"tfmaas.io/model-service={NAME},app.kubernetes.io/component=serving"
    )["items"]
    ready = _ready_serving_pods(env)
    names = [p["metadata"]["name"] for p in pods]
    guarded = all(any(c["name"] == "access-gateway" for c in p["spec"]["containers"]) for p in pods)
    return names if names and guarded and sorted(ready) == sorted(names) else None


def test_guarded_over_tls_only_a_bound_service_account_gets_answers(
    node_cluster: NodeCluster, loop: Loop, figures: dict[str, str]
) -> None:
    """spec.serving.access kubernetes with TLS on the running sample: a client pod whose
    ServiceAccount is bound to tfmaas-model-caller gets answers through the Service, one bound to
    nothing gets PERMISSION_DENIED, Prometheus still scrapes the guarded pod (through the
    gateway's metrics port) and the HPA still scales it out under load that carries a token.
    Switched back to none, the gateway's objects go."""
    cluster = node_cluster.cluster

    def diagnose() -> str:
        return "\n".join(
            cluster.kubectl(*args, check=False).stdout[-3000:]
            for args in (
                ("get", "ms,pods,hpa,sa,networkpolicy", "-o", "wide"),
                ("get", "ms", NAME, "-o", "jsonpath={.status}"),
                ("get", "events", "--sort-by=.lastTimestamp"),
                ("logs", f"deploy/{NAME}", "-c", "access-gateway", "--tail=20"),
            )
        )

    authority = CertificateAuthority.create("e2e-model-ca")
    for manifest in (*_tls_objects(authority), *_callers()):
        _apply_json(cluster, manifest)
    switched = time.monotonic()
    guard = {"access": {"mode": "kubernetes", "tls": {"secretName": f"{NAME}-tls"}}}
    cluster.kubectl(
        "patch", "ms", NAME, "--type=merge", "-p", json.dumps({"spec": {"serving": guard}})
    )

    def rolled_to_guarded() -> list[str] | None:
        status = cluster.kubectl_json("get", "ms", NAME).get("status", {})
        if status.get("accessMode") != "kubernetes":
            return None
        return _pods_guarded(node_cluster)

    pods = _wait("guarded serving pods Ready", rolled_to_guarded, 300, diagnose)
    figures["switch to access.mode kubernetes + TLS → guarded pods Ready"] = (
        f"{time.monotonic() - switched:.0f} s"
    )
    status = cluster.kubectl_json("get", "ms", NAME)["status"]
    assert status["endpoint"]["rest"].startswith("https://")

    serving_image = loop.built["serving"].reference
    for pod_name, account in (("caller-client", "caller"), ("stranger-client", "stranger")):
        _apply_json(cluster, _client_pod(pod_name, account, serving_image))
    phase, logs = _finished_pod(cluster, "caller-client", diagnose)
    assert phase == "Succeeded", logs
    answer = json.loads(logs.strip().splitlines()[-1])
    assert answer["label"] in store_classes(loop.minio), answer
    phase, logs = _finished_pod(cluster, "stranger-client", diagnose)
    assert phase == "Failed", logs
    assert "PERMISSION_DENIED" in logs and "modelservices/predict" in logs, logs
    # No secret in the answer: the refusal names the rule, not the caller's token.
    assert "Bearer" not in logs

    # Prometheus scrapes the guarded pod through the gateway's token-free metrics port.
    def scraped() -> list[dict[str, Any]]:
        return loop.prometheus.query(
            f':tensorflow:serving:request_count{{model_name="{NAME}",pod=~"{"|".join(pods)}"}}'
        )

    _wait("Prometheus to scrape a guarded pod", scraped, 120, diagnose)

    # A bare stub with TLS and a bound token drives the request rate; the HPA scales out.
    token = cluster.kubectl("create", "token", "caller", "--duration=1h").stdout.strip()
    credentials = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(root_certificates=certificate_pem(authority.certificate)),
        grpc.access_token_call_credentials(token),
    )
    autoscale = {
        "autoscaling": {
            "enabled": True,
            "minReplicas": 1,
            "maxReplicas": 2,
            "targetRequestsPerSecond": 2,
        }
    }
    cluster.kubectl(
        "patch", "ms", NAME, "--type=merge", "-p", json.dumps({"spec": {"serving": autoscale}})
    )
    load = PlainLoad(
        _service_address(cluster),
        NAME,
        threads=2,
        credentials=credentials,
        options=(("grpc.ssl_target_name_override", f"{NAME}.{NAMESPACE}.svc"),),
    )
    with load:
        started = time.monotonic()
        _wait(
            "a second guarded replica Ready",
            lambda: len(_pods_guarded(node_cluster) or []) >= 2,
            300,
            lambda: diagnose() + f"\nrequests: {load.summary()} {dict(load.errors)}",
        )
        figures["guarded scale-out (load with token over TLS → second replica Ready)"] = (
            f"{time.monotonic() - started:.0f} s"
        )
    figures["requests through the gateway during guarded scale-out (plain stub)"] = load.summary()
    assert load.ok > 0
    assert load.failed == 0, (load.summary(), dict(load.errors))

    # Back to none: the pods drop the gateway, then its objects go.
    unguard = {"access": {"mode": "none", "tls": None}, "autoscaling": {"enabled": False}}
    cluster.kubectl(
        "patch", "ms", NAME, "--type=merge", "-p", json.dumps({"spec": {"serving": unguard}})
    )

    def unguarded() -> bool:
        status = cluster.kubectl_json("get", "ms", NAME).get("status", {})
        return status.get("accessMode") == "none" and all(
            cluster.kubectl("get", *what, check=False).returncode != 0
            for what in (
                ("serviceaccount", GATEWAY_ACCOUNT),
                ("networkpolicy", f"{NAME}-serving"),
                ("clusterrolebinding", f"tfmaas-access-gateway:{NAMESPACE}:{NAME}"),
            )
        )

    _wait("the gateway's objects to go after the switch to none", unguarded, 300, diagnose)
    from tfmaas.client.grpc_client import GrpcClient

    with GrpcClient(_service_address(cluster), timeout=30, retries=5) as client:
        assert client.predict(NAME, ["很好"])


def _apply_json(cluster: Any, manifest: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def test_a_shipped_alert_fires_in_the_real_prometheus_on_the_node(
    node_cluster: NodeCluster,
    loop: Loop,
    figures: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The chart's PrometheusRule, rendered by helm with only the latency alert's threshold
    and `for:` made testable (1 µs, 0s; the expression and labels are the shipped ones), is
    loaded into the Prometheus scraping the node's serving pods; real calls through the
    Service make TfmaasServingLatencyHigh fire for this ModelService in /api/v1/alerts."""
    from tests.fixtures.chart import helm_binary, one, render

    cluster = node_cluster.cluster
    # Self-contained after the guarded test: plain calls need the model open again.
    patch = {"spec": {"serving": {"access": {"mode": "none"}}}}
    cluster.kubectl("patch", "modelservice", NAME, "--type=merge", "-p", json.dumps(patch))
    values = {"monitoring.prometheusRule.p99LatencySeconds": 0.000001}
    values["monitoring.prometheusRule.latencyFor"] = "0s"  # type: ignore[assignment]
    api = ["monitoring.coreos.com/v1", "monitoring.coreos.com/v1/PrometheusRule"]
    rule = one(render(helm_binary(), values, api_versions=api), "PrometheusRule")
    rules = tmp_path_factory.mktemp("e2e-rules") / "tfmaas-rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    loop.prometheus.load_rules((rules,))

    def firing() -> list[dict[str, Any]]:
        return [
            alert
            for alert in loop.prometheus.alerts()
            if alert["state"] == "firing"
            and alert["labels"]["alertname"] == "TfmaasServingLatencyHigh"
            and alert["labels"].get("model_service") == NAME
        ]

    def diagnose() -> str:
        return (
            json.dumps(loop.prometheus.alerts())[-3000:]
            + "\n"
            + json.dumps(loop.prometheus.query(":tensorflow:serving:request_count"))[-2000:]
        )

    _wait("a Ready serving pod", lambda: _ready_serving_pods(node_cluster), 180, diagnose)
    load = PlainLoad(_service_address(cluster), NAME, threads=1, interval=0.5)
    started = time.monotonic()
    with load:
        (alert,) = _wait("TfmaasServingLatencyHigh firing", firing, 180, diagnose)
    figures["shipped alert firing on the node (load start → firing)"] = (
        f"{time.monotonic() - started:.0f} s"
    )
    assert alert["labels"]["namespace"] == NAMESPACE
    assert alert["labels"]["severity"] == "warning"
    assert alert["annotations"]["runbook"].endswith("#tfmaasservinglatencyhigh")
    assert load.ok > 0
