"""Serving benchmark: gRPC Predict of one sentence against the embedded server, with baselines.

Prints, for one model:
  echo       grpc's Python server answering Predict without a model: the transport's own cost
  floor      the loaded `serving_default` signature called in-process (no server at all)
  tfmaas     `tfmaas serve` over gRPC, concurrency 1: p50/p99 and the p50 overhead over the floor
  c=32       concurrency 32 with batching off and on: throughput and p99
  each for the native gRPC front end (tools/grpc-frontend) and the in-process Python one
  naive      a gRPC server that calls Keras `model.predict` per request (what a quick hand-rolled
             server does), at concurrency 1 and 32

The load comes from ghz, a native gRPC load generator built from its pinned Go module
(`tools/ghz`): the server shares this machine's cores with it, and a Python client would take
more of them than the server does. TensorFlow gets `--tf-threads` intra- and inter-op threads
in the server and for the floor alike, as the operator sizes them to a serving pod's CPUs.

Everything runs on 127.0.0.1; each phase is bounded in requests and seconds. The model is a
small sentiment model trained on the spot (bag-of-ngrams like the sample, about 20 s; or
`--architecture cnn|transformer`), or `--model-dir DIR` (a folder holding
`<version>/saved_model.pb`).

    python benchmarks/serving_benchmark.py [--model-dir DIR] [--requests 400] [--tf-threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

from tfmaas.api import BatchingSpec
from tfmaas.serving_policy import batching_config_text

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SENTENCE = "这个东西质量很好，用起来非常满意"
# As a ModelService's spec.serving.batching says it, rendered by the operator's own code.
BENCH_BATCHING = BatchingSpec(
    enabled=True,
    max_batch_size=64,
    batch_timeout_micros=2000,
    max_enqueued_batches=100,
    num_batch_threads=2,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def train_small_model(base: Path, architecture: str) -> Path:
    from tfmaas.trainer import train_and_publish

    training = {
        "dataset": {"uri": "builtin:chinese-reviews"},
        "model": {"architecture": architecture, "maxTokens": 20000, "ngrams": 2},
        "hyperparameters": {"epochs": 2, "maxExamples": 4000},
    }
    train_and_publish(training, name="bench", store_uri=base.as_uri(), log=lambda line: None)
    return base


def model_path(base: Path) -> Path:
    versions = sorted(int(p.name) for p in base.iterdir() if p.name.isdigit())
    if not versions:
        raise SystemExit(f"{base} holds no <version>/ folder")
    return base / str(versions[-1])


def measure_c1(
    path: Path, load: Ghz, target: str, requests: int, tf_threads: int
) -> tuple[list[float], list[float]]:
    """Floor and server latency at concurrency 1, alternating in blocks so that load from other
    processes hits both alike; a pause between blocks lets the other side's threads go idle."""
    import tensorflow as tf

    if tf_threads:
        tf.config.threading.set_intra_op_parallelism_threads(tf_threads)
        tf.config.threading.set_inter_op_parallelism_threads(tf_threads)
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    floor: list[float] = []
    served: list[float] = []
    block = 50
    for _ in range(20):
        signature(text=tf.constant([SENTENCE]))
    load.run(target, 1, 20)
    while len(served) < requests:
        for _ in range(block):
            started = time.perf_counter()
            outputs = signature(text=tf.constant([SENTENCE]))
            _ = {k: v.numpy() for k, v in outputs.items()}
            floor.append(time.perf_counter() - started)
        time.sleep(0.05)
        served += load.run(target, 1, block)[0]
        time.sleep(0.05)
    return floor, served


class Ghz:
    """Closed-loop load from ghz: `concurrency` callers, `requests` in all."""

    def __init__(self, workdir: Path, seconds: float) -> None:
        from tfmaas.dev import tools

        self.binary = tools.ensure("ghz")
        self.seconds = seconds
        self.protoset = workdir / "prediction_service.protoset"
        self.protoset.write_bytes(prediction_service_protoset())
        self.payload = workdir / "predict_request.bin"
        self.payload.write_bytes(request_bytes())

    def run(
        self,
        target: str,
        concurrency: int,
        requests: int,
        metadata: dict[str, str] | None = None,
    ) -> tuple[list[float], float]:
        command = [
            str(self.binary),
            "--insecure",
            f"--protoset={self.protoset}",
            "--call=tensorflow.serving.PredictionService.Predict",
            f"--binary-file={self.payload}",
            f"--concurrency={concurrency}",
            f"--total={requests}",
            "--cpus=1",  # of the two cores, leave the server at least one
            "--timeout=30s",
            "--format=json",
            *([f"--metadata={json.dumps(metadata)}"] if metadata else []),
            target,
        ]
        try:
            completed = subprocess.run(
                command, capture_output=True, text=True, timeout=self.seconds, check=False
            )
        except subprocess.TimeoutExpired:
            raise SystemExit(
                f"{requests} requests at concurrency {concurrency} took over {self.seconds}s"
            ) from None
        if completed.returncode != 0 or not completed.stdout.strip():
            raise SystemExit(f"ghz failed ({completed.returncode}): {completed.stderr[-2000:]}")
        report = json.loads(completed.stdout)
        failed = sum(n for code, n in report["statusCodeDistribution"].items() if code != "OK")
        if failed:
            print(f"    ({failed} requests failed: {report.get('errorDistribution')})")
        latencies = [d["latency"] / 1e9 for d in report["details"] if d["status"] == "OK"]
        return latencies, report["rps"] * len(latencies) / max(1, report["count"])


