"""Binaries of the local test environment, built from their upstream Go modules and cached.

No prebuilt release can be downloaded where tfmaas is developed, so every program the tests
run (etcd, the Kubernetes control plane, kubectl, Helm, MinIO, ghz, kwok) is compiled from the
Go module that `tools/<module>/go.mod` pins. A build is cached under
`${TFMAAS_CACHE_DIR:-~/.cache/tfmaas}/bin/<component>-<version>-<digest>/<name>`; the digest
covers the tools module's go.mod, go.sum and the build recipe, so changing a pin rebuilds and
nothing else does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sysconfig
import tempfile
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path

from tfmaas.errors import TfmaasError, UserError
from tfmaas.serving import frontend_process

KUBERNETES_VERSION = "v1.35.4"
ETCD_VERSION = "v3.6.5"
HELM_VERSION = "v3.22.0"
COREDNS_VERSION = "v1.14.7"
GHZ_VERSION = "v0.93.0"
KEDA_VERSION = "v2.21.0"
KWOK_VERSION = "v0.7.0"
GRPC_FRONTEND_VERSION = "v1"
ACCESS_GATEWAY_VERSION = "v1"
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
# MinIO publishes no semver tags to the Go proxy; its own release tags are the commit time.
MINIO_RELEASE_TIME = "2026-02-12T20:18:48Z"
MINIO_COMMIT = "7aac2a2c5b7c"

# Where the official tarball installs Go; a non-login shell may not have it on PATH.
_FALLBACK_GO = "/usr/local/go/bin/go"

# Two cores are shared by everyone working on the machine; more parallel compiles only thrash.
DEFAULT_BUILD_JOBS = 2


class ToolBuildError(TfmaasError):
    """A Go build failed; the message carries the end of its output and the full log's path."""


@dataclasses.dataclass(frozen=True)
class Tool:
    """How to build one program: which tools module, which main package, which version stamps."""

    name: str
    component: str
    version: str
    module: str
    package: str
    ldflags: tuple[str, ...] = ()
    own_source: bool = False  # tfmaas's own program: its .go files are part of the cache key
    # The name a build is linked under in this Python environment's scripts folder, where the
    # program that runs it looks (tfmaas serve finds tfmaas-grpc-frontend there).
    command: str = ""

    def ldflags_for(self, build_date: str) -> str:
        return " ".join(
            ["-s", "-w", *(f.replace("{build_date}", build_date) for f in self.ldflags)]
        )


def _kubernetes_ldflags(version: str) -> tuple[str, ...]:
    major, minor = version.lstrip("v").split(".")[:2]
    stamps = {
        "gitVersion": version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": "{build_date}",
    }
    # kubectl reports the client-go version too, so both packages get the same stamps.
    return tuple(
        f"-X {package}.{key}={value}"
        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for key, value in stamps.items()
    )


def _kubernetes_tool(name: str) -> Tool:
    return Tool(
        name=name,
        component="kubernetes",
        version=KUBERNETES_VERSION,
        module="kubernetes",
        package=f"k8s.io/kubernetes/cmd/{name}",
        ldflags=_kubernetes_ldflags(KUBERNETES_VERSION),
    )


