"""The Job-facing pieces: --training-json, the termination message, TF_CONFIG roles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tfmaas.api import load_training_spec
from tfmaas.errors import UserError
from tfmaas.trainer.distribute import cluster_role
from tfmaas.trainer.entrypoint import (
    DEFAULT_TERMINATION_LOG,
    TrainResult,
    failure_message,
    write_termination_message,
)


def _result(**overrides) -> TrainResult:
    metrics = {
        "accuracy": 0.8512345678,
        "precision": 0.8,
        "recall": 0.81,
        "f1": 0.805,
        "per_class": {"a": {}},
        "confusion_matrix": [[1]],
    }
    fields = dict(
        version=3,
        uri="s3://models/sentiment/3/",
        metrics=metrics,
        export_dir=Path("unused"),
        trained_at="2026-01-02T03:04:05Z",
        examples={"train": 8, "validation": 1, "test": 1},
    )
    fields.update(overrides)
    return TrainResult(**fields)


def test_termination_message_is_compact_json_per_contract() -> None:
    text = _result().termination_message()
    assert " " not in text
    assert json.loads(text) == {
        "version": 3,
        "metrics": {"accuracy": 0.851235, "precision": 0.8, "recall": 0.81, "f1": 0.805},
        "trainedAt": "2026-01-02T03:04:05Z",
        "examples": {"train": 8, "validation": 1, "test": 1},
        "uri": "s3://models/sentiment/3/",
    }
    reported = json.loads(_result(tensorflow_version="2.21.0").termination_message())
    assert reported["tensorflowVersion"] == "2.21.0"
    # A local build's long version string cannot crowd the 4 KiB message.
    long = json.loads(_result(tensorflow_version="2.22.0-" + "d" * 500).termination_message())
    assert len(long["tensorflowVersion"]) == 40


def test_termination_message_carries_the_published_size_when_known() -> None:
    assert json.loads(_result(size_bytes=2_718_281).termination_message())["sizeBytes"] == 2_718_281
    assert "sizeBytes" not in json.loads(_result().termination_message())


def test_failure_message_stays_under_4_kib() -> None:
    message = failure_message(UserError("x" * 10_000))
    assert len(message.encode()) < 4096
    assert json.loads(message)["error"].startswith("xxx")
    assert json.loads(failure_message(RuntimeError("boom"))) == {"error": "RuntimeError: boom"}


def test_failure_message_redacts_credentials_and_control_characters(monkeypatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret-0c4f2a")
    error = RuntimeError("boto says fake-secret-0c4f2a\x00 and TOKEN=abc\x1b[0m")
    reported = json.loads(failure_message(error))["error"]
    assert "fake-secret" not in reported and "abc" not in reported
    assert "\x00" not in reported and "\x1b" not in reported
    assert reported.startswith("RuntimeError: boto says [redacted]")


def test_failure_message_of_wide_characters_stays_under_4_kib() -> None:
    for text in ("好" * 5000, "\U0001f600" * 5000, '"\\' * 5000):
        assert len(failure_message(UserError(text)).encode("utf-8")) < 4096


def test_termination_log_written_only_where_it_is_read(tmp_path: Path) -> None:
    assert write_termination_message(tmp_path / "msg", "{}") is True
    assert (tmp_path / "msg").read_text() == "{}"
    assert write_termination_message(tmp_path / "missing" / "msg", "{}") is False
    if not Path(DEFAULT_TERMINATION_LOG).exists():
        # Outside a pod /dev exists but the kubelet's file does not: nothing is written.
        assert write_termination_message(DEFAULT_TERMINATION_LOG, "{}") is False
        assert not Path(DEFAULT_TERMINATION_LOG).exists()


def test_training_json_inline_and_from_file(tmp_path: Path) -> None:
    inline = load_training_spec('{"dataset": {"uri": "builtin:chinese-reviews"}}')
    assert inline.dataset.uri == "builtin:chinese-reviews" and inline.workers == 1
    spec = tmp_path / "training.json"
    spec.write_text('{"dataset": {"uri": "builtin:chinese-reviews"}, "workers": 2}')
    assert load_training_spec(f"@{spec}").workers == 2


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("{dataset: 1}", "training.dataset: must be a mapping"),
        ("[1, 2]", "training: must be a mapping"),
        ('{"dataset": ', "neither JSON nor YAML"),
        ("@/nonexistent/training.json", "cannot read the training spec"),
    ],
)
def test_training_json_mistakes(value: str, fragment: str) -> None:
    with pytest.raises(UserError, match=fragment):
        load_training_spec(value)


def test_training_json_file_that_is_not_utf8(tmp_path: Path) -> None:
    spec = tmp_path / "training.json"
    spec.write_bytes('{"dataset": {"uri": "坏"}}'.encode("gbk"))
    with pytest.raises(UserError, match="not UTF-8"):
        load_training_spec(f"@{spec}")


def test_cluster_roles_from_tf_config() -> None:
    single = cluster_role({})
    assert not single.distributed and single.is_chief
    cluster = {"worker": ["w0:2222", "w1:2222", "w2:2222"]}
    worker0 = cluster_role(
        {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})}
    )
    worker2 = cluster_role(
        {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 2}})}
    )
    assert worker0.distributed and worker0.workers == 3 and worker0.is_chief
    assert not worker2.is_chief
    with_chief = {"chief": ["c:1"], "worker": ["w:1"]}
    chief = cluster_role(
        {"TF_CONFIG": json.dumps({"cluster": with_chief, "task": {"type": "chief", "index": 0}})}
    )
    worker = cluster_role(
        {"TF_CONFIG": json.dumps({"cluster": with_chief, "task": {"type": "worker", "index": 0}})}
    )
    assert chief.is_chief and chief.workers == 2
    assert not worker.is_chief
    with pytest.raises(UserError, match="TF_CONFIG is not valid"):
        cluster_role({"TF_CONFIG": "{not json"})


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[1, 2]", "must be a JSON object"),
        ("{not json", "is not JSON"),
        ('"a string"', "must be a JSON object"),
        ("{" + " " * 70_000 + "}", "over 65536 characters"),
    ],
)
def test_a_tuning_table_that_is_not_the_operators_is_refused(text: str, fragment: str) -> None:
    from tfmaas.trainer.entrypoint import parse_tuning_table

    with pytest.raises(UserError, match=fragment):
        parse_tuning_table(text)


def test_a_tuning_table_is_read_and_absent_is_none() -> None:
    from tfmaas.trainer.entrypoint import parse_tuning_table

    assert parse_tuning_table(None) is None
    assert parse_tuning_table('{"bestTrial": 2, "trials": []}') == {"bestTrial": 2, "trials": []}


@pytest.mark.parametrize(
    ("training", "trial", "fragment"),
    [
        ({"dataset": {"uri": "builtin:chinese-reviews"}}, -1, "--trial must be 0 to 999"),
        ({"dataset": {"uri": "builtin:chinese-reviews"}}, 1000, "--trial must be 0 to 999"),
        (
            {
                "dataset": {"uri": "builtin:chinese-reviews"},
                "tuning": {"parameters": {"ngrams": {"choices": [1, 2]}}},
            },
            0,
            "has no tuning or distillation",
        ),
    ],
)
def test_a_trial_refuses_what_is_not_one_configuration_before_training(
    training: dict[str, Any], trial: int, fragment: str
) -> None:
    from tfmaas.trainer.entrypoint import run_trial

    with pytest.raises(UserError, match=fragment):
        run_trial(training, trial=trial, log=lambda _: None)
