"""`tfmaas store`: list, pull, publish and clean model versions in a store.

`tfmaas store pull` is what the serving pod's init container runs, so it is idempotent:
a version already complete in DEST is kept and not downloaded again.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from tfmaas.errors import TfmaasError, UserError

_URI_HELP = "the store: s3://bucket/prefix or file:///absolute/path"
_ENDPOINT_HELP = (
    "S3 endpoint URL, e.g. http://minio:9000 (default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, "
    "then AWS itself); credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "store", help="list, pull and publish model versions", description=__doc__
    )
    commands = parser.add_subparsers(dest="store_command", metavar="ACTION", required=True)

    listing = commands.add_parser(
        "list", help="list published versions with their metrics, size and lineage"
    )
    _common(listing)
    listing.add_argument("-o", "--output", choices=("table", "json"), default="table")
    listing.set_defaults(handler=_guard(run_list))

    pull = commands.add_parser("pull", help="download versions into DEST/<version>/ (verified)")
    _common(pull)
    pull.add_argument(
        "--versions",
        required=True,
        help="comma-separated version numbers, e.g. 3,4, or 'latest'",
    )
    pull.add_argument("--dest", required=True, type=Path, help="local directory to fill")
    pull.set_defaults(handler=_guard(run_pull))

    publish = commands.add_parser("publish", help="publish a SavedModel directory as VERSION")
    _common(publish)
    publish.add_argument("--version", required=True, type=int, dest="model_version")
    publish.add_argument("directory", type=Path, help="the SavedModel directory to publish")
    publish.set_defaults(handler=_guard(run_publish))

    gc = commands.add_parser("gc", help="remove what crashed publishers left behind")
    _common(gc)
    gc.set_defaults(handler=_guard(run_gc))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("uri", metavar="URI", help=_URI_HELP)
    parser.add_argument("--endpoint", default=None, help=_ENDPOINT_HELP)
    parser.add_argument(
        "--encryption",
        default=None,
        metavar="{sse-s3,sse-kms}",
        help="server-side encryption asked for on every write and required of every object "
        "read (default: TFMAAS_STORE_ENCRYPTION; unset: none required)",
    )
    parser.add_argument(
        "--kms-key-id",
        default=None,
        help="the KMS key of --encryption sse-kms (default: TFMAAS_STORE_KMS_KEY_ID, then the "
        "store's default key)",
    )
    parser.add_argument(
        "--ca-bundle",
        default=None,
        help="PEM file of the CA that signed an https:// endpoint's certificate "
        "(default: AWS_CA_BUNDLE, then the system's CAs)",
    )


def _guard(handler: Any) -> Any:
    """Store failures that are not the user's still get one clear line, not a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return int(handler(args))
        except UserError:
            raise
        except TfmaasError as exc:
            print(f"tfmaas: error: {exc}", file=sys.stderr)
            return 1

    return run


def _open(args: argparse.Namespace) -> Any:
    from tfmaas.storage import open_store

    if not getattr(args, "verbose", False):
        # boto3 announces at INFO where it found credentials; init container logs need not.
        logging.getLogger("botocore.credentials").setLevel(logging.WARNING)

    from tfmaas.storage.encryption import StoreEncryption

    encryption = None
    if args.encryption is not None or args.kms_key_id is not None:
        encryption = StoreEncryption.parse(
            args.encryption, args.kms_key_id, mode_name="--encryption", key_name="--kms-key-id"
        )
    return open_store(
        args.uri, endpoint=args.endpoint, encryption=encryption, ca_bundle=args.ca_bundle
    )


