"""Keeping credentials and control characters out of what users read: termination messages,
status, Events and logs.

The rule for what is a credential, in one place: a variable whose name starts with AWS_, or
one of whose _-separated words ends in SECRET, TOKEN, PASSWORD, PASSWD, KEY or CREDENTIAL
(or their plurals; any case: API_KEY, APIKEY, client_secret, GITHUB_TOKEN), except the AWS_
settings the operator renders from the spec itself (region, endpoint), which anyone who can
read the ModelService already sees. Words only end in them: KeyError or TOKENIZER_PATH are
not credentials.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Literal

REDACTED = "[redacted]"
# Shorter values are not searched for: replacing every "1" or "abc" would garble messages,
# and a credential that short is not one. `NAME=value` spellings are redacted whatever the
# value's length.
MIN_SECRET_LENGTH = 6
_NOT_SECRET = frozenset({"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"})
_SECRET_WORDS = ("SECRET", "TOKEN", "PASSWORD", "PASSWD", "KEY", "CREDENTIAL")
# NAME=value, NAME: value, "NAME": "value" and NAME='value', as environments, dotenv files,
# JSON, YAML, URLs and reprs spell them. Only the name and separator are matched, so an
# assignment inside another's value ("error:AWS_SECRET_ACCESS_KEY=...") is still found.
_NAME_AND_SEPARATOR = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)['\"]?\s*[=:]\s*['\"]?")
_VALUE = re.compile(r"[^\s'\",;&\x00]+")
# C0/C1 controls, and lone surrogates, which no encoder accepts.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def is_credential_name(name: str) -> bool:
    upper = name.upper()
    if upper in _NOT_SECRET:
        return False
    if upper.startswith("AWS_"):
        return True
    return any(
        part.endswith(word) or part.endswith(word + "S")
        for part in upper.split("_")
        for word in _SECRET_WORDS
    )


def credential_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of this process's credential variables, longest first."""
    environ = os.environ if environ is None else environ
    values = {
        value
        for name, value in environ.items()
        if is_credential_name(name) and len(value) >= MIN_SECRET_LENGTH
    }
    return sorted(values, key=len, reverse=True)


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """`text` without the value of any credential variable of `environ` (this process's
    environment by default), and without the value of anything spelled like an assignment
    to a credential name (which also covers credentials of other processes)."""
    for secret in credential_values(environ):
        text = text.replace(secret, REDACTED)
    pieces: list[str] = []
    done = 0
    for assignment in _NAME_AND_SEPARATOR.finditer(text):
        if assignment.start() < done or not is_credential_name(assignment["name"]):
            continue
        value = _VALUE.match(text, assignment.end())
        if value is None or value[0] == REDACTED:
            continue
        pieces += [text[done : value.start()], REDACTED]
        done = value.end()
    return "".join([*pieces, text[done:]])


def printable(text: str) -> str:
    """Control characters (NUL, escapes, carriage returns...) as spaces; newlines and tabs
    stay."""
    return _CONTROL.sub(" ", text)


def safe_message(
    text: str,
    *,
    limit: int,
    keep: Literal["start", "end"] = "start",
    environ: Mapping[str, str] | None = None,
) -> str:
    """What may be shown to users of a message another program wrote: redacted, printable
    and at most `limit` characters — its start (an error message says what is wrong first)
    or its end (a log or traceback ends with the cause)."""
    cleaned = printable(redact(text, environ)).strip()
    if len(cleaned) <= limit:
        return cleaned
    return cleaned[: limit - 1] + "…" if keep == "start" else "…" + cleaned[-(limit - 1) :]
