"""The model card's global explanation: which units push most toward each class, on average
over the held-out test split, from the same `explain` signature clients call."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

# Explaining costs up to IG_STEPS forward passes per sentence: a bounded sample of the test
# split keeps the export's added time to seconds for every architecture.
MAX_SENTENCES = 500
BATCH = 64
TOP_PER_CLASS = 10


def aggregate(
    rows: Iterable[tuple[str, Sequence[tuple[str, float]]]], classes: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """`rows`: per sentence, its predicted label and its top (unit, attribution) pairs.

    Per class, the units with the highest mean attribution over all the sentences predicted as
    that class (0 where the unit is not among a sentence's strongest): a unit that decides
    many sentences ranks above one that decided a single odd sentence strongly.
    """
    totals: dict[str, dict[str, float]] = {name: defaultdict(float) for name in classes}
    seen: dict[str, dict[str, int]] = {name: defaultdict(int) for name in classes}
    sentences = dict.fromkeys(classes, 0)
    for label, units in rows:
        sentences[label] += 1
        for unit, attribution in units:
            totals[label][unit] += attribution
            seen[label][unit] += 1
    result = {}
    for name in classes:
        means = sorted(
            ((total / sentences[name], unit) for unit, total in totals[name].items()),
            key=lambda item: (-item[0], item[1]),
        )
        result[name] = [
            {"unit": unit, "meanAttribution": round(mean, 6), "sentences": seen[name][unit]}
            for mean, unit in means[:TOP_PER_CLASS]
            if mean > 0
        ]
    return result


def global_explanation(module: Any, texts: Sequence[str], classes: Sequence[str]) -> dict[str, Any]:
    import tensorflow as tf

    from tfmaas.trainer.explaining import TOP_UNITS

    sample = list(texts[:MAX_SENTENCES])
    rows = []
    for start in range(0, len(sample), BATCH):
        found = module.explain(tf.constant(sample[start : start + BATCH], dtype=tf.string))
        labels = [label.decode("utf-8") for label in found["label"].numpy()]
        for label, units, attributions in zip(
            labels, found["units"].numpy(), found["unit_attributions"].numpy(), strict=True
        ):
            pairs = [
                (u.decode("utf-8"), float(a)) for u, a in zip(units, attributions, strict=True) if u
            ]
            rows.append((label, pairs))
    return {
        "split": "test",
        "sentences": len(sample),
        "topUnitsPerClass": aggregate(rows, classes),
        "how": (
            "per class, the units with the highest mean attribution over the test sentences "
            f"predicted as that class (0 where a unit is not among a sentence's {TOP_UNITS} "
            f"strongest); at most the first {MAX_SENTENCES} test sentences; `sentences`: where "
            "the unit is among them"
        ),
    }