def prediction_service_protoset() -> bytes:
    """A FileDescriptorSet of PredictionService and its imports, from the Python descriptors:
    ghz needs the service's schema, and these are exactly the messages the server speaks."""
    from google.protobuf import descriptor_pb2
    from tensorflow_serving.apis import prediction_service_pb2

    files = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(descriptor) -> None:  # type: ignore[no-untyped-def]
        if descriptor.name in seen:
            return
        seen.add(descriptor.name)
        for dependency in descriptor.dependencies:
            add(dependency)
        descriptor.CopyToProto(files.file.add())

    add(prediction_service_pb2.DESCRIPTOR)
    return files.SerializeToString()


def request_bytes() -> bytes:
    from tensorflow_serving.apis import predict_pb2

    from tfmaas.client.tensors import strings_proto

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "bench"
    request.inputs["text"].CopyFrom(strings_proto([SENTENCE]))
    return request.SerializeToString()


def wait_until_serving(target: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    import grpc

    payload = request_bytes()
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"server exited with {process.returncode}")
            try:
                call(payload, timeout=5)
                return
            except grpc.RpcError:
                time.sleep(0.3)
    raise SystemExit(f"server at {target} did not answer within {timeout}s")


def start_tfmaas(
    base: Path, batching: bool, workdir: Path, tf_threads: int, frontend: str
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "tfmaas",
        "serve",
        f"--port={port}",
        "--bind_address=127.0.0.1",
        "--model_name=bench",
        f"--model_base_path={base}",
        "--file_system_poll_wait_seconds=0",
        f"--tensorflow_intra_op_parallelism={tf_threads}",
        f"--tensorflow_inter_op_parallelism={tf_threads}",
        f"--grpc_frontend={frontend}",
    ]
    if batching:
        params = workdir / "batching.config"
        params.write_text(batching_config_text(BENCH_BATCHING, num_batch_threads=2))
        command += ["--enable_batching", f"--batching_parameters_file={params}"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, f"127.0.0.1:{port}"


def naive_server(port: int, path: str) -> None:
    """The baseline: Keras `model.predict` and TensorFlow's proto helpers on every request."""
    import grpc
    import keras
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
    text = keras.Input(shape=(), dtype="string", name="text")
    model = keras.Model(text, layer(text))

    class Naive(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # type: ignore[no-untyped-def]
            inputs = tf.make_ndarray(request.inputs["text"])
            texts = np.array([value.decode("utf-8") for value in inputs], dtype=object)
            outputs = model.predict(texts, verbose=0)
            response = predict_pb2.PredictResponse()
            for alias, value in outputs.items():
                if value.dtype == object:  # make_tensor_proto refuses object arrays of bytes
                    value = value.astype(bytes)
                response.outputs[alias].CopyFrom(tf.make_tensor_proto(value))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(64))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Naive(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    signal.sigwait({signal.SIGTERM})
    server.stop(1)


def echo_server(port: int) -> None:
    """The transport floor: grpc.aio's server, as `tfmaas serve` uses, answering Predict with
    an empty response and no model."""
    import asyncio

    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    class Echo(prediction_service_pb2_grpc.PredictionServiceServicer):
        async def Predict(self, request, context):  # type: ignore[no-untyped-def]
            return predict_pb2.PredictResponse()

    async def serve() -> None:
        server = grpc.aio.server()
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Echo(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        stopping = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
        await stopping.wait()
        await server.stop(1)

    asyncio.run(serve())


def start_helper(kind: str, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, __file__, f"--{kind}-server", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, f"127.0.0.1:{port}"


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live children (the native gRPC front end):
    a cost per request that other load cannot skew."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    from tfmaas.serving.testing import child_pids

    for child in child_pids(pid):
        with contextlib.suppress(FileNotFoundError):  # it just exited
            total += cpu_seconds(child)
    return total


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.2f} ms"


def report_latency(name: str, latencies: list[float], throughput: float) -> None:
    print(
        f"  {name:<34} p50 {ms(percentile(latencies, 50))}  p99 {ms(percentile(latencies, 99))}"
        f"  {throughput:8.0f} req/s  ({len(latencies)} requests)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, help="folder holding <version>/saved_model.pb")
    parser.add_argument(
        "--architecture",
        default="bag-of-ngrams",
        choices=("bag-of-ngrams", "cnn", "transformer"),
        help="what to train when no --model-dir is given (default: the sample's)",
    )
    parser.add_argument("--requests", type=int, default=400, help="requests per phase, c=1")
    parser.add_argument("--seconds", type=float, default=120.0, help="time bound per phase")
    parser.add_argument(
        "--tf-threads",
        type=int,
        default=1,
        help="TensorFlow intra- and inter-op threads, server and floor (0: one per core)",
    )
    parser.add_argument("--naive-server", nargs=2, metavar=("PORT", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--echo-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--train-into", nargs=2, metavar=("DIR", "ARCH"), help=argparse.SUPPRESS)
    parser.add_argument("--skip-naive", action="store_true", help="leave the naive baseline out")
    parser.add_argument(
        "--frontends",
        default="native,python",
        help="gRPC front ends of `tfmaas serve` to measure, first one for the summary "
        "(default: native,python; the native one is built from tools/grpc-frontend)",
    )
    args = parser.parse_args()
    if args.naive_server:
        naive_server(int(args.naive_server[0]), args.naive_server[1])
        return 0
    if args.echo_server:
        echo_server(args.echo_server)
        return 0
    if args.train_into:
        train_small_model(Path(args.train_into[0]), args.train_into[1])
        return 0

    with tempfile.TemporaryDirectory(prefix="tfmaas-bench-") as tmp:
        workdir = Path(tmp)
        if args.model_dir:
            base = args.model_dir.resolve()
        else:
            print(f"training a small {args.architecture} model ...", flush=True)
            base = workdir / "models"
            # In a child process: TensorFlow's thread pools are fixed once it first runs, and
            # the floor below must get the same ones as the server.
            subprocess.run(
                [sys.executable, __file__, "--train-into", str(base), args.architecture],
                check=True,
            )
        path = model_path(base)
        print(f"model: {path}")
        print(f"cpus: {os.cpu_count()}; one sentence per request: {SENTENCE}")
        load = Ghz(workdir, args.seconds)

        process, target = start_helper("echo")
        try:
            wait_until_serving(target, process)
            echo = load.run(target, 1, args.requests)
            report_latency("gRPC echo without a model, c=1", *echo)
            cpu_before = cpu_seconds(process.pid)
            echo32 = load.run(target, 32, args.requests * 10)
            cpu = (cpu_seconds(process.pid) - cpu_before) / len(echo32[0])
            report_latency("gRPC echo without a model, c=32", *echo32)
            print(f"    server CPU per request: {cpu * 1000:.2f} ms")
        finally:
            stop(process)

        frontends = [name.strip() for name in args.frontends.split(",") if name.strip()]
        if "native" in frontends:
            from tfmaas.dev import tools

            os.environ["TFMAAS_GRPC_FRONTEND"] = str(tools.ensure("grpc-frontend"))
        measured: dict[str, dict[str, tuple[list[float], float]]] = {}
        for frontend in frontends:
            results = measured.setdefault(frontend, {})
            for batching in (False, True):
                process, target = start_tfmaas(base, batching, workdir, args.tf_threads, frontend)
                try:
                    wait_until_serving(target, process)
                    tag = "on" if batching else "off"
                    if not batching:
                        floor, served = measure_c1(
                            path, load, target, args.requests, args.tf_threads
                        )
                        report_latency("floor: signature in-process, c=1", floor, 1 / mean(floor))
                        report_latency(f"tfmaas gRPC ({frontend}), c=1", served, 1 / mean(served))
                        overhead = percentile(served, 50) - percentile(floor, 50)
                        print(f"    p50 overhead over the floor: {overhead * 1000:.2f} ms")
                        results["c1"] = (served, 1 / mean(served))
                        results["floor"] = (floor, 1 / mean(floor))
                    cpu_before = cpu_seconds(process.pid)
                    results[tag] = load.run(target, 32, args.requests * 10)
                    cpu = (cpu_seconds(process.pid) - cpu_before) / len(results[tag][0])
                    report_latency(f"tfmaas gRPC ({frontend}), c=32, batching {tag}", *results[tag])
                    print(f"    server CPU per request: {cpu * 1000:.2f} ms")
                finally:
                    stop(process)

        if not args.skip_naive:
            process, target = start_helper("naive", str(path))
            try:
                wait_until_serving(target, process)
                naive1 = load.run(target, 1, min(args.requests, 100))
                report_latency("naive model.predict server, c=1", *naive1)
                naive32 = load.run(target, 32, min(args.requests, 200))
                report_latency("naive model.predict server, c=32", *naive32)
            finally:
                stop(process)

        print()
        for frontend, results in measured.items():
            overhead = percentile(results["c1"][0], 50) - percentile(results["floor"][0], 50)
            speedup = results["on"][1] / results["off"][1]
            print(
                f"{frontend} front end: p50 overhead over the in-process floor, c=1: "
                f"{overhead * 1000:.2f} ms (target < 1); batching on / off throughput at c=32: "
                f"{speedup:.1f}x (target >= 3x)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
