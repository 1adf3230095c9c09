"""`tfmaas local run`: train and serve a ModelService on one machine, no cluster needed.

It follows the operator's path with local parts: the spec is validated the same way, a version is
trained and published to a model store (a local folder by default), the quality gate decides
whether it is served, the chosen versions are pulled into a serving folder, and the embedded
server serves them with a model config that labels them `stable` (and `canary`). A second run
while the first is serving trains the next version and rewrites that config; the running server
picks it up within a second.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tfmaas.errors import UserError

DEFAULT_SAMPLES = ("这个东西质量很好，用起来非常满意", "太差了，用了两天就坏了，不推荐")


def register(subparsers: argparse._SubParsersAction) -> None:
    local = subparsers.add_parser(
        "local", help="train and serve a ModelService on this machine, without a cluster"
    )
    commands = local.add_subparsers(dest="local_command", metavar="COMMAND", required=True)
    run = commands.add_parser(
        "run",
        help="train a version from a ModelService YAML and serve it",
        description=(
            "Train the ModelService's model, publish the version to a model store (default: "
            "a folder under --workdir), and serve the versions that pass the quality gate on "
            "gRPC and REST until interrupted."
        ),
    )
    run.add_argument("spec", metavar="MODELSERVICE_YAML")
    run.add_argument(
        "--store",
        help="model store URI (default: file://<workdir>/models/<name>; "
        "pass the spec's s3:// URI to use it, with --endpoint or the spec's endpoint)",
    )
    run.add_argument("--endpoint", help="S3 endpoint URL for an s3:// store")
    run.add_argument("--workdir", default=".tfmaas", help="local state folder (default .tfmaas)")
    run.add_argument("--epochs", type=int, help="override hyperparameters.epochs")
    run.add_argument("--max-examples", type=int, help="override hyperparameters.maxExamples")
    run.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    run.add_argument(
        "--port", type=int, default=8500, help="gRPC port (default 8500; 0 picks a free one)"
    )
    run.add_argument(
        "--rest-port", type=int, default=8501, help="REST port (default 8501; 0 turns REST off)"
    )
    run.add_argument("--no-train", action="store_true", help="serve what the store already has")
    run.add_argument("--no-serve", action="store_true", help="train and publish only")
    run.add_argument(
        "--exit-after-predict",
        action="store_true",
        help="stop after the sample prediction (for scripts and CI)",
    )
    run.add_argument(
        "--sample", action="append", help="sentence for the sample prediction (repeatable)"
    )
    run.set_defaults(handler=run_command)


def say(message: str) -> None:
    print(message, flush=True)


def load_spec(path: str) -> Any:
    """The validated, defaulted ModelService (raises UserError listing field errors)."""
    from tfmaas.api import load_model_service

    if not Path(path).is_file():
        raise UserError(f"{path}: no such file; pass the path of a ModelService YAML")
    return load_model_service(path)


def training_document(service: Any, epochs: int | None, max_examples: int | None) -> dict:
    training = copy.deepcopy(service.spec.training.to_dict())
    hyper = training.setdefault("hyperparameters", {})
    if epochs is not None:
        if epochs < 1:
            raise UserError(f"--epochs must be >= 1, got {epochs}")
        hyper["epochs"] = epochs
    if max_examples is not None:
        if max_examples < 0:
            raise UserError(f"--max-examples must be >= 0 (0 = all), got {max_examples}")
        hyper["maxExamples"] = max_examples
    return training


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)  # the polling server never sees half a file


def client_host(bind_address: str) -> str:
    """Where a client on this machine reaches a server bound to `bind_address`."""
    return "127.0.0.1" if bind_address == "0.0.0.0" else bind_address


def running_server_versions(host: str, port: int, name: str) -> list[int] | None:
    """Versions a server already on `port` has for `name`; None when nothing listens there."""
    import socket

    with socket.socket() as probe:
        probe.settimeout(0.5)
        if probe.connect_ex((host, port)) != 0:
            return None
    from tfmaas.client import PredictionError
    from tfmaas.client.grpc_client import GrpcClient

    with GrpcClient(f"{host}:{port}", timeout=3, retries=1) as client:
        try:
            return [s["version"] for s in client.status(name)]
        except PredictionError as exc:
            raise UserError(
                f"port {port} is in use by something that does not serve {name!r} ({exc}); "
                "stop it or pass --port/--rest-port"
            ) from exc


def sample_prediction(
    target: str, name: str, version: int, samples: list[str], classes: list[str] | None
) -> None:
    from tfmaas.client.grpc_client import GrpcClient

    with GrpcClient(target, timeout=10, retries=3) as client:
        client.wait_for_version(name, version, label="stable", timeout=60)
        predictions = client.predict(name, samples, label="stable", classes=classes)
    say(f"sample prediction (gRPC, label stable = version {version}):")
    for text, prediction in zip(samples, predictions, strict=True):
        scores = ", ".join(f"{k}={v:.3f}" for k, v in prediction.scores.items())
        say(f"  {text} -> {prediction.label} ({scores})")


def run_command(args: argparse.Namespace) -> int:
    run = open_run(args)
    if not args.no_train:
        train_version(run, args)
    if args.no_serve:
        return 0
    stable, canary = decide_versions(run)
    classes = model_classes(run, stable)
    config_path = stage_versions(run, stable, canary)
    return serve_versions(
        run, args, stable=stable, canary=canary, classes=classes, config=config_path
    )


@dataclass(frozen=True)
class LocalRun:
    """One `tfmaas local run`: the spec, its store, and where it keeps its serving state."""

    service: Any
    store: Any
    store_uri: str
    endpoint: str | None
    serving_dir: Path
    encryption: Any = None  # the spec's StoreEncryption, for an s3:// store

    @property
    def status_file(self) -> Path:
        from tfmaas.cli.local_status import STATUS_FILE

        return self.serving_dir / STATUS_FILE


def open_run(args: argparse.Namespace) -> LocalRun:
    from tfmaas.storage import open_store

    service = load_spec(args.spec)
    workdir = Path(args.workdir).resolve()
    store_uri = args.store or (workdir / "models" / service.name).as_uri()
    endpoint = args.endpoint or (
        service.spec.storage.endpoint if store_uri.startswith("s3://") else None
    )
    encryption = None
    if store_uri.startswith("s3://"):  # server-side encryption is an S3 store's
        from tfmaas.storage.encryption import StoreEncryption

        storage = service.spec.storage
        encryption = StoreEncryption.parse(
            storage.encryption,
            storage.kms_key_id,
            mode_name="spec.storage.encryption",
            key_name="spec.storage.kmsKeyId",
        )
    store = open_store(store_uri, endpoint=endpoint, encryption=encryption)
    say(f"model service {service.name}: store {store_uri}")
    serving_dir = workdir / "serving" / service.name
    return LocalRun(service, store, store_uri, endpoint, serving_dir, encryption)


def tensorboard_command(store_uri: str) -> str:
    """The command that shows every version's training curves (the store's `logs/`)."""
    import shlex

    from tfmaas.storage.base import LOGS_DIR
    from tfmaas.storage.uri import FileLocation, parse_uri

    location = parse_uri(store_uri, what="storage URI")
    if isinstance(location, FileLocation):
        logdir = str(location.path / LOGS_DIR)
    else:
        logdir = f"{store_uri.rstrip('/')}/{LOGS_DIR}"
    return f"tensorboard --logdir {shlex.quote(logdir)}"


def train_version(run: LocalRun, args: argparse.Namespace) -> None:
    """Train and publish the next version, and record its gate verdict, judged now against
    the gate the spec has now: the operator's way."""
    from tfmaas.cli.local_status import read_status, record_result, write_status
    from tfmaas.cli.train import quiet_tensorflow
    from tfmaas.trainer import train_and_publish

    quiet_tensorflow(args)
    started = time.monotonic()
    result = train_and_publish(
        training_document(run.service, args.epochs, args.max_examples),
        name=run.service.name,
        store_uri=run.store_uri,
        endpoint=run.endpoint,
        encryption=run.encryption,
        log=say,
    )
    metrics = result.metrics
    say(
        f"version {result.version} trained in {time.monotonic() - started:.0f}s: "
        + ", ".join(
            f"{k} {float(metrics[k]):.4f}" for k in ("accuracy", "precision", "recall", "f1")
        )
    )
    say(f"training curves: {tensorboard_command(run.store_uri)}")
    status = record_result(
        read_status(run.status_file, store=run.store_uri),
        version=result.version,
        metrics=metrics,
        gate=run.service.spec.training.quality_gate,
    )
    write_status(run.status_file, status)
    verdict = next(r for r in status.versions if r.version == result.version)
    if not verdict.promoted:
        say(f"{verdict.message}: it is kept in the store but not served")


