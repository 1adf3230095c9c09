"""Writing a version directory: the SavedModel at its root, metrics.json, model_card.json and
report.html (the page a person looks at)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tfmaas.storage.base import REPORT_FILE
from tfmaas.trainer.report import render_report
from tfmaas.trainer.training import TrainedModel

METRICS_FILE = "metrics.json"
MODEL_CARD_FILE = "model_card.json"


def model_card(trained: TrainedModel, *, name: str, version: int | None) -> dict[str, Any]:
    import tensorflow as tf

    from tfmaas.trainer.explaining import EXPLAINERS

    config = trained.config.to_dict()
    return {
        "name": name,
        "version": version,
        "trainedAt": trained.trained_at,
        "classes": list(trained.classes),
        "architecture": trained.config.model.architecture,
        "model": config["model"],
        "hyperparameters": config["hyperparameters"],
        "dataset": {**config["dataset"], "fingerprint": trained.dataset_fingerprint},
        "examples": dict(trained.examples),
        "metrics": {key: trained.metrics[key] for key in ("accuracy", "precision", "recall", "f1")},
        "epochs": trained.epochs_run,
        "tensorflowVersion": tf.__version__,
        "signature": {
            "name": "serving_default",
            "inputs": {"text": "string [None] — raw sentences"},
            "outputs": {
                "scores": "float32 [None, num_classes] softmax",
                "class_id": "int64 [None]",
                "label": "string [None]",
            },
        },
        "globalExplanation": trained.global_explanation,
        "explainSignature": {
            "name": "explain",
            "method": EXPLAINERS[trained.config.model.architecture].method,
            "inputs": {"text": "string [None] — raw sentences"},
            "outputs": {
                "characters": "string [None, chars] — the sentence's characters, padded ''",
                "char_attributions": "float32 [None, chars] — signed, toward the predicted class",
                "units": "string [None, k] — the units (n-grams or characters) that weigh most",
                "unit_attributions": "float32 [None, k]",
                "class_id": "int64 [None]",
                "label": "string [None]",
                "score": "float32 [None] — the predicted class's probability",
            },
        },
    }


def export(
    trained: TrainedModel, directory: str | Path, *, name: str = "model", version: int | None = None
) -> Path:
    """Write the version directory's contents into `directory` (created; must be empty)."""
    import tensorflow as tf

    from tfmaas.trainer.explaining import SIGNATURE_NAME as EXPLAIN_SIGNATURE

    target = Path(directory)
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"export directory {target} is not empty")
    target.mkdir(parents=True, exist_ok=True)
    module = trained.module
    signatures = {"serving_default": module.serve, EXPLAIN_SIGNATURE: module.explain}
    tf.saved_model.save(module, str(target), signatures=signatures)
    card = model_card(trained, name=name, version=version)
    card.update(lineage(trained, target, name=name))
    if trained.tuning is not None:
        # The search that chose this version's configuration: every trial and its score.
        card["tuning"] = trained.tuning
    _write_json(target / METRICS_FILE, trained.metrics)
    _write_json(target / MODEL_CARD_FILE, card)
    (target / REPORT_FILE).write_text(
        render_report(card, trained.metrics, trained.history), encoding="utf-8"
    )
    return target


def lineage(trained: TrainedModel, saved_model: Path, *, name: str) -> dict[str, Any]:
    """The model card's size, latency, compression and teacher: what this version costs to
    serve, next to the teacher it replaces when it was distilled."""
    from tfmaas.trainer.measure import directory_bytes, p50_latency_ms

    sentence = trained.classes[0] if trained.classes else "text"
    latency: dict[str, Any] = {"p50Ms": p50_latency_ms(saved_model, sentence)}
    compression = trained.config.compression
    card: dict[str, Any] = {
        "sizeBytes": directory_bytes(saved_model),
        "vocabularySize": trained.vocabulary_size,
        "compression": {
            "quantize": compression.quantize,
            "pruneVocabulary": compression.prune_vocabulary,
        },
        "latency": latency,
    }
    teacher, distillation = trained.teacher, trained.config.distillation
    if teacher is not None and distillation is not None:
        latency["teacherP50Ms"] = p50_latency_ms(teacher.directory, sentence)
        card["teacher"] = {
            "modelService": name,
            "version": teacher.version,
            "architecture": teacher.architecture,
            "metrics": dict(teacher.metrics),
            "sizeBytes": directory_bytes(teacher.directory),
            "temperature": distillation.temperature,
            "alpha": distillation.alpha,
        }
    return card


def _write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
