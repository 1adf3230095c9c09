"""Training from an s3:// dataset into an s3:// store on a real MinIO."""

from __future__ import annotations

import csv
import io
import json

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _reviews_csv(count_per_class: int) -> bytes:
    from tfmaas.api import load_training_spec
    from tfmaas.trainer.datasets import load_raw_examples

    builtin = load_training_spec({"dataset": {"uri": "builtin:chinese-reviews"}}).dataset
    raw = load_raw_examples(builtin)
    by_label: dict[str, list[str]] = {}
    for text, label in zip(raw.texts, raw.labels, strict=True):
        by_label.setdefault(label, []).append(text)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["review", "sentiment"])
    for label, texts in by_label.items():
        for text in texts[:count_per_class]:
            writer.writerow([text, label])
    return out.getvalue().encode("utf-8")


def test_train_from_s3_dataset_into_s3_store(minio, minio_env) -> None:
    from tfmaas.storage import open_store
    from tfmaas.trainer import train_and_publish

    bucket = minio.bucket("trainer-s3")
    minio.client().put_object(Bucket=bucket, Key="data/reviews.csv", Body=_reviews_csv(200))
    store_uri = f"s3://{bucket}/models/sentiment"
    training = {
        "dataset": {
            "uri": f"s3://{bucket}/data/reviews.csv",
            "textField": "review",
            "labelField": "sentiment",
        },
        "model": {"maxTokens": 3000},
        "hyperparameters": {"epochs": 2, "batchSize": 32},
    }
    lines: list[str] = []
    result = train_and_publish(training, name="sentiment", store_uri=store_uri, log=lines.append)

    assert result.version == 1 and result.uri == f"{store_uri}/1/"
    store = open_store(store_uri)
    assert store.list_versions() == [1]
    metrics = json.loads(store.read_bytes(1, "metrics.json"))
    assert metrics["examples"]["test"] == 40 and metrics["examples"]["validation"] == 40
    assert 300 <= metrics["examples"]["train"] <= 320  # less the duplicate lines
    card = json.loads(store.read_bytes(1, "model_card.json"))
    assert card["dataset"]["uri"] == training["dataset"]["uri"]
    assert card["classes"] == ["negative", "positive"]
    assert any(line.startswith("epoch 2/2") for line in lines)
    assert not any(minio_env["AWS_SECRET_ACCESS_KEY"] in line for line in lines)


def test_missing_s3_dataset_is_a_user_error(minio, minio_env) -> None:
    from tfmaas.errors import UserError
    from tfmaas.storage import open_store
    from tfmaas.trainer import train_and_publish

    bucket = minio.bucket("trainer-s3-missing")
    store_uri = f"s3://{bucket}/models/m"
    with pytest.raises(UserError) as caught:
        train_and_publish(
            {"dataset": {"uri": f"s3://{bucket}/nope.csv"}},
            name="m",
            store_uri=store_uri,
            log=lambda line: None,
        )
    assert "nope.csv" in str(caught.value)
    assert open_store(store_uri).list_versions() == []
