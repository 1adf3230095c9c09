"""`tfmaas dev`: the local test environment (binaries built from Go modules, a control plane)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tfmaas.errors import UserError

DEFAULT_CLUSTER_DIR = Path(".tfmaas") / "cluster"
UP_TIMEOUT_SECONDS = 600.0


def register(subparsers: Any) -> None:
    dev = subparsers.add_parser("dev", help="local test environment: tool binaries, control plane")
    groups = dev.add_subparsers(dest="dev_command", metavar="SUBCOMMAND", required=True)

    tools_parser = groups.add_parser("tools", help="build or locate the pinned Go binaries")
    tools_commands = tools_parser.add_subparsers(dest="tools_command", required=True)
    build = tools_commands.add_parser("build", help="build (or reuse) binaries; default: all")
    build.add_argument("names", nargs="*", metavar="NAME")
    build.set_defaults(handler=_tools_build)
    path = tools_commands.add_parser("path", help="print a binary's path, building it if needed")
    path.add_argument("name", metavar="NAME")
    path.set_defaults(handler=_tools_path)
    prune = tools_commands.add_parser("prune", help="delete cached builds of superseded pins")
    prune.set_defaults(handler=_tools_prune)

    cluster = groups.add_parser("cluster", help="a control plane on loopback, in the background")
    cluster.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_CLUSTER_DIR,
        help=f"state directory (default: ./{DEFAULT_CLUSTER_DIR})",
    )
    cluster_commands = cluster.add_subparsers(dest="cluster_command", required=True)
    for name, handler, help_text in (
        ("up", _cluster_up, "start it (or report the running one) and print the KUBECONFIG line"),
        ("down", _cluster_down, "stop it; certificates and etcd data are kept for the next up"),
        ("env", _cluster_env, "print `export KUBECONFIG=…` for the running control plane"),
        ("status", _cluster_status, "show whether it runs, its endpoint and memory use"),
    ):
        cluster_commands.add_parser(name, help=help_text).set_defaults(handler=handler)

    # The whole loop with a node whose pods run (tfmaas.dev.stack); needs root.
    up = groups.add_parser(
        "up",
        help="cluster with a real node, MinIO, local images, the chart and the operator pod; "
        "runs in the foreground until Ctrl-C",
    )
    up.add_argument("--dir", type=Path, default=Path(".tfmaas") / "stack", help="state directory")
    up.set_defaults(handler=_stack_up)
    images_parser = groups.add_parser("images", help="build the node's images offline (cached)")
    images_parser.add_argument("names", nargs="*", metavar="NAME", help="default: all")
    images_parser.set_defaults(handler=_images_build)


def _stack_up(args: argparse.Namespace) -> int:
    from tfmaas.dev import stack

    return stack.run_until_interrupted(args.dir)


def _images_build(args: argparse.Namespace) -> int:
    from tfmaas.dev import images

    base = images.base_image()
    print(f"{'base':<10} {base.reference}  {base.archive}", flush=True)
    for name in args.names or list(images.PROJECT_DOCKERFILES):
        built = images.project_image(name, base=base)
        print(f"{name:<10} {built.reference}  {built.archive}", flush=True)
    return 0


def _tools_build(args: argparse.Namespace) -> int:
    from tfmaas.dev import tools

    names = args.names or list(tools.ALL_TOOLS)
    for name in names:
        tools.lookup(name)
    started = time.monotonic()
    for name in names:
        result = tools.build(name)
        state = f"built in {result.seconds:.0f}s" if result.built else "cached"
        print(f"{name:<24} {state:<16} {result.path}", flush=True)
    print(f"all {len(names)} ready in {time.monotonic() - started:.0f}s")
    return 0


def _tools_path(args: argparse.Namespace) -> int:
    from tfmaas.dev import tools

    print(tools.ensure(args.name))
    return 0


def _tools_prune(args: argparse.Namespace) -> int:
    from tfmaas.dev import tools

    removed = tools.prune()
    for path in removed:
        print(f"removed {path}")
    print(f"{len(removed)} stale build(s) removed")
    return 0


def _read_pid(directory: Path) -> int | None:
    from tfmaas.dev.cluster import PID_FILE

    try:
        pid = int((directory / PID_FILE).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def _read_state(directory: Path) -> dict[str, Any] | None:
    from tfmaas.dev.cluster import STATE_FILE

    try:
        return dict(json.loads((directory / STATE_FILE).read_text()))
    except (FileNotFoundError, ValueError):
        return None


def _cluster_up(args: argparse.Namespace) -> int:
    from tfmaas.dev import tools
    from tfmaas.dev.cluster import COMPONENTS, PID_FILE

    directory = args.dir.resolve()
    if _read_pid(directory) is not None and (state := _read_state(directory)):
        print(f"# already running at {state['server']}", file=sys.stderr)
        print(f"export KUBECONFIG={state['kubeconfig']}")
        return 0
    # Build in the foreground, where its progress is visible.
    for name in (*COMPONENTS, "kubectl"):
        tools.ensure(name)
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "supervisor.log"
    with open(log_path, "ab") as log_file:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "tfmaas.dev.cluster", str(directory)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (directory / PID_FILE).write_text(f"{supervisor.pid}\n")
    deadline = time.monotonic() + UP_TIMEOUT_SECONDS
    while (state := _read_state(directory)) is None:
        if supervisor.poll() is not None:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
            raise UserError(
                f"the control plane did not start (exit {supervisor.returncode}); "
                f"logs are in {directory / 'logs'}:\n{tail}"
            )
        if time.monotonic() > deadline:
            supervisor.terminate()
            raise UserError(f"the control plane was not ready in time; see {log_path}")
        time.sleep(0.5)
    print(f"# control plane up in {state['startupSeconds']}s at {state['server']}", file=sys.stderr)
    print(f"export KUBECONFIG={state['kubeconfig']}")
    return 0


def _cluster_down(args: argparse.Namespace) -> int:
    directory = args.dir.resolve()
    pid = _read_pid(directory)
    if pid is None:
        print("not running")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while _read_pid(directory) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    if _read_pid(directory) is not None:
        # Its components die with it (parent-death signal), so this leaves nothing behind.
        os.kill(pid, signal.SIGKILL)
    print("stopped")
    return 0


def _cluster_env(args: argparse.Namespace) -> int:
    directory = args.dir.resolve()
    state = _read_state(directory)
    if _read_pid(directory) is None or state is None:
        raise UserError("no control plane is running here; start one with `tfmaas dev cluster up`")
    print(f"export KUBECONFIG={state['kubeconfig']}")
    return 0


def _cluster_status(args: argparse.Namespace) -> int:
    from tfmaas.dev.processes import rss_kib

    directory = args.dir.resolve()
    state = _read_state(directory)
    if _read_pid(directory) is None or state is None:
        print("not running")
        return 3
    print(f"server      {state['server']}")
    print(f"kubeconfig  {state['kubeconfig']}")
    print(f"started in  {state['startupSeconds']}s")
    for name, pid in state["pids"].items():
        rss = rss_kib(pid)
        shown = f"{rss / 1024:.0f} MiB RSS" if rss is not None else "NOT RUNNING"
        print(f"{name:<24} pid {pid:<8} {shown}")
    return 0
