"""Explain benchmark: how faithful the `explain` signature is, and what it costs.

For each architecture, trained on the builtin Chinese reviews and exported, on the test split:
  * deletion curves: delete the k (1..5) characters with the highest attribution toward the
    predicted class, k random characters, or the k that leave-one-out (re-scoring the
    sentence without each character, the ground truth for single deletions) ranks highest,
    and measure how far the predicted class's score falls. Area = the sum of the mean drops
    over k = 1..5 (higher: the ranking finds the characters that matter);
  * latency of one sentence per call: serving_default of the export without `explain`,
    serving_default of the export with it (must not differ), and `explain`, p50 in ms.

    python benchmarks/explain_benchmark.py            # 6000 examples, every architecture
    python benchmarks/explain_benchmark.py --quick    # 1500 examples, 2 epochs (smoke run)
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", category=UserWarning, module="keras")

KS = (1, 2, 3, 4, 5)
ARCHITECTURES = ("bag-of-ngrams", "cnn", "transformer")


def _without(text: str, positions: set[int]) -> str:
    return "".join(c for i, c in enumerate(text) if i not in positions)


def deletion_areas(serving: Any, explain: Any, texts: list[str], seed: int) -> dict[str, float]:
    """Mean drop of the predicted class's score, summed over k = 1..5, per ranking."""
    import numpy as np
    import tensorflow as tf

    rng = random.Random(seed)
    explained = explain(text=tf.constant(texts))
    class_ids = explained["class_id"].numpy()
    base = explained["score"].numpy()
    attributions = explained["char_attributions"].numpy()
    rankings: dict[str, list[list[int]]] = {"attribution": [], "random": [], "leave-one-out": []}
    for row, text in enumerate(texts):
        positions = list(range(len(text)))
        rankings["attribution"].append(sorted(positions, key=lambda i: -attributions[row][i]))
        rankings["random"].append(rng.sample(positions, len(positions)))
        variants = [_without(text, {i}) for i in positions]
        scores = serving(text=tf.constant(variants))["scores"].numpy()[:, class_ids[row]]
        drops = base[row] - scores
        rankings["leave-one-out"].append(sorted(positions, key=lambda i: -drops[i]))
    areas = {}
    for name, ranked in rankings.items():
        area = 0.0
        for k in KS:
            deleted = [
                _without(text, set(order[:k])) for text, order in zip(texts, ranked, strict=True)
            ]
            scores = serving(text=tf.constant(deleted))["scores"].numpy()
            after = scores[np.arange(len(texts)), class_ids]
            area += float(np.mean(base - after))
        areas[name] = area
    return areas


def p50_ms(function: Any, texts: list[str], rounds: int) -> float:
    import tensorflow as tf

    for text in texts[:5]:
        function(text=tf.constant([text]))
    times = []
    for _ in range(rounds):
        for text in texts:
            started = time.perf_counter()
            function(text=tf.constant([text]))
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def run(architecture: str, training: dict[str, Any], sentences: int, rounds: int) -> dict[str, Any]:
    import tensorflow as tf

    from tfmaas.api.loader import load_training_spec
    from tfmaas.trainer import export, train
    from tfmaas.trainer.training import prepare_data

    spec = {**training, "model": {**training["model"], "architecture": architecture}}
    trained = train(spec, log=lambda line: None)
    test = prepare_data(load_training_spec(spec), log=lambda line: None).splits.test.texts
    texts = [t for t in test if 2 <= len(t) <= 200][:sentences]
    with tempfile.TemporaryDirectory() as folder:
        with_explain = export(trained, Path(folder) / "1")
        plain = Path(folder) / "plain"
        tf.saved_model.save(
            trained.module, str(plain), signatures={"serving_default": trained.module.serve}
        )
        loaded = tf.saved_model.load(str(with_explain))
        serving, explain = loaded.signatures["serving_default"], loaded.signatures["explain"]
        serving_plain = tf.saved_model.load(str(plain)).signatures["serving_default"]
        areas = deletion_areas(serving, explain, texts, seed=7)
        latency = {
            "predict (export without explain)": p50_ms(serving_plain, texts[:50], rounds),
            "predict (export with explain)": p50_ms(serving, texts[:50], rounds),
            "explain": p50_ms(explain, texts[:50], rounds),
        }
    return {
        "architecture": architecture,
        "accuracy": trained.metrics["accuracy"],
        "sentences": len(texts),
        "areas": areas,
        "latency": latency,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1500 examples, 2 epochs")
    parser.add_argument("--architectures", default=",".join(ARCHITECTURES))
    parser.add_argument("--sentences", type=int, default=200, help="test sentences to delete from")
    args = parser.parse_args(argv)
    training = {
        "dataset": {"uri": "builtin:chinese-reviews"},
        "model": {"maxTokens": 20000, "ngrams": 2, "sequenceLength": 128},
        "hyperparameters": {
            "epochs": 2 if args.quick else 4,
            "batchSize": 64,
            "maxExamples": 1500 if args.quick else 6000,
            "seed": 7,
        },
    }
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    rows = [
        run(a, training, args.sentences, rounds=1 if args.quick else 3)
        for a in args.architectures.split(",")
    ]
    print("\ndeletion area, k=1..5 (sum of mean drops of the predicted class's score):")
    print("| model | test acc | sentences | attribution | random | leave-one-out |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        a = row["areas"]
        print(
            f"| {row['architecture']} | {row['accuracy']:.3f} | {row['sentences']} | "
            f"{a['attribution']:.3f} | {a['random']:.3f} | {a['leave-one-out']:.3f} |"
        )
    print("\nlatency per sentence, p50 ms (1 intra-/inter-op thread):")
    print("| model | predict, export without explain | predict, with explain | explain |")
    print("|---|---|---|---|")
    for row in rows:
        lat = row["latency"]
        print(
            f"| {row['architecture']} | {lat['predict (export without explain)']:.2f} | "
            f"{lat['predict (export with explain)']:.2f} | {lat['explain']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
