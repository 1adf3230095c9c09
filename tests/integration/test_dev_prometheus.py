"""The local stack's Prometheus pieces against a real Prometheus (Debian's package)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tfmaas.dev.metrics_adapter import rate_query
from tfmaas.dev.monitoring import LocalPrometheus

pytestmark = pytest.mark.integration


@pytest.fixture
def prometheus(tmp_path: Path):  # type: ignore[no-untyped-def]
    if shutil.which("prometheus") is None and not Path("/usr/bin/prometheus").exists():
        pytest.skip("prometheus is not installed: run .ci/install-system-packages")
    pods = [
        {
            "metadata": {"namespace": "ml", "name": "web-1"},
            "status": {"phase": "Running", "podIP": "127.0.0.1"},
        }
    ]
    server = LocalPrometheus(tmp_path, lambda selector: pods).start()
    yield server
    server.stop()


def test_the_adapter_rule_query_is_valid_promql_for_real_pod_names(
    prometheus: LocalPrometheus,
) -> None:
    names = ["sentiment-57db9dd597-zfllr", "with.dot-1"]
    assert prometheus.query(rate_query("ml", names, "1m")) == []


def test_discovered_pods_become_scrape_targets(prometheus: LocalPrometheus) -> None:
    import json
    import time
    import urllib.request

    deadline = time.monotonic() + 30
    while True:
        with urllib.request.urlopen(f"{prometheus.url}/api/v1/targets", timeout=5) as response:
            active = json.load(response)["data"]["activeTargets"]
        if active or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert [t["labels"]["pod"] for t in active] == ["web-1"]
    assert active[0]["scrapeUrl"] == "http://127.0.0.1:8501/monitoring/prometheus/metrics"


def test_rules_loaded_into_a_running_prometheus_are_evaluated(
    prometheus: LocalPrometheus, tmp_path: Path
) -> None:
    import time

    import yaml

    rules = tmp_path / "rules.yaml"
    group = {"name": "t", "rules": [{"alert": "AlwaysFiring", "expr": "vector(1)", "for": "0s"}]}
    rules.write_text(yaml.safe_dump({"groups": [group]}))
    assert prometheus.alerts() == []
    prometheus.load_rules((rules,))
    deadline = time.monotonic() + 30
    while not prometheus.alerts() and time.monotonic() < deadline:
        time.sleep(1)
    (alert,) = prometheus.alerts()
    assert alert["labels"]["alertname"] == "AlwaysFiring" and alert["state"] == "firing"
    # A broken rule file is refused by Prometheus, which keeps the last good rules: no wait
    # for groups that never load passes silently.
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({"groups": [{"name": "b", "rules": [{"alert": "X"}]}]}))
    with pytest.raises(Exception, match="rules"):
        prometheus.load_rules((broken,), timeout=5)
