"""The helm built from its module renders the chart offline without being told a version."""

from tests.fixtures.chart import CHART_DIR, helm_binary, run_helm


def test_helm_renders_and_lints_the_chart_offline_without_kube_version() -> None:
    # Unless stamped with the pinned Kubernetes version (tfmaas.dev.tools), a helm built from
    # its module assumes Kubernetes 1.20 offline and the chart's kubeVersion constraint fails.
    rendered = run_helm(helm_binary(), "template", "t", str(CHART_DIR))
    assert "kind: Deployment" in rendered.stdout
    lint = run_helm(helm_binary(), "lint", str(CHART_DIR))
    assert "0 chart(s) failed" in lint.stdout
