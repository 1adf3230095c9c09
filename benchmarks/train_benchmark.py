"""Training benchmark on the builtin Chinese reviews: our architectures against two baselines.

Prints one table. Every row uses the same deduplicated, stratified split (same seed):
  * each tfmaas architecture (vectorization inside the model, tf.data input), exported
    and reloaded to check the served predictions are the trained ones;
  * TF-IDF over character 1-2-grams + logistic regression (scikit-learn), the bar to clear;
  * a tutorial-style Keras script: a Python character tokenizer and pad_sequences before
    the same CNN. Its model needs the tokenizer beside it at serving time; a server that
    re-fits one on what it sees gets different ids, and the table shows what that does.

    python benchmarks/train_benchmark.py            # full data, every architecture (~10 min)
    python benchmarks/train_benchmark.py --quick    # 2000 examples, 2 epochs (smoke run)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", category=UserWarning, module="keras")


@dataclass
class Row:
    name: str
    accuracy: float
    f1: float
    seconds: float
    examples_per_second: float
    size_mb: float | None = None
    epochs: int | None = None
    served_agreement: float | None = None
    note: str = ""


def directory_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def run_architecture(architecture: str, training: dict[str, Any], test_texts: list[str]) -> Row:
    import numpy as np
    import tensorflow as tf

    from tfmaas.trainer import export, train

    spec = {**training, "model": {**training.get("model", {}), "architecture": architecture}}
    trained = train(spec, log=lambda line: print(f"  [{architecture}] {line}", flush=True))
    with tempfile.TemporaryDirectory() as folder:
        version_dir = export(trained, Path(folder) / "1", name="bench", version=1)
        size = directory_mb(version_dir)
        serving = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
        reloaded = serving(text=tf.constant(test_texts))["class_id"].numpy()
    in_memory = trained.predict(test_texts)["class_id"]
    metrics = trained.metrics
    return Row(
        name=f"tfmaas {architecture}",
        accuracy=metrics["accuracy"],
        f1=metrics["f1"],
        seconds=trained.training_seconds,
        examples_per_second=trained.examples_per_second,
        size_mb=size,
        epochs=trained.epochs_run,
        served_agreement=float(np.mean(reloaded == in_memory)),
        note="exported SavedModel, reloaded",
    )


def run_tfidf_logistic_regression(splits: Any) -> Row:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    started = time.perf_counter()
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 2), sublinear_tf=True)
    features = vectorizer.fit_transform(splits.train.texts)
    model = LogisticRegression(max_iter=2000, C=4.0)
    model.fit(features, splits.train.label_ids)
    seconds = time.perf_counter() - started
    predicted = model.predict(vectorizer.transform(splits.test.texts))
    return Row(
        name="TF-IDF char1-2 + LR",
        accuracy=float(accuracy_score(splits.test.label_ids, predicted)),
        f1=float(f1_score(splits.test.label_ids, predicted, average="macro")),
        seconds=seconds,
        examples_per_second=len(splits.train) / seconds,
        note=f"scikit-learn, {len(vectorizer.vocabulary_)} n-grams",
    )


class CharTokenizer:
    """What tutorials do: a Python dict from characters to ids, fitted on a corpus."""

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self.index: dict[str, int] = {}

    def fit(self, texts: list[str]) -> CharTokenizer:
        counts = Counter(ch for text in texts for ch in text.lower())
        most_common = counts.most_common(self.max_tokens - 2)  # 0 = padding, 1 = unknown
        self.index = {ch: i + 2 for i, (ch, _) in enumerate(most_common)}
        return self

    def to_sequences(self, texts: list[str]) -> list[list[int]]:
        return [[self.index.get(ch, 1) for ch in text.lower()] for text in texts]


def run_tutorial_style(splits: Any, training: dict[str, Any]) -> tuple[Row, float]:
    import keras
    import numpy as np

    from tfmaas.api import load_training_spec
    from tfmaas.trainer.architectures import make_architecture
    from tfmaas.trainer.evaluate import classification_metrics

    config = load_training_spec(
        {**training, "model": {**training.get("model", {}), "architecture": "cnn"}}
    )
    hp, model_config = config.hyperparameters, config.model
    keras.utils.set_random_seed(hp.seed)

    def pad(sequences: list[list[int]]) -> np.ndarray:
        return keras.utils.pad_sequences(
            sequences, maxlen=model_config.sequence_length, padding="post", truncating="post"
        )

    started = time.perf_counter()
    tokenizer = CharTokenizer(model_config.max_tokens).fit(splits.train.texts)
    x_train = pad(tokenizer.to_sequences(splits.train.texts))
    x_validation = pad(tokenizer.to_sequences(splits.validation.texts))
    model = make_architecture(model_config, len(splits.classes)).build_model(
        model_config.max_tokens
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=hp.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(
        x_train,
        splits.train.label_ids,
        validation_data=(x_validation, splits.validation.label_ids),
        epochs=hp.epochs,
        batch_size=hp.batch_size,
        callbacks=[
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=hp.early_stopping_patience, restore_best_weights=True
            )
        ],
        verbose=0,
    )
    seconds = time.perf_counter() - started
    epochs = len(history.history["loss"])

    def predict(sequences: list[list[int]]) -> np.ndarray:
        return np.argmax(model.predict(pad(sequences), verbose=0), axis=-1)

    right_tokenizer = predict(tokenizer.to_sequences(splits.test.texts))
    # A serving process without the training tokenizer re-fits one on what it has.
    refit = CharTokenizer(model_config.max_tokens).fit(splits.test.texts)
    refit_predictions = predict(refit.to_sequences(splits.test.texts))
    metrics = classification_metrics(splits.test.label_ids, right_tokenizer, splits.classes)
    refit_metrics = classification_metrics(splits.test.label_ids, refit_predictions, splits.classes)
    row = Row(
        name="tutorial: Python tokenizer + CNN",
        accuracy=metrics["accuracy"],
        f1=metrics["f1"],
        seconds=seconds,
        examples_per_second=len(splits.train) * epochs / seconds,
        epochs=epochs,
        served_agreement=float(np.mean(refit_predictions == right_tokenizer)),
        note=f"tokenizer re-fit at serving: accuracy {refit_metrics['accuracy']:.4f}",
    )
    return row, refit_metrics["accuracy"]


def print_table(rows: list[Row], examples: dict[str, int]) -> None:
    print()
    print(
        f"builtin:chinese-reviews after clean-up: train {examples['train']}, "
        f"validation {examples['validation']}, test {examples['test']}; CPU, "
        f"{os.cpu_count()} cores visible"
    )
    header = (
        f"{'model':<34} {'test acc':>8} {'macro F1':>8} {'train s':>8} {'ex/s':>8} "
        f"{'epochs':>6} {'size MB':>8} {'served=trained':>14}  note"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        size = f"{row.size_mb:.1f}" if row.size_mb is not None else "-"
        epochs = str(row.epochs) if row.epochs is not None else "-"
        agreement = f"{row.served_agreement:.2%}" if row.served_agreement is not None else "-"
        print(
            f"{row.name:<34} {row.accuracy:>8.4f} {row.f1:>8.4f} {row.seconds:>8.1f} "
            f"{row.examples_per_second:>8.0f} {epochs:>6} {size:>8} {agreement:>14}  {row.note}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2000 examples, 2 epochs")
    parser.add_argument(
        "--architectures",
        default="bag-of-ngrams,cnn,transformer",
        help="comma-separated architectures to train",
    )
    parser.add_argument("--no-tutorial", action="store_true", help="skip the tutorial baseline")
    parser.add_argument("--max-examples", type=int, default=None, help="use this many examples")
    parser.add_argument("--epochs", type=int, default=None, help="at most this many epochs")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from tfmaas.api import load_training_spec
    from tfmaas.trainer.training import prepare_data

    tf.get_logger().setLevel("ERROR")  # retracing notices from the baselines' predict calls

    hyperparameters: dict[str, Any] = {"seed": 42}
    if args.quick:
        hyperparameters.update({"maxExamples": 2000, "epochs": 2})
    if args.max_examples is not None:
        hyperparameters["maxExamples"] = args.max_examples
    if args.epochs is not None:
        hyperparameters["epochs"] = args.epochs
    training: dict[str, Any] = {
        "dataset": {"uri": "builtin:chinese-reviews"},
        "hyperparameters": hyperparameters,
    }
    data = prepare_data(load_training_spec(training), log=print)
    splits = data.splits

    rows: list[Row] = [run_tfidf_logistic_regression(splits)]
    print(f"  [baseline] {rows[0].name}: accuracy {rows[0].accuracy:.4f}", flush=True)
    for architecture in [a.strip() for a in args.architectures.split(",") if a.strip()]:
        rows.append(run_architecture(architecture, training, splits.test.texts))
    if not args.no_tutorial:
        tutorial, _ = run_tutorial_style(splits, training)
        rows.append(tutorial)
    print_table(rows, splits.counts())

    ours = [row for row in rows if row.name.startswith("tfmaas")]
    if ours:
        best = max(ours, key=lambda row: row.accuracy)
        baseline = rows[0]
        verdict = "meets" if best.accuracy >= baseline.accuracy else "DOES NOT meet"
        print(
            f"\nbest architecture {best.name}: accuracy {best.accuracy:.4f} {verdict} the TF-IDF + "
            f"LR baseline ({baseline.accuracy:.4f})"
        )
        cnn = next((row for row in ours if row.name == "tfmaas cnn"), None)
        tutorial_row = next((row for row in rows if row.name.startswith("tutorial")), None)
        if cnn and tutorial_row:
            ratio = cnn.examples_per_second / tutorial_row.examples_per_second
            print(
                f"tfmaas cnn trains at {ratio:.2f}x the tutorial-style script's examples/s "
                "(same model, same data, tokenization included)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
