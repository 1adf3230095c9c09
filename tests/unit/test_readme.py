"""The README is the front door: what it states about the code must stay true."""

from pathlib import Path

from tfmaas.api import reference

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_configuration_reference_matches_the_crd() -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index(reference.START_MARKER)
    end = text.index(reference.END_MARKER) + len(reference.END_MARKER)
    assert text[start:end] == reference.readme_block(), (
        "README's configuration reference is stale: regenerate it with "
        "`python -m tfmaas.api.reference` and paste it between the markers"
    )


def test_every_spec_field_is_documented_in_the_crd() -> None:
    undocumented = [
        path
        for path, schema, _ in reference.fields(reference.open_api_schema()["properties"]["spec"])
        if not schema.get("description")
    ]
    assert not undocumented, (
        f"fields without a description (kubectl explain shows none): {undocumented}"
    )
