"""Clean-up, sampling and the train/validation/test split of labelled texts.

The builtin reviews repeat about half their lines, some under both labels. Left in, the
same sentence lands in train and test and the test accuracy flatters the model, so
duplicates are collapsed and contradictory texts dropped before anything is split.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from tfmaas.errors import UserError
from tfmaas.trainer.datasets import RawExamples, sample_name


@dataclass(frozen=True)
class CleanExamples:
    """Unique, non-empty texts with one label id each; `classes` are sorted label names."""

    texts: list[str]
    label_ids: np.ndarray
    classes: list[str]
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def fingerprint(self) -> str:
        """sha256 over the examples, so a model card names exactly what it learned from."""
        digest = hashlib.sha256()
        for text, label_id in zip(self.texts, self.label_ids.tolist(), strict=True):
            digest.update(text.encode("utf-8"))
            digest.update(b"\t")
            digest.update(self.classes[label_id].encode("utf-8"))
            digest.update(b"\n")
        return "sha256:" + digest.hexdigest()


@dataclass(frozen=True)
class Split:
    texts: list[str]
    label_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class Splits:
    train: Split
    validation: Split
    test: Split
    classes: list[str]

    def counts(self) -> dict[str, int]:
        return {
            "train": len(self.train),
            "validation": len(self.validation),
            "test": len(self.test),
        }


def clean_examples(raw: RawExamples, *, source: str = "dataset") -> CleanExamples:
    """Strip, drop empty texts and labels, collapse duplicates, drop texts labelled two ways."""
    labels_of: dict[str, set[str]] = {}
    order: list[str] = []
    empty = 0
    unlabelled = 0
    for raw_text, raw_label in zip(raw.texts, raw.labels, strict=True):
        text = raw_text.strip()
        label = raw_label.strip()
        if not text:
            empty += 1
            continue
        if not label:
            unlabelled += 1
            continue
        if text not in labels_of:
            labels_of[text] = set()
            order.append(text)
        labels_of[text].add(label)
    conflicting = {text for text in order if len(labels_of[text]) > 1}
    kept = [text for text in order if text not in conflicting]
    duplicates = len(raw.texts) - empty - unlabelled - len(order)
    if not kept:
        raise UserError(
            f"{source} has no usable examples after clean-up ({len(raw.texts)} read, {empty} "
            f"empty, {unlabelled} without a label, {len(conflicting)} labelled both ways); "
            "it needs non-empty texts with labels"
        )
    classes = sorted({next(iter(labels_of[text])) for text in kept})
    if len(classes) < 2:
        raise UserError(
            f"{source} has only one class ({sample_name(classes[0])}) after clean-up; a "
            "classifier needs examples of at least two labels — check "
            "spec.training.dataset.labelField"
        )
    class_id = {name: index for index, name in enumerate(classes)}
    label_ids = np.array([class_id[next(iter(labels_of[text]))] for text in kept], dtype=np.int64)
    dropped = {
        "empty": empty,
        "unlabelled": unlabelled,
        "duplicates": duplicates,
        "conflicting": len(conflicting),
    }
    return CleanExamples(kept, label_ids, classes, dropped)


def _sample_order(count: int, seed: int) -> np.ndarray:
    # One draw decides both which examples a run uses and which it leaves out, so the
    # left-out texts can never overlap the run's own splits.
    return np.random.default_rng(seed).permutation(count)


def sample_examples(examples: CleanExamples, max_examples: int, seed: int) -> CleanExamples:
    """Keep `max_examples` of them (0 = all), the same ones for the same seed, in input order."""
    if max_examples <= 0 or max_examples >= len(examples):
        return examples
    chosen = np.sort(_sample_order(len(examples), seed)[:max_examples])
    texts = [examples.texts[i] for i in chosen]
    label_ids = examples.label_ids[chosen]
    present = np.unique(label_ids)
    if present.size < 2:
        raise UserError(
            f"spec.training.hyperparameters.maxExamples={max_examples} leaves only one class; "
            "raise it or set it to 0 (all examples)"
        )
    return CleanExamples(texts, label_ids, examples.classes, examples.dropped)


def left_out_texts(
    examples: CleanExamples, max_examples: int, seed: int, *, limit: int
) -> list[str]:
    """Up to `limit` texts that `sample_examples` (same `max_examples` and seed) did not keep,
    in input order: none when it kept them all."""
    if limit <= 0 or max_examples <= 0 or max_examples >= len(examples):
        return []
    left_out = _sample_order(len(examples), seed)[max_examples : max_examples + limit]
    return [examples.texts[i] for i in np.sort(left_out)]


def split_examples(
    examples: CleanExamples, *, validation_fraction: float, test_fraction: float, seed: int
) -> Splits:
    """A stratified split: each class is shuffled by `seed` and cut by the same fractions."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
    for class_id in range(len(examples.classes)):
        members = np.flatnonzero(examples.label_ids == class_id)
        members = members[rng.permutation(members.size)]
        n_test = round(members.size * test_fraction)
        n_validation = round(members.size * validation_fraction)
        parts["test"].extend(members[:n_test].tolist())
        parts["validation"].extend(members[n_test : n_test + n_validation].tolist())
        parts["train"].extend(members[n_test + n_validation :].tolist())
    built = {}
    for name, indices in parts.items():
        # Shuffled across classes so batches mix labels; fixed by the seed.
        ordered = np.array(indices, dtype=np.int64)
        ordered = ordered[rng.permutation(ordered.size)]
        built[name] = Split(
            [examples.texts[i] for i in ordered.tolist()],
            examples.label_ids[ordered] if ordered.size else np.zeros(0, dtype=np.int64),
        )
    train_classes = Counter(built["train"].label_ids.tolist())
    if len(train_classes) < 2:
        raise UserError(
            f"the training split has {len(built['train'])} example(s) of {len(train_classes)} "
            "class(es); add data or lower validationFraction/testFraction"
        )
    if test_fraction > 0 and len(built["test"]) == 0:
        raise UserError(
            f"testFraction={test_fraction} of {len(examples)} examples leaves no test example; "
            "add data or raise spec.training.hyperparameters.testFraction"
        )
    return Splits(built["train"], built["validation"], built["test"], examples.classes)
