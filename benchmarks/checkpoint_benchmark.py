"""Checkpoint benchmark: what a checkpoint of each architecture costs per epoch.

For each architecture as the sample spec configures it (the vocabulary at maxTokens), with its
optimizer built: the checkpoint's size, the time of one save (TensorFlow's CheckpointManager
writing locally, then the sync to a file:// store), and the time to restore it in a new
process's place (download and restore). Prints figures; asserts nothing about speed.

    python benchmarks/checkpoint_benchmark.py             # 5 saves per architecture
    python benchmarks/checkpoint_benchmark.py --saves 2   # quicker
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", category=UserWarning, module="keras")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "samples" / "sentiment.yaml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=5)
    args = parser.parse_args()

    import keras
    import tensorflow as tf
    import yaml

    from tfmaas.api.loader import load_training_spec
    from tfmaas.storage import open_store
    from tfmaas.trainer.architectures import make_architecture
    from tfmaas.trainer.checkpointing import Checkpointer, ResumableRun
    from tfmaas.trainer.progress_state import Progress

    training = yaml.safe_load(SAMPLE.read_text(encoding="utf-8"))["spec"]["training"]
    print(f"checkpoint cost per epoch, {args.saves} saves each, file:// store, CPU")
    print(f"{'architecture':<14} {'size MiB':>9} {'save ms':>8} {'restore ms':>11}")
    for name in ("bag-of-ngrams", "cnn", "transformer"):
        config = load_training_spec(
            {**training, "model": {**training["model"], "architecture": name}}
        )
        architecture = make_architecture(config.model, 2)
        model = architecture.build_model(config.model.max_tokens)
        optimizer = keras.optimizers.Adam()
        optimizer.build(model.trainable_variables)
        with tempfile.TemporaryDirectory() as root:
            store = open_store(Path(root, "store").as_uri())

            def checkpointer(model=model, optimizer=optimizer, store=store):  # type: ignore[no-untyped-def]
                return Checkpointer(
                    store=store,
                    version=1,
                    run_key="0" * 64,
                    model=model,
                    optimizer=optimizer,
                    strategy=tf.distribute.get_strategy(),
                    is_chief=True,
                    epochs=args.saves,
                    log=lambda line: None,
                )

            saver = checkpointer()
            run = ResumableRun(
                saver,
                Progress(run_key="0" * 64),
                monitor="loss",
                patience=args.saves + 1,
                epochs=args.saves + 1,
                stop_requested=threading.Event(),
            )
            saves = []
            for epoch in range(args.saves):
                started = time.perf_counter()
                run.end_epoch({"loss": 1.0 / (epoch + 1)})
                saves.append(time.perf_counter() - started)
            area = Path(root, "store", ".staging", "ckpt-1")
            size = sum(p.stat().st_size for p in area.iterdir()) / 2**20
            started = time.perf_counter()
            restored = checkpointer().restore()
            restore_ms = (time.perf_counter() - started) * 1000
            assert restored.epochs_done == args.saves
        print(
            f"{name:<14} {size:>9.1f} {statistics.median(saves) * 1000:>8.0f} {restore_ms:>11.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
