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
    parser.add_argument(
        "--token-file",
        metavar="PATH",
        help="send the token in PATH as 'authorization: Bearer' (a ModelService with "
        "access.mode kubernetes), e.g. a projected ServiceAccount token",
    )
    parser.add_argument(
        "--ca-file", metavar="PATH", help="use TLS, trusting the PEM CA bundle in PATH"
    )
    parser.set_defaults(handler=run)


# A ServiceAccount token is about 1 KiB; anything near this is not one.
MAX_TOKEN_BYTES = 64 * 1024


def read_token(path: str) -> str:
    """The token in `path`, stripped; errors name the file, never its content."""
    from tfmaas.errors import UserError

    try:
        with open(path, "rb") as token_file:
            data = token_file.read(MAX_TOKEN_BYTES + 1)
    except OSError as exc:
        raise UserError(f"--token-file {path}: cannot read it ({exc.strerror})") from None
    if len(data) > MAX_TOKEN_BYTES:
        raise UserError(f"--token-file {path}: larger than {MAX_TOKEN_BYTES} bytes")
    token = data.decode("ascii", "replace").strip()
    if not token or any(c.isspace() or not c.isprintable() for c in token):
        raise UserError(f"--token-file {path}: not a bearer token (empty, or spaces inside)")
    return token


def read_ca(path: str) -> bytes:
    from tfmaas.errors import UserError

    try:
        with open(path, "rb") as ca_file:
            return ca_file.read(1024 * 1024)
    except OSError as exc:
        raise UserError(f"--ca-file {path}: cannot read it ({exc.strerror})") from None


def run(args: argparse.Namespace) -> int:
    from tfmaas.client import PredictionError

    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    token = read_token(args.token_file) if args.token_file else None
    try:
        if args.rest:
            from tfmaas.client.rest_client import RestClient

            rest = RestClient(
                args.rest,
                timeout=args.timeout,
                retries=args.retries,
                token=token,
                ca_file=args.ca_file,
            )
            predictions = rest.predict(
                args.model, args.sentences, version=args.version, label=args.label, classes=classes
            )
        else:
            from tfmaas.client.grpc_client import GrpcClient

            root_certificates = read_ca(args.ca_file) if args.ca_file else None
            with GrpcClient(
                args.target,
                timeout=args.timeout,
                retries=args.retries,
                token=token,
                root_certificates=root_certificates,
            ) as client:
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
