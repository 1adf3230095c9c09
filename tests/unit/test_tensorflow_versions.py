"""Comparing the TensorFlow that exported a version with the serving image's."""

from __future__ import annotations

import pytest

from tfmaas.tensorflow_versions import newer_than, parse_version


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("2.21.0", (2, 21, 0)),
        ("2.22.0-dev20260101", (2, 22, 0)),
        ("2.20.0rc1", None),
        ("2.20", None),
        ("", None),
        ("2.20.0 ", None),
        ("2.20.0\n<script>", None),
        ("99999.0.0", None),
        ("2.20.0-" + "x" * 40, None),
        ("v2.20.0", None),
    ],
)
def test_parse_version_takes_only_plain_versions(text: str, parsed: object) -> None:
    assert parse_version(text) == parsed


@pytest.mark.parametrize(
    ("exported", "serving", "newer"),
    [
        ("2.21.0", "2.20.0", True),
        ("3.0.0", "2.20.0", True),
        ("2.20.1", "2.20.0", False),  # a patch release adds no ops
        ("2.20.0", "2.20.0", False),
        ("2.18.0", "2.20.0", False),
        ("2.9.0", "2.10.0", False),  # numbers, not strings
        ("2.10.0", "2.9.0", True),
        ("garbage", "2.20.0", False),
        ("2.21.0", "", False),
    ],
)
def test_newer_than_compares_major_and_minor(exported: str, serving: str, newer: bool) -> None:
    assert newer_than(exported, serving) is newer
