"""Pod placement and identity (spec.<part>.pod over the operator's defaults.<part>.pod):
every field as rendered into training Jobs and serving Deployments, the merge rules, the GPU
additions, and a ServiceAccount replacing the store's static keys."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from tfmaas.api import ModelService, load_model_service
from tfmaas.errors import UserError
from tfmaas.operator.config import OperatorConfig
from tfmaas.operator.manifests.configmap import serving_config
from tfmaas.operator.manifests.deployment import build_deployment
from tfmaas.operator.manifests.job import build_training_job, trainer_command
from tfmaas.operator.manifests.placement import merge_pod_settings

CONFIG = OperatorConfig(trainer_image="trainer:test", serving_image="serving:test")
GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
SPOT = {"key": "pool", "operator": "Equal", "value": "spot", "effect": "NoSchedule"}
AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
            ]
        }
    }
}
FULL_POD: dict[str, Any] = {
    "serviceAccountName": "models-reader",
    "imagePullSecrets": [{"name": "registry"}],
    "nodeSelector": {"pool": "ml"},
    "tolerations": [SPOT],
    "affinity": AFFINITY,
    "priorityClassName": "batch-low",
    "labels": {"kueue.x-k8s.io/queue-name": "team-a", "cost-centre": "42"},
    "annotations": {"example.com/owner": "team a"},
}


def service(training_pod: Any = None, serving_pod: Any = None, **serving: Any) -> ModelService:
    spec: dict[str, Any] = {
        "storage": {
            "uri": "s3://models/reviews",
            "endpoint": "http://minio:9000",
            "secretRef": {"name": "store"},
        },
        "training": {"dataset": {"uri": "builtin:chinese-reviews"}},
        "serving": dict(serving),
    }
    if training_pod is not None:
        spec["training"]["pod"] = training_pod
    if serving_pod is not None:
        spec["serving"]["pod"] = serving_pod
    document = {
        "apiVersion": "tfmaas.io/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "reviews", "namespace": "ml", "uid": "uid-1"},
        "spec": spec,
    }
    return load_model_service(document)


def job(model: ModelService, config: OperatorConfig = CONFIG) -> dict[str, Any]:
    return build_training_job(model, 1, config)


def deployment(model: ModelService, config: OperatorConfig = CONFIG) -> dict[str, Any]:
    return build_deployment(model, serving_config(model, "stable", 1), 1, config)


def env_names(container: dict[str, Any]) -> set[str]:
    return {entry["name"] for entry in container.get("env", [])}


def test_a_spec_without_pod_settings_renders_no_placement_fields() -> None:
    for pod in (
        job(service())["spec"]["template"]["spec"],
        deployment(service())["spec"]["template"]["spec"],
    ):
        for name in ("imagePullSecrets", "nodeSelector", "tolerations", "affinity"):
            assert name not in pod
        assert "priorityClassName" not in pod and "serviceAccountName" not in pod


def test_every_training_pod_field_reaches_the_job_and_its_pods() -> None:
    rendered = job(service(training_pod=FULL_POD))
    template = rendered["spec"]["template"]
    pod = template["spec"]
    assert pod["serviceAccountName"] == "models-reader"
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["nodeSelector"] == {"pool": "ml"}
    assert pod["tolerations"] == [SPOT]
    assert pod["affinity"] == AFFINITY
    assert pod["priorityClassName"] == "batch-low"
    # Kueue reads its queue label from the Job; cost tooling reads pods.
    for meta in (rendered["metadata"], template["metadata"]):
        assert meta["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
        assert meta["labels"]["cost-centre"] == "42"
        assert meta["annotations"]["example.com/owner"] == "team a"
        assert meta["labels"]["tfmaas.io/model-service"] == "reviews"
    assert "tfmaas.io/training-hash" in rendered["metadata"]["annotations"]


def test_every_serving_pod_field_reaches_the_deployment_and_its_pods() -> None:
    rendered = deployment(service(serving_pod=FULL_POD))
    template = rendered["spec"]["template"]
    pod = template["spec"]
    assert pod["serviceAccountName"] == "models-reader"
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["nodeSelector"] == {"pool": "ml"}
    assert pod["tolerations"] == [SPOT]
    assert pod["affinity"] == AFFINITY
    assert pod["priorityClassName"] == "batch-low"
    for meta in (rendered["metadata"], template["metadata"]):
        assert meta["labels"]["cost-centre"] == "42"
        assert meta["annotations"]["example.com/owner"] == "team a"
    # The selector is immutable and names the operator's labels only.
    assert "cost-centre" not in rendered["spec"]["selector"]["matchLabels"]
    assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true"


@pytest.mark.parametrize("part", ["training", "serving"])
def test_a_service_account_replaces_the_static_store_keys(part: str) -> None:
    with_keys = service()
    with_identity = service(**{f"{part}_pod": {"serviceAccountName": "models-reader"}})
    if part == "training":
        (before,) = job(with_keys)["spec"]["template"]["spec"]["containers"]
        (after,) = job(with_identity)["spec"]["template"]["spec"]["containers"]
    else:
        (before,) = deployment(with_keys)["spec"]["template"]["spec"]["initContainers"]
        (after,) = deployment(with_identity)["spec"]["template"]["spec"]["initContainers"]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= env_names(before)
    # Not a key, not a reference to one: boto3's default chain finds the identity.
    assert not any(name.startswith("AWS_ACCESS") or "SECRET" in name for name in env_names(after))
    assert "secretKeyRef" not in json.dumps(after)
    assert "AWS_ENDPOINT_URL" in env_names(after)


def test_a_default_service_account_replaces_the_operator_s_default_store_secret() -> None:
    config = OperatorConfig(
        trainer_image="trainer:test",
        default_store_secret="store",
        training_pod={"serviceAccountName": "irsa"},
    )
    model = load_model_service(
        {
            "apiVersion": "tfmaas.io/v1alpha1",
            "kind": "ModelService",
            "metadata": {"name": "reviews", "namespace": "ml", "uid": "uid-1"},
            "spec": {
                "storage": {"uri": "s3://models/reviews"},
                "training": {"dataset": {"uri": "builtin:chinese-reviews"}},
            },
        }
    )
    pod = job(model, config)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "irsa"
    assert "secretKeyRef" not in json.dumps(pod)


def test_behind_the_access_gateway_the_gateway_s_account_wins_and_keys_stay() -> None:
    # The spec cannot ask for both (the CRD refuses it); the operator's default mode can.
    guarded = OperatorConfig(serving_image="serving:test", access_mode="kubernetes")
    model = service(serving_pod={"serviceAccountName": "models-reader"})
    pod = deployment(model, guarded)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "reviews-access-gateway"
    (init,) = pod["initContainers"]
    assert "AWS_ACCESS_KEY_ID" in env_names(init)


def test_spec_over_default_maps_merge_lists_and_scalars_replace() -> None:
    default = {
        "serviceAccountName": "default-sa",
        "priorityClassName": "normal",
        "nodeSelector": {"pool": "general", "arch": "amd64"},
        "labels": {"team": "platform", "cost-centre": "1"},
        "annotations": {"example.com/a": "1"},
        "tolerations": [SPOT],
        "imagePullSecrets": [{"name": "mirror"}],
        "affinity": AFFINITY,
    }
    spec = {
        "priorityClassName": "high",
        "nodeSelector": {"pool": "ml"},
        "labels": {"cost-centre": "42"},
        "tolerations": [],
        "affinity": {"podAntiAffinity": {"x": 1}},
    }
    assert merge_pod_settings(default, spec) == {
        "serviceAccountName": "default-sa",
        "priorityClassName": "high",
        "nodeSelector": {"pool": "ml", "arch": "amd64"},
        "labels": {"team": "platform", "cost-centre": "42"},
        "annotations": {"example.com/a": "1"},
        "tolerations": [],
        "imagePullSecrets": [{"name": "mirror"}],
        "affinity": {**AFFINITY, "podAntiAffinity": {"x": 1}},
    }


def test_chart_defaults_apply_under_the_spec_in_rendered_pods() -> None:
    config = OperatorConfig(
        serving_image="serving:test",
        serving_pod={"nodeSelector": {"pool": "general"}, "tolerations": [SPOT]},
    )
    plain = deployment(service(), config)["spec"]["template"]["spec"]
    assert plain["nodeSelector"] == {"pool": "general"} and plain["tolerations"] == [SPOT]
    own = deployment(
        service(serving_pod={"nodeSelector": {"pool": "ml"}, "tolerations": []}), config
    )
    pod = own["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "ml"} and "tolerations" not in pod


@pytest.mark.parametrize("part", ["training", "serving"])
def test_a_gpu_pod_adds_the_gpu_pool_under_its_own_placement(part: str) -> None:
    config = OperatorConfig(
        trainer_image="trainer:test",
        serving_image="serving:test",
        gpu_node_selector={"accelerator": "h100", "pool": "gpu"},
    )
    settings = {"nodeSelector": {"pool": "team-gpu"}, "tolerations": [SPOT, GPU_TAINT]}
    if part == "training":
        model = service(training_pod=settings)
        document = dict(model.document)
        document["spec"]["training"]["resources"]["gpu"] = 1
        pod = job(load_model_service(document), config)["spec"]["template"]["spec"]
    else:
        model = service(serving_pod=settings, resources={"gpu": 1})
        pod = deployment(model, config)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"accelerator": "h100", "pool": "team-gpu"}
    # The GPU taint's toleration is there once, after the pod's own.
    assert pod["tolerations"] == [SPOT, GPU_TAINT]


def test_pod_settings_neither_retrain_nor_reach_the_trainer() -> None:
    plain, placed = service(), service(training_pod=FULL_POD)
    assert plain.spec.training.fingerprint() == placed.spec.training.fingerprint()
    assert "pod" not in json.loads(trainer_command(placed, 1)[-1])
    assert trainer_command(plain, 1) == trainer_command(placed, 1)


def test_serving_pod_changes_roll_out_and_an_unchanged_spec_renders_identically() -> None:
    def digest(model: ModelService) -> str:
        return hashlib.sha256(json.dumps(deployment(model), sort_keys=True).encode()).hexdigest()

    first = digest(service(serving_pod=FULL_POD))
    # A second reconcile of the same spec sends nothing new (the Applier compares digests).
    assert digest(service(serving_pod=json.loads(json.dumps(FULL_POD)))) == first
    changed = {**FULL_POD, "tolerations": [SPOT, GPU_TAINT]}
    assert digest(service(serving_pod=changed)) != first


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"servingPod": {"labels": {"tfmaas.io/track": "x"}}}, "servingPod.labels"),
        ({"trainingPod": {"nodeSelector": {"bad key": "x"}}}, "trainingPod.nodeSelector"),
        ({"trainingPod": {"tolerations": [{"operator": "Equal"}]}}, "trainingPod.tolerations"),
        ({"servingPod": {"serviceAccountName": "Not_A_Name"}}, "servingPod.serviceAccountName"),
        ({"servingPod": {"hostNetwork": True}}, "servingPod.hostNetwork"),
        ({"gpuTolerations": [{"key": "a", "operator": "Exists", "value": "b"}]}, "tolerations"),
    ],
)
def test_a_bad_default_stops_the_operator_naming_the_setting(
    values: dict[str, Any], named: str
) -> None:
    with pytest.raises(UserError) as caught:
        OperatorConfig.from_mapping(values)
    assert named in str(caught.value)


def test_pod_defaults_read_from_the_chart_s_json_variables() -> None:
    config = OperatorConfig.load(
        environ={
            "TFMAAS_TRAINING_POD": json.dumps({"priorityClassName": "batch"}),
            "TFMAAS_SERVING_POD": json.dumps({"imagePullSecrets": [{"name": "r"}]}),
        }
    )
    assert config.training_pod == {"priorityClassName": "batch"}
    assert config.serving_pod == {"imagePullSecrets": [{"name": "r"}]}
