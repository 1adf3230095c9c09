"""`tfmaas serve`: the embedded TF-Serving-compatible model server."""

from __future__ import annotations

import argparse
import logging

from tfmaas.logs import FORMATS, configure


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
    # tfmaas's own, not a server flag: it changes no answer, only how the log reads.
    parser.add_argument(
        "--log-format",
        "--log_format",
        choices=FORMATS,
        default="text",
        help="text lines, or one JSON object per line",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tfmaas.serving.flags import from_namespace
    from tfmaas.serving.server import ModelServer

    configure(args.log_format)
    server = ModelServer(from_namespace(args))
    server.stop_on_signals()
    server.start()
    try:
        server.wait()
    finally:
        server.stop()  # drains the calls in flight
    if server.failure:
        # Through logging, so that a JSON log stays one object per line to the end.
        logging.getLogger(__name__).error("tfmaas serve: %s", server.failure)
        return 1
    return 0
