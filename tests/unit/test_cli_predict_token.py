"""`tfmaas predict --token-file`: bounded, checked, and never echoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfmaas.cli.serving_target import MAX_TOKEN_BYTES, read_token
from tfmaas.errors import UserError


def test_a_token_file_is_read_stripped(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("eyJhbGciOi.payload.signature\n")
    assert read_token(str(path)) == "eyJhbGciOi.payload.signature"


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (b"", "not a bearer token"),
        (b"secret-part other-part", "not a bearer token"),
        (b"x" * (MAX_TOKEN_BYTES + 1), "larger than"),
    ],
)
def test_bad_token_files_are_refused_without_echoing_them(
    tmp_path: Path, content: bytes, named: str
) -> None:
    path = tmp_path / "token"
    path.write_bytes(content)
    with pytest.raises(UserError, match=named) as caught:
        read_token(str(path))
    assert "secret-part" not in str(caught.value)


def test_a_missing_token_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"--token-file .*cannot read it"):
        read_token(str(tmp_path / "absent"))


@pytest.mark.parametrize("command", ["predict", "explain"])
def test_both_commands_reach_a_guarded_model(command: str) -> None:
    from tfmaas.cli.main import build_parser

    args = build_parser().parse_args(
        [command, "--model", "m", "--token-file", "/t", "--ca-file", "/ca.pem", "好"]
    )
    assert (args.token_file, args.ca_file) == ("/t", "/ca.pem")
