"""The training run: data → vectorizer → model → early-stopped fit → held-out evaluation."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tfmaas.api.loader import load_training_spec
from tfmaas.api.spec import QUANTIZE_NONE, TrainingSpec
from tfmaas.timestamps import now_rfc3339
from tfmaas.trainer.datasets import load_raw_examples
from tfmaas.trainer.examples import (
    Split,
    Splits,
    clean_examples,
    left_out_texts,
    sample_examples,
    split_examples,
)

if TYPE_CHECKING:
    from tfmaas.trainer.distill import Teacher

Log = Callable[[str], Any]


@dataclass(frozen=True)
class CheckpointTarget:
    """Where a run keeps its checkpoints: the store and version it will publish."""

    store: Any
    """A `tfmaas.storage.ModelStore`."""
    version: int


@dataclass(frozen=True)
class PreparedData:
    splits: Splits
    fingerprint: str
    dropped: dict[str, int]
    unlabelled: list[str] = field(default_factory=list)
    """Left-out texts the teacher labels for a student (distillation.unlabelledExamples)."""


@dataclass
class TrainedModel:
    """A fitted model, its serving function, and what metrics.json and the model card need."""

    config: TrainingSpec
    classes: list[str]
    module: Any
    """The `ServingModule` whose `serve` is the exported signature."""
    metrics: dict[str, Any]
    examples: dict[str, int]
    training_seconds: float
    examples_per_second: float
    trained_at: str
    dataset_fingerprint: str
    epochs_run: int
    is_chief: bool = True
    placement: str = ""
    history: dict[str, list[float]] = field(default_factory=dict)
    global_explanation: dict[str, Any] = field(default_factory=dict)
    """The model card's top units per class on the test split (see `global_explanation`)."""
    teacher: Teacher | None = None
    vocabulary_size: int = 0
    resumed_from_epoch: int | None = None
    """The epochs a checkpoint had done when this run resumed it (None: trained from scratch)."""
    checkpointer: Any = None
    """The run's `Checkpointer`, so the caller can discard the checkpoint once published."""
    tuning: dict[str, Any] | None = None
    """The hyperparameter search that chose this configuration (the model card's trial table)."""

    def predict(self, texts: list[str]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        outputs = self.module.serve(tf.constant(texts, dtype=tf.string))
        return {key: value.numpy() for key, value in outputs.items()}


def prepare_data(
    config: TrainingSpec, *, endpoint: str | None = None, log: Log = print
) -> PreparedData:
    raw = load_raw_examples(config.dataset, endpoint=endpoint)
    cleaned = clean_examples(raw, source=f"dataset {config.dataset.uri!r}")
    hp = config.hyperparameters
    sampled = sample_examples(cleaned, hp.max_examples, hp.seed)
    splits = split_examples(
        sampled,
        validation_fraction=hp.validation_fraction,
        test_fraction=hp.test_fraction,
        seed=hp.seed,
    )
    dropped = ", ".join(f"{count} {why}" for why, count in cleaned.dropped.items())
    log(
        f"dataset {config.dataset.uri}: {len(raw.texts)} read, {len(cleaned)} kept "
        f"(dropped {dropped}), {len(sampled)} used; classes {', '.join(splits.classes)}; "
        + ", ".join(f"{name} {count}" for name, count in splits.counts().items())
    )
    wanted = config.distillation.unlabelled_examples if config.distillation else 0
    unlabelled = left_out_texts(cleaned, hp.max_examples, hp.seed, limit=wanted)
    if wanted:
        log(
            f"distillation.unlabelledExamples {wanted}: {len(unlabelled)} sentences that "
            "maxExamples left out join the student's training with the teacher's labels only"
        )
    return PreparedData(splits, sampled.fingerprint(), cleaned.dropped, unlabelled)


def train(
    training: Mapping[str, Any] | TrainingSpec,
    *,
    endpoint: str | None = None,
    checkpoints: CheckpointTarget | None = None,
    log: Log = print,
    teacher: Teacher | None = None,
    trial: bool = False,
) -> TrainedModel:
    """Train `training`; with `teacher` (spec.training.distillation's version, pulled from the
    store) as a distilled student; with `checkpoints`, resume the version's checkpoint if the
    store has one and checkpoint every epoch (SIGTERM saves and raises
    `checkpointing.Terminated`).

    A `trial` of a hyperparameter search is scored on the validation split and never reads
    the test split: the search must not choose by the figures the tuned version is judged
    on. It is not compressed or explained either (nothing of it is published)."""
    config = load_training_spec(training)
    if config.distillation is not None and teacher is None:
        raise ValueError("spec.training.distillation needs the teacher pulled from the store")
    # Data first (plain Python, so bad input fails before TensorFlow starts), then the
    # strategy: MultiWorkerMirroredStrategy must exist before any other TF op runs.
    data = prepare_data(config, endpoint=endpoint, log=log)
    from tfmaas.trainer.distribute import choose_placement

    placement = choose_placement(log)
    import keras

    from tfmaas.trainer.checkpointing import sigterm_requests
    from tfmaas.trainer.global_explanation import global_explanation
    from tfmaas.trainer.progress import EpochLog
    from tfmaas.trainer.signature import ServingModule

    hp = config.hyperparameters
    keras.utils.set_random_seed(hp.seed)
    splits = data.splits
    # The teacher first: a distilled student chooses its vocabulary from every sentence it
    # learns from, the left-out ones counted for the class the teacher gives them.
    soft = _soft_labels(config, teacher, data, log) if teacher is not None else None
    pipeline = _build(config, splits, placement, log, vocabulary=vocabulary_split(data, soft))
    epoch_log = EpochLog(log, hp.epochs, len(splits.train) + len(data.unlabelled))
    started = time.perf_counter()
    with sigterm_requests() if not placement.role.distributed else _never() as stop_requested:
        run = _resumable_run(
            pipeline, data, placement, checkpoints, stop_requested, log, distilled=soft is not None
        )
        try:
            history = _fit_model(pipeline, data, placement, epoch_log, run, soft)
        finally:
            if run.summaries is not None:
                run.summaries.close()
    training_seconds = time.perf_counter() - started
    trained_at = now_rfc3339()
    held_out = splits.validation if trial else splits.test
    metrics = _evaluate(pipeline, held_out, splits.classes, placement)
    module: Any = ServingModule(
        pipeline.vectorizer,
        pipeline.model,
        splits.classes,
        architecture=pipeline.architecture.name,
    )
    if config.compression.quantize != QUANTIZE_NONE and not trial:
        module, metrics = _quantized(module, metrics, splits, config.compression.quantize, log)
    metrics.update(
        {
            "examples": splits.counts(),
            "training_seconds": round(training_seconds, 3),
            "architecture": pipeline.architecture.name,
            "evaluated_on": "validation" if trial else "test",
        }
    )
    log(
        f"{metrics['evaluated_on']} ({len(held_out)} examples): "
        f"accuracy={metrics['accuracy']:.4f} "
        f"precision={metrics['precision']:.4f} recall={metrics['recall']:.4f} "
        f"f1={metrics['f1']:.4f}; trained in {training_seconds:.1f}s, "
        f"{epoch_log.examples_per_second:.0f} examples/s"
    )
    return TrainedModel(
        config=config,
        classes=splits.classes,
        module=module,
        metrics=metrics,
        examples=splits.counts(),
        training_seconds=training_seconds,
        examples_per_second=epoch_log.examples_per_second,
        trained_at=trained_at,
        dataset_fingerprint=data.fingerprint,
        epochs_run=len(history.get("loss", [])),
        is_chief=placement.role.is_chief,
        placement=placement.describe(),
        history={key: [float(v) for v in values] for key, values in history.items()},
        global_explanation=(
            {} if trial else global_explanation(module, splits.test.texts, splits.classes)
        ),
        teacher=teacher,
        vocabulary_size=int(pipeline.vectorizer.vocabulary_size()),
        resumed_from_epoch=run.resumed_from,
        checkpointer=run.checkpointer,
    )


def _soft_labels(
    config: TrainingSpec, teacher: Teacher, data: PreparedData, log: Log
) -> np.ndarray:
    """The teacher's softened scores on the training split, then on the left-out texts (and
    on nothing else: never the validation or test split)."""
    from tfmaas.trainer.distill import soften, teacher_scores

    assert config.distillation is not None
    train, classes = data.splits.train, data.splits.classes
    scores = teacher_scores(teacher, train.texts + data.unlabelled, classes)
    agreement = float(np.mean(np.argmax(scores[: len(train)], axis=-1) == train.label_ids))
    log(
        f"teacher version {teacher.version}: soft labels for {len(train)} training examples "
        f"(it agrees with their labels on {agreement:.1%}) and {len(data.unlabelled)} "
        f"unlabelled ones; temperature {config.distillation.temperature}, "
        f"alpha {config.distillation.alpha}"
    )
    return soften(scores, config.distillation.temperature)


def with_unlabelled(train: Split, unlabelled: list[str]) -> Split:
    """A distilled student's training set: the training split, then the left-out texts with
    the label id UNLABELLED (they have the teacher's soft labels only)."""
    from tfmaas.trainer.distill import UNLABELLED

    unknown = np.full(len(unlabelled), UNLABELLED, dtype=train.label_ids.dtype)
    return Split(train.texts + unlabelled, np.concatenate([train.label_ids, unknown]))


def vocabulary_split(data: PreparedData, soft: np.ndarray | None) -> Split:
    """The sentences a vectorizer is adapted on and its vocabulary pruned by, with the class
    each counts for: the training split; for a student distilled with left-out texts (`soft`:
    the teacher's scores on the training split, then on them) those texts too, each counted
    for the teacher's top class. They are the teacher's gift to the student, which learns from
    them anyway; the validation and test splits never count."""
    train = data.splits.train
    if soft is None or not data.unlabelled:
        return train
    from tfmaas.trainer.distill import vocabulary_labels

    student = with_unlabelled(train, data.unlabelled)
    return Split(student.texts, vocabulary_labels(student.label_ids, soft))


def predicted_class_ids(module: Any, texts: list[str], *, batch: int = 256) -> np.ndarray:
    """What `module`'s serving signature predicts, batch by batch."""
    import tensorflow as tf

    chunks = [
        module.serve(tf.constant(texts[start : start + batch], dtype=tf.string))["class_id"]
        for start in range(0, len(texts), batch)
    ]
    return np.concatenate([chunk.numpy() for chunk in chunks]) if chunks else np.zeros(0, int)


def _quantized(
    module: Any, metrics: dict[str, Any], splits: Splits, mode: str, log: Log
) -> tuple[Any, dict[str, Any]]:
    """The quantized module and its own test metrics: what is served is what is gated."""
    from tfmaas.trainer.evaluate import classification_metrics, headline
    from tfmaas.trainer.quantize import quantize

    quantized = quantize(module, mode)
    before = predicted_class_ids(module, splits.test.texts)
    after = predicted_class_ids(quantized, splits.test.texts)
    agreement = float(np.mean(before == after)) if len(before) else 1.0
    scored = classification_metrics(splits.test.label_ids, after, splits.classes)
    scored["quantization"] = {
        "mode": mode,
        "agreementWithUnquantized": round(agreement, 6),
        "unquantized": headline(metrics),
    }
    log(
        f"quantized to {mode}: predictions agree with the unquantized model on "
        f"{agreement:.2%} of the test split; accuracy {metrics['accuracy']:.4f} -> "
        f"{scored['accuracy']:.4f}"
    )
    return quantized, scored


@contextlib.contextmanager
def _never() -> Iterator[threading.Event]:
    # Workers of a multi-worker run get SIGTERM at different moments, and one that stopped
    # alone would leave the others waiting in a collective: they keep the default (exit) and
    # resume from the last epoch's checkpoint.
    yield threading.Event()


def _resumable_run(
    pipeline: _Pipeline,
    data: PreparedData,
    placement: Any,
    checkpoints: CheckpointTarget | None,
    stop_requested: threading.Event,
    log: Log,
    *,
    distilled: bool = False,
) -> Any:
    from tfmaas.trainer.checkpointing import Checkpointer, ResumableRun
    from tfmaas.trainer.progress_state import run_key
    from tfmaas.trainer.summaries import TrainingSummaries

    config = pipeline.config
    hp = config.hyperparameters
    optimizer = _compile(pipeline, placement, distilled=distilled)
    checkpointer = Checkpointer(
        store=checkpoints.store if checkpoints else None,
        version=checkpoints.version if checkpoints else 1,
        run_key=run_key(
            spec_json=config.to_json(),
            dataset_fingerprint=data.fingerprint,
            vocabulary=[str(token) for token in pipeline.vectorizer.get_vocabulary()],
        ),
        model=pipeline.model,
        optimizer=optimizer,
        strategy=pipeline.strategy,
        is_chief=placement.role.is_chief,
        epochs=hp.epochs,
        log=log,
    )
    return ResumableRun(
        checkpointer,
        checkpointer.restore(),
        # A distilled student stops on its loss against the true labels alone: the validation
        # split has no soft labels (the teacher sees the training split only).
        monitor=("val_" if len(data.splits.validation) else "")
        + ("hard_loss" if distilled else "loss"),
        patience=hp.early_stopping_patience,
        epochs=hp.epochs,
        stop_requested=stop_requested,
        summaries=TrainingSummaries(
            store=checkpoints.store,
            version=checkpoints.version,
            is_chief=placement.role.is_chief,
            log=log,
        )
        if checkpoints
        else None,
    )


def _compile(pipeline: _Pipeline, placement: Any, *, distilled: bool = False) -> Any:
    """The optimizer, built (its slots exist) so a checkpoint can restore into it; a distilled
    student learns from the teacher's soft labels and the true ones."""
    import keras

    hp = pipeline.config.hyperparameters
    loss: Any = "sparse_categorical_crossentropy"
    metrics: list[Any] = ["accuracy"]
    distillation = pipeline.config.distillation
    if distilled and distillation is not None:
        from tfmaas.trainer.distill import accuracy, distillation_loss, hard_loss

        loss = distillation_loss(temperature=distillation.temperature, alpha=distillation.alpha)
        metrics = [accuracy, hard_loss]
    model = pipeline.model
    with pipeline.strategy.scope():
        optimizer: Any = keras.optimizers.Adam(learning_rate=hp.learning_rate)
        if placement.role.distributed:
            # The custom loop (multiworker.py) scales the loss itself.
            if placement.mixed_precision:
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        else:
            model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
            optimizer = model.optimizer  # under mixed precision, Keras wraps it
        optimizer.build(model.trainable_variables)
    return optimizer


@dataclass(frozen=True)
class _Pipeline:
    """The adapted vectorizer, the (unfitted) model, and how splits become batches."""

    config: TrainingSpec
    architecture: Any
    vectorizer: Any
    model: Any
    strategy: Any
    global_batch: int

    def batches(self, split: Split, *, shuffle: bool, targets: np.ndarray | None = None) -> Any:
        """`targets` replaces the split's label ids (a distilled student's soft labels)."""
        import tensorflow as tf

        vectorizer, architecture = self.vectorizer, self.architecture
        labels = split.label_ids if targets is None else targets
        dataset = tf.data.Dataset.from_tensor_slices(
            (tf.constant(split.texts, dtype=tf.string), labels)
        )
        vectorize = lambda text, label: (vectorizer(text), label)  # noqa: E731
        if architecture.cache_vectors:
            # Character ids are small: vectorize once (in batches, which is fast), then
            # shuffle and batch the cached ids every epoch.
            dataset = (
                dataset.batch(1024)
                .map(vectorize, num_parallel_calls=tf.data.AUTOTUNE)
                .unbatch()
                .apply(tf.data.experimental.assert_cardinality(len(split)))
                .cache()
            )
        if shuffle:
            seed = self.config.hyperparameters.seed
            dataset = dataset.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.batch(self.global_batch)
        if not architecture.cache_vectors:
            dataset = dataset.map(vectorize, num_parallel_calls=tf.data.AUTOTUNE)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def _build(
    config: TrainingSpec,
    splits: Splits,
    placement: Any,
    log: Log,
    *,
    vocabulary: Split | None = None,
) -> _Pipeline:
    """`vocabulary` (default: the training split) is what the vectorizer is adapted on and
    pruned by (see `vocabulary_split`)."""
    from tfmaas.trainer.architectures import make_architecture
    from tfmaas.trainer.vectorize import adapt

    source = vocabulary if vocabulary is not None else splits.train
    left_out = len(source) - len(splits.train)
    from_where = f" from {len(splits.train)} training and {left_out} left-out sentences"
    from_where = from_where if left_out else ""
    strategy = placement.strategy
    global_batch = config.hyperparameters.batch_size * strategy.num_replicas_in_sync
    architecture = make_architecture(config.model, len(splits.classes))
    vectorizer = adapt(architecture.vectorizer, source.texts, global_batch)
    vocabulary_size = int(vectorizer.vocabulary_size())
    log(
        f"architecture {architecture.name}: vocabulary of {vocabulary_size} character "
        f"n-grams{from_where}"
    )
    keep = config.compression.prune_vocabulary
    if keep is not None:
        from tfmaas.trainer.prune import prune_vocabulary

        classes = len(splits.classes)
        fresh = make_architecture(config.model, classes).vectorizer
        vectorizer = prune_vocabulary(
            vectorizer, fresh, source.texts, source.label_ids, classes, keep=keep
        )
        vocabulary_size = int(vectorizer.vocabulary_size())
        by = " (left-out ones counted for the teacher's class)" if left_out else ""
        log(
            f"vocabulary pruned to the {vocabulary_size} units that tell the classes apart best{by}"
        )
    with strategy.scope():
        model = architecture.build_model(vocabulary_size)
    return _Pipeline(config, architecture, vectorizer, model, strategy, global_batch)


def _fit_model(
    pipeline: _Pipeline,
    data: PreparedData,
    placement: Any,
    epoch_log: Any,
    run: Any,
    soft: np.ndarray | None = None,
) -> dict[str, list[float]]:
    hp = pipeline.config.hyperparameters
    distillation = pipeline.config.distillation
    splits, train = data.splits, data.splits.train
    train_targets = validation_targets = None
    if soft is not None and distillation is not None:
        from tfmaas.trainer.distill import targets

        classes = len(splits.classes)
        train = with_unlabelled(train, data.unlabelled)
        train_targets = targets(train.label_ids, soft, classes)
        validation_targets = targets(splits.validation.label_ids, None, classes)
    train_batches = pipeline.batches(train, shuffle=True, targets=train_targets)
    validation_batches = (
        pipeline.batches(splits.validation, shuffle=False, targets=validation_targets)
        if len(splits.validation)
        else None
    )
    if placement.role.distributed:
        from tfmaas.trainer.multiworker import fit_multi_worker

        return fit_multi_worker(
            pipeline.model,
            pipeline.strategy,
            train_batches,
            validation_batches,
            epochs=hp.epochs,
            optimizer=run.checkpointer.optimizer,
            global_batch=pipeline.global_batch,
            epoch_log=epoch_log,
            run=run,
        )
    return _fit(pipeline.model, train_batches, validation_batches, hp, epoch_log, run)


def _evaluate(
    pipeline: _Pipeline, held_out: Split, classes: list[str], placement: Any
) -> dict[str, Any]:
    """Metrics on a held-out split: the test split for a version (the spec requires
    testFraction > 0 and the split refuses to leave it empty, so the quality gate always
    judges held-out test examples), the validation split for a search's trial."""
    from tfmaas.trainer.evaluate import classification_metrics

    batches = pipeline.batches(held_out, shuffle=False)
    if placement.role.distributed:
        from tfmaas.trainer.multiworker import predict_locally

        scores = predict_locally(pipeline.model, batches)
    else:
        scores = pipeline.model.predict(batches, verbose=0)
    return classification_metrics(held_out.label_ids, np.argmax(scores, axis=-1), classes)


def _fit(
    model: Any,
    train_batches: Any,
    validation_batches: Any,
    hp: Any,
    epoch_log: Any,
    run: Any,
) -> dict[str, list[float]]:
    """Keras `fit` (compiled by `_compile`) from the run's next epoch, with early stopping on
    validation loss, a checkpoint every epoch, and the best weights restored."""
    from tfmaas.trainer.progress import CheckpointHook

    if not run.progress.finished:
        model.fit(
            train_batches,
            validation_data=validation_batches,
            epochs=hp.epochs,
            initial_epoch=run.progress.epochs_done,
            callbacks=[epoch_log, CheckpointHook(run)],
            shuffle=False,  # the dataset reshuffles itself each epoch, by the seed
            verbose=0,
        )
    run.restore_best(model)
    return {key: list(values) for key, values in run.progress.history.items()}
