"""spec.storage.encryption, kmsKeyId and caBundle: validated like the apiserver would, parsed
from flags and env, and rendered into the training Job and the serving Deployment."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_api_loader import errors_of, minimal
from tests.unit.test_operator_manifests import CONFIG, restricted_violations
from tfmaas.api import ModelService, load_model_service
from tfmaas.errors import UserError
from tfmaas.operator.manifests.configmap import serving_config
from tfmaas.operator.manifests.deployment import build_deployment
from tfmaas.operator.manifests.job import build_training_job
from tfmaas.storage import open_store
from tfmaas.storage.encryption import (
    ENCRYPTION_ENV,
    KMS_KEY_ID_ENV,
    StoreEncryption,
    UnencryptedObjectError,
)

HUGE = "x" * 100_000


def with_storage(**fields: Any) -> dict[str, Any]:
    document = minimal()
    document["spec"]["storage"].update(fields)
    return document


@pytest.mark.parametrize(
    ("fields", "reported_at", "says"),
    [
        ({"encryption": "rot13"}, "spec.storage.encryption", "must be one of sse-s3, sse-kms"),
        ({"encryption": "AES256"}, "spec.storage.encryption", "must be one of"),
        ({"encryption": HUGE}, "spec.storage.encryption", "must be one of"),
        ({"encryption": 1}, "spec.storage.encryption", "must be one of"),
        ({"kmsKeyId": "k1"}, "spec.storage.kmsKeyId", "kmsKeyId needs storage.encryption: sse-kms"),
        (
            {"encryption": "sse-s3", "kmsKeyId": "k1"},
            "spec.storage.kmsKeyId",
            "kmsKeyId needs storage.encryption: sse-kms",
        ),
        ({"encryption": "sse-kms", "kmsKeyId": HUGE}, "spec.storage.kmsKeyId", "at most 2048"),
        ({"encryption": "sse-kms", "kmsKeyId": "a b"}, "spec.storage.kmsKeyId", "wrong form"),
        ({"encryption": "sse-kms", "kmsKeyId": ""}, "spec.storage.kmsKeyId", "wrong form"),
        ({"caBundle": {}}, "spec.storage.caBundle", "exactly one of configMapRef or secretRef"),
        (
            {
                "caBundle": {
                    "configMapRef": {"name": "ca", "key": "ca.crt"},
                    "secretRef": {"name": "ca", "key": "ca.crt"},
                }
            },
            "spec.storage.caBundle",
            "exactly one of configMapRef or secretRef",
        ),
        (
            {"caBundle": {"configMapRef": {"name": "ca"}}},
            "spec.storage.caBundle.configMapRef.key",
            "required",
        ),
        (
            {"caBundle": {"secretRef": {"name": "ca", "key": "../etc/passwd"}}},
            "spec.storage.caBundle.secretRef.key",
            "wrong form",
        ),
        (
            {"caBundle": {"configMapRef": {"name": HUGE, "key": "ca.crt"}}},
            "spec.storage.caBundle.configMapRef.name",
            "at most 253",
        ),
        (
            {"uri": "file:///data/models", "encryption": "sse-s3"},
            "spec.storage",
            "apply to s3:// stores only",
        ),
        (
            {"uri": "file:///data/models", "caBundle": {"configMapRef": {"name": "a", "key": "b"}}},
            "spec.storage",
            "apply to s3:// stores only",
        ),
    ],
)
def test_hostile_storage_settings_are_refused_with_the_field_named(
    fields: dict[str, Any], reported_at: str, says: str
) -> None:
    errors = errors_of(with_storage(**fields))
    assert says in errors[reported_at], errors
    assert all(HUGE not in message for message in errors.values())


def test_valid_settings_reach_the_typed_spec() -> None:
    document = with_storage(
        encryption="sse-kms",
        kmsKeyId="arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab",
        caBundle={"secretRef": {"name": "store-ca", "key": "ca.pem"}},
    )
    storage = load_model_service(document).spec.storage
    assert storage.encryption == "sse-kms"
    assert storage.kms_key_id == "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab"
    assert storage.ca_bundle is not None
    assert (storage.ca_bundle.kind, storage.ca_bundle.name, storage.ca_bundle.key) == (
        "secret",
        "store-ca",
        "ca.pem",
    )
    plain = load_model_service(minimal()).spec.storage
    assert plain.encryption is None and plain.ca_bundle is None


# -- parsing flags and env ------------------------------------------------------------


def test_put_args_are_boto3s_names() -> None:
    assert StoreEncryption("sse-s3").put_args() == {"ServerSideEncryption": "AES256"}
    assert StoreEncryption("sse-kms", "k").put_args() == {
        "ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": "k",
    }


def test_env_parsing_names_the_variable() -> None:
    assert StoreEncryption.from_env({}) is None
    assert StoreEncryption.from_env({ENCRYPTION_ENV: "sse-kms", KMS_KEY_ID_ENV: "k"}) == (
        StoreEncryption("sse-kms", "k")
    )
    with pytest.raises(UserError, match=f"{ENCRYPTION_ENV} 'none' is unknown"):
        StoreEncryption.from_env({ENCRYPTION_ENV: "none"})
    with pytest.raises(UserError, match=f"{KMS_KEY_ID_ENV} is set but"):
        StoreEncryption.from_env({KMS_KEY_ID_ENV: "k"})


@settings(max_examples=200, deadline=None)
@given(
    mode=st.text(max_size=300).filter(lambda text: "KEYID-" not in text),
    key=st.one_of(st.none(), st.text(max_size=3000).map(lambda text: "KEYID-" + text)),
)
def test_any_input_parses_or_fails_with_a_short_message_that_echoes_no_key(
    mode: str, key: str | None
) -> None:
    try:
        parsed = StoreEncryption.parse(mode, key, mode_name="--encryption", key_name="--kms-key-id")
    except UserError as exc:
        assert len(str(exc)) < 200
        assert "KEYID-" not in str(exc)
        return
    assert parsed is None or parsed.mode in ("sse-s3", "sse-kms")


def test_the_pull_check_accepts_stronger_and_refuses_weaker_encryption() -> None:
    uri = "s3://models/x/1/saved_model.pb"
    StoreEncryption("sse-s3").check({"ServerSideEncryption": "aws:kms"}, uri=uri)
    StoreEncryption("sse-kms").check({"ServerSideEncryption": "aws:kms"}, uri=uri)
    with pytest.raises(UnencryptedObjectError, match=r"stored unencrypted, but .* requires sse-s3"):
        StoreEncryption("sse-s3").check({}, uri=uri)
    with pytest.raises(UnencryptedObjectError, match=f"{uri}: it is stored with 'AES256'"):
        StoreEncryption("sse-kms").check({"ServerSideEncryption": "AES256"}, uri=uri)
    with pytest.raises(UnencryptedObjectError) as caught:
        StoreEncryption("sse-kms").check({"ServerSideEncryption": HUGE}, uri=uri)
    assert len(str(caught.value)) < 400


def test_file_stores_refuse_s3_only_settings(tmp_path: Any) -> None:
    with pytest.raises(UserError, match="apply to s3:// stores only"):
        open_store(f"file://{tmp_path}", encryption=StoreEncryption("sse-s3"))
    with pytest.raises(UserError, match="apply to s3:// stores only"):
        open_store(f"file://{tmp_path}", ca_bundle="/ca.crt")


# -- rendering --------------------------------------------------------------------------


def secured_service(ca_bundle: dict[str, Any]) -> ModelService:
    document = with_storage(
        endpoint="https://minio.store:9000",
        encryption="sse-kms",
        kmsKeyId="tfmaas-key",
        caBundle=ca_bundle,
    )
    document["metadata"].update(namespace="ml", uid="uid-1")
    return load_model_service(document)


def pods_of(service: ModelService) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """(pod spec, the container that talks to the store) of the Job and the Deployment."""
    job_pod = build_training_job(service, 3, CONFIG)["spec"]["template"]["spec"]
    deployment = build_deployment(service, serving_config(service, "stable", 3), 1, CONFIG)
    serving_pod = deployment["spec"]["template"]["spec"]
    return {
        "trainer": (job_pod, job_pod["containers"][0]),
        "storage-initializer": (serving_pod, serving_pod["initContainers"][0]),
    }


@pytest.mark.parametrize(
    ("ca_bundle", "source"),
    [
        (
            {"configMapRef": {"name": "store-ca", "key": "root.pem"}},
            {"configMap": {"name": "store-ca"}},
        ),
        (
            {"secretRef": {"name": "store-ca", "key": "root.pem"}},
            {"secret": {"secretName": "store-ca"}},
        ),
    ],
)
def test_store_pods_get_encryption_env_and_the_ca_mounted(
    ca_bundle: dict[str, Any], source: dict[str, Any]
) -> None:
    for which, (pod, container) in pods_of(secured_service(ca_bundle)).items():
        env = {item["name"]: item.get("value") for item in container["env"]}
        assert env[ENCRYPTION_ENV] == "sse-kms", which
        assert env[KMS_KEY_ID_ENV] == "tfmaas-key", which
        assert env["AWS_CA_BUNDLE"] == "/etc/tfmaas/store-ca/ca.crt", which
        assert env["AWS_ENDPOINT_URL"] == "https://minio.store:9000", which
        volume = next(v for v in pod["volumes"] if v["name"] == "store-ca")
        kind = next(iter(source))
        assert {k: v for k, v in volume[kind].items() if k != "items"} == source[kind], which
        assert volume[kind]["items"] == [{"key": "root.pem", "path": "ca.crt"}], which
        mounts = [m for m in container["volumeMounts"] if m["name"] == "store-ca"]
        assert mounts == [
            {"name": "store-ca", "mountPath": "/etc/tfmaas/store-ca", "readOnly": True}
        ], which
        assert restricted_violations(pod) == [], which


def test_the_serving_container_gets_no_store_settings() -> None:
    service = secured_service({"configMapRef": {"name": "ca", "key": "ca.crt"}})
    pod, _ = pods_of(service)["storage-initializer"]
    server = pod["containers"][0]
    assert not {item["name"] for item in server["env"]} & {ENCRYPTION_ENV, "AWS_CA_BUNDLE"}
    assert all(m["name"] != "store-ca" for m in server["volumeMounts"])


def test_without_settings_nothing_is_added() -> None:
    document = minimal()
    document["metadata"].update(namespace="ml", uid="uid-1")
    for which, (pod, container) in pods_of(load_model_service(document)).items():
        names = {item["name"] for item in container["env"]}
        assert not names & {ENCRYPTION_ENV, KMS_KEY_ID_ENV, "AWS_CA_BUNDLE"}, which
        assert all(v["name"] != "store-ca" for v in pod["volumes"]), which
