"""The version report as a browser shows it: rendered by headless Chromium (Debian's package),
its figures are in the DOM and on the screenshot. Skips when Chromium is absent, except under
CI, where .ci/install-system-packages installs it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required under CI (.ci/install-system-packages)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return found


def render(
    page: Path, *, screenshot: Path | None = None, width: int = 1200, height: int = 1400
) -> str:
    """The DOM after rendering (and a PNG screenshot when asked); no network is needed."""
    args = [
        chromium(),
        "--headless",
        "--no-sandbox",  # tests may run as root, which Chromium's sandbox refuses
        "--disable-gpu",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
        f"--user-data-dir={page.parent / 'chromium-profile'}",
    ]
    if screenshot is not None:
        args.append(f"--screenshot={screenshot}")
    else:
        args.append("--dump-dom")
    done = subprocess.run(
        [*args, page.as_uri()], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _pixels(png: Path) -> np.ndarray:
    import tensorflow as tf

    return tf.io.decode_png(png.read_bytes(), channels=3).numpy().astype(int)


def test_the_report_renders_with_its_figures(tmp_path: Path) -> None:
    from tests.unit.test_trainer_report import _inputs
    from tfmaas.trainer.report import render_report

    page = tmp_path / "report.html"
    page.write_text(render_report(*_inputs(["negative", "positive"])), encoding="utf-8")

    dom = render(page)
    assert dom.count('class="curve"') == 4 and dom.count('class="cell"') == 4
    assert dom.count("<svg") >= 5  # two curves, heatmap, F1 bars, top units

    shot = tmp_path / "report.png"
    render(page, screenshot=shot)
    pixels = _pixels(shot)
    assert pixels.shape[:2] == (1400, 1200)
    background = (pixels > 245).all(axis=-1)
    assert background.mean() < 0.97, "the screenshot is (nearly) blank"

    def share_near(rgb: tuple[int, int, int]) -> float:
        return float((np.abs(pixels - np.array(rgb)).sum(axis=-1) < 40).mean())

    assert share_near((31, 119, 180)) > 0.0005  # the train curves' blue
    assert share_near((255, 127, 14)) > 0.0005  # validation curves and unit bars, orange
    assert share_near((8, 48, 107)) + share_near((26, 70, 125)) > 0.001  # the dark diagonal
