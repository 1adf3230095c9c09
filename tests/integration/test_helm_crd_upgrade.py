"""The chart's CRDs through a release's life on the real local control plane: `helm upgrade`
applies a schema change (a copy of the chart whose CRD has a new field), and `helm uninstall`
keeps the CRD and the ModelServices in it."""

from __future__ import annotations

import copy
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.chart import CHART_DIR, REPO_ROOT, adopt_crds, helm_binary, run_helm
from tfmaas.dev.cluster import LocalCluster

pytestmark = pytest.mark.integration

# The same release as test_helm_install, so whichever module runs first hands the kept CRDs on.
RELEASE = "tfmaas"
NAMESPACE = "tfmaas-system"
MODELS = "crd-upgrade"
NEW_FIELD = "costCenter"
CRD_FILE = Path("files") / "crds" / "modelservices.tfmaas.io.yaml"


class Helm:
    def __init__(self, cluster: LocalCluster, home: Path) -> None:
        self.binary = helm_binary()
        self.env = {
            "KUBECONFIG": str(cluster.kubeconfig),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def __call__(self, *args: str, check: bool = True) -> str:
        return run_helm(self.binary, *args, env=self.env, check=check).stdout


@pytest.fixture(scope="module")
def helm(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Helm]:
    helm = Helm(cluster, tmp_path_factory.mktemp("helm-home"))
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    cluster.kubectl("create", "namespace", MODELS)
    adopt_crds(cluster.kubectl, release=RELEASE, namespace=NAMESPACE)
    yield helm
    helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", check=False)
    cluster.kubectl("delete", "namespace", MODELS, "--wait=false", check=False)


def chart_with_a_new_field(tmp_path: Path) -> Path:
    """A copy of the chart whose ModelService CRD has one more spec field, as a release would."""
    chart = tmp_path / "tfmaas"
    shutil.copytree(CHART_DIR, chart)
    crd = yaml.safe_load((chart / CRD_FILE).read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert NEW_FIELD not in spec["properties"], "pick a field the CRD does not have yet"
    spec["properties"][NEW_FIELD] = {
        "type": "string",
        "maxLength": 63,
        "description": "Cost centre billed for this model (added by the upgrade test).",
    }
    (chart / CRD_FILE).write_text(yaml.safe_dump(crd, sort_keys=False))
    return chart


def model_service(**extra_spec: Any) -> str:
    sample = yaml.safe_load((REPO_ROOT / "deploy" / "samples" / "sentiment.yaml").read_text())
    sample = copy.deepcopy(sample)
    sample["metadata"]["namespace"] = MODELS
    sample["spec"].update(extra_spec)
    return yaml.safe_dump(sample)


def explain(cluster: LocalCluster, field: str, timeout: float = 60.0) -> str:
    # The API server republishes its OpenAPI a moment after a CRD changes.
    deadline = time.monotonic() + timeout
    while True:
        answer = cluster.kubectl("explain", f"modelservice.spec.{field}", check=False)
        if answer.returncode == 0 or time.monotonic() > deadline:
            return answer.stdout + answer.stderr
        time.sleep(1)


def test_upgrade_applies_a_new_crd_field_and_uninstall_keeps_the_crd(
    cluster: LocalCluster, helm: Helm, tmp_path: Path
) -> None:
    helm("install", RELEASE, str(CHART_DIR), "-n", NAMESPACE)
    crd = cluster.kubectl_json("get", "crd", "modelservices.tfmaas.io")
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE
    # Before the upgrade the API server knows no such field: it rejects it (strict validation).
    refused = cluster.kubectl(
        "apply",
        "--validate=strict",
        "-f",
        "-",
        input=model_service(costCenter="ml-42"),
        check=False,
    )
    assert refused.returncode != 0 and NEW_FIELD in refused.stderr, refused.stderr
    cluster.kubectl("apply", "-f", "-", input=model_service())

    helm("upgrade", RELEASE, str(chart_with_a_new_field(tmp_path)), "-n", NAMESPACE)
    explained = explain(cluster, NEW_FIELD)
    assert f"FIELD: {NEW_FIELD} <string>" in explained, explained
    assert "Cost centre billed for this model" in explained
    # The existing ModelService takes the field, and the API server stores it (not pruned).
    cluster.kubectl(
        "apply", "--validate=strict", "-f", "-", input=model_service(costCenter="ml-42")
    )
    stored = cluster.kubectl_json("get", "modelservice", "sentiment", "-n", MODELS)
    assert stored["spec"][NEW_FIELD] == "ml-42"

    uninstalled = helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait")
    assert "modelservices.tfmaas.io" in uninstalled  # Helm lists what the policy kept
    for name in (
        "modelservices.tfmaas.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    ):
        kept = cluster.kubectl_json("get", "crd", name)
        assert kept["metadata"].get("deletionTimestamp") is None
    assert NEW_FIELD in explain(cluster, NEW_FIELD)
    survivor = cluster.kubectl_json("get", "modelservice", "sentiment", "-n", MODELS)
    assert survivor["metadata"]["uid"] == stored["metadata"]["uid"]
    assert survivor["spec"][NEW_FIELD] == "ml-42"

    # Installing again takes the kept CRDs back into the release and returns them to the
    # chart's schema.
    helm("install", RELEASE, str(CHART_DIR), "-n", NAMESPACE)
    crd = cluster.kubectl_json("get", "crd", "modelservices.tfmaas.io")
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert NEW_FIELD not in spec_schema["properties"]
