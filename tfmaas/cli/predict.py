"""`tfmaas predict`: classify sentences with a served model over gRPC (or REST)."""

from __future__ import annotations

import argparse
import json
import sys

from tfmaas.cli import serving_target


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="classify sentences with a served model",
        description=(
            "Send sentences to a TF Serving-compatible server and print one JSON line per "
            "sentence: label, class_id and a score per class."
        ),
    )
    serving_target.add_arguments(parser)
    parser.add_argument(
        "--classes", help="comma-separated class names in model order (from the model card)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tfmaas.client import PredictionError

    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    try:
        with serving_target.client(args) as client:
            predictions = client.predict(
                args.model, args.sentences, version=args.version, label=args.label, classes=classes
            )
    except PredictionError as exc:
        print(f"tfmaas: prediction failed: {exc}", file=sys.stderr)
        return 1
    for sentence, prediction in zip(args.sentences, predictions, strict=True):
        print(json.dumps({"text": sentence, **prediction.as_dict()}, ensure_ascii=False))
    return 0
