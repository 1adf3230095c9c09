"""The README's cluster quickstart, read as the integration and e2e tests run it: the helm
flags are the ones `make images` prints, and the sample is the CPU one on the demo store."""

from __future__ import annotations

import pytest

from tests.fixtures.quickstart import (
    PLACEHOLDER,
    Command,
    quickstart_commands,
    substituted,
)
from tfmaas.dev.release_images import main

REGISTRY = "registry.invalid:5000/team"


def _helm_install() -> Command:
    (install,) = [c for c in quickstart_commands() if c.argv[:2] == ("helm", "install")]
    return install


def test_the_quickstart_is_the_commands_the_tests_run() -> None:
    argv = [c.argv[:2] for c in quickstart_commands()]
    assert argv[:2] == [("make", "images"), ("helm", "install")]
    assert ("kubectl", "apply") in argv and ("kubectl", "wait") in argv
    assert ("kubectl", "create") not in argv  # the demo store gives the sample its Secret
    apply = next(c for c in quickstart_commands() if c.argv[:2] == ("kubectl", "apply"))
    assert apply.argv[2:] == ("-f", "deploy/samples/sentiment.yaml")
    background = [c for c in quickstart_commands() if c.background]
    assert [c.argv[1] for c in background] == ["port-forward"]


def test_the_helm_flags_are_what_make_images_prints(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dry-run", "--registry", REGISTRY]) == 0
    printed = set(capsys.readouterr().out.split())
    install = substituted(_helm_install(), registry=REGISTRY)
    sets = [w for w in install.argv if ".repository=" in w]
    assert len(sets) == 3
    for value in sets:
        assert f"--set={value}" in printed, value
    assert "demoStore.enabled=true" in install.argv


def test_substitution_replaces_only_the_registry() -> None:
    install = _helm_install()
    assert sum(PLACEHOLDER in w for w in install.argv) == 3
    plain = substituted(install, registry=REGISTRY)
    assert not any(PLACEHOLDER in w for w in plain.argv)
    assert [w for w in plain.argv if REGISTRY not in w] == [
        w for w in install.argv if PLACEHOLDER not in w
    ]
    local = {
        "image": {"repository": "tfmaas.local/operator", "tag": "k1", "pullPolicy": "Never"},
        "defaults.trainer.image": {"repository": "tfmaas.local/trainer", "tag": "k2"},
        "demoStore.image": {"repository": "tfmaas.local/demo-store", "tag": "k3"},
    }
    built = substituted(install, registry=REGISTRY, images=local)
    assert "image.pullPolicy=Never" in built.argv
    assert "demoStore.image.tag=k3" in built.argv
    assert not any(REGISTRY in w or PLACEHOLDER in w for w in built.argv)


def test_a_broken_block_is_refused() -> None:
    text = "\n## Quickstart on a cluster\n\n```sh\nhelm install x \\\n  --set 'a=b\n```\n"
    with pytest.raises(ValueError):
        quickstart_commands(text)
