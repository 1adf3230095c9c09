"""The TensorFlow Serving Deployment of one track: an init container pulls the served
version from the store into an emptyDir, then the server loads it from there (TF Serving
no longer reads s3:// itself)."""

from __future__ import annotations

from typing import Any

from tfmaas.api import ModelService
from tfmaas.operator.config import OperatorConfig
from tfmaas.operator.manifests.access import gateway_container, gateway_volumes, guarded
from tfmaas.operator.manifests.common import (
    GPU_RESOURCE,
    container_security_context,
    namespace_of,
    owner_of,
    pod_security_context,
    scratch_env,
    storage_env,
    store_ca_mounts,
    store_ca_volumes,
    whole_cpus,
)
from tfmaas.operator.manifests.configmap import (
    CONFIG_DIR,
    MODELS_DIR,
    ServingConfig,
    model_base_path,
)
from tfmaas.operator.manifests.placement import Placement, serving_placement
from tfmaas.operator.naming import (
    COMPONENT_LABEL,
    CONFIG_HASH_ANNOTATION,
    GATEWAY_METRICS_PORT,
    GRPC_PORT,
    MODEL_SERVICE_LABEL,
    REST_PORT,
    SERVING_COMPONENT,
    SERVING_CONTAINER,
    TRACK_LABEL,
    UPSTREAM_GRPC_PORT,
    UPSTREAM_REST_PORT,
    VERSION_LABEL,
    config_map_name,
    deployment_name,
    gateway_service_account_name,
    labels,
    metadata,
)
from tfmaas.serving_policy import (
    BATCHING_CONFIG_FILE,
    METRICS_PATH,
    MODEL_CONFIG_FILE,
    MONITORING_CONFIG_FILE,
)


def selector(service_name: str, track: str) -> dict[str, str]:
    # Deployment selectors are immutable, so they name the track, never the version.
    return {
        MODEL_SERVICE_LABEL: service_name,
        COMPONENT_LABEL: SERVING_COMPONENT,
        TRACK_LABEL: track,
    }


def server_ports(service: ModelService, operator_config: OperatorConfig) -> tuple[int, int]:
    """TF Serving's gRPC and REST ports: the public ones, or behind the access gateway its own."""
    if guarded(service, operator_config):
        return UPSTREAM_GRPC_PORT, UPSTREAM_REST_PORT
    return GRPC_PORT, REST_PORT


def serving_image(service: ModelService, operator_config: OperatorConfig) -> str:
    """The spec's image, else TF Serving's CUDA build for a GPU replica, its CPU build
    otherwise: the CPU build cannot use the GPU the pod was given."""
    serving = service.spec.serving
    if serving.image:
        return serving.image
    return (
        operator_config.serving_gpu_image
        if serving.resources.gpu
        else operator_config.serving_image
    )


def server_args(service: ModelService, operator_config: OperatorConfig) -> list[str]:
    serving = service.spec.serving
    threads = whole_cpus(serving.resources.cpu)
    grpc_port, rest_port = server_ports(service, operator_config)
    args = [
        f"--port={grpc_port}",
        f"--rest_api_port={rest_port}",
        f"--model_config_file={CONFIG_DIR}/{MODEL_CONFIG_FILE}",
        f"--model_config_file_poll_wait_seconds={operator_config.config_poll_seconds}",
        f"--monitoring_config_file={CONFIG_DIR}/{MONITORING_CONFIG_FILE}",
    ]
    if serving.batching.enabled:
        args += [
            "--enable_batching=true",
            f"--batching_parameters_file={CONFIG_DIR}/{BATCHING_CONFIG_FILE}",
        ]
    # HTTP/2 pins a client to one pod; closing connections now and then lets new replicas
    # get load. Thread pools default to the node's cores, not the pod's share.
    args += [
        f"--grpc_channel_arguments=grpc.max_connection_age_ms={operator_config.grpc_max_connection_age_ms}",
        f"--tensorflow_intra_op_parallelism={threads}",
        f"--tensorflow_inter_op_parallelism={threads}",
    ]
    if serving.resources.gpu:
        # TF Serving takes nearly all of a GPU's memory by default; the operator's setting
        # bounds it (see OperatorConfig.serving_gpu_memory_fraction).
        args.append(
            f"--per_process_gpu_memory_fraction={operator_config.serving_gpu_memory_fraction}"
        )
    return args


