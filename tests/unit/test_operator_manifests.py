"""Manifest builders: spec in, Kubernetes object out, checked field by field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tfmaas.api import ModelService, load_model_service, load_training_spec
from tfmaas.operator.config import OperatorConfig
from tfmaas.operator.manifests.common import requests_per_second_quantity, whole_cpus
from tfmaas.operator.manifests.configmap import build_config_map, serving_config
from tfmaas.operator.manifests.deployment import build_deployment, server_args
from tfmaas.operator.manifests.hpa import build_hpa
from tfmaas.operator.manifests.job import build_training_job, build_worker_service
from tfmaas.operator.manifests.pdb import build_pdb
from tfmaas.operator.manifests.service import build_headless_service, build_service, endpoint

CONFIG = OperatorConfig(
    trainer_image="trainer:test", serving_image="serving:test", serving_gpu_image="serving:gpu"
)


def service(**spec_overrides: Any) -> ModelService:
    spec: dict[str, Any] = {
        "storage": {
            "uri": "s3://models/reviews",
            "endpoint": "http://minio:9000",
            "secretRef": {"name": "store"},
        },
        "training": {"dataset": {"uri": "builtin:chinese-reviews"}},
    }
    for key, value in spec_overrides.items():
        spec[key] = {**spec.get(key, {}), **value}
    document = {
        "apiVersion": "tfmaas.io/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "reviews", "namespace": "ml", "uid": "uid-1"},
        "spec": spec,
    }
    return load_model_service(document)


def restricted_violations(pod_spec: dict[str, Any]) -> list[str]:
    pod = pod_spec.get("securityContext", {})
    problems = []
    for container in pod_spec.get("initContainers", []) + pod_spec["containers"]:
        context = container.get("securityContext", {})
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{container['name']}: privilege escalation")
        if "ALL" not in context.get("capabilities", {}).get("drop", []):
            problems.append(f"{container['name']}: capabilities")
        if not (context.get("runAsNonRoot") or pod.get("runAsNonRoot")):
            problems.append(f"{container['name']}: root")
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{container['name']}: writable root")
    if pod.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append("seccomp")
    return problems


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {entry["name"]: entry.get("value", entry.get("valueFrom")) for entry in container["env"]}


def test_training_job_runs_contract_5() -> None:
    model = service(training={"resources": {"gpu": 2}})
    job = build_training_job(model, 7, CONFIG)
    meta = job["metadata"]
    assert meta["name"] == "reviews-train-7" and meta["namespace"] == "ml"
    assert meta["ownerReferences"][0]["uid"] == "uid-1" and meta["ownerReferences"][0]["controller"]
    assert meta["labels"]["tfmaas.io/model-service"] == "reviews"
    assert meta["labels"]["tfmaas.io/version"] == "7"
    assert meta["annotations"]["tfmaas.io/training-hash"] == model.spec.training.fingerprint()
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = container["command"]
    assert command[:8] == [
        "tfmaas",
        "train",
        "--name",
        "reviews",
        "--version",
        "7",
        "--store",
        "s3://models/reviews",
    ]
    assert command[8] == "--training-json"
    assert load_training_spec(command[9]) == model.spec.training
    assert container["image"] == "trainer:test"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["restartPolicy"] == "Never"
    assert "completionMode" not in job["spec"] and "ttlSecondsAfterFinished" not in job["spec"]
    assert restricted_violations(pod) == []


def test_storage_credentials_come_only_from_the_secret() -> None:
    job = build_training_job(service(storage={"region": "eu-1"}), 1, CONFIG)
    env = env_of(job["spec"]["template"]["spec"]["containers"][0])
    assert env["AWS_ACCESS_KEY_ID"] == {
        "secretKeyRef": {"name": "store", "key": "AWS_ACCESS_KEY_ID"}
    }
    assert env["AWS_SECRET_ACCESS_KEY"]["secretKeyRef"]["name"] == "store"
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000" and env["AWS_REGION"] == "eu-1"
    assert "TF_CONFIG" not in env


def test_operator_defaults_fill_a_spec_without_endpoint_or_secret() -> None:
    model = load_model_service(
        {
            "apiVersion": "tfmaas.io/v1alpha1",
            "kind": "ModelService",
            "metadata": {"name": "m", "namespace": "ml", "uid": "u"},
            "spec": {
                "storage": {"uri": "s3://models/m"},
                "training": {"dataset": {"uri": "builtin:chinese-reviews"}},
            },
        }
    )
    config = OperatorConfig(default_store_endpoint="http://s3:9000", default_store_secret="shared")
    env = env_of(build_training_job(model, 1, config)["spec"]["template"]["spec"]["containers"][0])
    assert env["AWS_ENDPOINT_URL"] == "http://s3:9000"
    assert env["AWS_ACCESS_KEY_ID"]["secretKeyRef"]["name"] == "shared"


def test_multi_worker_training_is_an_indexed_job_with_tf_config() -> None:
    model = service(training={"workers": 3})
    job = build_training_job(model, 2, CONFIG)
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == "reviews-train-2"
    names = [entry["name"] for entry in pod["containers"][0]["env"]]
    # the index variable must come before TF_CONFIG for $(...) expansion to see it
    assert names.index("TFMAAS_WORKER_INDEX") < names.index("TF_CONFIG")
    tf_config = env_of(pod["containers"][0])["TF_CONFIG"]
    expanded = json.loads(tf_config.replace("$(TFMAAS_WORKER_INDEX)", "1"))
    assert expanded["task"] == {"type": "worker", "index": 1}
    assert expanded["cluster"]["worker"][2] == "reviews-train-2-2.reviews-train-2.ml.svc:2222"
    worker_service = build_worker_service(model, 2)
    assert worker_service is not None and worker_service["spec"]["clusterIP"] == "None"
    assert worker_service["metadata"]["name"] == "reviews-train-2"
    assert build_worker_service(service(), 2) is None


def test_config_map_lists_the_version_with_its_label() -> None:
    model = service(serving={"batching": {"maxBatchSize": 16}, "resources": {"cpu": "1500m"}})
    settings = serving_config(model, "stable", 4)
    config_map = build_config_map(model, settings, CONFIG)
    assert config_map["immutable"] is True
    assert config_map["metadata"]["name"] == f"reviews-config-{settings.digest[:10]}"
    models = config_map["data"]["models.config"]
    assert 'name: "reviews"' in models and 'base_path: "/models/reviews"' in models
    assert "specific { versions: 4 }" in models
    assert 'version_labels { key: "stable" value: 4 }' in models
    assert 'path: "/monitoring/prometheus/metrics"' in config_map["data"]["monitoring.config"]
    batching = config_map["data"]["batching.config"]
    assert "max_batch_size { value: 16 }" in batching
    assert "num_batch_threads { value: 2 }" in batching  # 1.5 CPUs, rounded up
    assert serving_config(model, "stable", 5).digest != settings.digest
    assert serving_config(model, "canary", 4).digest != settings.digest


def test_serving_deployment() -> None:
    model = service(serving={"resources": {"cpu": "2", "memory": "3Gi"}})
    settings = serving_config(model, "stable", 3)
    deployment = build_deployment(model, settings, None, CONFIG)
    assert deployment["metadata"]["name"] == "reviews"
    spec = deployment["spec"]
    assert "replicas" not in spec  # the HPA owns the count
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["selector"]["matchLabels"] == {
        "tfmaas.io/model-service": "reviews",
        "app.kubernetes.io/component": "serving",
        "tfmaas.io/track": "stable",
    }
    template = spec["template"]
    assert template["metadata"]["annotations"]["tfmaas.io/config-hash"] == settings.digest
    assert template["metadata"]["labels"]["tfmaas.io/version"] == "3"
    pod = template["spec"]
    (init,) = pod["initContainers"]
    assert init["command"] == [
        "tfmaas",
        "store",
        "pull",
        "s3://models/reviews",
        "--versions",
        "3",
        "--dest",
        "/models/reviews",
    ]
    assert env_of(init)["AWS_SECRET_ACCESS_KEY"]["secretKeyRef"]["name"] == "store"
    (server,) = pod["containers"]
    assert server["image"] == "serving:test"
    args = server["args"]
    for expected in (
        "--port=8500",
        "--rest_api_port=8501",
        "--model_config_file=/etc/tfmaas/models.config",
        "--monitoring_config_file=/etc/tfmaas/monitoring.config",
        "--enable_batching=true",
        "--batching_parameters_file=/etc/tfmaas/batching.config",
        "--grpc_channel_arguments=grpc.max_connection_age_ms=30000",
        "--tensorflow_intra_op_parallelism=2",
        "--tensorflow_inter_op_parallelism=2",
    ):
        assert expected in args
    assert any(arg.startswith("--model_config_file_poll_wait_seconds=") for arg in args)
    assert server["readinessProbe"]["httpGet"]["path"] == "/v1/models/reviews/labels/stable"
    assert server["resources"]["limits"] == {"cpu": "2", "memory": "3Gi"}
    assert {v["name"]: v for v in pod["volumes"]}["config"]["configMap"]["name"] == (
        f"reviews-config-{settings.digest[:10]}"
    )
    assert restricted_violations(pod) == []


def gpu_pod(model: ModelService, config: OperatorConfig = CONFIG) -> dict[str, Any]:
    deployment = build_deployment(model, serving_config(model, "stable", 1), None, config)
    return deployment["spec"]["template"]["spec"]


def test_a_cpu_replica_asks_for_no_gpu_and_runs_the_cpu_image() -> None:
    pod = gpu_pod(service(serving={"resources": {"gpu": 0}}))
    (server,) = pod["containers"]
    assert server["image"] == "serving:test"
    assert "nvidia.com/gpu" not in json.dumps(pod)
    assert not any("gpu" in arg for arg in server["args"])
    assert "nodeSelector" not in pod and "tolerations" not in pod


def test_a_gpu_replica_asks_for_its_gpu_runs_the_gpu_image_and_bounds_its_memory() -> None:
    config = OperatorConfig(
        serving_image="serving:test",
        serving_gpu_image="serving:gpu",
        gpu_node_selector={"accelerator": "h100"},
        serving_gpu_memory_fraction=0.45,
    )
    pod = gpu_pod(service(serving={"resources": {"gpu": 1, "cpu": "4", "memory": "8Gi"}}), config)
    (server,) = pod["containers"]
    assert server["image"] == "serving:gpu"
    # An extended resource is asked for by its limit; the request defaults to it.
    assert server["resources"] == {
        "requests": {"cpu": "4", "memory": "8Gi"},
        "limits": {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": 1},
    }
    fractions = [arg for arg in server["args"] if arg.startswith("--per_process_gpu_memory")]
    assert fractions == ["--per_process_gpu_memory_fraction=0.45"]
    assert pod["nodeSelector"] == {"accelerator": "h100"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    # Only the server gets the GPU: the init container and the gateway stay CPU-only.
    assert "nvidia.com/gpu" not in json.dumps(pod["initContainers"])
    assert restricted_violations(pod) == []


def test_a_gpu_replica_s_defaults_are_the_gpu_image_and_nine_tenths_of_its_gpu() -> None:
    pod = gpu_pod(service(serving={"resources": {"gpu": 1}}), OperatorConfig())
    (server,) = pod["containers"]
    assert server["image"] == OperatorConfig().serving_image + "-gpu"
    assert "--per_process_gpu_memory_fraction=0.9" in server["args"]


def test_a_gpu_replica_runs_the_spec_s_own_image_when_it_names_one() -> None:
    model = service(serving={"resources": {"gpu": 1}, "image": "team/serving:1-gpu"})
    (server,) = gpu_pod(model)["containers"]
    assert server["image"] == "team/serving:1-gpu"
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_a_guarded_gpu_replica_gives_the_gpu_to_the_server_only() -> None:
    model = service(serving={"resources": {"gpu": 1}, "access": {"mode": "kubernetes"}})
    server, gateway = gpu_pod(model)["containers"]
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in json.dumps(gateway)


def test_tfmaas_serve_accepts_every_flag_a_gpu_replica_gets() -> None:
    """The embedded server stands in for TF Serving in the GPU image's place too."""
    from tfmaas.serving.flags import parse

    model = service(serving={"resources": {"gpu": 1}})
    flags = parse(server_args(model, CONFIG))
    assert flags.per_process_gpu_memory_fraction == 0.9


