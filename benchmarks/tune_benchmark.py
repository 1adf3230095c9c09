"""Hyperparameter search benchmark on the builtin Chinese reviews: does a tuned spec beat the
default one, by how much, and what does the search cost?

The search is the operator's own: each trial's configuration comes from the same Optuna
ask-and-tell code (tfmaas.operator.search.suggest) and is trained by the trainer's trial mode
(tfmaas.trainer.entrypoint.run_trial), scored on the validation split. Here the trials run one
after another in this process; on a cluster parallelTrials run at once, for the same CPU time.

Then the default spec and the tuned one are each trained with several seeds (a seed picks the
split and the initialisation) and scored on the test split. The difference is paired by seed:
the table shows its mean and standard error. The search saw seed 42's validation split only;
for other seeds some of those examples fall in the test split, which can carry no more than
the five numbers the search chose.

    python benchmarks/tune_benchmark.py                    # 6 trials, 3 seeds (~25 min, 2 cores)
    python benchmarks/tune_benchmark.py --trials 3 --seeds 1 --max-examples 3000   # smoke run
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", category=UserWarning, module="keras")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SEARCH_SEED = 42
TUNING = {
    "objective": "valAccuracy",
    "parameters": {
        "learningRate": {"min": 0.0003, "max": 0.01, "log": True},
        "batchSize": {"choices": [32, 64, 128]},
        "embeddingDim": {"choices": [32, 64, 128]},
        "ngrams": {"choices": [1, 2, 3]},
        "maxTokens": {"choices": [20000, 40000, 80000]},
    },
}


def _spec(max_examples: int, seed: int, **extra: Any) -> dict[str, Any]:
    return {
        "dataset": {"uri": "builtin:chinese-reviews"},
        "hyperparameters": {"seed": seed, "maxExamples": max_examples},
        **extra,
    }


def _mean_se(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return mean, se


def search(trials: int, max_examples: int) -> tuple[dict[str, Any], list[dict[str, Any]], float]:
    from tfmaas.api import load_training_spec
    from tfmaas.operator.search import SUCCEEDED, Search, TrialRecord, suggest
    from tfmaas.trainer.entrypoint import run_trial

    tuning = {**TUNING, "maxTrials": trials, "parallelTrials": 1}
    config = load_training_spec(_spec(max_examples, SEARCH_SEED, tuning=tuning))
    assert config.tuning is not None
    state = Search(config.tuning, config.fingerprint(), [])
    rows = []
    cpu = 0.0
    for number in range(trials):
        parameters = suggest(state, number, seed=SEARCH_SEED)
        started_cpu, started = time.process_time(), time.perf_counter()
        result = run_trial(config.with_parameters(parameters), trial=number, log=lambda _: None)
        used = time.process_time() - started_cpu
        cpu += used
        value = float(result.metrics[config.tuning.metric])
        record = TrialRecord(number, SUCCEEDED, parameters, value=value)
        state = Search(config.tuning, config.fingerprint(), [*state.trials, record])
        rows.append(
            {
                "trial": number,
                "parameters": parameters,
                "value": value,
                "cpu": used,
                "wall": time.perf_counter() - started,
            }
        )
        shown = ", ".join(f"{k}={v:g}" for k, v in parameters.items())
        print(f"  trial {number}: val accuracy {value:.4f}  cpu {used:.0f}s  ({shown})", flush=True)
    best = state.best
    assert best is not None
    return dict(best.parameters), rows, cpu


def evaluate(training: dict[str, Any], seeds: list[int], label: str) -> list[dict[str, float]]:
    from tfmaas.api import load_training_spec
    from tfmaas.trainer import train

    results = []
    for seed in seeds:
        spec = load_training_spec(
            {**training, "hyperparameters": {**training["hyperparameters"], "seed": seed}}
        )
        trained = train(spec, log=lambda _: None)
        results.append({"accuracy": trained.metrics["accuracy"], "f1": trained.metrics["f1"]})
        print(
            f"  {label} seed {seed}: test accuracy {trained.metrics['accuracy']:.4f} "
            f"macro F1 {trained.metrics['f1']:.4f} ({trained.epochs_run} epochs)",
            flush=True,
        )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-examples", type=int, default=0, help="0: all examples")
    args = parser.parse_args()

    from tfmaas.api import load_training_spec

    print(f"search: {args.trials} trials (Optuna TPE), objective valAccuracy, seed {SEARCH_SEED}")
    started = time.perf_counter()
    best, rows, cpu = search(args.trials, args.max_examples)
    search_wall = time.perf_counter() - started
    seeds = [SEARCH_SEED + offset for offset in range(args.seeds)]
    default = load_training_spec(_spec(args.max_examples, SEARCH_SEED)).to_dict()
    tuned = (
        load_training_spec(_spec(args.max_examples, SEARCH_SEED)).with_parameters(best).to_dict()
    )
    print("default spec and tuned spec, test split:")
    default_scores = evaluate(default, seeds, "default")
    tuned_scores = evaluate(tuned, seeds, "tuned")

    print()
    print(f"best configuration: {', '.join(f'{k}={v:g}' for k, v in best.items())}")
    print(
        f"search: {len(rows)} trials, total CPU {cpu:.0f} s ({cpu / 60:.1f} min), "
        f"wall {search_wall:.0f} s; best val accuracy {max(r['value'] for r in rows):.4f}"
    )
    print()
    print(f"| spec | test accuracy (mean ± SE, {len(seeds)} seeds) | macro F1 | seed 42 acc / F1 |")
    print("|---|---|---|---|")
    for label, scores in (("default", default_scores), ("tuned", tuned_scores)):
        acc, acc_se = _mean_se([s["accuracy"] for s in scores])
        f1, f1_se = _mean_se([s["f1"] for s in scores])
        print(
            f"| {label} | {acc:.4f} ± {acc_se:.4f} | {f1:.4f} ± {f1_se:.4f} | "
            f"{scores[0]['accuracy']:.4f} / {scores[0]['f1']:.4f} |"
        )
    for metric in ("accuracy", "f1"):
        diffs = [t[metric] - d[metric] for t, d in zip(tuned_scores, default_scores, strict=True)]
        mean, se = _mean_se(diffs)
        print(
            f"tuned − default {metric}: {mean * 100:+.2f} ± {se * 100:.2f} points (paired by seed)"
        )
    if args.max_examples:
        print("(a subsample: the full-data bars 0.8525 and TF-IDF + LR 0.8514 do not apply)")
        return 0
    for bar, name in ((0.8525, "the best default (0.8525)"), (0.8514, "TF-IDF + LR (0.8514)")):
        acc, se = _mean_se([s["accuracy"] for s in tuned_scores])
        print(f"tuned vs {name}: {(acc - bar) * 100:+.2f} ± {se * 100:.2f} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
