"""Multi-worker training: two `tfmaas train` processes on loopback form one
MultiWorkerMirroredStrategy cluster; only the chief publishes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from tfmaas.dev.processes import free_port

pytestmark = pytest.mark.slow


def test_the_loop_matches_keras_fit_on_one_replica() -> None:
    """The multi-worker loop, run on the default strategy, reproduces Keras fit's first epoch."""
    import keras
    import tensorflow as tf

    from tfmaas.trainer.checkpointing import Checkpointer, ResumableRun
    from tfmaas.trainer.multiworker import fit_multi_worker
    from tfmaas.trainer.progress import EpochLog
    from tfmaas.trainer.progress_state import Progress

    rng = np.random.default_rng(0)
    features = rng.normal(size=(256, 8)).astype("float32")
    labels = (features[:, 0] + features[:, 1] > 0).astype("int64")
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(32)

    def model() -> keras.Model:
        keras.utils.set_random_seed(1)
        inputs = keras.Input(shape=(8,))
        return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))

    reference = model()
    reference.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    expected = reference.fit(dataset, epochs=3, shuffle=False, verbose=0).history

    ours = model()
    strategy = tf.distribute.get_strategy()
    optimizer = keras.optimizers.Adam(0.01)
    optimizer.build(ours.trainable_variables)
    checkpointer = Checkpointer(
        store=None,
        version=1,
        run_key="0" * 64,
        model=ours,
        optimizer=optimizer,
        strategy=strategy,
        is_chief=True,
        epochs=3,
        log=lambda line: None,
    )
    run = ResumableRun(
        checkpointer,
        Progress(run_key="0" * 64),
        monitor="loss",
        patience=5,
        epochs=3,
        stop_requested=threading.Event(),
    )
    history = fit_multi_worker(
        ours,
        strategy,
        dataset,
        None,
        epochs=3,
        optimizer=optimizer,
        global_batch=32,
        epoch_log=EpochLog(lambda line: None, 3, 256),
        run=run,
    )
    np.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-4)
    np.testing.assert_allclose(history["accuracy"], expected["accuracy"], rtol=1e-4)


def test_two_workers_train_together_and_only_the_chief_publishes(tmp_path: Path) -> None:
    from tfmaas.storage import open_store

    store_uri = (tmp_path / "store").as_uri()
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    training = {
        "dataset": {"uri": "builtin:chinese-reviews"},
        "model": {"maxTokens": 2000},
        "hyperparameters": {"epochs": 2, "maxExamples": 400},
    }
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "2"}
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tfmaas.trainer",
                    "--name",
                    "mw",
                    "--version",
                    "1",
                    "--store",
                    store_uri,
                    "--training-json",
                    json.dumps(training),
                    "--termination-log",
                    str(tmp_path / f"termination-{index}"),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                cwd=tmp_path,
            )
        )
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=300)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
    assert "worker worker/0 of 2" in outputs[0] and "worker worker/1 of 2" in outputs[1]
    assert "published mw version 1" in outputs[0]
    assert "not the chief worker" in outputs[1]
    # All-reduced figures: both workers saw the same epochs.
    epochs = [[line for line in out.splitlines() if line.startswith("epoch ")] for out in outputs]
    strip_time = [[line.split(" time=")[0] for line in lines] for lines in epochs]
    assert strip_time[0] == strip_time[1] and len(strip_time[0]) >= 1
    assert open_store(store_uri).list_versions() == [1]
    chief = json.loads((tmp_path / "termination-0").read_text(encoding="utf-8"))
    assert chief["uri"] == f"{store_uri}/1/"


def test_two_workers_resume_from_the_chiefs_checkpoint(tmp_path: Path) -> None:
    """Both workers killed mid-run (a node lost): the next pair restores the chief's last
    checkpoint from the store, continues at the next epoch and publishes once."""
    import signal
    import time

    from tfmaas.storage import open_store

    store_uri = (tmp_path / "store").as_uri()
    training = {
        "dataset": {"uri": "builtin:chinese-reviews"},
        "model": {"maxTokens": 2000},
        "hyperparameters": {"epochs": 3, "maxExamples": 600, "earlyStoppingPatience": 5},
    }

    def start(attempt: int) -> list[tuple[subprocess.Popen, Path]]:
        workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
        started = []
        for index in range(2):
            tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "2"}
            out = tmp_path / f"out-{attempt}-{index}.log"
            with out.open("w") as sink:
                command = [sys.executable, "-m", "tfmaas.trainer", "--name", "mw"]
                command += ["--version", "1", "--store", store_uri]
                command += ["--training-json", json.dumps(training)]
                command += ["--termination-log", str(tmp_path / f"termination-{index}")]
                process = subprocess.Popen(
                    command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=tmp_path
                )
            started.append((process, out))
        return started

    first = start(1)
    try:
        deadline = time.monotonic() + 300
        # Epoch 2's line proves the chief synced epoch 1's checkpoint before starting it.
        while "epoch 2/3" not in first[0][1].read_text():
            assert time.monotonic() < deadline and first[0][0].poll() is None, first[0][
                1
            ].read_text()[-3000:]
            time.sleep(0.2)
    finally:
        for process, _ in first:
            process.send_signal(signal.SIGKILL)
            process.wait()
    assert open_store(store_uri).list_versions() == []
    assert (tmp_path / "store" / ".staging" / "ckpt-1" / "checkpoint").is_file()

    second = start(2)
    try:
        for process, _ in second:
            process.wait(timeout=300)
    finally:
        for process, _ in second:
            if process.poll() is None:
                process.kill()
    outputs = [out.read_text() for _, out in second]
    for (process, _), output in zip(second, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
        assert "resumed from epoch " in output, output[-3000:]
        assert "epoch 1/3 " not in output  # the done epoch is not trained again
    assert "published mw version 1" in outputs[0]
    assert json.loads((tmp_path / "termination-0").read_text())["resumedFromEpoch"] >= 1
    assert open_store(store_uri).list_versions() == [1]
    assert not (tmp_path / "store" / ".staging" / "ckpt-1").exists()
    assert list((tmp_path / "store" / "logs" / "1" / "train").glob("events.out.tfevents.*"))
