"""The chart's opt-in demo store (demoStore.*): absent by default; when enabled, a restricted
MinIO pod, its Service and the store Secret exactly as the samples name them."""

from __future__ import annotations

import base64
from typing import Any

import jsonschema
import pytest
import yaml

from tests.fixtures.chart import CHART_DIR, REPO_ROOT, find, helm_binary, one, render, run_helm
from tests.unit.test_chart_files import load_schema
from tfmaas import __version__

SAMPLES = sorted((REPO_ROOT / "deploy" / "samples").glob("*.yaml"))
STORE = "tfmaas-demo-store"


def _store_objects(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        o
        for o in objects
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "demo-store"
    ]


def test_off_by_default() -> None:
    objects = render(helm_binary())
    assert _store_objects(objects) == []
    assert not find(objects, "Secret")


def test_enabled_renders_a_restricted_minio_and_the_samples_secret() -> None:
    objects = render(helm_binary(), {"demoStore.enabled": True})
    kinds = sorted((o["kind"], o["metadata"]["namespace"]) for o in _store_objects(objects))
    assert kinds == [
        ("Deployment", "tfmaas-system"),
        ("Secret", "default"),
        ("Secret", "tfmaas-system"),
        ("Service", "tfmaas-system"),
    ]
    root = one(objects, "Secret", STORE)["data"]
    models = [s for s in find(objects, "Secret", "model-store")]
    assert [s["metadata"]["namespace"] for s in models] == ["default"]
    store_key = models[0]["data"]
    # The models' Secret holds the key the server starts with, generated (not a fixed default).
    assert store_key["AWS_ACCESS_KEY_ID"] == root["MINIO_ROOT_USER"]
    assert store_key["AWS_SECRET_ACCESS_KEY"] == root["MINIO_ROOT_PASSWORD"]
    assert len(base64.b64decode(root["MINIO_ROOT_PASSWORD"])) == 40
    again = one(render(helm_binary(), {"demoStore.enabled": True}), "Secret", STORE)["data"]
    assert again["MINIO_ROOT_PASSWORD"] != root["MINIO_ROOT_PASSWORD"]

    deployment = one(objects, "Deployment", STORE)
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for container in [*pod["initContainers"], *pod["containers"]]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["readOnlyRootFilesystem"] is True
        # The key reaches the server only by reference, never as a literal value.
        for env in container.get("env", []):
            assert "value" not in env or "MINIO_ROOT" not in env["name"]
    (minio,) = pod["containers"]
    assert minio["image"] == f"tfmaas/demo-store:{__version__}"
    (bucket,) = pod["initContainers"]
    assert bucket["image"] == f"tfmaas/operator:{__version__}"
    assert bucket["args"] == ["/data/models"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["emptyDir"] == {"sizeLimit": "10Gi"}

    service = one(objects, "Service", "minio")
    assert service["spec"]["ports"][0]["port"] == 9000
    labels = pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels[k] == v for k, v in service["spec"]["selector"].items())
    # The operator's NetworkPolicy selects the operator pod only, not the store.
    policy = one(objects, "NetworkPolicy")
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert not all(labels.get(k) == v for k, v in selector.items())


def test_a_claim_and_more_namespaces() -> None:
    objects = render(
        helm_binary(),
        {
            "demoStore.enabled": True,
            "demoStore.existingClaim": "store-data",
            "demoStore.secretNamespaces": ["team-a", "team-b", "team-a"],
            "demoStore.bucket": "ml.models",
        },
    )
    secrets = sorted(s["metadata"]["namespace"] for s in find(objects, "Secret", "model-store"))
    assert secrets == ["team-a", "team-b"]
    pod = one(objects, "Deployment", STORE)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"] == {"name": "data", "persistentVolumeClaim": {"claimName": "store-data"}}
    assert pod["initContainers"][0]["args"] == ["/data/ml.models"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("bucket", "Models"),
        ("bucket", "a"),
        ("bucket", "models/../x"),
        ("secretNamespaces", ["Not_A_Namespace"]),
        ("secretName", "model store"),
        ("serviceName", "minio.tfmaas"),
        ("sizeLimit", "ten gigs"),
        ("runAsUser", 0),
        ("existingClaim", "a b"),
        ("image", {"repository": "tfmaas/demo store"}),
        ("replicas", 2),
    ],
)
def test_schema_rejects_careless_values(key: str, value: object) -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    values["demoStore"][key] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(load_schema()).validate(values)


def test_helm_refuses_a_careless_bucket_before_rendering() -> None:
    failed = run_helm(
        helm_binary(),
        "template",
        "tfmaas",
        str(CHART_DIR),
        "--set",
        "demoStore.enabled=true",
        "--set",
        "demoStore.bucket=../etc",
        check=False,
    )
    assert failed.returncode != 0
    assert "/demoStore/bucket" in failed.stderr


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_every_sample_names_the_demo_store(sample: Any) -> None:
    spec = yaml.safe_load(sample.read_text())["spec"]
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())["demoStore"]
    storage = spec["storage"]
    assert storage["endpoint"] == f"http://{values['serviceName']}.tfmaas-system:9000"
    assert storage["secretRef"]["name"] == values["secretName"]
    assert storage["uri"].startswith(f"s3://{values['bucket']}/")


def test_the_default_sample_asks_for_no_gpu() -> None:
    (default,) = [p for p in SAMPLES if p.name == "sentiment.yaml"]
    spec = yaml.safe_load(default.read_text())["spec"]
    assert "gpu" not in spec["training"]["resources"]
    assert "gpu" not in spec["serving"].get("resources", {})
    (gpu,) = [p for p in SAMPLES if p.name == "sentiment-gpu.yaml"]
    spec = yaml.safe_load(gpu.read_text())["spec"]
    assert spec["training"]["resources"]["gpu"] == 1
    assert spec["serving"]["resources"]["gpu"] == 1
