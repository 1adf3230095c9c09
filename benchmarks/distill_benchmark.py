"""Distillation and compression benchmark: smaller versions measured against what they replace.

On the builtin data, one split for every row, in one run:
  teacher            the best architecture (bag-of-ngrams, maxTokens 20000, embeddingDim 64)
  student hard       a small bag-of-ngrams (pruned vocabulary, narrower layer), true labels only
  student distilled  the same student, trained on the teacher's soft labels too
each as exported and with int8 (and float16) weights: test accuracy, macro F1, SavedModel size,
p50 latency of one Predict and rows/s of batched Predicts (the median batch) in `tfmaas serve`
(gRPC, Python front end, 1 TensorFlow thread, 127.0.0.1), and how often a quantized export
agrees with its unquantized self on the test split.

The distilled − hard difference comes with its standard error from a paired bootstrap over
the test split (the same resampled sentences score both students).

`--seeds 42,43,44` repeats the three trainings on the split (and initialisation) each seed
draws: the full table is the first seed's; every seed adds a row of test accuracies (teacher,
students, their differences) and the summary pools them: the mean over seeds with its standard
error across seeds, and a paired bootstrap that resamples each seed's test split on its own.
The same figures on the validation split come first: settings are chosen by them, never by the
test split's. `--no-serve` skips quantizing, exporting and serving (accuracy only, for trying
settings).

    python benchmarks/distill_benchmark.py [--max-examples 8000] [--requests 200] \
        [--unlabelled 9400] [--teacher-units 20000] [--teacher-width 64] [--teacher-ngrams 2] \
        [--teacher-learning-rate 0.001] [--student-units 6000] [--student-width 32] \
        [--student-patience 6] \
        [--test-fraction 0.1] [--validation-fraction 0.1] [--seeds 42] [--no-serve]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from serving_benchmark import (
    SENTENCE,
    percentile,
    start_tfmaas,
    stop,
    wait_until_serving,
)

BOOTSTRAP_SAMPLES = 1000
BATCH_ROWS = 256


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the table compares: one teacher, one student architecture, one distillation."""

    max_examples: int = 8000
    epochs: int = 6
    alpha: float = 0.5
    temperature: float = 2.0
    unlabelled: int = 0
    teacher_units: int = 20000
    teacher_width: int = 64
    teacher_ngrams: int = 2
    teacher_learning_rate: float = 0.001
    student_units: int = 6000
    student_width: int = 32
    student_patience: int = 2
    test_fraction: float = 0.1
    validation_fraction: float = 0.1
    seed: int = 42


def specs(plan: Plan) -> dict[str, Any]:
    data = {"uri": "builtin:chinese-reviews"}
    hyper = {
        "epochs": plan.epochs,
        "maxExamples": plan.max_examples,
        "seed": plan.seed,
        "testFraction": plan.test_fraction,
        "validationFraction": plan.validation_fraction,
    }
    teacher = {
        "dataset": data,
        "model": {
            "architecture": "bag-of-ngrams",
            "maxTokens": plan.teacher_units,
            "embeddingDim": plan.teacher_width,
            "ngrams": plan.teacher_ngrams,
        },
        "hyperparameters": {**hyper, "learningRate": plan.teacher_learning_rate},
    }
    # Both students get the same patience: the hard one is the distilled one's control.
    student = {
        "dataset": data,
        "model": {
            "architecture": "bag-of-ngrams",
            "maxTokens": 20000,
            "embeddingDim": plan.student_width,
        },
        "hyperparameters": {**hyper, "earlyStoppingPatience": plan.student_patience},
        "compression": {"pruneVocabulary": plan.student_units},
    }
    distillation: dict[str, Any] = {
        "teacher": {"version": 1},
        "temperature": plan.temperature,
        "alpha": plan.alpha,
    }
    if plan.unlabelled:
        distillation["unlabelledExamples"] = plan.unlabelled
    distilled = {**student, "distillation": distillation}
    return {"teacher": teacher, "student hard": student, "student distilled": distilled}


