"""`tfmaas serve`: the embedded TF-Serving-compatible model server."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    from tfmaas.serving.flags import add_arguments

    parser = subparsers.add_parser(
        "serve",
        help="serve SavedModels over TF Serving's gRPC and REST APIs",
        description=(
            "Serve SavedModel versions from a base path or a model config file. Accepts "
            "tensorflow_model_server's flags (--flag=value) with the same meaning."
        ),
        allow_abbrev=False,
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tfmaas.serving.flags import from_namespace
    from tfmaas.serving.server import ModelServer

    server = ModelServer(from_namespace(args))
    server.stop_on_signals()
    server.start()
    try:
        server.wait()
    finally:
        server.stop()  # drains the calls in flight
    if server.failure:
        print(f"tfmaas serve: {server.failure}", file=sys.stderr)
        return 1
    return 0
