"""`tfmaas train`: what a ModelService's training Job runs (contract 5 of the design)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from tfmaas.errors import UserError
from tfmaas.redact import safe_message

# A failed run's log keeps the end of its traceback, where the cause is.
ERROR_LOG_CHARS = 8000


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
        "--trial",
        type=int,
        default=None,
        help="run trial N of a hyperparameter search: score on the validation split, "
        "publish nothing",
    )
    parser.add_argument(
        "--tuning-json",
        default=None,
        metavar="JSON",
        help="the search that chose this configuration, for the model card",
    )
    parser.add_argument(
        "--termination-log",
        default=None,
        metavar="PATH",
        help="where to write the result as compact JSON (default /dev/termination-log, "
        "written only inside a pod)",
    )


def quiet_tensorflow(args: argparse.Namespace) -> None:
    """TensorFlow's start-up chatter and absl's INFO lines (one per checkpoint saved) bury the
    epoch lines in a Job's log and a local run's output; --verbose keeps them."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    if not getattr(args, "verbose", False):
        for noisy in ("absl", "tensorflow"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def run(args: argparse.Namespace) -> int:
    quiet_tensorflow(args)
    from tfmaas.api.loader import load_training_spec
    from tfmaas.storage import StoreUnreachableError
    from tfmaas.trainer.checkpointing import TERMINATED_EXIT_CODE, Terminated
    from tfmaas.trainer.entrypoint import (
        DEFAULT_TERMINATION_LOG,
        TrainResult,
        TrialResult,
        failure_message,
        parse_tuning_table,
        run_trial,
        train_and_publish,
        write_termination_message,
    )

    termination_log = args.termination_log or DEFAULT_TERMINATION_LOG

    def log(line: str) -> None:
        print(line, flush=True)

    try:
        training = load_training_spec(args.training_json)
        result: TrainResult | TrialResult
        if args.trial is not None:
            result = run_trial(training, trial=args.trial, log=log)
        else:
            result = train_and_publish(
                training,
                name=args.name,
                store_uri=args.store,
                version=args.version,
                log=log,
                tuning=parse_tuning_table(args.tuning_json),
            )
    except Terminated as exc:
        # The pod is being stopped (preemption, eviction, deletion): the checkpoint is saved,
        # and the Job's next pod resumes from it.
        print(str(exc), file=sys.stderr, flush=True)
        return TERMINATED_EXIT_CODE
    except Exception as exc:
        # The error may quote a data file or a credential; what the Job's log and the
        # termination message show is redacted.
        write_termination_message(termination_log, failure_message(exc))
        if isinstance(exc, StoreUnreachableError):
            # Not the user-error status, which fails the Job at once: a store that did not
            # answer may answer the next pod, which resumes from the last checkpoint.
            print(safe_message(str(exc), limit=ERROR_LOG_CHARS), file=sys.stderr, flush=True)
            return 1
        if isinstance(exc, UserError):
            raise UserError(safe_message(str(exc), limit=ERROR_LOG_CHARS)) from None
        trace = "".join(traceback.format_exception(exc))
        print(safe_message(trace, limit=ERROR_LOG_CHARS, keep="end"), file=sys.stderr, flush=True)
        return 1
    message = result.termination_message()
    write_termination_message(termination_log, message)
    print(message, file=sys.stdout, flush=True)
    return 0