def pre_stop(operator_config: OperatorConfig) -> dict[str, Any]:
    """The server keeps serving for a few seconds after its pod starts terminating: endpoint
    removal takes a moment to reach every kube-proxy, client and load balancer, and calls
    routed there meanwhile would fail. Kubernetes' own sleep action needs no binary in the
    image (tensorflow/serving has none to spare)."""
    seconds = operator_config.serving_pre_stop_seconds
    return {"lifecycle": {"preStop": {"sleep": {"seconds": seconds}}}} if seconds > 0 else {}


def termination_grace_seconds(operator_config: OperatorConfig) -> int:
    # The grace period counts from the start of preStop: the wait, then the server's drain.
    return operator_config.serving_pre_stop_seconds + operator_config.serving_drain_seconds


def placement_of(service: ModelService, operator_config: OperatorConfig) -> Placement:
    serving = service.spec.serving
    return serving_placement(serving.pod, gpu=serving.resources.gpu > 0, config=operator_config)


def pod_service_account(service: ModelService, operator_config: OperatorConfig) -> str | None:
    """The serving pods' ServiceAccount. Behind the access gateway it is the gateway's: its
    token is what the gateway reviews callers' tokens with (RBAC binds that account only), so
    spec.serving.pod.serviceAccountName gives way and the pods keep the store's keys."""
    if guarded(service, operator_config):
        return gateway_service_account_name(service.name)
    return placement_of(service, operator_config).service_account_name


def _storage_initializer(
    service: ModelService, version: int, operator_config: OperatorConfig
) -> dict[str, Any]:
    # The gateway's ServiceAccount is no store identity: a guarded pod keeps the store keys.
    identity = (
        None
        if guarded(service, operator_config)
        else placement_of(service, operator_config).service_account_name
    )
    return {
        "name": "storage-initializer",
        "image": operator_config.storage_initializer_image,
        "imagePullPolicy": operator_config.serving_image_pull_policy,
        "command": [
            "tfmaas",
            "store",
            "pull",
            service.spec.storage.uri,
            "--versions",
            str(version),
            "--dest",
            model_base_path(service.name),
        ],
        "env": [
            *storage_env(
                service,
                operator_config,
                image=operator_config.storage_initializer_image,
                service_account=identity,
            ),
            *scratch_env(),
        ],
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        },
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "models", "mountPath": MODELS_DIR},
            {"name": "scratch", "mountPath": "/tmp"},
            *store_ca_mounts(service),
        ],
    }


