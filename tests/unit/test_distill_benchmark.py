"""The distillation benchmark's statistics: the pooled paired bootstrap over several seeds."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_benchmark():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(
            "distill_benchmark", BENCHMARKS / "distill_benchmark.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclass looks its module up by name
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_one_split_pools_to_the_plain_paired_bootstrap() -> None:
    bench = load_benchmark()
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    a = np.where(rng.random(400) < 0.9, y, 1 - y)
    b = np.where(rng.random(400) < 0.8, y, 1 - y)
    assert bench.paired_bootstrap(y, a, b) == bench.pooled_paired_bootstrap([(y, a, b)])


def test_pooling_seeds_averages_their_differences_and_shrinks_the_error() -> None:
    bench = load_benchmark()
    rng = np.random.default_rng(2)
    splits = []
    for _ in range(4):
        y = rng.integers(0, 2, 500)
        a = np.where(rng.random(500) < 0.9, y, 1 - y)
        b = np.where(rng.random(500) < 0.85, y, 1 - y)
        splits.append((y, a, b))
    singles = [bench.paired_bootstrap(*split) for split in splits]
    point, error = bench.pooled_paired_bootstrap(splits)
    assert point == pytest.approx(np.mean([difference for difference, _ in singles]))
    # Four independent splits: about half the error of one.
    assert error == pytest.approx(np.mean([e for _, e in singles]) / 2, rel=0.25)


def test_mean_and_error_across_seeds() -> None:
    bench = load_benchmark()
    assert bench.mean_and_error([0.8]) == (0.8, 0.0)
    mean, error = bench.mean_and_error([0.8, 0.82, 0.84])
    assert mean == pytest.approx(0.82)
    assert error == pytest.approx(0.02 / np.sqrt(3))


def test_the_validation_figures_read_each_seeds_validation_split() -> None:
    bench = load_benchmark()
    measured = {
        "y_true": np.array([0, 1]),
        "predictions": {"teacher": np.array([0, 1])},
        "classes": ["a", "b"],
        "validation": {"y_true": np.array([1]), "predictions": {"teacher": np.array([0])}},
    }
    assert bench.on_split(measured, "test") is measured
    validation = bench.on_split(measured, "validation")
    assert validation["y_true"].tolist() == [1] and validation["classes"] == ["a", "b"]
    assert validation["predictions"]["teacher"].tolist() == [0]


def test_the_teacher_and_the_students_take_the_plans_settings() -> None:
    bench = load_benchmark()
    plan = bench.Plan(
        teacher_units=80000,
        teacher_width=128,
        teacher_ngrams=3,
        teacher_learning_rate=0.0005,
        student_units=8000,
        unlabelled=9400,
    )
    specs = bench.specs(plan)
    teacher = specs["teacher"]
    assert teacher["model"] == {
        "architecture": "bag-of-ngrams",
        "maxTokens": 80000,
        "embeddingDim": 128,
        "ngrams": 3,
    }
    assert teacher["hyperparameters"]["learningRate"] == 0.0005
    hard, distilled = specs["student hard"], specs["student distilled"]
    # The two students differ only in distillation: the hard one is the control.
    assert {k: v for k, v in distilled.items() if k != "distillation"} == hard
    assert hard["compression"] == {"pruneVocabulary": 8000}
    assert distilled["distillation"]["unlabelledExamples"] == 9400


def test_seeds_are_bounded_integers_without_repeats() -> None:
    bench = load_benchmark()
    assert bench.parse_seeds("42, 43,44") == [42, 43, 44]
    for hostile in ("", "4x", "1,,2", "1e9", ",".join(str(n) for n in range(21)), "7,7"):
        with pytest.raises(ValueError, match="--seeds"):
            bench.parse_seeds(hostile)
