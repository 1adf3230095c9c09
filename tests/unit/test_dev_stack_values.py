"""The local stack's chart values point every image, the access gateway's too, at local builds."""

from __future__ import annotations

from pathlib import Path

from tfmaas.dev import images, stack


def test_the_access_gateway_runs_from_the_local_serving_image() -> None:
    built = {"serving": images.BuiltImage("tfmaas.local/serving:abc123", Path("serving.tar"))}
    values = stack.chart_values(built)
    assert values["defaults.serving.image.repository"] == "tfmaas.local/serving"
    assert values["access.gateway.image.repository"] == "tfmaas.local/serving"
    assert values["access.gateway.image.tag"] == "abc123"
    assert "access.gateway.image.repository" not in stack.chart_values({})