def scores(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> tuple[float, float]:
    from tfmaas.trainer.evaluate import classification_metrics

    metrics = classification_metrics(y_true, y_pred, classes)
    return float(metrics["accuracy"]), float(metrics["f1"])


def paired_bootstrap(y_true: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Accuracy of `a` minus that of `b` on the test split, and its bootstrap standard error."""
    return pooled_paired_bootstrap([(y_true, a, b)])


def pooled_paired_bootstrap(
    splits: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[float, float]:
    """The mean over test splits (one per seed) of accuracy(a) − accuracy(b), and its standard
    error from a bootstrap that resamples each split's sentences on its own (both models scored
    on the same resampled sentences)."""
    rng = np.random.default_rng(0)
    correct = [((a == y).astype(float), (b == y).astype(float)) for y, a, b in splits]
    differences = np.zeros(BOOTSTRAP_SAMPLES)
    for correct_a, correct_b in correct:
        for i in range(BOOTSTRAP_SAMPLES):
            sample = rng.integers(0, len(correct_a), len(correct_a))
            differences[i] += correct_a[sample].mean() - correct_b[sample].mean()
    differences /= len(correct)
    point = float(np.mean([a.mean() - b.mean() for a, b in correct]))
    return point, float(np.std(differences, ddof=1))


def mean_and_error(values: list[float]) -> tuple[float, float]:
    """The mean and its standard error across seeds (0 for one seed)."""
    mean = float(np.mean(values))
    error = float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
    return mean, error


def serve_figures(base: Path, workdir: Path, requests: int) -> tuple[float, float]:
    """p50 ms of one single-sentence Predict, and rows/s of BATCH_ROWS-row Predicts."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from tfmaas.client.tensors import strings_proto

    process, target = start_tfmaas(base, False, workdir, 1, "python")
    try:
        wait_until_serving(target, process)
        with grpc.insecure_channel(target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

            def request(rows: int) -> Any:
                message = predict_pb2.PredictRequest()
                message.model_spec.name = "bench"
                message.inputs["text"].CopyFrom(strings_proto([SENTENCE] * rows))
                return message

            one, batch = request(1), request(BATCH_ROWS)
            for _ in range(20):
                stub.Predict(one, timeout=30)
            latencies = []
            for _ in range(requests):
                started = time.perf_counter()
                stub.Predict(one, timeout=30)
                latencies.append(time.perf_counter() - started)
            stub.Predict(batch, timeout=60)
            # The median batch, not the mean: the cores are shared, and one stall of another
            # process would otherwise decide the figure.
            batch_seconds = []
            for _ in range(max(10, requests // 5)):
                started = time.perf_counter()
                stub.Predict(batch, timeout=60)
                batch_seconds.append(time.perf_counter() - started)
            rows_per_second = BATCH_ROWS / percentile(batch_seconds, 50)
    finally:
        stop(process)
    return percentile(latencies, 50) * 1000, rows_per_second


MAX_SEEDS = 20
"""Each seed retrains three models (minutes each on a CPU): more is a typo, not a plan."""


def parse_seeds(text: str) -> list[int]:
    """`--seeds`: comma-separated distinct integers, at most MAX_SEEDS of them."""
    parts = [part.strip() for part in text.split(",")]
    if not all(part.lstrip("-").isdigit() for part in parts):
        raise ValueError("--seeds must be comma-separated integers, e.g. 42,43,44")
    seeds = [int(part) for part in parts]
    if len(seeds) > MAX_SEEDS:
        raise ValueError(f"--seeds takes at most {MAX_SEEDS} seeds, got {len(seeds)}")
    if len(set(seeds)) != len(seeds):
        raise ValueError("--seeds must not repeat a seed: a repeat would count one split twice")
    return seeds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument(
        "--unlabelled",
        type=int,
        default=0,
        help="distillation.unlabelledExamples: left-out sentences the teacher labels",
    )
    parser.add_argument("--teacher-units", type=int, default=20000, help="teacher's maxTokens")
    parser.add_argument("--teacher-width", type=int, default=64, help="teacher's embeddingDim")
    parser.add_argument("--teacher-ngrams", type=int, default=2, help="teacher's ngrams")
    parser.add_argument(
        "--teacher-learning-rate", type=float, default=0.001, help="teacher's learningRate"
    )
    parser.add_argument("--student-units", type=int, default=6000, help="pruneVocabulary")
    parser.add_argument("--student-width", type=int, default=32, help="embeddingDim")
    parser.add_argument("--student-patience", type=int, default=2, help="earlyStoppingPatience")
    parser.add_argument("--test-fraction", type=float, default=0.1, help="testFraction")
    parser.add_argument("--validation-fraction", type=float, default=0.1, help="validationFraction")
    parser.add_argument(
        "--seeds",
        default="42",
        help="comma-separated hyperparameters.seed values; the full table is the first one's",
    )
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument(
        "--no-serve",
        action="store_true",
        help="accuracy only: no quantized exports, no serving measurements",
    )
    args = parser.parse_args()
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as exc:
        parser.error(str(exc))

    workdir = Path(tempfile.mkdtemp(prefix="tfmaas-distill-bench-"))
    base_plan = Plan(
        max_examples=args.max_examples,
        epochs=args.epochs,
        alpha=args.alpha,
        temperature=args.temperature,
        unlabelled=args.unlabelled,
        teacher_units=args.teacher_units,
        teacher_width=args.teacher_width,
        teacher_ngrams=args.teacher_ngrams,
        teacher_learning_rate=args.teacher_learning_rate,
        student_units=args.student_units,
        student_width=args.student_width,
        student_patience=args.student_patience,
        test_fraction=args.test_fraction,
        validation_fraction=args.validation_fraction,
    )
    rows: list[dict[str, Any]] = []
    per_seed: list[dict[str, Any]] = []
    for index, seed in enumerate(seeds):
        plan = dataclasses.replace(base_plan, seed=seed)
        serve = index == 0 and not args.no_serve
        measured = run_seed(plan, workdir / f"seed-{seed}", args.requests, serve=serve)
        per_seed.append(measured)
        if index == 0:
            rows = measured["rows"]

    first = per_seed[0]
    print(
        f"builtin:chinese-reviews, {args.max_examples} examples (train {first['counts']['train']}"
        f" / validation {first['counts']['validation']} / test {first['counts']['test']}); "
        f"alpha {args.alpha}, temperature {args.temperature}, unlabelledExamples "
        f"{args.unlabelled} ({first['unlabelled']} left out); teacher: {args.teacher_units} "
        f"units, {args.teacher_width} wide, {args.teacher_ngrams}-grams, learning rate "
        f"{args.teacher_learning_rate}; students: {args.student_units} "
        f"units, {args.student_width} wide, patience {args.student_patience}; serve: gRPC, "
        f"1 TF thread, batched = {BATCH_ROWS} rows per Predict; table: seed {seeds[0]}"
    )
    if rows:
        print_table(rows)
    difference, error = paired_bootstrap(
        first["y_true"],
        first["predictions"]["student distilled"],
        first["predictions"]["student hard"],
    )
    print(
        f"distilled − hard accuracy: {difference * 100:+.2f} points, standard error "
        f"{error * 100:.2f} (paired bootstrap over the {len(first['y_true'])} test sentences, "
        f"{BOOTSTRAP_SAMPLES} resamples)"
    )
    print_seeds(seeds, per_seed, split="validation")
    print_seeds(seeds, per_seed, split="test")
    return 0


def run_seed(plan: Plan, workdir: Path, requests: int, *, serve: bool) -> dict[str, Any]:
    """Train teacher, hard student and distilled student on `plan.seed`'s split; with `serve`,
    also quantize each, export it and measure it in `tfmaas serve` (the table's rows)."""
    from tfmaas.api import load_training_spec
    from tfmaas.storage import open_store
    from tfmaas.trainer.distill import pull_teacher
    from tfmaas.trainer.exporting import export
    from tfmaas.trainer.measure import directory_bytes
    from tfmaas.trainer.quantize import quantize
    from tfmaas.trainer.training import predicted_class_ids, prepare_data, train

    store_uri = (workdir / "store").as_uri()
    plans = specs(plan)
    quiet = lambda line: None  # noqa: E731
    prepared = prepare_data(load_training_spec(plans["student distilled"]), log=quiet)
    test, validation = prepared.splits.test, prepared.splits.validation
    rows: list[dict[str, Any]] = []
    predictions: dict[str, np.ndarray] = {}
    validation_predictions: dict[str, np.ndarray] = {}
    for name, spec in plans.items():
        started = time.perf_counter()
        teacher = None
        if "distillation" in spec:
            teacher = pull_teacher(open_store(store_uri), 1)
        trained = train(spec, log=quiet, teacher=teacher)
        seconds = time.perf_counter() - started
        if name == "teacher":
            export(trained, workdir / "teacher-store" / "1", name="bench", version=1)
            open_store(store_uri).publish(1, workdir / "teacher-store" / "1")
        unquantized = predicted_class_ids(trained.module, test.texts)
        predictions[name] = unquantized
        validation_predictions[name] = predicted_class_ids(trained.module, validation.texts)
        print(f"seed {plan.seed}: trained {name}", file=sys.stderr, flush=True)
        if not serve:
            continue
        for mode in ("none", "int8", "float16"):
            if mode == "float16" and name != "student distilled":
                continue  # one float16 row shows its size; int8 is the smaller of the two
            module = quantize(trained.module, mode)
            label = name if mode == "none" else f"{name} + {mode}"
            base = workdir / label.replace(" ", "-").replace("+", "")
            export(dataclasses.replace(trained, module=module), base / "1", name="bench")
            predicted = predicted_class_ids(module, test.texts)
            accuracy, f1 = scores(test.label_ids, predicted, trained.classes)
            p50, rows_per_second = serve_figures(base, workdir, requests)
            rows.append(
                {
                    "model": label,
                    "accuracy": accuracy,
                    "f1": f1,
                    "bytes": directory_bytes(base / "1"),
                    "p50": p50,
                    "rows": rows_per_second,
                    "agree": float(np.mean(predicted == unquantized)),
                    "train": seconds if mode == "none" else None,
                }
            )
            print(f"measured {label}", file=sys.stderr, flush=True)
    return {
        "rows": rows,
        "predictions": predictions,
        "y_true": test.label_ids,
        "validation": {"predictions": validation_predictions, "y_true": validation.label_ids},
        "classes": prepared.splits.classes,
        "counts": prepared.splits.counts(),
        "unlabelled": len(prepared.unlabelled),
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    teacher_row = rows[0]
    print(
        "| model | test accuracy | macro F1 | size KiB | size vs teacher | p50 Predict ms "
        "| batched rows/s | rows/s vs teacher | agrees with unquantized | train s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        train_s = f"{row['train']:.1f}" if row["train"] is not None else "–"
        print(
            f"| {row['model']} | {row['accuracy']:.4f} | {row['f1']:.4f} "
            f"| {row['bytes'] / 1024:.0f} | {row['bytes'] / teacher_row['bytes']:.3f} "
            f"| {row['p50']:.2f} | {row['rows']:.0f} | {row['rows'] / teacher_row['rows']:.2f}x "
            f"| {row['agree']:.2%} | {train_s} |"
        )


def on_split(measured: dict[str, Any], split: str) -> dict[str, Any]:
    """One seed's predictions and true labels on `split` ("test" or "validation")."""
    return measured if split == "test" else {**measured, **measured["validation"]}


def print_seeds(seeds: list[int], per_seed: list[dict[str, Any]], *, split: str = "test") -> None:
    """Accuracy on `split` per seed (each seed its own split), then the pooled differences."""
    names = ("teacher", "student hard", "student distilled")
    accuracy: dict[str, list[float]] = {name: [] for name in names}
    f1: dict[str, list[float]] = {name: [] for name in names}
    per_seed = [on_split(measured, split) for measured in per_seed]
    print()
    print(
        f"| seed | {split} sentences | teacher | student hard | student distilled "
        "| distilled − teacher | distilled − hard |"
    )
    print("|---|---|---|---|---|---|---|")
    for seed, measured in zip(seeds, per_seed, strict=True):
        for name in names:
            a, f = scores(measured["y_true"], measured["predictions"][name], measured["classes"])
            accuracy[name].append(a)
            f1[name].append(f)
        print(
            f"| {seed} | {len(measured['y_true'])} | {accuracy['teacher'][-1]:.4f} "
            f"| {accuracy['student hard'][-1]:.4f} | {accuracy['student distilled'][-1]:.4f} "
            f"| {(accuracy['student distilled'][-1] - accuracy['teacher'][-1]) * 100:+.2f} "
            f"| {(accuracy['student distilled'][-1] - accuracy['student hard'][-1]) * 100:+.2f} |"
        )
    summary = []
    for name in names:
        a_mean, a_error = mean_and_error(accuracy[name])
        f_mean, f_error = mean_and_error(f1[name])
        summary.append(
            f"{name} {a_mean:.4f} ± {a_error:.4f} (macro F1 {f_mean:.4f} ± {f_error:.4f})"
        )
    print(f"mean {split} accuracy over {len(seeds)} seeds ± SE across seeds: " + "; ".join(summary))
    for other in ("teacher", "student hard"):
        pooled = [
            (m["y_true"], m["predictions"]["student distilled"], m["predictions"][other])
            for m in per_seed
        ]
        difference, error = pooled_paired_bootstrap(pooled)
        across = [
            d - o for d, o in zip(accuracy["student distilled"], accuracy[other], strict=True)
        ]
        _, seed_error = mean_and_error(across)
        print(
            f"distilled − {other.removeprefix('student ')}: {difference * 100:+.2f} points "
            f"over {len(seeds)} seeds, standard error {error * 100:.2f} (paired bootstrap "
            f"resampling each seed's {split} split, {BOOTSTRAP_SAMPLES} resamples) or "
            f"{seed_error * 100:.2f} (across seeds)"
        )


if __name__ == "__main__":
    raise SystemExit(main())
