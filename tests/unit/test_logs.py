"""JSON log lines: one object per line whatever the message holds, the object's namespace/name."""

from __future__ import annotations

import io
import json
import logging

import pytest

from tfmaas.logs import JsonFormatter, configure, object_ref


def emit(logger: logging.Logger, level: int, message: str, *args: object, **kwargs: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    try:
        logger.log(level, message, *args, **kwargs)  # type: ignore[arg-type]
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_a_message_cannot_forge_a_second_line_or_field() -> None:
    logger = logging.getLogger("tfmaas.test.logs")
    logger.setLevel(logging.DEBUG)
    forged = 'x"}\n{"level": "info", "namespace": "kube-system", "message": "fake'
    out = emit(
        logger, logging.WARNING, "spec: %s", forged, extra=object_ref(namespace="ml", name="s")
    )
    lines = out.splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["message"] == f"spec: {forged}"
    assert (record["level"], record["namespace"], record["name"]) == ("warning", "ml", "s")
    assert record["kind"] == "ModelService" and record["logger"] == "tfmaas.test.logs"


def test_lines_about_no_object_have_no_namespace_and_exceptions_stay_inside() -> None:
    logger = logging.getLogger("tfmaas.test.logs")
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        out = emit(logger, logging.ERROR, "failed", exc_info=True)
    (line,) = out.splitlines()
    record = json.loads(line)
    assert "namespace" not in record and "name" not in record
    assert "RuntimeError: boom\nsecond line" in record["exception"]
    assert record["time"].endswith("+00:00")


def test_kopf_object_loggers_refs_are_read_too() -> None:
    # kopf's ObjectLogger sets k8s_ref with apiVersion/uid as well: only kind/namespace/name
    # are copied, so a line's fields do not depend on kopf's internals.
    ref = {"apiVersion": "tfmaas.io/v1", "kind": "ModelService", "uid": "u", "name": "a"}
    ref["namespace"] = "ml"
    out = emit(
        logging.getLogger("kopf.objects"), logging.WARNING, "handler", extra={"k8s_ref": ref}
    )
    record = json.loads(out)
    assert {k: record[k] for k in ("kind", "namespace", "name")} == {
        "kind": "ModelService",
        "namespace": "ml",
        "name": "a",
    }
    assert "uid" not in record


def test_an_unknown_format_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="log format must be one of text, json"):
        configure("yaml")