TOOLS: Mapping[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool(
            name="minio",
            component="minio",
            version=MINIO_VERSION,
            module="minio",
            package="github.com/minio/minio",
            ldflags=(
                f"-X github.com/minio/minio/cmd.Version={MINIO_RELEASE_TIME}",
                "-X github.com/minio/minio/cmd.ReleaseTag=DEVELOPMENT."
                + MINIO_RELEASE_TIME.replace(":", "-"),
                f"-X github.com/minio/minio/cmd.CommitID={MINIO_COMMIT}",
                f"-X github.com/minio/minio/cmd.ShortCommitID={MINIO_COMMIT}",
                f"-X github.com/minio/minio/cmd.CopyrightYear={MINIO_RELEASE_TIME[:4]}",
            ),
        ),
        # etcd shares the Kubernetes tools module: it is the etcd that release is tested with.
        Tool(
            name="etcd",
            component="etcd",
            version=ETCD_VERSION,
            module="kubernetes",
            package="go.etcd.io/etcd/server/v3",
        ),
        _kubernetes_tool("kube-apiserver"),
        _kubernetes_tool("kube-controller-manager"),
        _kubernetes_tool("kube-scheduler"),
        _kubernetes_tool("kubectl"),
        # The node's programs, built on demand only (`ALL_TOOLS` leaves them out).
        _kubernetes_tool("kubelet"),
        _kubernetes_tool("kube-proxy"),
        # The local node's cluster DNS (also built on demand only).
        Tool(
            name="coredns",
            component="coredns",
            version=COREDNS_VERSION,
            module="coredns",
            package="github.com/coredns/coredns",
            ldflags=(f"-X github.com/coredns/coredns/coremain.GitCommit={COREDNS_VERSION}",),
        ),
        # The serving benchmark's gRPC load generator (built on demand only): a native client
        # takes far less of the cores it shares with the server than a Python one would.
        Tool(
            name="ghz",
            component="ghz",
            version=GHZ_VERSION,
            module="ghz",
            package="github.com/bojand/ghz/cmd/ghz",
            ldflags=(f"-X main.version={GHZ_VERSION}",),
        ),
        # The node simulator: many fake nodes whose pods move through their lifecycle by
        # kwok's Stage rules, for the operator's scale benchmark and its integration test.
        Tool(
            name="kwok",
            component="kwok",
            version=KWOK_VERSION,
            module="kwok",
            package="sigs.k8s.io/kwok/cmd/kwok",
            ldflags=(f"-X sigs.k8s.io/kwok/pkg/consts.Version={KWOK_VERSION.lstrip('v')}",),
        ),
        # tfmaas's own native gRPC front end for `tfmaas serve`: its source is the module
        # itself, so the cache digest covers its .go files too.
        Tool(
            name="grpc-frontend",
            component="grpc-frontend",
            version=GRPC_FRONTEND_VERSION,
            module="grpc-frontend",
            package="tfmaas.dev/tools/grpc-frontend",
            own_source=True,
            command=frontend_process.BINARY_NAME,
        ),
        # tfmaas's access gateway: authenticates and authorizes each call to a model against the
        # API server (TokenReview, SubjectAccessReview) before TF Serving sees it.
        Tool(
            name="access-gateway",
            component="access-gateway",
            version=ACCESS_GATEWAY_VERSION,
            module="access-gateway",
            package="tfmaas.dev/tools/access-gateway",
            own_source=True,
        ),
        # KEDA (built on demand only): its operator turns a ModelService's ScaledObject into an
        # HPA, and its metrics server answers that HPA's external metric from Prometheus.
        *(
            Tool(
                name=name,
                component="keda",
                version=KEDA_VERSION,
                module="keda",
                package=f"github.com/kedacore/keda/v2/cmd/{package}",
                ldflags=(
                    f"-X github.com/kedacore/keda/v2/version.Version={KEDA_VERSION.lstrip('v')}",
                    f"-X github.com/kedacore/keda/v2/version.GitCommit={KEDA_VERSION}",
                ),
            )
            for name, package in (("keda-operator", "operator"), ("keda-adapter", "adapter"))
        ),
        Tool(
            name="helm",
            component="helm",
            version=HELM_VERSION,
            module="helm",
            package="helm.sh/helm/v3/cmd/helm",
            ldflags=(
                f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
                "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
                # Without these stamps (helm's Makefile sets them) a helm built from its
                # module believes the cluster is Kubernetes 1.20 whenever it renders
                # offline, and charts with a kubeVersion constraint fail to template.
                *(
                    f"-X helm.sh/helm/v3/pkg/{package}.k8sVersion{part}={value}"
                    for package in ("chartutil", "lint/rules")
                    for part, value in zip(
                        ("Major", "Minor"),
                        KUBERNETES_VERSION.lstrip("v").split(".")[:2],
                        strict=True,
                    )
                ),
            ),
        ),
    )
}

