"""Log output for long-running commands (`tfmaas operator run`, `tfmaas serve`): the usual text
lines, or one JSON object per line for log collectors (`--log-format json`).

JSON lines carry time, level, logger and message; lines about a Kubernetes object also carry
its namespace and name, taken from the `k8s_ref` record attribute that kopf's object loggers
set (the operator's own lines pass it with `extra=object_ref(...)`). json.dumps escapes
newlines, so a message can never forge a second line.

JSON lines go to stdout, which nothing else writes to: TensorFlow's C++ runtime writes its own
absl lines to stderr (before absl is initialised, whatever TF_CPP_MIN_LOG_LEVEL says), and
those cannot be reformatted. A collector reads stdout as JSON and stderr as text.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any

FORMATS = ("text", "json")


def object_ref(*, namespace: str, name: str, kind: str = "ModelService") -> dict[str, Any]:
    """`extra=` for a log call about one object, in the shape kopf's object loggers use."""
    return {"k8s_ref": {"kind": kind, "namespace": namespace, "name": name}}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, dict):
            for key in ("kind", "namespace", "name"):
                if ref.get(key):
                    line[key] = str(ref[key])
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure(log_format: str) -> None:
    """Log in this format from now on: text to stderr (as the `tfmaas` entry point set up),
    or JSON to stdout."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    if log_format == "text":
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Python's warnings would otherwise be text lines on stderr.
    logging.captureWarnings(True)
