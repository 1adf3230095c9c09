"""`tfmaas operator`: run the ModelService operator (kopf), or print the CRD it serves.

`run` watches the given namespaces (or all), answers liveness at --liveness, and exposes its
own Prometheus metrics on --metrics-port. Defaults for the objects it creates (trainer and
serving images, default store endpoint) come from TFMAAS_* environment variables or the
YAML file named by TFMAAS_OPERATOR_CONFIG.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from tfmaas.errors import UserError
from tfmaas.logs import FORMATS


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "operator", help="run the ModelService operator", description=__doc__
    )
    commands = parser.add_subparsers(dest="operator_command", metavar="ACTION", required=True)

    run = commands.add_parser("run", help="run the operator until interrupted")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable); default: all namespaces",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)"
    )
    peering = run.add_mutually_exclusive_group()
    peering.add_argument(
        "--peering",
        metavar="NAME",
        help="coordinate with other replicas through this kopf peering object",
    )
    peering.add_argument(
        "--standalone", action="store_true", help="run alone, without peering (the default)"
    )
    run.add_argument(
        "--liveness",
        metavar="URL",
        help="serve kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz",
    )
    run.add_argument(
        "--health-port",
        type=int,
        metavar="PORT",
        help="shorthand for --liveness=http://0.0.0.0:PORT/healthz",
    )
    run.add_argument(
        "--metrics-port", type=int, metavar="PORT", help="serve Prometheus /metrics on this port"
    )
    run.add_argument(
        "--metrics-address", default="0.0.0.0", metavar="ADDR", help="address for --metrics-port"
    )
    run.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="operator log level",
    )
    run.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="text lines, or one JSON object per line (with the ModelService's namespace/name)",
    )
    run.set_defaults(handler=run_operator)

    crd = commands.add_parser("crd", help="print the ModelService CRD (kubectl apply -f -)")
    crd.set_defaults(handler=print_crd)


def print_crd(args: argparse.Namespace) -> int:
    from tfmaas.api import crd_text

    sys.stdout.write(crd_text())
    return 0


def liveness_url(args: argparse.Namespace) -> str | None:
    if args.liveness and args.health_port:
        raise UserError("give --liveness or --health-port, not both")
    if args.health_port:
        return f"http://0.0.0.0:{args.health_port}/healthz"
    return str(args.liveness) if args.liveness else None


def run_operator(args: argparse.Namespace) -> int:
    import asyncio

    import kopf

    from tfmaas import logs

    # Importing the handlers registers them with kopf and reads the operator config.
    from tfmaas.operator import handlers, metrics

    del handlers
    logs.configure(args.log_format)
    logging.getLogger().setLevel(args.log_level.upper())
    for noisy in ("kubernetes.client.rest", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    liveness = liveness_url(args)
    if args.metrics_port:
        metrics.serve(args.metrics_port, args.metrics_address)
    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            standalone=not args.peering,
            peering_name=args.peering,
            liveness_endpoint=liveness,
            memo=kopf.Memo(namespaced=bool(args.namespace)),
        )
    )
    return 0