# Build order when all are wanted: what other work waits on comes first.
ALL_TOOLS: tuple[str, ...] = (
    "minio",
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "helm",
    "grpc-frontend",
    "access-gateway",
    # An integration test runs it: CI builds it with the rest, not inside a test's timeout.
    "kwok",
)


def cache_root() -> Path:
    configured = os.environ.get("TFMAAS_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "tfmaas"


def tools_modules_root() -> Path:
    """The folder holding the pinned tools modules (`tools/` of a source checkout)."""
    configured = os.environ.get("TFMAAS_TOOLS_DIR")
    root = Path(configured) if configured else Path(__file__).resolve().parents[2] / "tools"
    if not (root / "kubernetes" / "go.mod").is_file():
        raise UserError(
            f"the pinned Go tools modules are not at {root}: run tfmaas from a source checkout "
            "(pip install -e .) or set TFMAAS_TOOLS_DIR to the checkout's tools/ folder"
        )
    return root


def lookup(name: str) -> Tool:
    try:
        return TOOLS[name]
    except KeyError:
        raise UserError(f"unknown tool {name!r}; known tools: {', '.join(TOOLS)}") from None


def cache_key(tool: Tool, module_files: Mapping[str, bytes]) -> str:
    """`<component>-<version>-<digest>`: the digest covers the pins and the build recipe."""
    digest = hashlib.sha256()
    for file_name in sorted(module_files):
        digest.update(file_name.encode() + b"\0" + module_files[file_name] + b"\0")
    recipe = {"package": tool.package, "ldflags": tool.ldflags, "cgo": False, "trimpath": True}
    digest.update(json.dumps(recipe, sort_keys=True).encode())
    return f"{tool.component}-{tool.version}-{digest.hexdigest()[:12]}"


def _module_files(tool: Tool, module_dir: Path) -> dict[str, bytes]:
    """The pins, and for a program of our own its source too (an upstream tool's tools.go only
    names the packages to build, which the pins already cover)."""
    names = ["go.mod", "go.sum"]
    if tool.own_source:
        names += sorted(path.name for path in module_dir.glob("*.go"))
    return {name: (module_dir / name).read_bytes() for name in names}


def binary_path(name: str) -> Path:
    """Where `name`'s binary is (or will be) cached for the current pins."""
    tool = lookup(name)
    module_dir = tools_modules_root() / tool.module
    return cache_root() / "bin" / cache_key(tool, _module_files(tool, module_dir)) / tool.name


def find_go() -> Path:
    configured = os.environ.get("TFMAAS_GO")
    if configured and not Path(configured).is_file():
        raise UserError(
            f"TFMAAS_GO is {configured!r}, which is not a file: point it at the `go` binary "
            "of Go 1.25 or newer, or unset it to use the `go` on PATH"
        )
    found = configured or shutil.which("go") or _FALLBACK_GO
    if not Path(found).is_file():
        raise UserError(
            "the Go toolchain is needed to build the local test environment's binaries but "
            "`go` is not on PATH: install Go 1.25 or newer (or set TFMAAS_GO to its binary)"
        )
    return Path(found)


def go_build_command(go: Path, tool: Tool, output: Path, build_date: str, jobs: int) -> list[str]:
    return [
        str(go),
        "build",
        f"-p={jobs}",
        "-trimpath",
        "-buildvcs=false",
        "-mod=readonly",
        f"-ldflags={tool.ldflags_for(build_date)}",
        "-o",
        str(output),
        tool.package,
    ]


def go_build_env(base: Mapping[str, str]) -> dict[str, str]:
    env = dict(base)
    # Static binaries, as upstream ships them: they run in any image and need no C toolchain.
    env["CGO_ENABLED"] = "0"
    # Our flags are explicit on the command line; a user's GOFLAGS (say -mod=mod) must not
    # let a build quietly resolve different versions than the committed go.sum.
    env.pop("GOFLAGS", None)
    return env


@contextlib.contextmanager
def _build_lock(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".build.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


@dataclasses.dataclass(frozen=True)
class BuildResult:
    tool: Tool
    path: Path
    built: bool
    seconds: float


def build(name: str, *, log: bool = True) -> BuildResult:
    """Return the cached binary for `name`, building it first if this pin was never built, and
    link it under its command name where the programs that run it look."""
    result = _build(lookup(name), log=log)
    if result.tool.command:
        _link_command(result.path, result.tool.command)
    return result


def _link_command(binary: Path, command: str) -> None:
    link = Path(sysconfig.get_path("scripts")) / command
    if link.is_symlink() and link.resolve() == binary.resolve():
        return
    staged = link.with_name(f".{command}.{os.getpid()}")
    staged.unlink(missing_ok=True)
    staged.symlink_to(binary)
    os.replace(staged, link)  # atomic: a server starting now finds the old build or the new


def _build(tool: Tool, *, log: bool) -> BuildResult:
    name = tool.name
    target = binary_path(name)
    if target.is_file():
        return BuildResult(tool, target, built=False, seconds=0.0)
    go = find_go()
    jobs = int(os.environ.get("TFMAAS_BUILD_JOBS", DEFAULT_BUILD_JOBS))
    module_dir = tools_modules_root() / tool.module
    # One lock per binary: a second process asking for the same one waits for it instead of
    # compiling it again, while a quick relink elsewhere need not wait behind a long build.
    with _build_lock(target.parent):
        # Another process may have built it while this one waited for the lock.
        if target.is_file():
            return BuildResult(tool, target, built=False, seconds=0.0)
        target.parent.mkdir(parents=True, exist_ok=True)
        build_date = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        log_path = target.parent / "build.log"
        if log:
            print(f"building {name} {tool.version} from {tool.package} ...", flush=True)
        started = time.monotonic()
        with tempfile.NamedTemporaryFile(
            dir=target.parent, prefix=f".{name}.", delete=False
        ) as tmp:
            partial = Path(tmp.name)
        try:
            with open(log_path, "w") as log_file:
                completed = subprocess.run(
                    go_build_command(go, tool, partial, build_date, jobs),
                    cwd=module_dir,
                    env=go_build_env(os.environ),
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    check=False,
                )
            if completed.returncode != 0:
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
                raise ToolBuildError(
                    f"building {name} failed (exit {completed.returncode}); full log: {log_path}\n"
                    f"{tail}"
                )
            partial.chmod(0o755)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        seconds = time.monotonic() - started
        (target.parent / "build.json").write_text(
            json.dumps(
                {
                    "name": name,
                    "version": tool.version,
                    "seconds": round(seconds, 1),
                    "builtAt": build_date,
                },
                indent=2,
            )
            + "\n"
        )
    if log:
        print(f"built {name} in {seconds:.0f}s: {target}", flush=True)
    return BuildResult(tool, target, built=True, seconds=seconds)


def ensure(name: str) -> Path:
    """The contract other parts use: a runnable binary for `name`, built on first use."""
    return build(name, log=True).path


def ensure_all(names: tuple[str, ...] | list[str] = ALL_TOOLS) -> list[BuildResult]:
    return [build(name) for name in names]


def prune() -> list[Path]:
    """Delete cached builds of pins that no longer match the tools modules; return them."""
    bin_root = cache_root() / "bin"
    if not bin_root.is_dir():
        return []
    current = {binary_path(name).parent.name for name in TOOLS}
    stale = [
        entry
        for entry in sorted(bin_root.iterdir())
        if entry.is_dir() and entry.name not in current
    ]
    for entry in stale:
        shutil.rmtree(entry)
    return stale
