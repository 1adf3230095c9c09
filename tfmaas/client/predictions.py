"""What a caller gets back for each sentence: the label and a score per class."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tfmaas.errors import TfmaasError


class PredictionError(TfmaasError):
    """The server refused or failed a request; `code` is the gRPC status code name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Prediction:
    label: str
    scores: dict[str, float]
    class_id: int

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "class_id": self.class_id, "scores": self.scores}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def to_predictions(
    outputs: Mapping[str, Any], classes: Sequence[str] | None = None
) -> list[Prediction]:
    """Turn `scores` / `class_id` / `label` columns into one Prediction per row.

    Class names come from `classes` (the model card's order) when given; otherwise a class is
    named by the `label` output wherever a row reveals it, and by its index elsewhere.
    """
    if "scores" not in outputs:
        raise PredictionError(
            "INVALID_ARGUMENT",
            f"the model has no 'scores' output (outputs: {sorted(outputs)}); "
            "it does not follow the tfmaas signature",
        )
    scores = [[float(s) for s in row] for row in outputs["scores"]]
    class_ids = [int(c) for c in outputs["class_id"]] if "class_id" in outputs else None
    labels = [_text(v) for v in outputs["label"]] if "label" in outputs else None
    if class_ids is None:
        class_ids = [max(range(len(row)), key=row.__getitem__) for row in scores]
    names: dict[int, str] = {}
    if classes:
        names = dict(enumerate(classes))
    elif labels is not None:
        names = dict(zip(class_ids, labels, strict=True))
    result = []
    for row, class_id in zip(scores, class_ids, strict=True):
        named = {names.get(i, str(i)): score for i, score in enumerate(row)}
        label = names.get(class_id, str(class_id))
        result.append(Prediction(label=label, scores=named, class_id=class_id))
    if labels is not None:
        result = [
            Prediction(label=label, scores=p.scores, class_id=p.class_id)
            for p, label in zip(result, labels, strict=True)
        ]
    return result