def test_a_stopping_server_waits_then_drains_within_its_grace_period() -> None:
    model = service()
    settings = serving_config(model, "stable", 1)
    pod = build_deployment(model, settings, None, CONFIG)["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    # Kubernetes' own sleep action: the tensorflow/serving image has no sleep binary to exec.
    assert server["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert pod["terminationGracePeriodSeconds"] == 5 + 30
    assert "lifecycle" not in pod["initContainers"][0]

    tuned = OperatorConfig(serving_pre_stop_seconds=10, serving_drain_seconds=50)
    pod = build_deployment(model, settings, None, tuned)["spec"]["template"]["spec"]
    assert pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"] == 10
    assert pod["terminationGracePeriodSeconds"] == 60
    no_wait = OperatorConfig(serving_pre_stop_seconds=0)
    pod = build_deployment(model, settings, None, no_wait)["spec"]["template"]["spec"]
    assert "lifecycle" not in pod["containers"][0]
    assert pod["terminationGracePeriodSeconds"] == 30


def test_empty_dirs_are_bounded_by_the_memory_of_their_pod() -> None:
    model = service(
        serving={"resources": {"cpu": "1", "memory": "3Gi"}},
        training={"resources": {"cpu": "1", "memory": "6Gi"}},
    )
    deployment = build_deployment(model, serving_config(model, "stable", 1), None, CONFIG)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["models"]["emptyDir"] == {"sizeLimit": "3Gi"}
    assert volumes["scratch"]["emptyDir"] == {"sizeLimit": "3Gi"}
    job = build_training_job(model, 1, CONFIG)
    (scratch,) = job["spec"]["template"]["spec"]["volumes"]
    assert scratch["emptyDir"] == {"sizeLimit": "6Gi"}


def test_the_default_store_secret_goes_only_into_the_operator_s_own_images() -> None:
    def model(**training: Any) -> ModelService:
        return load_model_service(
            {
                "apiVersion": "tfmaas.io/v1alpha1",
                "kind": "ModelService",
                "metadata": {"name": "m", "namespace": "ml", "uid": "u"},
                "spec": {
                    "storage": {"uri": "s3://models/m"},
                    "training": {"dataset": {"uri": "builtin:chinese-reviews"}, **training},
                },
            }
        )

    config = OperatorConfig(
        trainer_image="trainer:own", default_store_secret="shared", allowed_images=("team/",)
    )

    def trainer_env(model: ModelService) -> dict[str, Any]:
        return env_of(
            build_training_job(model, 1, config)["spec"]["template"]["spec"]["containers"][0]
        )

    assert trainer_env(model())["AWS_SECRET_ACCESS_KEY"]["secretKeyRef"]["name"] == "shared"
    assert "AWS_SECRET_ACCESS_KEY" in trainer_env(model(image="trainer:own"))
    custom = trainer_env(model(image="team/trainer:1"))
    assert "AWS_SECRET_ACCESS_KEY" not in custom and "AWS_ACCESS_KEY_ID" not in custom
    # The spec's own secret is its owner's to give to an image they chose.
    spec_secret = service(training={"image": "team/trainer:1"})
    env = env_of(
        build_training_job(spec_secret, 1, config)["spec"]["template"]["spec"]["containers"][0]
    )
    assert env["AWS_SECRET_ACCESS_KEY"]["secretKeyRef"]["name"] == "store"
    # The storage initializer is always the operator's image, whatever spec.serving.image.
    serving = model()
    deployment = build_deployment(serving, serving_config(serving, "stable", 1), None, config)
    init = deployment["spec"]["template"]["spec"]["initContainers"][0]
    assert env_of(init)["AWS_SECRET_ACCESS_KEY"]["secretKeyRef"]["name"] == "shared"


def test_fixed_replicas_canary_and_no_batching() -> None:
    model = service(serving={"batching": {"enabled": False}, "autoscaling": {"enabled": False}})
    settings = serving_config(model, "canary", 2)
    assert "batching.config" not in settings.files
    deployment = build_deployment(model, settings, 2, CONFIG)
    assert (
        deployment["metadata"]["name"] == "reviews-canary" and deployment["spec"]["replicas"] == 2
    )
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any("batching" in arg for arg in args)
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe["httpGet"]["path"] == "/v1/models/reviews/labels/canary"


def test_services_hpa_and_pdb() -> None:
    model = service(
        serving={
            "autoscaling": {"minReplicas": 2, "maxReplicas": 7, "targetRequestsPerSecond": 12.5}
        }
    )
    main, headless = build_service(model), build_headless_service(model)
    assert [p["name"] for p in main["spec"]["ports"]] == ["grpc", "http"]
    assert [p["port"] for p in main["spec"]["ports"]] == [8500, 8501]
    assert (
        headless["metadata"]["name"] == "reviews-pods" and headless["spec"]["clusterIP"] == "None"
    )
    assert main["spec"]["selector"] == headless["spec"]["selector"]
    assert "tfmaas.io/track" not in main["spec"]["selector"]  # canary pods share the Service
    hpa = build_hpa(model)["spec"]
    assert hpa["scaleTargetRef"]["name"] == "reviews"
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 7)
    (metric,) = hpa["metrics"]
    assert metric["pods"]["metric"]["name"] == "tfserving_requests_per_second"
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "12500m"}
    pdb = build_pdb(model)["spec"]
    assert (
        pdb["maxUnavailable"] == 1 and pdb["selector"]["matchLabels"]["tfmaas.io/track"] == "stable"
    )
    assert endpoint(model) == {"grpc": "reviews.ml.svc:8500", "rest": "http://reviews.ml.svc:8501"}


