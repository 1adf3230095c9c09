"""Every importable folder ships: a subpackage missing from pyproject's `packages` list is left
out of wheels and images (the operator image once crashed on tfmaas.operator.manifests)."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_listed_in_pyproject() -> None:
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    folders = {folder: Path(path) for folder, path in tool["package-dir"].items()}
    found = set()
    for name, path in folders.items():
        for init in (ROOT / path).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / path)
            if "__pycache__" in relative.parts:
                continue
            dotted = ".".join((name, *relative.parts)) if relative.parts else name
            # A folder mapped on its own (tfmaas.operator inside tfmaas/) is found via its map.
            if any(dotted.startswith(other + ".") or dotted == other for other in folders
                   if other != name and other.startswith(name + ".")):  # fmt: skip
                continue
            found.add(dotted)
    assert found - listed == set(), "add these to [tool.setuptools] packages"
