"""The store's encryption and CA bundle on a real control plane: the apiserver enforces the
CRD's rules, and the operator's training Job and serving Deployment carry the settings to the
pods that talk to the store (admitted under the restricted Pod Security profile)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.operator_harness import (
    wait_for,
)
from tests.integration.test_operator_lifecycle import (
    TIMEOUT,
    Harness,
    model_service,
    operator_harness,
)
from tfmaas.dev.cluster import LocalCluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

KMS_KEY_ID = "arn:aws:kms:eu-west-1:111122223333:key/tfmaas-test-key"
CA_MOUNT = {"name": "store-ca", "mountPath": "/etc/tfmaas/store-ca", "readOnly": True}


@pytest.fixture(scope="module")
def harness(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with operator_harness(cluster, tmp_path_factory, "enc") as harness:
        yield harness


def secured(name: str, **storage: Any) -> dict[str, Any]:
    document = model_service(name)
    document["spec"]["storage"].update(
        {
            "endpoint": "https://minio.tfmaas-system:9000",
            "encryption": "sse-kms",
            "kmsKeyId": KMS_KEY_ID,
            "caBundle": {"configMapRef": {"name": "store-ca", "key": "root.pem"}},
            **storage,
        }
    )
    return document


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ({"encryption": "sse-s3"}, "storage.kmsKeyId needs storage.encryption: sse-kms"),
        ({"encryption": "rot13", "kmsKeyId": None}, 'Unsupported value: "rot13"'),
        ({"uri": "file:///models/x", "kmsKeyId": None}, "apply to s3:// stores only"),
        (
            {
                "caBundle": {
                    "configMapRef": {"name": "a", "key": "b"},
                    "secretRef": {"name": "a", "key": "b"},
                }
            },
            "storage.caBundle needs exactly one of configMapRef or secretRef",
        ),
    ],
)
def test_the_apiserver_refuses_bad_store_settings(
    harness: Harness, storage: dict[str, Any], message: str
) -> None:
    document = secured("refused", **storage)
    document["spec"]["storage"] = {
        k: v for k, v in document["spec"]["storage"].items() if v is not None
    }
    result = harness.kubectl("apply", "-f", "-", input=json.dumps(document), check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value") for item in container["env"]}


def test_job_and_deployment_carry_the_store_settings(harness: Harness) -> None:
    harness.kubectl("create", "configmap", "store-ca", "--from-literal=root.pem=not-checked-here")
    harness.apply(secured("sealed"))

    job = wait_for(lambda: harness.get("job", "sealed-train-1"), "Job sealed-train-1", TIMEOUT)
    pod_spec = job["spec"]["template"]["spec"]
    trainer = pod_spec["containers"][0]
    env = env_of(trainer)
    assert env["TFMAAS_STORE_ENCRYPTION"] == "sse-kms"
    assert env["TFMAAS_STORE_KMS_KEY_ID"] == KMS_KEY_ID
    assert env["AWS_CA_BUNDLE"] == "/etc/tfmaas/store-ca/ca.crt"
    assert env["AWS_ENDPOINT_URL"] == "https://minio.tfmaas-system:9000"
    assert CA_MOUNT in trainer["volumeMounts"]
    assert {
        "name": "store-ca",
        "configMap": {
            "name": "store-ca",
            "items": [{"key": "root.pem", "path": "ca.crt"}],
            "defaultMode": 420,
        },
    } in pod_spec["volumes"]
    # The Job controller's pod was admitted under the restricted profile.
    harness.training_pod("sealed", 1)

    harness.finish_training("sealed", 1, accuracy=0.9)
    harness.serve("sealed", 1)
    deployment = harness.get("deployment", "sealed")
    assert deployment is not None
    serving_pod = deployment["spec"]["template"]["spec"]
    initializer = serving_pod["initContainers"][0]
    assert initializer["name"] == "storage-initializer"
    init_env = env_of(initializer)
    assert init_env["TFMAAS_STORE_ENCRYPTION"] == "sse-kms"
    assert init_env["TFMAAS_STORE_KMS_KEY_ID"] == KMS_KEY_ID
    assert init_env["AWS_CA_BUNDLE"] == "/etc/tfmaas/store-ca/ca.crt"
    assert CA_MOUNT in initializer["volumeMounts"]
    assert any(v["name"] == "store-ca" for v in serving_pod["volumes"])
    assert "AWS_CA_BUNDLE" not in env_of(serving_pod["containers"][0])

    # Nothing of the settings is echoed into status or Events.
    status = json.dumps(harness.status("sealed"))
    events = harness.kubectl("get", "events", "-o", "json").stdout
    for text in (status, events):
        assert KMS_KEY_ID not in text and "root.pem" not in text
