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


# What the operator image does not install: the `tfmaas` command there must still start, to run
# the operator and, as the serving pods' storage initializer, `tfmaas store pull`.
NOT_IN_THE_OPERATOR_IMAGE = ("grpc", "grpc_health", "numpy", "tensorflow", "tensorflow_serving")
_BLOCKING_IMPORTS = """
import importlib.abc, sys
blocked = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (not in the operator image)")
sys.meta_path.insert(0, Block())
from tfmaas.cli.main import build_parser
parser = build_parser()
for command in (["operator", "run", "--help"], ["store", "pull", "--help"]):
    try:
        parser.parse_args(command)
    except SystemExit as exit:
        assert exit.code == 0, command
import tfmaas.operator.handlers
"""


def test_the_cli_and_the_operator_start_without_what_only_other_images_install() -> None:
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-c", _BLOCKING_IMPORTS, ",".join(NOT_IN_THE_OPERATOR_IMAGE)],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