@pytest.mark.parametrize(("quantity", "cpus"), [("1", 1), ("500m", 1), ("2.5", 3), ("4", 4)])
def test_thread_counts_follow_the_pod_cpus(quantity: str, cpus: int) -> None:
    assert whole_cpus(quantity) == cpus


def test_rate_quantities() -> None:
    assert requests_per_second_quantity(50) == "50"
    assert requests_per_second_quantity(0.5) == "500m"


@pytest.mark.parametrize("workers", [1, 3])
def test_disruptions_are_retried_without_counting_and_user_errors_fail_fast(workers: int) -> None:
    from tfmaas.cli.main import main
    from tfmaas.errors import USER_ERROR_EXIT_CODE

    job = build_training_job(service(training={"workers": workers}), 1, CONFIG)
    spec = job["spec"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy needs it
    assert spec["backoffLimit"] == CONFIG.training_backoff_limit
    disruption, bad_spec = spec["podFailurePolicy"]["rules"]
    # A preempted pod matches the first rule whatever its exit status (it may have saved and
    # exited 143, or have been killed mid-epoch).
    assert disruption == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
    assert bad_spec["action"] == "FailJob"
    assert bad_spec["onExitCodes"] == {
        "containerName": spec["template"]["spec"]["containers"][0]["name"],
        "operator": "In",
        "values": [USER_ERROR_EXIT_CODE],
    }
    # The status the trainer really exits with on a bad spec.
    assert main(["train", "--name", "m", "--store", "file:///tmp/x", "--training-json", "{"]) == (
        USER_ERROR_EXIT_CODE
    )
