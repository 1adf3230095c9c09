"""A real exported SavedModel survives publish → MinIO → pull and still serves the same answers."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tfmaas.dev.minio import MinioServer
from tfmaas.storage import open_store

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_pulled_savedmodel_predicts_like_the_exported_one(
    exported_model: Any, minio: MinioServer, minio_env: dict[str, str], tmp_path: Path
) -> None:
    tf = pytest.importorskip("tensorflow")
    store = open_store(f"s3://{minio.bucket('models')}/sm-{uuid.uuid4().hex[:8]}")
    store.publish(exported_model.version, exported_model.version_path)
    assert store.list_versions() == [exported_model.version]
    assert store.read_json(exported_model.version, "metrics.json") == exported_model.metrics

    pulled = store.pull(exported_model.version, tmp_path / "serving")
    sentences = tf.constant(["这个手机很好用，非常满意", "质量太差了，退货"])
    original = serving_signature(tf, exported_model.version_path)(text=sentences)
    restored = serving_signature(tf, pulled)(text=sentences)
    assert restored["label"].numpy().tolist() == original["label"].numpy().tolist()
    assert restored["scores"].numpy().tolist() == original["scores"].numpy().tolist()


def serving_signature(tf: Any, path: Path) -> Any:
    return tf.saved_model.load(str(path)).signatures["serving_default"]
