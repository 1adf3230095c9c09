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

from tests.e2e.conftest import CALL_FAILED, NodeCluster
from tests.fixtures.plain_load import PlainLoad
from tfmaas.dev import images, keda, stack, tools
from tfmaas.dev.minio import MinioServer
from tfmaas.dev.monitoring import LocalPrometheus
from tfmaas.dev.pki import CertificateAuthority, CertRequest, certificate_pem, private_key_pem
from tfmaas.errors import TfmaasError
from tfmaas.operator.config import OperatorConfig
from tfmaas.operator.manifests.scaledobject import request_rate_query
from tfmaas.operator.naming import SERVING_CONTAINER

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SAMPLE = images.REPO_ROOT / "deploy" / "samples" / "sentiment.yaml"
NAME = "sentiment"
NAMESPACE = "default"
STORE_KEY_SECRET = "tfmaas-demo-store"


@dataclass
class Loop:
    minio: MinioServer
    prometheus: LocalPrometheus
    built: dict[str, images.BuiltImage]


def _images_on(node: Any) -> dict[str, images.BuiltImage]:
    """The project's images, built as the local stack builds them and imported into the
    node's containerd; a machine that cannot build them skips, except in CI."""
    try:
        built = images.project_images()
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the project's images cannot be built: {exc}")
        pytest.skip(f"the project's images cannot be built here: {exc}")
    for image in built.values():
        node.import_image(image)
    return built


@pytest.fixture(scope="module")
def loop(node_cluster: NodeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    cluster, node = node_cluster.cluster, node_cluster.node
    built = _images_on(node)
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
        prometheus = stack.start_prometheus(cluster, tmp_path_factory.mktemp("e2e-prometheus"))
        try:
            values = {
                "networkPolicy.enabled": "false",
                # KEDA's operator (a host process here, see keda_on_node) queries the
                # Prometheus each ScaledObject names itself: this one, on loopback.
                "monitoring.kedaPrometheusAddress": prometheus.url,
            }
            stack.install_chart(cluster, built, extra_values=values)
            adapter = stack.install_metrics_adapter(cluster, node, prometheus)
            try:
                yield Loop(minio=minio, prometheus=prometheus, built=built)
            finally:
                adapter.stop()
        finally:
            prometheus.stop()
    finally:
        minio.stop()


@pytest.fixture(autouse=True)
def sample_serving_restored(request: pytest.FixtureRequest) -> Iterator[None]:
    """The tests below take turns on one running sample, each starting where the one before
    left it. One that fails midway would leave the next a sample it does not expect (a
    ScaledObject in place of the HPA, a TLS gateway), and its failure would be reported again
    under the next test's name: after a failure the sample's serving spec is put back as the
    test found it, and the next test starts once the operator has rolled that out (Ready at
    the restored generation)."""
    if "loop" not in request.fixturenames:
        yield
        return
    cluster = request.getfixturevalue("node_cluster").cluster
    found = cluster.kubectl("get", "ms", NAME, "-o", "json", check=False)
    before = json.loads(found.stdout)["spec"]["serving"] if found.returncode == 0 else None
    yield
    if before is None or not request.node.stash.get(CALL_FAILED, False):
        return
    now = cluster.kubectl_json("get", "ms", NAME)
    if now["spec"]["serving"] == before:
        return
    restore = [{"op": "replace", "path": "/spec/serving", "value": before}]
    cluster.kubectl("patch", "ms", NAME, "--type=json", "-p", json.dumps(restore))

    def restored() -> bool:
        current = cluster.kubectl_json("get", "ms", NAME)
        status = current.get("status", {})
        ready = any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
        )
        return ready and status.get("observedGeneration") == current["metadata"]["generation"]

    _wait("the sample back at its serving spec", restored, 300, lambda: json.dumps(now)[-3000:])


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


