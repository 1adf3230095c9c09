"""Fake nodes for the local control plane, simulated by kwok (`tools/kwok`).

kwok marks the Nodes it manages Ready, keeps their leases fresh and moves the pods bound to
them through their lifecycle by Stage rules, with no container runtime: serving pods become
Running and Ready, training pods (pods of a Job) finish. What kwok cannot do is run the
trainer, so the training Stage writes the termination message the trainer would have
written — the very document the operator reads a finished training's version and metrics
from (`trainer/entrypoint.py`, `TrainResult.termination_message`). Nothing is published to a
model store; the serving pods that would load it never run either.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tfmaas.dev import processes, tools
from tfmaas.dev.cluster import LocalCluster

STAGE_API_VERSION = "kwok.x-k8s.io/v1alpha1"
# Only Nodes carrying this annotation are kwok's: a real node in the same cluster is left alone.
NODE_ANNOTATION = "kwok.x-k8s.io/node"
NODE_ANNOTATION_VALUE = "fake"
NODE_LABEL = "type"
NODE_LABEL_VALUE = "kwok"
# The Job pods' metrics, as a trainer run that passes the default quality gate reports them.
SIMULATED_ACCURACY = 0.9
MAX_NODES = 1000
NODE_LEASE_SECONDS = 40
_VERSION_LABEL = "tfmaas.io/version"

_NOT_DELETED = {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"}


def _stage(name: str, expressions: list[dict[str, Any]], nxt: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": STAGE_API_VERSION,
        "kind": "Stage",
        "metadata": {"name": name},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
            "selector": {"matchExpressions": expressions},
            "next": nxt,
        },
    }


# kwok's own "fast" pod-ready Stage: every container running and ready, init containers done.
_POD_READY = """\
{{ $now := Now }}
conditions:
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Initialized
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Ready
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: ContainersReady
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: true
  restartCount: 0
  started: true
  state:
    running:
      startedAt: {{ $now | Quote }}
{{ end }}
initContainerStatuses:
{{ range .spec.initContainers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: true
  restartCount: 0
  state:
    terminated:
      exitCode: 0
      finishedAt: {{ $now | Quote }}
      reason: Completed
      startedAt: {{ $now | Quote }}
{{ end }}
hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
podIP: {{ PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) \
( or .metadata.name "" ) ( or .metadata.namespace "" ) | Quote }}
phase: Running
startTime: {{ $now | Quote }}
"""


def termination_message_template(accuracy: float = SIMULATED_ACCURACY) -> str:
    """The trainer's termination message as a kwok template: the version is the pod's own
    version label, so each simulated run reports the version its Job was started for."""
    metrics = {name: accuracy for name in ("accuracy", "precision", "recall", "f1")}
    # Go template actions inside a JSON string: the label is digits (the operator sets it),
    # the timestamp is RFC 3339; neither needs escaping. The label's name is a Go raw string
    # (backquotes) so that quoting the message for YAML leaves the action intact; `$` is the
    # pod, since the message sits inside a range over its containers.
    return (
        '{"version":{{ index $.metadata.labels `' + _VERSION_LABEL + "` }},"
        f'"metrics":{json.dumps(metrics, separators=(",", ":"))},'
        '"trainedAt":"{{ $now }}",'
        '"examples":{"train":80,"validation":10,"test":10}}'
    )


def _training_complete(accuracy: float) -> str:
    message = termination_message_template(accuracy)
    return (
        "{{ $now := Now }}\n"
        "containerStatuses:\n"
        "{{ range .spec.containers }}\n"
        "- image: {{ .image | Quote }}\n"
        "  name: {{ .name | Quote }}\n"
        "  ready: false\n"
        "  restartCount: 0\n"
        "  started: false\n"
        "  state:\n"
        "    terminated:\n"
        "      exitCode: 0\n"
        "      reason: Completed\n"
        "      startedAt: {{ $now | Quote }}\n"
        "      finishedAt: {{ $now | Quote }}\n"
        f"      message: {json.dumps(message)}\n"
        "{{ end }}\n"
        "phase: Succeeded\n"
    )


def pod_stages(*, accuracy: float = SIMULATED_ACCURACY) -> list[dict[str, Any]]:
    """Every pod on a fake node starts at once; a Job's pods then exit 0 reporting `accuracy`;
    a deleted pod goes at once (no kubelet is there to confirm it stopped)."""
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be within [0, 1], not {accuracy}")
    return [
        _stage(
            "pod-ready",
            [_NOT_DELETED, {"key": ".status.podIP", "operator": "DoesNotExist"}],
            {"statusTemplate": _POD_READY},
        ),
        _stage(
            "training-complete",
            [
                _NOT_DELETED,
                {"key": ".status.phase", "operator": "In", "values": ["Running"]},
                {"key": ".metadata.ownerReferences.[].kind", "operator": "In", "values": ["Job"]},
            ],
            {"statusTemplate": _training_complete(accuracy)},
        ),
        _stage(
            "pod-delete",
            [{"key": ".metadata.deletionTimestamp", "operator": "Exists"}],
            {"finalizers": {"empty": True}, "delete": True},
        ),
    ]


def node_manifest(name: str) -> dict[str, Any]:
    """A Node for kwok to manage; kwok fills in its status (Ready, ample capacity)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {NODE_ANNOTATION: NODE_ANNOTATION_VALUE},
            "labels": {
                "kubernetes.io/hostname": name,
                NODE_LABEL: NODE_LABEL_VALUE,
            },
        },
    }


