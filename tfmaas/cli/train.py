"""`tfmaas train`: what a ModelService's training Job runs (contract 5 of the design)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from tfmaas.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model version and publish it to a model store",
        description=(
            "Train the model a ModelService's spec.training describes, evaluate it on a held-out "
            "split, and publish it as <store>/<version>/ (SavedModel, metrics.json, "
            "model_card.json). S3 credentials come from AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL and AWS_REGION; TF_CONFIG names the "
            "workers of a multi-worker run."
        ),
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", required=True, help="the model's name (the ModelService's)")
    parser.add_argument(
        "--version",
        type=int,
        default=None,
        help="version number to publish (default: the store's latest + 1)",
    )
    parser.add_argument(
        "--store", required=True, help="model store URI: s3://bucket/prefix or file:///abs/path"
    )
    parser.add_argument(
        "--training-json",
        required=True,
        metavar="JSON_OR_@FILE",
        help="spec.training as JSON, or @path to a file holding it",
    )
    parser.add_argument(
        "--termination-log",
        default=None,
        metavar="PATH",
        help="where to write the result as compact JSON (default /dev/termination-log, "
        "written only inside a pod)",
    )


def load_training_json(value: str) -> dict[str, Any]:
    source = "--training-json"
    text = value
    if value.startswith("@"):
        path = Path(value[1:])
        source = f"--training-json file {path}"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot read {source}: {exc.strerror}; check the path") from None
        except UnicodeDecodeError:
            raise UserError(f"{source} is not UTF-8 text; save it as UTF-8 JSON") from None
    try:
        training = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{source} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            "pass spec.training as a JSON object"
        ) from None
    if not isinstance(training, dict):
        kind = type(training).__name__
        raise UserError(f"{source} must be a JSON object (spec.training), not a {kind}")
    return training


def run(args: argparse.Namespace) -> int:
    # TensorFlow's C++ start-up chatter buries the epoch lines in a Job's log.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    if not getattr(args, "verbose", False):
        for noisy in ("absl", "tensorflow"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    from tfmaas.trainer.entrypoint import (
        DEFAULT_TERMINATION_LOG,
        failure_message,
        train_and_publish,
        write_termination_message,
    )

    termination_log = args.termination_log or DEFAULT_TERMINATION_LOG

    def log(line: str) -> None:
        print(line, flush=True)

    try:
        training = load_training_json(args.training_json)
        result = train_and_publish(
            training,
            name=args.name,
            store_uri=args.store,
            version=args.version,
            log=log,
        )
    except BaseException as exc:
        if not isinstance(exc, KeyboardInterrupt | SystemExit):
            write_termination_message(termination_log, failure_message(exc))
        raise
    message = result.termination_message()
    write_termination_message(termination_log, message)
    print(message, file=sys.stdout, flush=True)
    return 0