@pytest.fixture(scope="module")
def keda_on_node(
    node_cluster: NodeCluster, loop: Loop, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[keda.LocalKeda]:
    """KEDA's operator and metrics server, built from the pinned module, as host processes
    registered with the node's cluster (stack.install_keda)."""
    try:
        for binary in ("keda-operator", "keda-adapter"):
            tools.ensure(binary)
    except (TfmaasError, OSError) as exc:
        pytest.skip(f"KEDA's operator and metrics server cannot be built here: {exc}")
    installed = stack.install_keda(
        node_cluster.cluster, node_cluster.node, tmp_path_factory.mktemp("e2e-keda")
    )
    try:
        yield installed
    finally:
        installed.stop()


def _hpa_names(cluster: Any) -> set[str]:
    return {hpa["metadata"]["name"] for hpa in cluster.kubectl_json("get", "hpa")["items"]}


def _condition(resource: dict[str, Any], kind: str) -> bool:
    conditions = resource.get("status", {}).get("conditions", [])
    return any(c["type"] == kind and c["status"] == "True" for c in conditions)


def test_keda_scales_the_serving_deployment_out_on_the_request_rate(
    node_cluster: NodeCluster, loop: Loop, keda_on_node: keda.LocalKeda, figures: dict[str, str]
) -> None:
    """engine keda on the running sample: the operator replaces its HPA by a ScaledObject, KEDA
    makes keda-hpa-sentiment from it, and under bounded load (about 8 requests/s from plain
    stubs for at most 4 minutes, against 2 per pod, once earlier tests' rate has gone) KEDA's
    operator reads the rate from Prometheus, its metrics server hands it to that HPA, and a
    second replica comes up with no call failing. Back to engine hpa, the ScaledObject and
    KEDA's HPA go."""
    cluster = node_cluster.cluster
    keda_hpa = f"keda-hpa-{NAME}"
    before = cluster.kubectl_json("get", "ms", NAME)["spec"]["serving"]["autoscaling"]
    assert len(_ready_serving_pods(node_cluster)) == 1, "the test starts from one replica"
    target = 2
    # The rate KEDA will read, from the sample's Prometheus: the load of earlier tests must
    # have left its window first, or the replica would not be this test's load's doing.
    query = request_rate_query(namespace=NAMESPACE, name=NAME, window=OperatorConfig().rate_window)

    def quiet() -> bool:
        return sum(float(series["value"][1]) for series in loop.prometheus.query(query)) < 1

    _wait("the request rate of earlier tests to leave the window", quiet, 240, lambda: query)
    autoscaling = {"enabled": True, "engine": "keda", "minReplicas": 1, "maxReplicas": 2}
    autoscaling["targetRequestsPerSecond"] = target
    patch = {"spec": {"serving": {"autoscaling": autoscaling}}}
    switched = time.monotonic()
    cluster.kubectl("patch", "ms", NAME, "--type=merge", "-p", json.dumps(patch))
    load = PlainLoad(_service_address(cluster), NAME, threads=2, text="还不错")

    def diagnose() -> str:
        return "\n".join(
            [
                *(
                    cluster.kubectl(*args, check=False).stdout[-3000:]
                    for args in (
                        ("get", "ms,scaledobject,hpa,pods", "-o", "wide"),
                        ("describe", "hpa"),
                        ("get", "scaledobject", NAME, "-o", "jsonpath={.status}"),
                        ("get", "apiservice", f"v1beta1.{keda.EXTERNAL_METRICS_GROUP}"),
                    )
                ),
                keda_on_node.log_tails(),
                f"requests: {load.summary()} {dict(load.errors)}",
            ]
        )

    # KEDA's HPA alone scales the Deployment, and reads its metric through KEDA's metrics
    # server (ScalingActive: a value came back; none yet reads as 0 requests/s).
    def keda_hpa_reads_its_metric() -> bool:
        if (exited := keda_on_node.exited()) is not None:
            pytest.fail(exited)
        if _hpa_names(cluster) != {keda_hpa}:
            return False
        return _condition(cluster.kubectl_json("get", "hpa", keda_hpa), "ScalingActive")

    _wait("KEDA's HPA to read its external metric", keda_hpa_reads_its_metric, 180, diagnose)
    figures["switch to engine keda → KEDA's HPA reads its metric"] = (
        f"{time.monotonic() - switched:.0f} s"
    )
    scaled_object = cluster.kubectl_json("get", "scaledobject", NAME)
    assert _condition(scaled_object, "Ready"), scaled_object.get("status")
    assert scaled_object["spec"]["triggers"][0]["metadata"]["query"] == query
    assert len(_ready_serving_pods(node_cluster)) == 1, "scaled out before the load"

    with load:
        started = time.monotonic()
        _wait(
            "a second Ready serving replica",
            lambda: len(_ready_serving_pods(node_cluster)) >= 2,
            240,
            diagnose,
        )
        figures["KEDA scale-out (load start → second replica Ready)"] = (
            f"{time.monotonic() - started:.0f} s"
        )
        load.wait(10)  # calls keep flowing once the new replica serves
    figures["requests during KEDA scale-out (plain stub, no retries)"] = load.summary()
    assert keda_on_node.exited() is None, keda_on_node.exited()
    assert load.ok > 0
    assert load.failed == 0, (load.summary(), dict(load.errors))
    # The replica is KEDA's doing: its HPA rescaled the Deployment on the external metric.
    rescales = cluster.kubectl_json(
        "get",
        "events",
        "--field-selector",
        f"involvedObject.name={keda_hpa},reason=SuccessfulRescale",
    )["items"]
    reasons = [event["message"] for event in rescales]
    assert any("external metric" in r and "above target" in r for r in reasons), diagnose()

    # Back to the operator's own HPA: the ScaledObject goes, and KEDA's HPA with it.
    back = {"spec": {"serving": {"autoscaling": {"engine": "hpa"}}}}
    cluster.kubectl("patch", "ms", NAME, "--type=merge", "-p", json.dumps(back))

    def switched_back() -> bool:
        gone = cluster.kubectl("get", "scaledobject", NAME, check=False).returncode != 0
        return gone and _hpa_names(cluster) == {NAME}

    _wait("the ScaledObject and KEDA's HPA to go", switched_back, 120, diagnose)
    restore = [{"op": "replace", "path": "/spec/serving/autoscaling", "value": before}]
    cluster.kubectl("patch", "ms", NAME, "--type=json", "-p", json.dumps(restore))


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


# Pod placement and identity (spec.<part>.pod) on the real node: a pool label and a taint of
# its own, a GPU replica on the node's fake nvidia.com/gpu capacity, and a ServiceAccount.
PLACED = "placed"
POOL_LABEL = "e2e.example/pool"
DEDICATED_TAINT = "e2e.example/dedicated"
IDENTITY = "placed-models"


def _placed_sample() -> dict[str, Any]:
    spec = _small_sample()
    spec["metadata"]["name"] = PLACED
    spec["spec"]["storage"]["uri"] = f"s3://{stack.MODELS_BUCKET}/{PLACED}"
    placement = {
        "nodeSelector": {POOL_LABEL: "ml"},
        "tolerations": [
            {"key": DEDICATED_TAINT, "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
        ],
        "labels": {"kueue.x-k8s.io/queue-name": "e2e"},
    }
    spec["spec"]["training"]["pod"] = placement
    serving = spec["spec"]["serving"]
    serving["pod"] = placement
    # One replica: the node advertises one GPU, and a rollout's surge would need a second.
    serving["autoscaling"] = {"enabled": False}
    serving["replicas"] = 1
    serving["resources"] = {"cpu": "250m", "memory": "1Gi", "gpu": 1}
    return spec


def _pods_of(cluster: Any, selector: str) -> list[dict[str, Any]]:
    return list(cluster.kubectl_json("get", "pods", "-l", selector)["items"])


def _env_names(pod: dict[str, Any]) -> set[str]:
    containers = pod["spec"].get("initContainers", []) + pod["spec"]["containers"]
    return {entry["name"] for c in containers for entry in c.get("env", [])}


def test_placed_pods_run_on_a_tainted_pool_serve_on_a_gpu_and_take_an_identity(
    node_cluster: NodeCluster, loop: Loop
) -> None:
    cluster, node = node_cluster.cluster, node_cluster.node

    def diagnose() -> str:
        parts = []
        for args in (
            ("get", "ms,jobs,pods,deploy", "-o", "wide"),
            ("describe", "pods", "-l", f"tfmaas.io/model-service={PLACED}"),
            ("get", "events", "--sort-by=.lastTimestamp"),
            ("get", "ms", PLACED, "-o", "jsonpath={.status}"),
        ):
            parts.append(cluster.kubectl(*args, check=False).stdout[-4000:])
        return "\n".join(parts)

    # The chart's operator and the other tests' pods were placed before the taint, which
    # (NoSchedule) leaves running pods alone; it goes again at the end, whatever happens.
    cluster.kubectl("label", "node", node.name, f"{POOL_LABEL}=ml", "--overwrite")
    cluster.kubectl("taint", "node", node.name, f"{DEDICATED_TAINT}=ml:NoSchedule", "--overwrite")
    cluster.kubectl("create", "serviceaccount", IDENTITY, check=False)
    try:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(_placed_sample()))

        def job_done(name: str) -> dict[str, Any] | None:
            job = cluster.kubectl("get", "job", name, "-o", "json", check=False)
            if job.returncode != 0:
                return None
            status = json.loads(job.stdout).get("status", {})
            return status if status.get("succeeded") or status.get("failed") else None

        first = _wait(
            "training Job placed-train-1 to finish",
            lambda: job_done("placed-train-1"),
            1200,
            diagnose,
        )
        assert first.get("succeeded"), diagnose()
        (trainer,) = _pods_of(cluster, "batch.kubernetes.io/job-name=placed-train-1")
        assert trainer["spec"]["nodeName"] == node.name
        assert trainer["spec"]["nodeSelector"] == {POOL_LABEL: "ml"}
        assert any(t.get("key") == DEDICATED_TAINT for t in trainer["spec"]["tolerations"])
        assert trainer["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "e2e"

        def serving_ready() -> dict[str, Any] | None:
            status = cluster.kubectl_json("get", "modelservice", PLACED).get("status", {})
            ready = any(
                c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
            )
            return status if ready and status.get("servingVersion") == 1 else None

        _wait("ModelService placed Ready on its GPU replica", serving_ready, 600, diagnose)
        serving = [
            p
            for p in _pods_of(
                cluster, f"tfmaas.io/model-service={PLACED},app.kubernetes.io/component=serving"
            )
            if p["status"].get("phase") == "Running"
        ]
        assert len(serving) == 1, diagnose()
        (replica,) = serving
        assert replica["spec"]["nodeName"] == node.name
        (server,) = [c for c in replica["spec"]["containers"] if c["name"] == SERVING_CONTAINER]
        assert str(server["resources"]["limits"]["nvidia.com/gpu"]) == "1"
        keys = {t.get("key") for t in replica["spec"]["tolerations"]}
        assert {DEDICATED_TAINT, "nvidia.com/gpu"} <= keys
        address = f"{cluster.kubectl_json('get', 'service', PLACED)['spec']['clusterIP']}:8500"
        from tfmaas.client.grpc_client import GrpcClient

        with GrpcClient(address, timeout=30, retries=5) as client:
            assert client.predict(PLACED, ["这个东西很好，非常满意"])

        # A ServiceAccount for training: version 2's pod runs as it with no store keys at
        # all. This cluster has no identity provider (IRSA, Workload Identity), so boto3's
        # default chain finds nothing and the trainer says where credentials come from,
        # while version 1 keeps serving.
        patch = {
            "spec": {
                "training": {
                    "pod": {"serviceAccountName": IDENTITY},
                    "hyperparameters": {"seed": 7},
                }
            }
        }
        cluster.kubectl("patch", "modelservice", PLACED, "--type=merge", "-p", json.dumps(patch))
        second = _wait(
            "training Job placed-train-2 to finish",
            lambda: job_done("placed-train-2"),
            900,
            diagnose,
        )
        assert second.get("failed") and not second.get("succeeded"), diagnose()
        pods = _pods_of(cluster, "batch.kubernetes.io/job-name=placed-train-2")
        assert pods and all(p["spec"]["serviceAccountName"] == IDENTITY for p in pods)
        assert all(not _env_names(p) & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} for p in pods)

        def failure_reported() -> str | None:
            text = json.dumps(cluster.kubectl_json("get", "modelservice", PLACED).get("status", {}))
            return text if "no S3 credentials" in text else None

        reported = _wait("version 2's failure in status", failure_reported, 120, diagnose)
        assert "serviceAccountName" in reported
        _wait("version 1 still served after version 2 failed", serving_ready, 120, diagnose)
        with GrpcClient(address, timeout=30, retries=5) as client:
            assert client.predict(PLACED, ["质量太差了，很失望"])
    finally:
        cluster.kubectl("delete", "modelservice", PLACED, "--wait=false", check=False)
        cluster.kubectl("taint", "node", node.name, f"{DEDICATED_TAINT}-", check=False)
        cluster.kubectl("label", "node", node.name, f"{POOL_LABEL}-", check=False)
        cluster.kubectl("delete", "serviceaccount", IDENTITY, "--wait=false", check=False)


def test_readme_quickstart_word_for_word_on_the_node(
    node_cluster: NodeCluster, tmp_path: Path, figures: dict[str, str]
) -> None:
    """The README's cluster quickstart as a user types it, on a node whose pods run: a clean
    `helm install` with the demo store, the CPU sample trained and served, a prediction through
    `kubectl port-forward`. Only the images are replaced: `make images`' Dockerfiles are built
    here as the local stack builds them (no registry), and the chart is pointed at those tags."""
    import socket

    from tests.fixtures.chart import helm_binary
    from tests.fixtures.quickstart import Command, Shell, quickstart_commands, substituted

    cluster, node = node_cluster.cluster, node_cluster.node
    if cluster.kubectl("get", "ns", stack.SYSTEM_NAMESPACE, check=False).returncode == 0:
        pytest.skip(
            "the chart is already installed in this session (the loop fixture): a clean install "
            "needs its own run, -k readme_quickstart"
        )
    built = _images_on(node)
    values = stack.chart_values(built)
    by_prefix: dict[str, dict[str, str]] = {}
    for key, value in values.items():
        prefix, _, field = key.rpartition(".")
        by_prefix.setdefault(prefix, {})[field] = value
    readme_prefixes = {"image", "defaults.trainer.image", "demoStore.image"}
    # The images the README leaves at their defaults (TF Serving's, pulled from its registry)
    # are the local stand-ins here, which no registry serves.
    extra = [
        arg
        for prefix, fields in by_prefix.items()
        if prefix not in readme_prefixes
        for key, value in fields.items()
        for arg in ("--set", f"{prefix}.{key}={value}")
    ]
    local_port = 8500
    if _listening(local_port):  # another engineer's server: the README's port is taken
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            local_port = free.getsockname()[1]
    shell = Shell(cluster, tmp_path, helm_binary())

    def diagnose() -> str:
        return "\n".join(
            cluster.kubectl(*args, check=False).stdout[-3000:]
            for args in (
                ("get", "ms,jobs,pods,deploy,svc", "-A", "-o", "wide"),
                ("get", "events", "-A", "--sort-by=.lastTimestamp"),
                ("logs", "-n", stack.SYSTEM_NAMESPACE, "deploy/tfmaas", "--tail=30"),
            )
        )

    started = time.monotonic()
    forward = None
    outputs: dict[str, str] = {}
    try:
        for command in quickstart_commands():
            if command.argv[:2] == ("make", "images"):
                continue  # built above, from the same Dockerfiles' recipes
            command = substituted(command, registry="unused", images=by_prefix)
            if command.argv[:2] == ("helm", "install"):
                command = Command((*command.argv, *extra))
            argv = tuple(
                w.replace("8500:8500", f"{local_port}:8500").replace(
                    "127.0.0.1:8500", f"127.0.0.1:{local_port}"
                )
                for w in command.argv
            )
            command = Command(argv, command.background)
            if command.background:
                forward = shell.start(command, tmp_path / "port-forward.log")
                _wait(
                    "kubectl port-forward to listen",
                    lambda: _listening(local_port),
                    60,
                    lambda: (tmp_path / "port-forward.log").read_text(),
                )
                continue
            try:
                outputs[" ".join(command.argv)] = shell.run(command, timeout=1900)
            except AssertionError as exc:
                pytest.fail(f"{exc}\n{diagnose()}")
        status = cluster.kubectl_json("get", "ms", NAME)["status"]
        store_log = cluster.kubectl(
            "logs", "-n", stack.SYSTEM_NAMESPACE, "deploy/tfmaas-demo-store", "--all-containers"
        ).stdout
        key = cluster.kubectl_json("get", "secret", STORE_KEY_SECRET, "-n", stack.SYSTEM_NAMESPACE)
    finally:
        if forward is not None:
            os.killpg(forward.pid, 15)
            forward.wait(timeout=30)
        # Later tests of the session install the chart their own way.
        cluster.kubectl("delete", "ms", NAME, "--wait=true", "--timeout=120s", check=False)
        uninstall = Command(("helm", "uninstall", "tfmaas", "-n", stack.SYSTEM_NAMESPACE, "--wait"))
        shell.run(uninstall, check=False)
    figures["README cluster quickstart, helm install → prediction (CPU training)"] = (
        f"{time.monotonic() - started:.0f} s"
    )
    (prediction,) = [v for k, v in outputs.items() if k.startswith(".venv/bin/tfmaas predict")]
    assert "positive" in prediction or "negative" in prediction, prediction
    (endpoint,) = [v for k, v in outputs.items() if "jsonpath" in k]
    assert endpoint.endswith(":8500"), endpoint
    # The store's generated key is in no output the user saw, nor in the store's log.
    for encoded in key["data"].values():
        secret = base64.b64decode(encoded).decode()
        assert secret not in store_log
        assert not [k for k, v in outputs.items() if secret in v or secret in k]
    # Published to the demo store by the CPU trainer, which said which TensorFlow exported it.
    assert status["servingVersion"] == 1
    assert status["versions"][0]["tensorflowVersion"]


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


# --- Preemption: a training pod deleted mid-run resumes from its checkpoint (issue 17) ---

PREEMPTED = "preempted"


def _preempted_sample(epochs: int) -> dict[str, Any]:
    """The small sample under another name, every epoch run (no early stopping)."""
    spec = _small_sample()
    spec["metadata"]["name"] = PREEMPTED
    spec["spec"]["storage"]["uri"] = f"s3://{stack.MODELS_BUCKET}/{PREEMPTED}"
    spec["spec"]["training"]["hyperparameters"].update(
        {"epochs": epochs, "earlyStoppingPatience": 0}
    )
    return spec


def _epoch_seconds(log: str) -> list[float]:
    """The `time=…s` of each `epoch k/N` line the trainer logged."""
    found = []
    for line in log.splitlines():
        if line.startswith("epoch ") and " time=" in line:
            found.append(float(line.split(" time=")[1].split("s")[0]))
    return found


def test_a_training_pod_deleted_midway_resumes_from_its_checkpoint_and_publishes(
    node_cluster: NodeCluster, loop: Loop, figures: dict[str, str]
) -> None:
    cluster = node_cluster.cluster
    job, epochs = f"{PREEMPTED}-train-1", 5

    def diagnose() -> str:
        parts = [
            cluster.kubectl("get", "jobs,pods", "-o", "wide", check=False).stdout[-3000:],
            cluster.kubectl("logs", f"job/{job}", "--tail=30", check=False).stdout[-3000:],
            cluster.kubectl("get", "ms", PREEMPTED, "-o", "jsonpath={.status}", check=False).stdout[
                -3000:
            ],
        ]
        return "\n".join(parts)

    def pods() -> list[dict[str, Any]]:
        listed = cluster.kubectl_json("get", "pods", "-l", f"batch.kubernetes.io/job-name={job}")
        return list(listed.get("items") or [])

    def log_of(pod: str) -> str:
        return cluster.kubectl("logs", pod, check=False).stdout

    applied = time.monotonic()
    _apply_json(cluster, _preempted_sample(epochs))
    first = _wait("the training pod", lambda: pods(), 600, diagnose)[0]["metadata"]["name"]
    _wait(
        "epoch 2 to finish in the first pod",
        lambda: f"epoch 2/{epochs} " in log_of(first),
        1200,
        diagnose,
    )
    killed_at = time.monotonic() - applied
    first_log = log_of(first)
    cluster.kubectl("delete", "pod", first, "--wait=true", "--timeout=120s")

    def second_pod() -> str | None:
        others = [p["metadata"]["name"] for p in pods() if p["metadata"]["name"] != first]
        return others[0] if others else None

    second = _wait("the Job's next pod", second_pod, 600, diagnose)
    resumed_line = _wait(
        "the next pod to resume",
        lambda: next((ln for ln in log_of(second).splitlines() if "resumed from epoch" in ln), ""),
        900,
        diagnose,
    )

    def published() -> dict[str, Any] | None:
        status = cluster.kubectl_json("get", "ms", PREEMPTED).get("status", {})
        versions = [v for v in status.get("versions") or [] if v.get("version") == 1]
        return versions[0] if versions and versions[0].get("state") == "Succeeded" else None

    version = _wait("version 1 to publish", published, 1800, diagnose)
    total = time.monotonic() - applied
    resumed_from = int(resumed_line.split("resumed from epoch ")[1].split()[0])
    assert 2 <= resumed_from < epochs, resumed_line
    assert version["resumedFromEpoch"] == resumed_from
    second_log = log_of(second)
    assert f"epoch {resumed_from + 1}/{epochs} " in second_log
    assert f"epoch 1/{epochs} " not in second_log  # it did not start over
    with pytest.MonkeyPatch.context() as patch:
        for key, value in loop.minio.env.items():
            patch.setenv(key, value)
        from tfmaas.storage import open_store

        store = open_store(f"s3://{stack.MODELS_BUCKET}/{PREEMPTED}", endpoint=loop.minio.endpoint)
        assert store.list_versions() == [1]

    # A restart from scratch would have redone the epochs the checkpoint kept: the time until
    # the kill, plus the whole run, the epochs it kept included (their own measured times).
    redone = sum(_epoch_seconds(first_log)[:resumed_from])
    scratch = total + redone
    print(
        f"\npreempted at {killed_at:.0f} s (after epoch {resumed_from}/{epochs}); resumed run "
        f"published at {total:.0f} s; a restart from scratch: ≈ {scratch:.0f} s "
        f"(+{redone:.0f} s of epochs redone)"
    )
    figures["training pod deleted mid-run → version published (resumed)"] = f"{total:.0f} s"
    figures["same, restarting from scratch (estimated)"] = f"{scratch:.0f} s"


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
    patch = {"spec": {"serving": {"access": {"mode": "none", "tls": None}}}}
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
