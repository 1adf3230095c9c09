"""The pure parts of building tool binaries: cache keys, command lines, lookups."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfmaas.dev import tools
from tfmaas.errors import UserError

MODULE_FILES = {"go.mod": b"module x\n", "go.sum": b"a v1 h1:x\n"}


def test_cache_key_names_component_and_version() -> None:
    key = tools.cache_key(tools.TOOLS["kube-apiserver"], MODULE_FILES)
    assert key.startswith(f"kubernetes-{tools.KUBERNETES_VERSION}-")


def test_cache_key_changes_when_go_sum_changes() -> None:
    tool = tools.TOOLS["etcd"]
    changed = {**MODULE_FILES, "go.sum": b"a v2 h1:y\n"}
    assert tools.cache_key(tool, MODULE_FILES) != tools.cache_key(tool, changed)


def test_cache_key_differs_between_programs_of_one_module() -> None:
    keys = {tools.cache_key(tools.TOOLS[name], MODULE_FILES) for name in ("kubectl", "etcd")}
    assert len(keys) == 2


def test_cache_key_is_stable() -> None:
    tool = tools.TOOLS["minio"]
    assert tools.cache_key(tool, MODULE_FILES) == tools.cache_key(tool, dict(MODULE_FILES))


def test_binary_path_lives_in_the_configured_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TFMAAS_CACHE_DIR", str(tmp_path))
    path = tools.binary_path("kubectl")
    assert path.name == "kubectl"
    assert path.parent.parent == tmp_path / "bin"


def test_every_tool_has_a_pinned_tools_module() -> None:
    root = tools.tools_modules_root()
    for tool in tools.TOOLS.values():
        go_mod = (root / tool.module / "go.mod").read_text()
        assert (root / tool.module / "go.sum").is_file()
        module_path = tool.package.split("/cmd/")[0]
        assert module_path in go_mod, f"{tool.name}: {module_path} not required by {go_mod[:60]}"


def test_kubernetes_pin_matches_the_tools_module() -> None:
    go_mod = (tools.tools_modules_root() / "kubernetes" / "go.mod").read_text()
    assert f"k8s.io/kubernetes {tools.KUBERNETES_VERSION}" in go_mod
    assert f"go.etcd.io/etcd/server/v3 {tools.ETCD_VERSION}" in go_mod
    # Every staging module is replaced by the release's own v0 tag.
    minor = tools.KUBERNETES_VERSION.removeprefix("v1.")
    assert f"k8s.io/api => k8s.io/api v0.{minor}" in go_mod


def test_kubernetes_ldflags_stamp_the_release_version() -> None:
    flags = tools.TOOLS["kubectl"].ldflags_for("2026-01-01T00:00:00Z")
    assert f"k8s.io/component-base/version.gitVersion={tools.KUBERNETES_VERSION}" in flags
    assert f"k8s.io/client-go/pkg/version.gitVersion={tools.KUBERNETES_VERSION}" in flags
    assert "k8s.io/component-base/version.gitMinor=35" in flags
    assert "k8s.io/component-base/version.buildDate=2026-01-01T00:00:00Z" in flags
    assert "gitTreeState=clean" in flags


def test_go_build_command_is_static_trimmed_and_bounded() -> None:
    tool = tools.TOOLS["etcd"]
    command = tools.go_build_command(Path("/go/bin/go"), tool, Path("/out/etcd"), "d", jobs=2)
    assert command[:2] == ["/go/bin/go", "build"]
    assert "-p=2" in command and "-trimpath" in command and "-mod=readonly" in command
    assert command[-3:] == ["-o", "/out/etcd", "go.etcd.io/etcd/server/v3"]
    env = tools.go_build_env({"GOFLAGS": "-mod=mod", "PATH": "/bin"})
    assert env["CGO_ENABLED"] == "0"
    assert "GOFLAGS" not in env and env["PATH"] == "/bin"


def test_unknown_tool_is_a_user_error() -> None:
    with pytest.raises(UserError, match="known tools: minio"):
        tools.lookup("kubeadm")


def test_missing_go_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TFMAAS_GO", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(tools, "_FALLBACK_GO", str(tmp_path / "no-go-here"))
    with pytest.raises(UserError, match="install Go"):
        tools.find_go()


def test_a_wrong_tfmaas_go_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TFMAAS_GO", str(tmp_path / "no-go-here"))
    with pytest.raises(UserError, match=r"TFMAAS_GO is .*no-go-here"):
        tools.find_go()


def test_all_tools_are_known_and_start_with_minio() -> None:
    assert tools.ALL_TOOLS[0] == "minio"
    assert set(tools.ALL_TOOLS) <= set(tools.TOOLS)


def test_prune_removes_only_superseded_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TFMAAS_CACHE_DIR", str(tmp_path))
    current = tools.binary_path("etcd")
    current.parent.mkdir(parents=True)
    current.write_text("binary")
    stale = tmp_path / "bin" / "etcd-v3.5.0-000000000000"
    stale.mkdir()
    (stale / "etcd").write_text("old")
    assert tools.prune() == [stale]
    assert current.is_file() and not stale.exists()
