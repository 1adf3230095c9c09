"""The `tfmaas` command: one entry point, one module per command group.

Each command group lives in its own module under `tfmaas.cli` and exposes
`register(subparsers)`. Groups import their heavy dependencies (TensorFlow,
kopf, grpc) inside their handlers, so `tfmaas --help` stays instant and an
image that lacks an extra still runs the commands it has.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from tfmaas import __version__
from tfmaas.errors import USER_ERROR_EXIT_CODE, UserError

# Order is the order shown in `tfmaas --help`.
COMMAND_MODULES = (
    "tfmaas.cli.local",
    "tfmaas.cli.train",
    "tfmaas.cli.serve",
    "tfmaas.cli.predict",
    "tfmaas.cli.explain",
    "tfmaas.cli.store",
    "tfmaas.cli.operator",
    "tfmaas.cli.dev",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfmaas",
        description="Model-as-a-Service for TensorFlow: train, version and serve models.",
    )
    parser.add_argument("--version", action="version", version=f"tfmaas {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # A command group whose module is absent is simply not offered; a group
            # whose own imports are broken must fail loudly.
            if exc.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except UserError as exc:
        print(f"tfmaas: error: {exc}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
