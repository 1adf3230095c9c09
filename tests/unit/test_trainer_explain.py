"""The `explain` signature: faithful on a planted keyword, aligned to the original characters,
and without effect on `serving_default`."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

POSITIVE, NEGATIVE = "好", "差"
FILLER = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同"


def _planted_sentences(count: int, seed: int) -> list[tuple[str, str]]:
    """Neutral filler with one keyword at a random place: the keyword alone decides the label."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(count):
        keyword = rng.choice(POSITIVE + NEGATIVE)
        characters = [rng.choice(FILLER) for _ in range(rng.randint(5, 20))]
        characters.insert(rng.randint(0, len(characters)), keyword)
        label = "positive" if keyword == POSITIVE else "negative"
        sentences.append(("".join(characters), label))
    return sentences


@pytest.fixture(scope="module")
def planted_dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("planted") / "planted.jsonl"
    lines = (
        json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n"
        for text, label in _planted_sentences(1000, seed=3)
    )
    path.write_text("".join(lines), encoding="utf-8")
    return path.as_uri()


@pytest.fixture(scope="module", params=["bag-of-ngrams", "cnn", "transformer"])
def planted_export(
    request: pytest.FixtureRequest, planted_dataset: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, Path]]:
    from tfmaas.trainer import export, train

    trained = train(
        {
            "dataset": {"uri": planted_dataset},
            "model": {
                "architecture": request.param,
                "maxTokens": 2000,
                "ngrams": 2,
                "sequenceLength": 32,
                "embeddingDim": 16,
            },
            "hyperparameters": {
                "epochs": 8,
                "batchSize": 32,
                "learningRate": 0.01,
                "maxExamples": 1000,
                "seed": 7,
            },
        },
        log=lambda line: None,
    )
    target = tmp_path_factory.mktemp(request.param) / "1"
    export(trained, target)
    yield trained, target


@pytest.mark.slow
def test_the_planted_keyword_gets_the_top_attribution(planted_export) -> None:
    import tensorflow as tf

    _, target = planted_export
    explain = tf.saved_model.load(str(target)).signatures["explain"]
    held_out = _planted_sentences(200, seed=11)
    outputs = explain(text=tf.constant([text for text, _ in held_out]))
    characters = outputs["characters"].numpy()
    attributions = outputs["char_attributions"].numpy()
    on_keyword = [
        characters[row][int(np.argmax(attributions[row]))].decode() in (POSITIVE, NEGATIVE)
        for row in range(len(held_out))
    ]
    assert sum(on_keyword) >= 0.95 * len(held_out)
    top_units = [units[0].decode() for units in outputs["units"].numpy()]
    # The top unit holds the keyword (for bag-of-ngrams it may be a bigram around it).
    with_keyword = [POSITIVE in unit or NEGATIVE in unit for unit in top_units]
    assert sum(with_keyword) >= 0.95 * len(held_out)


@pytest.mark.slow
def test_the_model_card_names_each_class_keyword_first(planted_export) -> None:
    _, target = planted_export
    card = json.loads((target / "model_card.json").read_text(encoding="utf-8"))
    assert card["explainSignature"]["name"] == "explain"
    top = card["globalExplanation"]["topUnitsPerClass"]
    for name, keyword in (("positive", POSITIVE), ("negative", NEGATIVE)):
        assert top[name][0]["unit"] == keyword and top[name][0]["meanAttribution"] > 0
    assert card["globalExplanation"]["sentences"] == 100  # the whole test split


def test_global_aggregation_ranks_units_by_mean_attribution_per_class() -> None:
    from tfmaas.trainer.global_explanation import aggregate

    rows = [("pos", [("好", 0.5), ("的", 0.01)]) for _ in range(4)]
    rows += [("pos", [("稀", 1.0)]), ("pos", [("坏", -0.2)])]  # one odd sentence; away
    rows += [("neg", [("差", 0.4), ("好", -0.3)])] * 2
    top = aggregate(rows, ["neg", "pos", "neutral"])
    # Over the 6 sentences predicted "pos": 好 2.0/6, 稀 1.0/6, 的 0.04/6; 坏 pushed away.
    assert [entry["unit"] for entry in top["pos"]] == ["好", "稀", "的"]
    assert top["pos"][0] == {"unit": "好", "meanAttribution": round(2.0 / 6, 6), "sentences": 4}
    assert top["neg"] == [{"unit": "差", "meanAttribution": 0.4, "sentences": 2}]
    assert top["neutral"] == []