def decide_versions(run: LocalRun) -> tuple[int, int | None]:
    """(stable, canary) as the operator would decide them; UserError when nothing can serve."""
    from tfmaas.cli.local_status import plan, read_status, record_published

    published = run.store.list_versions()
    if not published:
        raise UserError(f"the store {run.store_uri} holds no versions yet; run without --no-train")
    gate = run.service.spec.training.quality_gate
    status = record_published(
        read_status(run.status_file, store=run.store_uri),
        published=published,
        read_metrics=lambda version: run.store.read_json(version, "metrics.json"),
        gate=gate,
    )
    decided = plan(status, run.service.spec.serving)
    for problem in decided.problems:
        say(f"{problem.reason}: {problem.message}")
    if decided.stable is None:
        if decided.problems:  # a pin that cannot be honoured, and nothing served before it
            raise UserError(f"nothing to serve: {decided.problems[0].message}")
        raise UserError(
            f"no version in {run.store_uri} passes the quality gate "
            f"{gate.thresholds()}; train again (more --epochs or "
            "data), lower spec.training.qualityGate, or pin spec.serving.version"
        )
    return decided.stable, decided.canary


def stage_versions(run: LocalRun, stable: int, canary: int | None) -> Path:
    """Pull the versions and write the model config naming them; record what serves."""
    from tfmaas.cli.local_status import read_status, write_status
    from tfmaas.serving_policy import CANARY, MODEL_CONFIG_FILE, STABLE, model_config_text

    versions_dir = run.serving_dir / "versions"
    for version in {stable, *([canary] if canary else [])}:
        run.store.pull(version, versions_dir)
    config_path = run.serving_dir / MODEL_CONFIG_FILE
    labels = {STABLE: stable, **({CANARY: canary} if canary else {})}
    text = model_config_text(name=run.service.name, base_path=str(versions_dir), labels=labels)
    write_atomically(config_path, text)
    status = read_status(run.status_file, store=run.store_uri)
    write_status(run.status_file, replace(status, serving_version=stable))
    return config_path


