import json
from pathlib import Path

import pytest

from tests.unit.test_storage_local import make_model_dir
from tfmaas.cli.main import main


def test_publish_list_pull_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"file://{tmp_path / 'store'}"
    assert (
        main(["store", "publish", uri, "--version", "1", str(make_model_dir(tmp_path / "a", 0.8))])
        == 0
    )
    with_report = make_model_dir(tmp_path / "b", 0.9)
    (with_report / "report.html").write_text("<!DOCTYPE html><html></html>")
    assert main(["store", "publish", uri, "--version", "2", str(with_report)]) == 0
    capsys.readouterr()

    assert main(["store", "list", uri]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "VERSION", "PUBLISHED", "ACCURACY", "F1", "SIZE", "LINEAGE", "REPORT",
    ]  # fmt: skip
    assert [line.split()[0] for line in lines[1:]] == ["1", "2"]
    assert lines[2].split()[2:4] == ["0.9000", "0.8900"]
    assert lines[1].split()[-1] == "-"  # published before reports existed
    assert lines[2].split()[-1] == f"{uri}/2/report.html"

    assert main(["store", "list", uri, "-o", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["version"] for r in rows] == [1, 2] and rows[0]["accuracy"] == 0.8
    assert rows[0]["report"] is None and rows[1]["report"] == f"{uri}/2/report.html"

    dest = tmp_path / "models"
    assert main(["store", "pull", uri, "--versions", "1,2", "--dest", str(dest)]) == 0
    assert capsys.readouterr().out.count("pulled version") == 2
    assert main(["store", "pull", uri, "--versions", "2,1", "--dest", str(dest)]) == 0
    assert capsys.readouterr().out.count("kept version") == 2
    assert (dest / "1" / "saved_model.pb").is_file() and (dest / "2" / "saved_model.pb").is_file()

    assert main(["store", "pull", uri, "--versions", "latest", "--dest", str(tmp_path / "l")]) == 0
    assert (tmp_path / "l" / "2").is_dir()


def test_cli_user_mistakes_exit_2_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"file://{tmp_path / 'store'}"
    model = make_model_dir(tmp_path / "a")
    assert main(["store", "publish", uri, "--version", "1", str(model)]) == 0
    capsys.readouterr()

    assert main(["store", "publish", uri, "--version", "1", str(model)]) == 2
    assert "version 1 already exists" in capsys.readouterr().err
    assert main(["store", "publish", uri, "--version", "0", str(model)]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["store", "pull", uri, "--versions", "1,5", "--dest", str(tmp_path / "d")]) == 2
    assert "version 5 is not published" in capsys.readouterr().err
    assert not (tmp_path / "d" / "1").exists()
    assert main(["store", "pull", uri, "--versions", "5", "--dest", str(tmp_path / "d")]) == 2
    assert "published versions: 1" in capsys.readouterr().err
    assert main(["store", "list", "store-without-scheme"]) == 2
    assert "no scheme" in capsys.readouterr().err


def test_list_of_an_empty_store_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "list", f"file://{tmp_path}"]) == 0
    assert "no published versions" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("card", "shown"),
    [
        ({}, "-"),
        ({"compression": {"quantize": "none", "pruneVocabulary": None}}, "-"),
        (
            {
                "teacher": {"version": 3},
                "compression": {"quantize": "int8", "pruneVocabulary": 500},
            },
            "distilled from v3, int8, vocabulary 500",
        ),
        # A card tampered with or from elsewhere: odd shapes show nothing, never its text.
        (
            {"teacher": "v3", "compression": {"quantize": "\x1b[31mint2", "pruneVocabulary": -1}},
            "-",
        ),
        ({"teacher": {"version": True}, "compression": []}, "-"),
    ],
)
def test_lineage_shows_teacher_and_compression_and_nothing_it_does_not_know(
    card: dict, shown: str
) -> None:
    from tfmaas.cli.store import lineage, lineage_text

    assert lineage_text(*lineage(card)) == shown