@pytest.mark.slow
def test_serving_default_is_unchanged_by_the_explain_signature(
    planted_export, tmp_path: Path
) -> None:
    import tensorflow as tf

    trained, target = planted_export
    without_explain = tmp_path / "serving_default_only"
    tf.saved_model.save(
        trained.module, str(without_explain), signatures={"serving_default": trained.module.serve}
    )
    sentences = tf.constant([text for text, _ in _planted_sentences(50, seed=5)] + ["", "！？"])
    before = tf.saved_model.load(str(without_explain)).signatures["serving_default"](text=sentences)
    loaded = tf.saved_model.load(str(target))
    after = loaded.signatures["serving_default"](text=sentences)
    assert set(after) == set(before) == {"scores", "class_id", "label"}
    for key in before:
        np.testing.assert_array_equal(after[key].numpy(), before[key].numpy())
    explained = loaded.signatures["explain"](text=sentences)
    np.testing.assert_array_equal(explained["class_id"].numpy(), after["class_id"].numpy())
    np.testing.assert_allclose(
        explained["score"].numpy(), after["scores"].numpy().max(axis=1), rtol=1e-5
    )


@pytest.mark.slow
def test_explain_outputs_are_shaped_for_clients(planted_export) -> None:
    import tensorflow as tf

    from tfmaas.trainer.explaining import MAX_EXPLAINED_CHARS, OUTPUT_KEYS, TOP_UNITS

    _, target = planted_export
    explain = tf.saved_model.load(str(target)).signatures["explain"]
    long_sentence = POSITIVE * (MAX_EXPLAINED_CHARS * 3)
    sentences = tf.constant(["的一是差在，", long_sentence])
    outputs = {k: v.numpy() for k, v in explain(text=sentences).items()}
    assert set(outputs) == set(OUTPUT_KEYS)
    assert outputs["characters"].shape == outputs["char_attributions"].shape
    assert outputs["characters"].shape == (2, MAX_EXPLAINED_CHARS)
    assert [c.decode() for c in outputs["characters"][0][:7]] == [*"的一是差在，", ""]
    # Trailing punctuation and padding never reach the model.
    assert outputs["char_attributions"][0][5:].tolist() == [0.0] * (MAX_EXPLAINED_CHARS - 5)
    assert outputs["units"].shape == outputs["unit_attributions"].shape
    assert outputs["units"].shape[1] <= TOP_UNITS
    assert [label.decode() for label in outputs["label"]] == ["negative", "positive"]


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from("aZİ好 ，。!\t\n…-ß"), max_size=24))
def test_every_model_token_belongs_to_exactly_one_character(text: str) -> None:
    import tensorflow as tf

    from tfmaas.trainer.explaining import CharacterAlignment
    from tfmaas.trainer.vectorize import standardize

    tokens = tf.strings.unicode_split(standardize(tf.constant([text])), "UTF-8").to_tensor()
    token_count = int(tokens.shape[1])
    alignment = CharacterAlignment(tf.constant([text]))
    lengths = alignment.token_length.numpy()[0]
    starts = alignment.token_start.numpy()[0]
    assert int(lengths.sum()) == token_count
    rebuilt = "".join(
        "".join(t.decode() for t in tokens.numpy()[0][start : start + length])
        for start, length in zip(starts, lengths, strict=True)
    )
    assert rebuilt == standardize(tf.constant(text)).numpy().decode()
    # One unit of attribution per token lands on exactly the characters that became it.
    per_character = alignment.character_attributions(tf.ones([1, token_count])).numpy()[0]
    assert per_character.tolist() == lengths.astype(float).tolist()


_PEAK_GROWTH = """
import resource, sys
import tensorflow as tf
explain = tf.saved_model.load(sys.argv[1]).signatures["explain"]
explain(text=tf.constant(["的一是差在"] * 4))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
explain(text=tf.constant([sys.argv[2]] * 1024))
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


@pytest.mark.slow
def test_explaining_a_big_batch_keeps_the_memory_of_one_sentence(planted_export) -> None:
    import os
    import subprocess
    import sys

    _, target = planted_export
    run = subprocess.run(
        [sys.executable, "-c", _PEAK_GROWTH, str(target), FILLER],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    # 1024 sentences × 32 steps of the whole model at once would take gigabytes.
    assert int(run.stdout.strip().splitlines()[-1]) < 256  # MiB
