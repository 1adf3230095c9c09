"""The whole loop on one machine: control plane, a real node, MinIO, the project's images and
the Helm chart with the operator running as a pod (`tfmaas dev up`).

Pieces a test needs one by one (publishing a host service into the cluster, installing the
chart with the local images) are functions here, so the e2e tests and `dev up` share them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfmaas.dev import images, keda, pki, processes, tools
from tfmaas.dev.cluster import LocalCluster
from tfmaas.dev.metrics_adapter import GROUP as METRICS_GROUP
from tfmaas.dev.metrics_adapter import VERSION as METRICS_VERSION
from tfmaas.dev.metrics_adapter import CustomMetricsServer
from tfmaas.dev.minio import MinioServer
from tfmaas.dev.monitoring import LocalPrometheus
from tfmaas.dev.node import LocalNode, default_node_address

SYSTEM_NAMESPACE = "tfmaas-system"
RELEASE = "tfmaas"
CHART_DIR = images.REPO_ROOT / "charts" / "tfmaas"
STORE_SECRET = "model-store"
MINIO_SERVICE_PORT = 9000
MODELS_BUCKET = "models"


def publish_host_service(
    cluster: LocalCluster,
    node: LocalNode,
    *,
    namespace: str,
    name: str,
    service_port: int,
    host_port: int,
) -> str:
    """Make a loopback-only host service a cluster Service (`name.namespace:service_port`):
    a selector-less Service whose one endpoint is the node's relay of `host_port`."""
    node.expose_host_port(host_port)
    ensure_namespace(cluster, namespace)
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"name": "tcp", "port": service_port, "targetPort": host_port}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name}-host",
                "namespace": namespace,
                "labels": {
                    "kubernetes.io/service-name": name,
                    "endpointslice.kubernetes.io/managed-by": "tfmaas.dev",
                },
            },
            "addressType": "IPv4",
            "ports": [{"name": "tcp", "port": host_port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [node.address], "conditions": {"ready": True}}],
        },
    ]
    cluster.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    )
    return f"http://{name}.{namespace}:{service_port}"


@contextlib.contextmanager
def running_node(
    directory: Path,
    preloaded: Sequence[images.BuiltImage],
    *,
    binaries: Mapping[str, Path] | None = None,
) -> Iterator[tuple[LocalCluster, LocalNode]]:
    """A control plane with one Ready node that already holds `preloaded` (images are never
    pulled here); both are stopped on exit."""
    cluster = LocalCluster(directory, binaries=binaries, advertise_address=default_node_address())
    cluster.start()
    node = LocalNode(cluster)
    try:
        node.start()
        for image in preloaded:
            node.import_image(image)
        yield cluster, node
    finally:
        node.stop()
        cluster.stop()


def ensure_namespace(cluster: LocalCluster, namespace: str) -> None:
    manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def create_store_secret(cluster: LocalCluster, minio: MinioServer, namespace: str) -> None:
    """The Secret a ModelService's `storage.secretRef` names (keys as contract 1 says)."""
    ensure_namespace(cluster, namespace)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": STORE_SECRET, "namespace": namespace},
        "stringData": {
            "AWS_ACCESS_KEY_ID": minio.access_key,
            "AWS_SECRET_ACCESS_KEY": minio.secret_key,
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(secret))


def _repository_and_tag(image: images.BuiltImage) -> tuple[str, str]:
    repository, _, tag = image.reference.rpartition(":")
    return repository, tag


def chart_values(built: Mapping[str, images.BuiltImage]) -> dict[str, str]:
    """--set values pointing the chart at the locally built images, which are never pulled."""
    values: dict[str, str] = {}
    for prefix, name in (
        ("image", "operator"),
        ("defaults.trainer.image", "trainer"),
        ("defaults.serving.image", "serving"),
        # The local node's GPUs are a fake capacity: its GPU replicas run the same image.
        ("defaults.serving.gpuImage", "serving"),
        ("access.gateway.image", "access-gateway"),
        ("demoStore.image", "demo-store"),
    ):
        if name in built:
            repository, tag = _repository_and_tag(built[name])
            values[f"{prefix}.repository"] = repository
            values[f"{prefix}.tag"] = tag
            # The gateway and GPU images take their pull policy from defaults.serving.image.
            if prefix in (
                "image",
                "defaults.trainer.image",
                "defaults.serving.image",
                "demoStore.image",
            ):
                values[f"{prefix}.pullPolicy"] = "Never"
    return values