def _server(service: ModelService, track: str, operator_config: OperatorConfig) -> dict[str, Any]:
    serving = service.spec.serving
    amounts: dict[str, Any] = {"cpu": serving.resources.cpu, "memory": serving.resources.memory}
    limits = dict(amounts)
    if serving.resources.gpu:
        # An extended resource is requested through its limit (the request defaults to it).
        limits[GPU_RESOURCE] = serving.resources.gpu
    grpc_port, rest_port = server_ports(service, operator_config)
    # Behind the gateway the names "grpc" and "http" are the gateway's (the Service targets
    # them), so TF Serving's own ports are probed by number and not declared.
    ports = (
        []
        if guarded(service, operator_config)
        else [
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "http", "containerPort": REST_PORT, "protocol": "TCP"},
        ]
    )
    return {
        "name": SERVING_CONTAINER,
        "image": serving_image(service, operator_config),
        "imagePullPolicy": operator_config.serving_image_pull_policy,
        "command": list(operator_config.serving_command),
        "args": server_args(service, operator_config),
        "env": scratch_env(),
        "ports": ports,
        "resources": {"requests": amounts, "limits": limits},
        "securityContext": container_security_context(),
        # The server opens its ports only once the configured models have loaded, however
        # long that takes; the startup probe gives it up to ten minutes.
        "startupProbe": {
            "tcpSocket": {"port": grpc_port},
            "periodSeconds": 5,
            "failureThreshold": 120,
        },
        "livenessProbe": {
            "tcpSocket": {"port": grpc_port},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        # Ready must mean "the wanted version is AVAILABLE". GET /v1/models/<name> answers
        # 200 while a version is still LOADING, but a version label resolves only once its
        # version is AVAILABLE (TF Serving refuses to point a label at anything else), so
        # asking for the status by this track's label is an exact readiness check that
        # needs no sidecar.
        "readinessProbe": {
            "httpGet": {"path": f"/v1/models/{service.name}/labels/{track}", "port": rest_port},
            "periodSeconds": 5,
            "failureThreshold": 2,
        },
        **pre_stop(operator_config),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "models", "mountPath": MODELS_DIR, "readOnly": True},
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "scratch", "mountPath": "/tmp"},
        ],
    }


def build_deployment(
    service: ModelService,
    config: ServingConfig,
    replicas: int | None,
    operator_config: OperatorConfig,
) -> dict[str, Any]:
    """`replicas=None` leaves the count to the HorizontalPodAutoscaler."""
    track, version = config.track, config.version
    memory = service.spec.serving.resources.memory
    pod_labels = labels(
        service.name, SERVING_COMPONENT, **{TRACK_LABEL: track, VERSION_LABEL: str(version)}
    )
    pod_annotations = {
        CONFIG_HASH_ANNOTATION: config.digest,
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(REST_PORT),
        "prometheus.io/path": METRICS_PATH,
    }
    placed = placement_of(service, operator_config)
    # The operator's labels and annotations go last: its selectors, rollouts and scraping
    # rest on them (the CRD already refuses a spec that names them).
    pod_labels = {**placed.labels, **pod_labels}
    pod_annotations = {**placed.annotations, **pod_annotations}
    containers = [_server(service, track, operator_config)]
    volumes: list[dict[str, Any]] = [
        # A model that does not fit in the server's memory cannot be served, so
        # neither volume needs more disk than that.
        {"name": "models", "emptyDir": {"sizeLimit": memory}},
        {"name": "scratch", "emptyDir": {"sizeLimit": memory}},
        {
            "name": "config",
            "configMap": {"name": config_map_name(service.name, track, config.digest)},
        },
        *store_ca_volumes(service),
    ]
    pod_fields = placed.pod_spec_fields()
    pod_fields.pop("serviceAccountName", None)
    account = pod_service_account(service, operator_config)
    if account:
        pod_fields["serviceAccountName"] = account
    if guarded(service, operator_config):
        # The gateway passes TF Serving's metrics through on its own metrics port.
        pod_annotations["prometheus.io/port"] = str(GATEWAY_METRICS_PORT)
        containers.append(gateway_container(service, track, operator_config))
        volumes += gateway_volumes(service)
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector(service.name, track)},
        "revisionHistoryLimit": 3,
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        },
        "template": {
            "metadata": {"labels": pod_labels, "annotations": pod_annotations},
            "spec": {
                "securityContext": pod_security_context(operator_config),
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "terminationGracePeriodSeconds": termination_grace_seconds(operator_config),
                **pod_fields,
                "initContainers": [_storage_initializer(service, version, operator_config)],
                "containers": containers,
                "volumes": volumes,
            },
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(
            deployment_name(service.name, track),
            namespace_of(service),
            owner_of(service),
            {
                **placed.labels,
                **labels(
                    service.name,
                    SERVING_COMPONENT,
                    **{TRACK_LABEL: track, VERSION_LABEL: str(version)},
                ),
            },
            dict(placed.annotations) or None,
        ),
        "spec": spec,
    }
