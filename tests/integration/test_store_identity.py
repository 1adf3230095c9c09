"""A pod with spec.<part>.pod.serviceAccountName gets no static store keys; the store client
then takes its credentials from boto3's default chain, as IRSA or Workload Identity supply
them. Here the chain's shared-credentials file stands in for the identity provider, against a
real MinIO, with exactly the environment the operator renders for the trainer."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_storage_local import make_model_dir
from tfmaas.api import load_model_service
from tfmaas.dev.minio import MinioServer
from tfmaas.operator.config import OperatorConfig
from tfmaas.operator.manifests.job import build_training_job
from tfmaas.storage import StoreAccessError, open_store

pytestmark = pytest.mark.integration

BUCKET = "models"
_AWS_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
)


def trainer_env(minio: MinioServer, uri: str) -> dict[str, str]:
    """The trainer container's environment for a spec that names a Secret and a
    ServiceAccount: every entry must be a plain value (no secretKeyRef left to resolve)."""
    model = load_model_service(
        {
            "apiVersion": "tfmaas.io/v1alpha1",
            "kind": "ModelService",
            "metadata": {"name": "reviews", "namespace": "ml", "uid": "uid-1"},
            "spec": {
                "storage": {
                    "uri": uri,
                    "endpoint": minio.endpoint,
                    "region": minio.region,
                    "secretRef": {"name": "static-keys"},
                },
                "training": {
                    "dataset": {"uri": "builtin:chinese-reviews"},
                    "pod": {"serviceAccountName": "models-writer"},
                },
            },
        }
    )
    job = build_training_job(model, 1, OperatorConfig(trainer_image="trainer:test"))
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env: list[dict[str, Any]] = container["env"]
    assert all("valueFrom" not in entry for entry in env), env
    return {entry["name"]: entry["value"] for entry in env}


@pytest.fixture
def pod_env(minio: MinioServer, monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict[str, str]]:
    minio.bucket(BUCKET)
    uri = f"s3://{BUCKET}/identity-{uuid.uuid4().hex[:8]}/reviews"
    for name in _AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    env = trainer_env(minio, uri)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # Nothing on this machine may answer for the chain but what the test puts there.
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return uri, env


def test_the_store_takes_the_identity_s_credentials_from_the_default_chain(
    pod_env: tuple[str, dict[str, str]],
    minio: MinioServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    uri, env = pod_env
    assert "AWS_ACCESS_KEY_ID" not in env and "AWS_ENDPOINT_URL" in env
    credentials = tmp_path / "credentials"
    credentials.write_text(
        f"[default]\naws_access_key_id = {minio.access_key}\n"
        f"aws_secret_access_key = {minio.secret_key}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    store = open_store(uri)
    store.publish(1, make_model_dir(tmp_path / "model", 0.9))
    assert store.list_versions() == [1]


def test_without_an_identity_the_error_says_where_credentials_come_from(
    pod_env: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    uri, _ = pod_env
    with pytest.raises(StoreAccessError) as caught:
        open_store(uri).list_versions()
    message = str(caught.value)
    assert "no S3 credentials" in message and "serviceAccountName" in message
