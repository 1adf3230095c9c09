"""The operator's guards on a real control plane: no credential or data-file contents in
status and Events, images the admin has not allowed start nothing, and history, Jobs and
disk stay bounded.

The operator runs as in test_operator_lifecycle (its own namespaced RBAC, a namespace
enforcing the restricted profile, the test playing the kubelet); the failing training is the
real `tfmaas train`, run here with the Job's own --training-json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.operator_harness import wait_for
from tests.integration.test_operator_lifecycle import (
    TIMEOUT,
    Harness,
    model_service,
    operator_harness,
)
from tfmaas.dev.cluster import LocalCluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

FAKE_SECRET = "fake-secret-4b1d9e0c7a"
# What file:///proc/self/environ holds: NUL-separated KEY=VALUE, the store's secret included.
ENVIRON_FILE = (
    "PATH=/usr/local/sbin:/usr/local/bin\x00HOSTNAME=trainer-pod-5c8f\x00"
    f"AWS_ACCESS_KEY_ID=AKIAFAKE00000000\x00AWS_SECRET_ACCESS_KEY={FAKE_SECRET}\x00"
    "HOME=/tmp\x00KUBERNETES_SERVICE_HOST=10.96.0.1\x00"
)
FILE_CONTENTS = (
    FAKE_SECRET,
    "AKIAFAKE00000000",
    "/usr/local",
    "trainer-pod-5c8f",
    "10.96.0.1",
    "PATH=",
    "HOME=",
)
ALLOWED = "registry.example/team/"


@pytest.fixture(scope="module")
def harness(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with operator_harness(
        cluster,
        tmp_path_factory,
        "guard",
        extra_env={
            "TFMAAS_ALLOWED_IMAGES": json.dumps([ALLOWED]),
            "TFMAAS_DEFAULT_STORE_SECRET": "shared-store",
            "TFMAAS_STATUS_VERSIONS_KEPT": "2",
        },
    ) as harness:
        yield harness


def events_of(harness: Harness, name: str) -> list[dict[str, Any]]:
    listed = harness.kubectl(
        "get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json"
    ).stdout
    return list(json.loads(listed)["items"])


def run_the_job_s_trainer(job: dict[str, Any], tmp_path: Path) -> str:
    """`tfmaas train` with the Job's arguments and a store on disk (the Job's S3 store is
    not reachable here); with the secret in its environment as the Job's pod has it. Returns
    the termination message it wrote."""
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["tfmaas", "train"]
    args = command[2:]
    args[args.index("--store") + 1] = (tmp_path / "store").as_uri()
    log = tmp_path / "termination-log"
    run = subprocess.run(
        [sys.executable, "-m", "tfmaas.trainer", *args, "--termination-log", str(log)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "AWS_SECRET_ACCESS_KEY": FAKE_SECRET, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert run.returncode != 0, run.stdout
    for fragment in FILE_CONTENTS:
        assert fragment not in run.stderr and fragment not in run.stdout, fragment
    return log.read_text(encoding="utf-8")


def test_training_on_an_environment_file_shows_no_secret_anywhere(
    harness: Harness, tmp_path: Path
) -> None:
    environ = tmp_path / "environ"
    environ.write_bytes(ENVIRON_FILE.encode())
    document = model_service("leak")
    document["spec"]["training"]["dataset"] = {"uri": environ.as_uri(), "format": "csv"}
    harness.apply(document)
    job = wait_for(lambda: harness.get("job", "leak-train-1"), "Job leak-train-1", TIMEOUT)
    message = run_the_job_s_trainer(job, tmp_path)
    assert len(message.encode("utf-8")) < 4096
    pod = harness.training_pod("leak", 1)
    harness.cluster.finish_pod(harness.namespace, pod, succeeded=False, termination_message=message)
    harness.wait_status(
        "leak",
        "training failure reported",
        lambda s: any(c["type"] == "Trained" and c["status"] == "False" for c in s["conditions"]),
    )
    trained = harness.condition("leak", "Trained")
    assert "none of which looks like a column name" in trained["message"]
    wait_for(
        lambda: any(e["reason"] == "TrainingFailed" for e in events_of(harness, "leak")),
        "the TrainingFailed Event",
        TIMEOUT,
    )
    # The operator logs each Event it posts: its log is one more place to search.
    seen = (
        json.dumps(harness.status("leak"))
        + json.dumps(events_of(harness, "leak"))
        + harness.operator.log_path.read_text(errors="replace")
    )
    for fragment in FILE_CONTENTS:
        assert fragment not in seen, fragment


def test_a_crash_log_with_a_credential_is_redacted_by_the_operator(harness: Harness) -> None:
    # FallbackToLogsOnError, or an image that is not the trainer: whatever the pod left.
    harness.apply(model_service("crash"))
    wait_for(lambda: harness.get("job", "crash-train-1"), "Job crash-train-1", TIMEOUT)
    crash = f"Traceback ...\nKeyError: \x1b[1mAWS_SECRET_ACCESS_KEY={FAKE_SECRET}\x00 PASSWORD=pw"
    harness.cluster.finish_pod(
        harness.namespace,
        harness.training_pod("crash", 1),
        succeeded=False,
        termination_message=crash,
    )
    status = harness.wait_status(
        "crash",
        "version 1 failed",
        lambda s: any(v["version"] == 1 and v["state"] == "Failed" for v in s["versions"]),
    )
    assert "AWS_SECRET_ACCESS_KEY=[redacted]" in status["versions"][0]["message"]
    wait_for(
        lambda: any("[redacted]" in e["message"] for e in events_of(harness, "crash")),
        "the TrainingFailed Event",
        TIMEOUT,
    )
    seen = json.dumps(harness.status("crash")) + json.dumps(events_of(harness, "crash"))
    assert FAKE_SECRET not in seen and "PASSWORD=pw" not in seen
    assert "\\u001b" not in seen and "\\u0000" not in seen
    log = harness.operator.log_path.read_text(errors="replace")
    assert "TrainingFailed: " in log  # the Event's line, redacted as the Event is
    assert FAKE_SECRET not in log and "PASSWORD=pw" not in log and "\x1b" not in log


def test_an_image_not_allowed_gets_spec_valid_false_and_no_job(harness: Harness) -> None:
    document = model_service("miner")
    # A long but well-formed reference (a tag may not pass 128 characters, so the length is
    # in the path): the CRD lets it through, the operator must refuse it and say so briefly.
    document["spec"]["training"]["image"] = "evil.example/miner/" + "x" * 300 + ":1"
    harness.apply(document)
    harness.wait_status(
        "miner",
        "SpecValid False",
        lambda s: any(
            c["type"] == "SpecValid" and c["status"] == "False" for c in s.get("conditions") or []
        ),
    )
    condition = harness.condition("miner", "SpecValid")
    assert condition["message"].startswith("spec.training.image 'evil.example/miner/xxx")
    assert "x" * 100 not in condition["message"] and ALLOWED in condition["message"]
    assert harness.items("jobs", "tfmaas.io/model-service=miner") == []
    assert harness.status("miner")["phase"] == "Failed"


def test_only_the_operator_s_own_images_get_the_default_store_secret(harness: Harness) -> None:
    def secrets_of(name: str) -> set[str]:
        job = wait_for(lambda: harness.get("job", f"{name}-train-1"), f"Job of {name}", TIMEOUT)
        env = job["spec"]["template"]["spec"]["containers"][0]["env"]
        return {e["valueFrom"]["secretKeyRef"]["name"] for e in env if "valueFrom" in e}

    own = model_service("own")
    del own["spec"]["storage"]["secretRef"]
    harness.apply(own)
    assert secrets_of("own") == {"shared-store"}

    custom = model_service("custom")
    del custom["spec"]["storage"]["secretRef"]
    custom["spec"]["training"]["image"] = ALLOWED + "trainer:2"
    harness.apply(custom)
    assert secrets_of("custom") == set()
    job = harness.get("job", "custom-train-1")
    assert job is not None
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == ALLOWED + "trainer:2"


def test_history_and_finished_jobs_stay_bounded(harness: Harness) -> None:
    harness.apply(model_service("grow"))
    wait_for(lambda: harness.get("job", "grow-train-1"), "Job grow-train-1", TIMEOUT)
    harness.finish_training("grow", 1, accuracy=0.9)
    harness.serve("grow", 1)
    for version in range(2, 6):
        harness.patch_spec("grow", {"training": {"hyperparameters": {"epochs": 10 + version}}})
        wait_for(
            lambda v=version: harness.get("job", f"grow-train-{v}"), f"Job v{version}", TIMEOUT
        )
        harness.finish_training("grow", version, accuracy=None)
        harness.wait_status(
            "grow",
            f"version {version} failed",
            lambda s, v=version: any(
                r["version"] == v and r["state"] == "Failed" for r in s["versions"]
            ),
        )
    # Kept: the served version and the newest two; the store would keep them all.
    status = harness.wait_status(
        "grow",
        "status.versions trimmed",
        lambda s: [r["version"] for r in s["versions"]] == [1, 4, 5],
    )
    assert status["servingVersion"] == 1 and status["latestVersion"] == 5
    # Only the newest version's Job (its logs) is left, with its pod.
    wait_for(
        lambda: (
            [j["metadata"]["name"] for j in harness.items("jobs", "tfmaas.io/model-service=grow")]
            == ["grow-train-5"]
        ),
        "finished Jobs deleted",
        TIMEOUT,
    )
    wait_for(
        lambda: (
            all(
                p["metadata"]["labels"].get("batch.kubernetes.io/job-name") == "grow-train-5"
                for p in harness.items(
                    "pods", "tfmaas.io/model-service=grow,app.kubernetes.io/component=training"
                )
            )
            or None
        ),
        "pods of deleted Jobs gone",
        TIMEOUT,
    )
    # A new spec still gets a number never used before.
    harness.patch_spec("grow", {"training": {"hyperparameters": {"epochs": 30}}})
    wait_for(lambda: harness.get("job", "grow-train-6"), "Job grow-train-6", TIMEOUT)


def test_serving_pods_wait_before_stopping_and_bound_their_disk(harness: Harness) -> None:
    # The API server (v1.35) validates the preStop sleep action and sizeLimit; the pods exist.
    pods = harness.items("pods", "tfmaas.io/model-service=grow,tfmaas.io/track=stable")
    assert pods
    spec = pods[0]["spec"]
    (server,) = spec["containers"]
    assert server["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
    assert spec["terminationGracePeriodSeconds"] == 35
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["models"]["emptyDir"]["sizeLimit"] == "2Gi"
