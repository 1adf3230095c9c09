"""Publish and pull throughput of the model stores: file:// and a local MinIO (s3://).

Prints one line per store and operation. Sizes are small by default because the machine
is shared; raise them with --megabytes.

    python benchmarks/store_benchmark.py --megabytes 64 --files 8
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tfmaas.storage import ModelStore, open_store


def make_model(root: Path, megabytes: int, files: int) -> Path:
    (root / "variables").mkdir(parents=True)
    (root / "saved_model.pb").write_bytes(os.urandom(64 * 1024))
    per_file = megabytes * 1024 * 1024 // files
    for index in range(files):
        name = f"variables.data-{index:05d}-of-{files:05d}"
        (root / "variables" / name).write_bytes(os.urandom(per_file))
    return root


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def measure(label: str, store: ModelStore, model: Path, work: Path, megabytes: int) -> None:
    version = (store.latest_version() or 0) + 1
    publish = timed(lambda: store.publish(version, model))
    listing = timed(store.list_versions)
    dest = work / f"pull-{label}"
    pull = timed(lambda: store.pull(version, dest))
    again = timed(lambda: store.pull(version, dest))
    print(
        f"{label:6s} publish {publish:6.2f}s ({megabytes / publish:7.1f} MiB/s)  "
        f"pull {pull:6.2f}s ({megabytes / pull:7.1f} MiB/s)  "
        f"pull-again (kept) {again * 1000:6.1f} ms  list {listing * 1000:6.1f} ms"
    )
    shutil.rmtree(dest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--megabytes", type=int, default=32)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--skip-s3", action="store_true", help="only measure file://")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tfmaas-store-bench-") as tmp:
        work = Path(tmp)
        model = make_model(work / "model", args.megabytes, args.files)
        print(f"model: {args.megabytes} MiB in {args.files + 1} files")
        measure("file", open_store(f"file://{work / 'store'}"), model, work, args.megabytes)
        if args.skip_s3:
            return
        from tfmaas.dev.minio import MinioServer

        with MinioServer(data_dir=work / "minio") as minio:
            minio.bucket("bench")
            os.environ.update(minio.env)
            measure("s3", open_store("s3://bench/model"), model, work, args.megabytes)


if __name__ == "__main__":
    main()