def model_classes(run: LocalRun, version: int) -> list[str] | None:
    """The class names the model card lists, for the sample prediction."""
    card = run.store.read_json(version, "model_card.json")
    return card.get("classes") if isinstance(card.get("classes"), list) else None


def serve_versions(
    run: LocalRun,
    args: argparse.Namespace,
    *,
    stable: int,
    canary: int | None,
    classes: list[str] | None,
    config: Path,
) -> int:
    """Hand the config to a server already running here, or serve until interrupted."""
    name = run.service.name
    samples = args.sample or list(DEFAULT_SAMPLES)
    host = client_host(args.host)
    grpc_target = f"{host}:{args.port}"

    running = running_server_versions(host, args.port, name)
    if running is not None:
        say(
            f"a server on {grpc_target} already serves {name} (versions {running}); "
            f"it picks up version {stable} from {config}"
        )
        sample_prediction(grpc_target, name, stable, samples, classes)
        return 0

    server = start_server(args, run.service, run.serving_dir, config)
    server.stop_on_signals()
    grpc_target = f"{host}:{server.grpc_port}"  # --port 0 picks one
    try:
        say(f"serving {name} version {stable}" + (f" (canary {canary})" if canary else ""))
        say(f"  gRPC: {grpc_target}  (tfmaas predict --target {grpc_target} --model {name} TEXT)")
        if server.rest_port:
            say(f"  REST: http://{host}:{server.rest_port}/v1/models/{name}")
        sample_prediction(grpc_target, name, stable, samples, classes)
        if args.exit_after_predict:
            return 0
        say("serving until interrupted (Ctrl-C or SIGTERM)")
        server.wait()
        say("stopping")
    finally:
        server.stop()  # drains the calls in flight
    if server.failure:
        raise UserError(f"serving stopped: {server.failure}")
    return 0


def start_server(args: argparse.Namespace, service: Any, serving_dir: Path, config: Path) -> Any:
    from tfmaas.serving.flags import ServerFlags
    from tfmaas.serving.server import ModelServer
    from tfmaas.serving_policy import (
        BATCHING_CONFIG_FILE,
        MONITORING_CONFIG_FILE,
        batching_config_text,
        monitoring_config_text,
    )

    monitoring = serving_dir / MONITORING_CONFIG_FILE
    write_atomically(monitoring, monitoring_config_text())
    batching = service.spec.serving.batching
    batching_file = serving_dir / BATCHING_CONFIG_FILE
    if batching.enabled:
        # 0 threads: the embedded server counts this machine's CPUs, which is what we want.
        text = batching_config_text(batching, num_batch_threads=batching.num_batch_threads)
        write_atomically(batching_file, text)
    flags = ServerFlags(
        port=args.port,
        rest_api_port=args.rest_port,
        bind_address=args.host,
        model_config_file=str(config),
        model_config_file_poll_wait_seconds=1,
        file_system_poll_wait_seconds=1,
        monitoring_config_file=str(monitoring),
        enable_batching=batching.enabled,
        batching_parameters_file=str(batching_file) if batching.enabled else "",
    )
    server = ModelServer(flags)
    server.start()
    return server
