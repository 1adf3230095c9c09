"""What a caller gets back from the `explain` signature: per sentence, its characters with a
signed attribution each, the units that weigh most, and the predicted class and score."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tfmaas.client.predictions import PredictionError

EXPLAIN_SIGNATURE = "explain"
OUTPUT_KEYS = (
    "characters",
    "char_attributions",
    "units",
    "unit_attributions",
    "class_id",
    "label",
    "score",
)


@dataclass(frozen=True)
class Explanation:
    label: str
    class_id: int
    score: float
    characters: list[str]
    char_attributions: list[float]
    """Signed: positive pushed toward `label`, negative away from it."""
    units: list[tuple[str, float]]
    """The units (n-grams or characters) with the largest |attribution|, strongest first."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "class_id": self.class_id,
            "score": self.score,
            "characters": self.characters,
            "char_attributions": self.char_attributions,
            "units": [{"unit": unit, "attribution": value} for unit, value in self.units],
        }


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def to_explanations(outputs: Mapping[str, Any]) -> list[Explanation]:
    """Turn the signature's columns into one Explanation per sentence, padding dropped
    (a character is never empty, so "" marks padding in `characters` and `units`)."""
    missing = [key for key in OUTPUT_KEYS if key not in outputs]
    if missing:
        raise PredictionError(
            "INVALID_ARGUMENT",
            f"the model's explain signature lacks {missing} (outputs: {sorted(outputs)}); "
            "it was not exported by this version of tfmaas",
        )
    result = []
    for row in range(len(outputs["label"])):
        characters = [_text(c) for c in outputs["characters"][row]]
        kept = [i for i, c in enumerate(characters) if c]
        units = [
            (_text(unit), float(value))
            for unit, value in zip(
                outputs["units"][row], outputs["unit_attributions"][row], strict=True
            )
            if _text(unit)
        ]
        result.append(
            Explanation(
                label=_text(outputs["label"][row]),
                class_id=int(outputs["class_id"][row]),
                score=float(outputs["score"][row]),
                characters=[characters[i] for i in kept],
                char_attributions=[float(outputs["char_attributions"][row][i]) for i in kept],
                units=units,
            )
        )
    return result
