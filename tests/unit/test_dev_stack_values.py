"""The local stack's chart values point every image, the access gateway's too, at local builds."""

from __future__ import annotations

import re
from pathlib import Path

from tfmaas.dev import images, stack


def test_the_access_gateway_runs_from_its_own_local_image() -> None:
    built = {
        "serving": images.BuiltImage("tfmaas.local/serving:abc123", Path("serving.tar")),
        "access-gateway": images.BuiltImage("tfmaas.local/access-gateway:def456", Path("g.tar")),
    }
    values = stack.chart_values(built)
    assert values["defaults.serving.image.repository"] == "tfmaas.local/serving"
    # The local node's GPUs are fake: GPU replicas run the same local image, never pulled.
    assert values["defaults.serving.gpuImage.repository"] == "tfmaas.local/serving"
    assert values["defaults.serving.gpuImage.tag"] == "abc123"
    assert "defaults.serving.gpuImage.pullPolicy" not in values
    assert values["defaults.serving.image.pullPolicy"] == "Never"
    assert values["access.gateway.image.repository"] == "tfmaas.local/access-gateway"
    assert values["access.gateway.image.tag"] == "def456"
    assert "access.gateway.image.repository" not in stack.chart_values({})


def test_the_local_gateway_image_is_the_dockerfiles_final_stage() -> None:
    """Same binary path, user and entrypoint as images/Dockerfile.access-gateway's last stage,
    so what the e2e suite runs is what a registry build ships."""
    dockerfile = (images.REPO_ROOT / "images" / "Dockerfile.access-gateway").read_text()
    final = dockerfile[dockerfile.rindex("FROM ") :]
    assert final.startswith("FROM scratch")
    assert f"/out/access-gateway {images.ACCESS_GATEWAY_BINARY}" in final
    assert re.search(r"^USER 65532:65532$", final, re.M)
    assert 'ENTRYPOINT ["access-gateway"]' in final
    assert "ENV PATH=/usr/local/bin" in final
    # The operator starts the gateway by that name (the chart's access.gateway.command default).
    from tfmaas.operator.config import OperatorConfig

    assert OperatorConfig().access_gateway_command == ("access-gateway",)