def run_list(args: argparse.Namespace) -> int:
    store = _open(args)
    rows = [_describe(store, version) for version in store.list_versions()]
    if args.output == "json":
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no published versions in {store.uri}")
        return 0
    header = ("VERSION", "PUBLISHED", "ACCURACY", "F1", "SIZE", "LINEAGE", "REPORT")
    table = [header] + [
        (
            str(row["version"]),
            row["publishedAt"],
            _fmt(row["accuracy"]),
            _fmt(row["f1"]),
            _size(row["bytes"]),
            lineage_text(row["teacher"], row["compression"]),
            row["report"] or "-",
        )
        for row in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip())
    return 0


def _describe(store: Any, version: int) -> dict[str, Any]:
    from tfmaas.storage.base import REPORT_FILE

    manifest = store.read_manifest(version)
    names = {f["path"] for f in manifest["files"]}
    metrics: dict[str, Any] = {}
    if "metrics.json" in names:
        metrics = store.read_json(version, "metrics.json")
    card: dict[str, Any] = {}
    if "model_card.json" in names:
        card = store.read_json(version, "model_card.json")
    teacher, compression = lineage(card)
    return {
        "version": version,
        "publishedAt": manifest["publishedAt"],
        "accuracy": metrics.get("accuracy"),
        "f1": metrics.get("f1"),
        "bytes": manifest["totalBytes"],
        "teacher": teacher,
        "compression": compression,
        "uri": store.version_uri(version),
        # The trainer's page of curves and figures; versions published before it have none.
        "report": store.version_uri(version) + REPORT_FILE if REPORT_FILE in names else None,
    }


_QUANTIZE = ("none", "float16", "int8")


def lineage(card: dict[str, Any]) -> tuple[int | None, dict[str, Any]]:
    """The teacher version and the compression a model card records, kept to the shapes the
    trainer writes (a card is a file in the store, not trusted to be well formed)."""
    teacher = card.get("teacher")
    version = teacher.get("version") if isinstance(teacher, dict) else None
    found = card.get("compression")
    compression = found if isinstance(found, dict) else {}
    quantize = compression.get("quantize")
    prune = compression.get("pruneVocabulary")
    return (
        version if isinstance(version, int) and not isinstance(version, bool) else None,
        {
            "quantize": quantize if quantize in _QUANTIZE else "none",
            "pruneVocabulary": prune if isinstance(prune, int) and prune > 0 else None,
        },
    )


def lineage_text(teacher: int | None, compression: dict[str, Any]) -> str:
    parts = [f"distilled from v{teacher}"] if teacher is not None else []
    if compression.get("quantize") not in (None, "none"):
        parts.append(str(compression["quantize"]))
    if compression.get("pruneVocabulary"):
        parts.append(f"vocabulary {compression['pruneVocabulary']}")
    return ", ".join(parts) or "-"


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def run_pull(args: argparse.Namespace) -> int:
    from tfmaas.storage import MANIFEST_NAME, parse_version_list

    store = _open(args)
    if args.versions.strip() == "latest":
        latest = store.latest_version()
        if latest is None:
            raise UserError(f"no published versions in {store.uri}; nothing to pull")
        versions = [latest]
    else:
        versions = parse_version_list(args.versions)
        published = set(store.list_versions())
        missing = [v for v in versions if v not in published]
        if missing:
            # Fail before downloading anything: a half-filled DEST helps no one.
            raise store.missing_version_error(missing[0])
    dest: Path = args.dest
    for version in versions:
        already = (dest / str(version) / MANIFEST_NAME).is_file()
        path = store.pull(version, dest)
        print(f"{'kept' if already else 'pulled'} version {version}: {path}", flush=True)
    return 0


def run_publish(args: argparse.Namespace) -> int:
    from tfmaas.storage import check_version

    version = check_version(args.model_version)
    store = _open(args)
    uri = store.publish(version, args.directory)
    print(f"published version {version}: {uri}")
    return 0


def run_gc(args: argparse.Namespace) -> int:
    store = _open(args)
    removed = store.gc()
    for item in removed:
        print(f"removed {item}")
    if not removed:
        print(f"nothing to remove in {store.uri}")
    return 0
