"""How `tfmaas predict` and `tfmaas explain` reach a served model: one set of flags (gRPC
target or REST URL, model and version, timeouts, and a token and CA for a guarded model) and
the client they open."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any

from tfmaas.errors import UserError

# A ServiceAccount token is about 1 KiB; anything near this is not one.
MAX_TOKEN_BYTES = 64 * 1024
MAX_CA_BYTES = 1024 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sentences", nargs="+", metavar="SENTENCE")
    parser.add_argument("--target", default="localhost:8500", help="gRPC HOST:PORT or dns:///…")
    parser.add_argument("--rest", metavar="URL", help="use the REST API at URL instead of gRPC")
    parser.add_argument("--model", required=True, help="model name")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--version", type=int, help="a specific version")
    choice.add_argument("--label", help="a version label, e.g. stable or canary")
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


def read_token(path: str) -> str:
    """The token in `path`, stripped; errors name the file, never its content."""
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
    try:
        with open(path, "rb") as ca_file:
            data = ca_file.read(MAX_CA_BYTES + 1)
    except OSError as exc:
        raise UserError(f"--ca-file {path}: cannot read it ({exc.strerror})") from None
    if len(data) > MAX_CA_BYTES:
        raise UserError(f"--ca-file {path}: larger than {MAX_CA_BYTES} bytes")
    return data


@contextlib.contextmanager
def client(args: argparse.Namespace) -> Iterator[Any]:
    """A RestClient (with --rest) or a GrpcClient, both with `predict` and `explain`."""
    token = read_token(args.token_file) if args.token_file else None
    if args.rest:
        from tfmaas.client.rest_client import RestClient

        yield RestClient(
            args.rest, timeout=args.timeout, retries=args.retries, token=token, ca_file=args.ca_file
        )
        return
    from tfmaas.client.grpc_client import GrpcClient

    root_certificates = read_ca(args.ca_file) if args.ca_file else None
    with GrpcClient(
        args.target,
        timeout=args.timeout,
        retries=args.retries,
        token=token,
        root_certificates=root_certificates,
    ) as grpc_client:
        yield grpc_client
