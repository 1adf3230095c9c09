"""Training runs on small slices: learning happens, exports reload faithfully, and
`tfmaas train` publishes a complete version — or nothing at all when it fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SENTENCES = [
    "很好，非常满意，推荐购买",
    "太差了，要退货",
    "一般般吧",
    "房间干净，服务热情",
    "Hello 世界",
]


def _tiny(architecture: str) -> dict:
    return {
        "dataset": {"uri": "builtin:chinese-reviews"},
        "model": {
            "architecture": architecture,
            "maxTokens": 3000,
            "sequenceLength": 48,
            "embeddingDim": 16,
        },
        "hyperparameters": {"epochs": 1, "batchSize": 32, "maxExamples": 300},
    }


def test_small_slice_beats_the_majority_class_quickly(exported_model) -> None:
    metrics = exported_model.metrics
    support = [metrics["per_class"][name]["support"] for name in metrics["classes"]]
    majority = max(support) / sum(support)
    assert metrics["accuracy"] > majority + 0.1
    assert metrics["training_seconds"] < 60
    assert metrics["examples"]["train"] == 800 and metrics["architecture"] == "bag-of-ngrams"


@pytest.mark.parametrize("architecture", ["cnn", "transformer"])
def test_export_reloads_with_the_same_predictions(architecture: str, tmp_path: Path) -> None:
    import tensorflow as tf

    from tfmaas.trainer import export, train

    trained = train(_tiny(architecture), log=lambda line: None)
    in_memory = trained.predict(SENTENCES)
    export(trained, tmp_path / "1", name="tiny", version=1)
    serving = tf.saved_model.load(str(tmp_path / "1")).signatures["serving_default"]
    reloaded = {k: v.numpy() for k, v in serving(text=tf.constant(SENTENCES)).items()}
    np.testing.assert_allclose(reloaded["scores"], in_memory["scores"], rtol=1e-5, atol=1e-6)
    assert reloaded["class_id"].tolist() == in_memory["class_id"].tolist()
    assert reloaded["label"].tolist() == in_memory["label"].tolist()
    card = json.loads((tmp_path / "1" / "model_card.json").read_text(encoding="utf-8"))
    assert card["architecture"] == architecture and card["model"]["sequenceLength"] == 48


def _tfmaas_train(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "tfmaas.trainer", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
    )


def test_tfmaas_train_publishes_a_version_and_reports_it(tmp_path: Path) -> None:
    from tfmaas.storage import open_store

    store_uri = (tmp_path / "store").as_uri()
    spec = tmp_path / "training.json"
    spec.write_text(json.dumps(_tiny("bag-of-ngrams")), encoding="utf-8")
    log = tmp_path / "termination-log"
    args = ("--name", "tiny", "--version", "4", "--store", store_uri)
    args += ("--training-json", f"@{spec}", "--termination-log", str(log))
    run = _tfmaas_train(*args, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "epoch 1/1 loss=" in run.stdout and "\r" not in run.stdout

    message = json.loads(log.read_text(encoding="utf-8"))
    assert message["version"] == 4 and message["uri"] == f"{store_uri}/4/"
    assert set(message["metrics"]) == {"accuracy", "precision", "recall", "f1"}
    assert message["examples"] == {"train": 240, "validation": 30, "test": 30}
    assert message["trainedAt"].endswith("Z")

    store = open_store(store_uri)
    assert store.list_versions() == [4]
    version_dir = tmp_path / "store" / "4"
    assert (version_dir / "saved_model.pb").is_file()
    metrics = json.loads((version_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["accuracy"] == pytest.approx(message["metrics"]["accuracy"], abs=1e-6)
    card = json.loads((version_dir / "model_card.json").read_text(encoding="utf-8"))
    assert card["name"] == "tiny" and card["version"] == 4

    again = _tfmaas_train(*args, cwd=tmp_path)
    assert again.returncode == 2
    assert "already published" in again.stderr
    assert "already published" in json.loads(log.read_text(encoding="utf-8"))["error"]
    assert store.list_versions() == [4]


def test_next_version_follows_the_latest_published(tmp_path: Path) -> None:
    from tfmaas.storage import open_store
    from tfmaas.trainer import train_and_publish

    store_uri = (tmp_path / "store").as_uri()
    placeholder = tmp_path / "placeholder"
    placeholder.mkdir()
    (placeholder / "saved_model.pb").write_bytes(b"not a model")
    open_store(store_uri).publish(2, placeholder)

    result = train_and_publish(
        _tiny("bag-of-ngrams"), name="tiny", store_uri=store_uri, log=lambda line: None
    )
    assert result.version == 3 and result.uri == f"{store_uri}/3/"
    assert open_store(store_uri).list_versions() == [2, 3]
    assert (result.export_dir / "saved_model.pb").is_file()


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ("text,label\n好,p\n坏,p\n", "only one class"),
        (b"text,label\n\xba\xc3,p\n", "not valid UTF-8"),
        ("review,stars\n好,5\n", "it has 2 fields: 'review', 'stars'"),
    ],
)
def test_a_failing_run_publishes_nothing(data: str | bytes, fragment: str, tmp_path: Path) -> None:
    from tfmaas.storage import open_store

    dataset = tmp_path / "data.csv"
    if isinstance(data, str):
        dataset.write_text(data, encoding="utf-8")
    else:
        dataset.write_bytes(data)
    store_uri = (tmp_path / "store").as_uri()
    log = tmp_path / "termination-log"
    run = _tfmaas_train(
        "--name",
        "bad",
        "--version",
        "1",
        "--store",
        store_uri,
        "--training-json",
        json.dumps({"dataset": {"uri": dataset.as_uri()}}),
        "--termination-log",
        str(log),
        cwd=tmp_path,
    )
    assert run.returncode == 2
    assert fragment in run.stderr and "Traceback" not in run.stderr
    assert fragment in json.loads(log.read_text(encoding="utf-8"))["error"]
    assert open_store(store_uri).list_versions() == []


def test_an_unreachable_store_exits_for_a_retry_not_as_a_user_error(tmp_path: Path) -> None:
    """The Job's podFailurePolicy fails the Job at once on the user-error status; a store that
    did not answer must not count as one, so the Job's next pod can try (and resume) again."""
    from tfmaas.dev.processes import free_port

    closed = f"http://127.0.0.1:{free_port()}"
    log = tmp_path / "termination-log"
    run = _tfmaas_train(
        "--name", "tiny", "--version", "1", "--store", "s3://models/tiny",
        "--training-json", json.dumps(_tiny("bag-of-ngrams")),
        "--termination-log", str(log),
        cwd=tmp_path,
        env={"AWS_ENDPOINT_URL": closed, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
             "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard"},
    )  # fmt: skip
    assert run.returncode == 1, run.stderr[-2000:]
    assert f"cannot reach the S3 endpoint {closed}" in run.stderr
    assert "cannot reach" in json.loads(log.read_text(encoding="utf-8"))["error"]