def node_names(count: int, prefix: str = "kwok-node") -> list[str]:
    if not 1 <= count <= MAX_NODES:
        raise ValueError(f"node count must be within 1..{MAX_NODES}, not {count}")
    return [f"{prefix}-{index:04d}" for index in range(count)]


def kwok_args(*, kubeconfig: Path, config: Path) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}",
        f"--config={config}",
        f"--manage-nodes-with-annotation-selector={NODE_ANNOTATION}={NODE_ANNOTATION_VALUE}",
        # Leases, not node status writes, as heartbeats: a tenth of the API traffic.
        f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
        # A line per lease renewal and pod patch at INFO: thousands a minute at scale.
        "--v=WARN",
        # Pod IPs come from this range; nothing routes to them.
        "--cidr=10.128.0.0/12",
        "--node-ip=10.127.0.1",
    ]


def _config_documents(stages: Sequence[Mapping[str, Any]]) -> str:
    return yaml.safe_dump_all([dict(stage) for stage in stages], sort_keys=False)


@contextmanager
def running(
    cluster: LocalCluster,
    directory: Path,
    *,
    nodes: int,
    accuracy: float = SIMULATED_ACCURACY,
    timeout: float = 120.0,
) -> Iterator[processes.ManagedProcess]:
    """kwok against `cluster` with `nodes` fake nodes, all Ready before this yields."""
    names = node_names(nodes)
    binary = tools.ensure("kwok")
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "kwok.yaml"
    config.write_text(_config_documents(pod_stages(accuracy=accuracy)))
    process = processes.start(
        "kwok",
        [str(binary), *kwok_args(kubeconfig=cluster.kubeconfig, config=config)],
        log_path=directory / "kwok.log",
        env={"HOME": str(directory)},
        cwd=directory,
    )
    try:
        documents = "\n---\n".join(json.dumps(node_manifest(name)) for name in names)
        cluster.kubectl("apply", "-f", "-", input=documents, timeout=timeout)
        processes.wait_until(
            lambda: _ready_nodes(cluster) >= nodes,
            timeout=timeout,
            what=f"{nodes} kwok nodes to be Ready",
            processes=[process],
            interval=1.0,
        )
        yield process
    finally:
        process.stop()


def _ready_nodes(cluster: LocalCluster) -> int:
    found = cluster.kubectl_json("get", "nodes", "-l", f"{NODE_LABEL}={NODE_LABEL_VALUE}")
    return sum(
        1
        for node in found.get("items") or []
        if any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (node.get("status") or {}).get("conditions") or []
        )
    )
