"""`tfmaas local run` with the sample ModelService: train, gate, serve, predict; then hand a new
version to the server that is already running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tfmaas.dev.processes import free_port

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "samples" / "sentiment.yaml"
# Enough data for the sample's quality gate (accuracy >= 0.8) with a margin, in well under a minute.
QUICK = ("--epochs", "3", "--max-examples", "8000")


def local_run(workdir: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tfmaas",
        "local",
        "run",
        str(SAMPLE),
        "--workdir",
        str(workdir),
        *args,
    ]


ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.mark.slow
def test_sample_trains_serves_and_picks_up_the_next_version(tmp_path: Path) -> None:
    ports = ("--port", str(free_port()), "--rest-port", str(free_port()))
    first = subprocess.run(
        local_run(tmp_path, *QUICK, *ports, "--exit-after-predict"),
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "epoch 1/3" in first.stdout  # progress while it trains
    assert "sample prediction (gRPC, label stable = version 1)" in first.stdout
    assert " -> positive (" in first.stdout or " -> negative (" in first.stdout
    assert (tmp_path / "models" / "sentiment" / "1" / "saved_model.pb").is_file()
    logs = tmp_path / "models" / "sentiment" / "logs"
    assert f"training curves: tensorboard --logdir {logs}\n" in first.stdout
    assert list((logs / "1" / "validation").glob("events.out.tfevents.*"))

    # Serve what the store holds, then train version 2 while it runs.
    serving = subprocess.Popen(
        local_run(tmp_path, "--no-train", *ports),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
    )
    try:
        assert serving.stdout is not None
        deadline = time.monotonic() + 120
        for line in serving.stdout:
            if "serving until interrupted" in line or time.monotonic() > deadline:
                break
        else:
            pytest.fail("the serving run ended early")
        second = subprocess.run(
            local_run(tmp_path, *QUICK, *ports, "--exit-after-predict"),
            capture_output=True,
            text=True,
            timeout=600,
            env=ENV,
        )
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        assert "already serves sentiment" in second.stdout
        assert "label stable = version 2" in second.stdout
    finally:
        # As a process manager (or a pod's kubelet) stops it; it drains and exits 0.
        serving.send_signal(signal.SIGTERM)
        serving.communicate(timeout=60)
    assert serving.returncode == 0


def publish_demo_version(
    store: Path, version: int, accuracy: float, *, uri: str = "", endpoint: str | None = None
) -> None:
    """A published version with the files the trainer writes, without training."""
    from tfmaas.serving.testing import DEMO_CLASSES, write_demo_model
    from tfmaas.storage import open_store

    export = write_demo_model(store.parent / "export", version)
    scores = {"accuracy": accuracy, "precision": accuracy, "recall": accuracy, "f1": accuracy}
    (export / "metrics.json").write_text(json.dumps(scores))
    (export / "model_card.json").write_text(json.dumps({"classes": list(DEMO_CLASSES)}))
    open_store(uri or store.as_uri(), endpoint=endpoint).publish(version, export)


def run_quick(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tfmaas", "local", "run", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**ENV, **(env or {})},
    )


def test_serves_a_published_version_without_training(tmp_path: Path) -> None:
    store = tmp_path / "models" / "sentiment"
    publish_demo_version(store, 1, accuracy=0.9)
    publish_demo_version(store, 2, accuracy=0.5)  # below the sample's gate: kept, not served
    answer = run_quick(
        str(SAMPLE),
        "--workdir",
        str(tmp_path),
        "--no-train",
        "--port=0",  # any free port, and no REST
        "--rest-port=0",
        "--exit-after-predict",
        "--sample",
        "好",
    )
    assert answer.returncode == 0, answer.stdout[-2000:] + answer.stderr[-2000:]
    assert "gRPC: 127.0.0.1:0 " not in answer.stdout and "REST:" not in answer.stdout
    assert "label stable = version 1" in answer.stdout
    assert "好 -> negative (negative=" in answer.stdout  # class names from the model card


def ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serving_stops_on_a_signal_even_with_sigint_ignored(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """A background job of a non-interactive shell (as `make test &` starts it) inherits
    SIGINT ignored; a process manager sends SIGTERM. Either must stop the server."""
    publish_demo_version(tmp_path / "models" / "sentiment", 1, accuracy=0.9)
    serving = subprocess.Popen(
        local_run(tmp_path, "--no-train", "--port=0", "--rest-port=0", "--sample", "好"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
        preexec_fn=ignore_sigint,
    )
    try:
        assert serving.stdout is not None
        for line in serving.stdout:
            if "serving until interrupted" in line:
                break
        else:
            pytest.fail("the serving run ended early")
        serving.send_signal(signum)
        output, _ = serving.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        serving.kill()
        output, _ = serving.communicate()
        pytest.fail(f"{signum.name} did not stop `tfmaas local run`:\n{output[-3000:]}")
    finally:
        if serving.poll() is None:
            serving.kill()
            serving.communicate()
    assert serving.returncode == 0, output[-2000:]
    assert "stopping" in output


def test_serves_from_an_s3_store(tmp_path: Path, minio: Any, minio_env: dict[str, str]) -> None:
    uri = f"s3://{minio.bucket('local-run')}/sentiment"
    publish_demo_version(tmp_path / "unused", 3, accuracy=0.9, uri=uri, endpoint=minio.endpoint)
    ports = ("--port", str(free_port()), "--rest-port", str(free_port()))
    answer = run_quick(
        str(SAMPLE),
        "--workdir",
        str(tmp_path),
        "--store",
        uri,
        "--endpoint",
        minio.endpoint,
        "--no-train",
        "--exit-after-predict",
        *ports,
        env=minio_env,
    )
    assert answer.returncode == 0, answer.stdout[-2000:] + answer.stderr[-2000:]
    assert "label stable = version 3" in answer.stdout
    assert (tmp_path / "serving" / "sentiment" / "versions" / "3" / "saved_model.pb").is_file()


def test_a_gate_nothing_passes_is_explained(tmp_path: Path) -> None:
    strict = tmp_path / "strict.yaml"
    strict.write_text(SAMPLE.read_text().replace("minAccuracy: 0.8", "minAccuracy: 0.999"))
    empty = run_quick(str(strict), "--workdir", str(tmp_path), "--no-train")
    assert empty.returncode == 2
    assert "holds no versions yet" in empty.stderr
    publish_demo_version(tmp_path / "models" / "sentiment", 1, accuracy=0.9)
    gated = run_quick(str(strict), "--workdir", str(tmp_path), "--no-train")
    assert gated.returncode == 2
    assert "passes the quality gate" in gated.stderr


def test_a_missing_pin_keeps_the_current_version_serving(tmp_path: Path) -> None:
    """As in the cluster: PinnedVersionUnavailable, and the version served before goes on."""
    publish_demo_version(tmp_path / "models" / "sentiment", 1, accuracy=0.9)
    quick = ("--workdir", str(tmp_path), "--no-train", "--port=0", "--rest-port=0")
    first = run_quick(str(SAMPLE), *quick, "--exit-after-predict", "--sample", "好")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    pinned = tmp_path / "pinned.yaml"
    pinned.write_text(SAMPLE.read_text().replace("version: latest", "version: 7"))
    answer = run_quick(str(pinned), *quick, "--exit-after-predict", "--sample", "好")
    assert answer.returncode == 0, answer.stdout[-2000:] + answer.stderr[-2000:]
    assert "PinnedVersionUnavailable: spec.serving.version pins version 7" in answer.stdout
    assert "label stable = version 1" in answer.stdout
    # With nothing served before, there is nothing to keep: the pin's problem is the error.
    store = (tmp_path / "models" / "sentiment").as_uri()
    fresh = run_quick(
        str(pinned), "--workdir", str(tmp_path / "fresh"), "--store", store, "--no-train"
    )
    assert fresh.returncode == 2
    assert "nothing to serve: spec.serving.version pins version 7" in fresh.stderr


def test_the_gate_verdict_recorded_at_first_sight_stands(tmp_path: Path) -> None:
    """As the operator judges a version once: a stricter gate later refuses nothing served."""
    publish_demo_version(tmp_path / "models" / "sentiment", 1, accuracy=0.9)
    quick = ("--workdir", str(tmp_path), "--no-train", "--port=0", "--rest-port=0")
    first = run_quick(str(SAMPLE), *quick, "--exit-after-predict", "--sample", "好")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    strict = tmp_path / "strict.yaml"
    strict.write_text(SAMPLE.read_text().replace("minAccuracy: 0.8", "minAccuracy: 0.999"))
    again = run_quick(str(strict), *quick, "--exit-after-predict", "--sample", "好")
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "label stable = version 1" in again.stdout


def test_an_invalid_spec_is_rejected_before_training(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SAMPLE.read_text().replace("architecture: bag-of-ngrams", "architecture: rnn"))
    answer = subprocess.run(
        [sys.executable, "-m", "tfmaas", "local", "run", str(bad), "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    assert answer.returncode == 2
    assert "architecture" in answer.stderr
    assert not (tmp_path / "models").exists()


def test_a_local_run_publishes_with_the_spec_s_store_encryption(
    tmp_path: Path, minio: Any, minio_env: dict[str, str]
) -> None:
    """`spec.storage.encryption` holds on one machine as in the cluster: what the local run
    trains lands in the S3 store encrypted, and a version written without it is refused."""
    bucket = minio.bucket("local-run-sse")
    uri = f"s3://{bucket}/sentiment"
    spec = tmp_path / "encrypted.yaml"
    spec.write_text(
        SAMPLE.read_text().replace(
            "    endpoint: http://minio.tfmaas-system:9000\n",
            "    endpoint: http://minio.tfmaas-system:9000\n    encryption: sse-kms\n",
        )
    )
    common = ("--workdir", str(tmp_path), "--store", uri, "--endpoint", minio.endpoint)
    trained = run_quick(
        str(spec), *common, "--epochs", "1", "--max-examples", "600", "--no-serve", env=minio_env
    )
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    client = minio.client()
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=bucket)["Contents"]]
    model_files = [key for key in keys if key.startswith("sentiment/1/")]
    assert model_files
    for key in model_files:
        assert client.head_object(Bucket=bucket, Key=key)["ServerSideEncryption"] == "aws:kms"
    publish_demo_version(tmp_path / "plain", 2, accuracy=0.9, uri=uri, endpoint=minio.endpoint)
    refused = run_quick(str(spec), *common, "--no-train", "--exit-after-predict", env=minio_env)
    assert refused.returncode != 0
    assert "encrypt" in refused.stderr
