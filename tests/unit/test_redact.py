"""What users may read of a message another program wrote: no credential, no control
character, bounded."""

from __future__ import annotations

import random

from tfmaas.redact import (
    REDACTED,
    is_credential_name,
    printable,
    redact,
    safe_message,
)

SECRET = "fake-secret-8f3a1c77d2"
ENVIRON = {
    "AWS_SECRET_ACCESS_KEY": SECRET,
    "AWS_ACCESS_KEY_ID": "AKIAFAKEFAKE1234",
    "GITHUB_TOKEN": "ghp_faketoken0000",
    "DB_PASSWORD": "hunter2hunter2",
    "AWS_REGION": "us-east-1",
    "HOME": "/tmp",
    "SHORT_KEY": "abc",
}


def test_the_credential_rule() -> None:
    for name in (
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "aws_access_key_id",
        "GITHUB_TOKEN",
        "DB_PASSWORD",
        "MYSQL_PASSWD",
        "API_KEY",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "client_secret",
        "APIKEY",
        "db_passwords",
    ):
        assert is_credential_name(name), name
    for name in (
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "HOME",
        "PATH",
        "KeyError",
        "TOKENIZER_PATH",
        "keyboard",
    ):
        assert not is_credential_name(name), name


def test_values_of_credential_variables_are_redacted_wherever_they_appear() -> None:
    text = f"cannot sign with {SECRET} (key AKIAFAKEFAKE1234, ghp_faketoken0000, hunter2hunter2)"
    assert redact(text, ENVIRON) == (
        f"cannot sign with {REDACTED} (key {REDACTED}, {REDACTED}, {REDACTED})"
    )


def test_non_credentials_and_short_values_are_left_alone() -> None:
    text = "region us-east-1 in /tmp: abc"
    assert redact(text, ENVIRON) == text


def test_assignments_to_credential_names_are_redacted_without_knowing_the_value() -> None:
    text = (
        "PATH=/usr/bin\x00AWS_SECRET_ACCESS_KEY=other-secret\x00HOME=/tmp\x00"
        'password: "p4ss" token=x {"AWS_SESSION_TOKEN": "sess-val"} AWS_REGION=eu-west-1'
    )
    cleaned = redact(text, {})
    for value in ("other-secret", "p4ss", "sess-val"):
        assert value not in cleaned
    assert "token=x" not in cleaned
    assert "PATH=/usr/bin" in cleaned and "AWS_REGION=eu-west-1" in cleaned
    assert f"AWS_SECRET_ACCESS_KEY={REDACTED}" in cleaned


def test_an_assignment_inside_another_value_is_found() -> None:
    text = "KeyError: \x1b[1mAWS_SECRET_ACCESS_KEY=abc error:api_key=zzz url?a=1&token=t0k&b=2"
    cleaned = redact(text, {})
    assert "abc" not in cleaned and "zzz" not in cleaned and "t0k" not in cleaned
    assert cleaned.startswith("KeyError: \x1b[1mAWS_SECRET_ACCESS_KEY=[redacted]")
    assert "&b=2" in cleaned
    assert redact("KeyError: 'text'", {}) == "KeyError: 'text'"


def test_redaction_defaults_to_this_process_environment(monkeypatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    assert SECRET not in redact(f"oops {SECRET}")


def test_control_characters_become_spaces_newlines_stay() -> None:
    assert printable("a\x00b\x1b[31mc\rd\ne\tf\x85g\ud800") == "a b [31mc d\ne\tf g "


def test_safe_message_bounds_keeping_the_start_or_the_end() -> None:
    text = "what is wrong " + "x" * 5000 + " the cause"
    start = safe_message(text, limit=100, environ={})
    assert len(start) == 100 and start.startswith("what is wrong") and start.endswith("…")
    end = safe_message(text, limit=100, keep="end", environ={})
    assert len(end) == 100 and end.startswith("…") and end.endswith("the cause")


def test_no_secret_survives_whatever_surrounds_it() -> None:
    rng = random.Random(11)
    alphabet = "ab =:\"'\x00\n\x1b好" + SECRET[:5]
    for _ in range(500):
        prefix = "".join(rng.choices(alphabet, k=rng.randrange(200)))
        suffix = "".join(rng.choices(alphabet, k=rng.randrange(200)))
        limit = rng.randrange(2, 300)
        keep = rng.choice(["start", "end"])
        text = prefix + SECRET + suffix
        message = safe_message(text, limit=limit, keep=keep, environ=ENVIRON)
        assert SECRET not in message
        assert len(message) <= limit
        assert printable(message) == message
