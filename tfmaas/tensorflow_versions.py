"""TensorFlow versions, compared: a SavedModel exported by a newer TensorFlow than a server's
may use an op (or op version) that server lacks, and then fails to load there."""

from __future__ import annotations

import re

# major.minor.patch and an optional pre-release or local suffix ("-rc1", "-dev20260101",
# "+cpu"); bounded, as it comes from pods and chart values.
_VERSION = re.compile(r"(\d{1,4})\.(\d{1,4})\.(\d{1,4})(?:[-+.][0-9A-Za-z.+-]{1,32})?")


def parse_version(text: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) of a TensorFlow version string; None if it is not one."""
    match = _VERSION.fullmatch(text)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def newer_than(exported: str, serving: str) -> bool:
    """Whether `exported` is a newer TensorFlow release than `serving`. Only major.minor
    counts: patch releases add no ops. False when either is not a version."""
    left, right = parse_version(exported), parse_version(serving)
    if left is None or right is None:
        return False
    return left[:2] > right[:2]
