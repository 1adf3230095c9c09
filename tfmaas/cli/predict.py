"""`tfmaas predict`: classify sentences with a served model over gRPC (or REST)."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="classify sentences with a served model",
        description=(
            "Send sentences to a TF Serving-compatible server and print one JSON line per "
            "sentence: label, class_id and a score per class."
        ),
    )
    parser.add_argument("sentences", nargs="+", metavar="SENTENCE")
    parser.add_argument("--target", default="localhost:8500", help="gRPC HOST:PORT or dns:///…")
    parser.add_argument("--rest", metavar="URL", help="use the REST API at URL instead of gRPC")
    parser.add_argument("--model", required=True, help="model name")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--version", type=int, help="a specific version")
    choice.add_argument("--label", help="a version label, e.g. stable or canary")
    parser.add_argument(
        "--classes", help="comma-separated class names in model order (from the model card)"
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per attempt")
    parser.add_argument("--retries", type=int, default=3, help="retries when UNAVAILABLE")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tfmaas.client import PredictionError

    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    try:
        if args.rest:
            from tfmaas.client.rest_client import RestClient

            rest = RestClient(args.rest, timeout=args.timeout, retries=args.retries)
            predictions = rest.predict(
                args.model, args.sentences, version=args.version, label=args.label, classes=classes
            )
        else:
            from tfmaas.client.grpc_client import GrpcClient

            with GrpcClient(args.target, timeout=args.timeout, retries=args.retries) as client:
                predictions = client.predict(
                    args.model,
                    args.sentences,
                    version=args.version,
                    label=args.label,
                    classes=classes,
                )
    except PredictionError as exc:
        print(f"tfmaas: prediction failed: {exc}", file=sys.stderr)
        return 1
    for sentence, prediction in zip(args.sentences, predictions, strict=True):
        print(json.dumps({"text": sentence, **prediction.as_dict()}, ensure_ascii=False))
    return 0