def install_chart(
    cluster: LocalCluster,
    built: Mapping[str, images.BuiltImage],
    *,
    extra_values: Mapping[str, str] | None = None,
    timeout: str = "5m",
) -> None:
    helm = tools.ensure("helm")
    command = [str(helm), "upgrade", "--install", RELEASE, str(CHART_DIR)]
    command += ["--namespace", SYSTEM_NAMESPACE, "--create-namespace", "--wait"]
    command += ["--timeout", timeout, "--kubeconfig", str(cluster.kubeconfig)]
    for key, value in {**chart_values(built), **(extra_values or {})}.items():
        command += ["--set", f"{key}={value}"]
    completed = subprocess.run(command, capture_output=True, text=True, env=cluster.kubectl_env())
    if completed.returncode != 0:
        raise RuntimeError(f"helm install failed: {completed.stderr.strip()[-3000:]}")


def start_prometheus(cluster: LocalCluster, directory: Path) -> LocalPrometheus:
    def list_pods(selector: str) -> list[dict[str, Any]]:
        return list(cluster.kubectl_json("get", "pods", "-A", "-l", selector)["items"])

    return LocalPrometheus(directory, list_pods).start()


def install_metrics_adapter(
    cluster: LocalCluster, node: LocalNode, prometheus: LocalPrometheus
) -> CustomMetricsServer:
    """Serve custom.metrics.k8s.io from Prometheus (see tfmaas.dev.metrics_adapter)."""
    cert, key = node.issue_certificate(
        "custom-metrics",
        pki.CertRequest(
            "custom-metrics",
            dns_names=(f"custom-metrics.{SYSTEM_NAMESPACE}.svc",),
            ip_addresses=(node.address, "127.0.0.1"),
            server=True,
        ),
    )

    def list_pods(namespace: str, selector: str) -> list[str]:
        args = ["get", "pods", "-n", namespace]
        if selector:
            args += ["-l", selector]
        listed = cluster.kubectl_json(*args)
        return [
            pod["metadata"]["name"]
            for pod in listed["items"]
            if pod.get("status", {}).get("phase") == "Running"
        ]

    def query_rates(expr: str) -> dict[str, float]:
        return {
            series["metric"].get("pod", ""): float(series["value"][1])
            for series in prometheus.query(expr)
        }

    server = CustomMetricsServer(
        list_pods=list_pods, query_rates=query_rates, cert=cert, key=key
    ).start()
    publish_host_service(
        cluster,
        node,
        namespace=SYSTEM_NAMESPACE,
        name="custom-metrics",
        service_port=443,
        host_port=server.port,
    )
    api_service = {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": f"{METRICS_VERSION}.{METRICS_GROUP}"},
        "spec": {
            "service": {"name": "custom-metrics", "namespace": SYSTEM_NAMESPACE, "port": 443},
            "group": METRICS_GROUP,
            "version": METRICS_VERSION,
            "insecureSkipTLSVerify": True,
            "groupPriorityMinimum": 100,
            "versionPriority": 200,
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(api_service))
    return server


def install_keda(cluster: LocalCluster, node: LocalNode, directory: Path) -> keda.LocalKeda:
    """KEDA on the node's cluster: its CRDs, its operator and its metrics server as host
    processes (see tfmaas.dev.keda), the metrics server registered as the cluster's
    `external.metrics.k8s.io` through the node's relay, the way KEDA's chart registers its
    Service. It serves the External metric of each HPA KEDA makes; the operator queries each
    ScaledObject's Prometheus itself, so their serverAddress must be one the host reaches."""
    keda.install_crds(cluster)
    grpc_port, secure_port = processes.free_port(), processes.free_port()
    operator = keda.start_operator(cluster, directory, metrics_service_port=grpc_port)
    adapter = keda.start_adapter(
        cluster, directory, metrics_service_port=grpc_port, secure_port=secure_port
    )
    installed = keda.LocalKeda(operator=operator, adapter=adapter)
    try:
        processes.wait_until(
            lambda: not (processes.port_is_free(secure_port) or processes.port_is_free(grpc_port)),
            timeout=60,
            what="KEDA's metrics server and the operator's gRPC metrics service to listen",
            processes=[operator, adapter],
        )
        publish_host_service(
            cluster,
            node,
            namespace=keda.KEDA_NAMESPACE,
            name=keda.ADAPTER_SERVICE,
            service_port=443,
            host_port=secure_port,
        )
        ca_bundle = (directory / "certs" / "ca.crt").read_bytes()
        api_service_name = f"{keda.EXTERNAL_METRICS_VERSION}.{keda.EXTERNAL_METRICS_GROUP}"
        api_service = {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": api_service_name},
            "spec": {
                "service": {
                    "name": keda.ADAPTER_SERVICE,
                    "namespace": keda.KEDA_NAMESPACE,
                    "port": 443,
                },
                "group": keda.EXTERNAL_METRICS_GROUP,
                "version": keda.EXTERNAL_METRICS_VERSION,
                # The API server checks the metrics server's certificate against KEDA's CA.
                "caBundle": base64.b64encode(ca_bundle).decode(),
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(api_service))
        cluster.kubectl(
            "wait",
            "--for=condition=Available",
            f"apiservice/{api_service_name}",
            "--timeout=120s",
        )
    except BaseException:
        installed.stop()
        raise
    return installed


@dataclass
class LocalStack:
    """Everything `tfmaas dev up` runs; state under `directory`."""

    directory: Path
    cluster: LocalCluster | None = None
    node: LocalNode | None = None
    minio: MinioServer | None = None
    prometheus: LocalPrometheus | None = None
    metrics_adapter: CustomMetricsServer | None = None
    built: dict[str, images.BuiltImage] = field(default_factory=dict)
    minio_url: str = ""

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            # Images first: the slowest step, and nothing is running yet if it fails.
            base = images.base_image()
            self.built = images.project_images(base=base)
            self.cluster = LocalCluster(
                self.directory / "cluster", advertise_address=default_node_address()
            )
            self.cluster.start()
            self.node = LocalNode(self.cluster)
            self.node.start()
            for image in (base, *self.built.values()):
                self.node.import_image(image)
            self.minio = MinioServer(data_dir=self.directory / "minio")
            self.minio.start()
            self.minio.bucket(MODELS_BUCKET)
            self.minio_url = publish_host_service(
                self.cluster,
                self.node,
                namespace=SYSTEM_NAMESPACE,
                name="minio",
                service_port=MINIO_SERVICE_PORT,
                host_port=self.minio.port,
            )
            create_store_secret(self.cluster, self.minio, "default")
            self.prometheus = start_prometheus(self.cluster, self.directory / "prometheus")
            self.metrics_adapter = install_metrics_adapter(self.cluster, self.node, self.prometheus)
            install_chart(self.cluster, self.built)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.metrics_adapter is not None:
            self.metrics_adapter.stop()
            self.metrics_adapter = None
        if self.prometheus is not None:
            self.prometheus.stop()
            self.prometheus = None
        if self.minio is not None:
            self.minio.stop()
            self.minio = None
        if self.node is not None:
            self.node.stop()
            self.node = None
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None

    def summary(self) -> str:
        assert self.cluster is not None and self.node is not None and self.minio is not None
        lines = [
            f"export KUBECONFIG={self.cluster.kubeconfig}",
            f"node {self.node.name} Ready at {self.node.address}",
            f"MinIO {self.minio.endpoint} (in cluster: {self.minio_url}, Secret default/"
            f"{STORE_SECRET})",
            f"Prometheus {self.prometheus.url if self.prometheus else '-'} (scrapes serving pods)",
            *(f"image {name}: {image.reference}" for name, image in self.built.items()),
            "try: kubectl apply -f deploy/samples/sentiment.yaml; kubectl get ms -w",
        ]
        return "\n".join(lines)


def run_until_interrupted(directory: Path) -> int:
    """Bring the stack up, print how to use it, keep it until SIGINT/SIGTERM."""
    stack = LocalStack(directory.resolve())
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    started = time.monotonic()
    stack.start()
    try:
        print(stack.summary(), flush=True)
        print(f"up in {time.monotonic() - started:.0f}s; Ctrl-C stops it", flush=True)
        while not stopping:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0
