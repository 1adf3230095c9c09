"""The local node's generated configuration: pure functions, checked without running anything."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from tfmaas.dev import cni
from tfmaas.dev.containerd import ContainerdPaths, config_toml
from tfmaas.dev.node import corefile, kube_proxy_config, kubelet_config


def _network(tmp_path: Path) -> cni.PodNetwork:
    return cni.PodNetwork(bridge="tfmaas0", pod_cidr="10.244.0.0/24", ipam_data_dir=tmp_path)


def test_pod_network_never_masquerades_and_uses_the_bridge_gateway(tmp_path: Path) -> None:
    network = _network(tmp_path)
    conf = cni.conflist(network)
    bridge = conf["plugins"][0]
    assert network.gateway == "10.244.0.1"
    assert bridge["type"] == "bridge" and bridge["bridge"] == "tfmaas0"
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.0.0/24", "gateway": "10.244.0.1"}]]
    assert bridge["ipam"]["dataDir"] == str(tmp_path)
    assert [p["type"] for p in conf["plugins"]] == ["bridge", "portmap", "loopback"]


def test_containerd_config_is_private_and_uses_the_local_pause_image(tmp_path: Path) -> None:
    paths = ContainerdPaths.under(tmp_path / "containerd", tmp_path / "run")
    text = config_toml(paths, sandbox_image="tfmaas.local/pause:abc", cni_bin_dir=Path("/cni"))
    assert f'root = "{tmp_path}/containerd/root"' in text
    assert f'address = "{tmp_path}/run/containerd.sock"' in text
    assert 'sandbox_image = "tfmaas.local/pause:abc"' in text
    assert 'snapshotter = "overlayfs"' in text
    assert "SystemdCgroup = false" in text
    assert f'conf_dir = "{tmp_path}/containerd/cni/net.d"' in text


def test_kubelet_config_fits_the_sandbox(tmp_path: Path) -> None:
    config = kubelet_config(
        address="10.244.0.1",
        port=10250,
        healthz_port=10248,
        ca_file=tmp_path / "ca.crt",
        tls_cert=tmp_path / "k.crt",
        tls_key=tmp_path / "k.key",
        runtime_endpoint="unix:///run/c.sock",
        cluster_dns="10.244.0.1",
        resolv_conf=tmp_path / "resolv.conf",
        pod_logs_dir=tmp_path / "pod-logs",
    )
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["failCgroupV1"] is False
    assert config["failSwapOn"] is False
    assert config["imageGCHighThresholdPercent"] == 100
    assert config["readOnlyPort"] == 0
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authorization"]["mode"] == "Webhook"
    assert config["clusterDNS"] == ["10.244.0.1"]
    assert config["containerRuntimeEndpoint"] == "unix:///run/c.sock"
    # Pod logs stay in the node's directory, not the host's /var/log/pods.
    assert config["podLogsDir"] == str(tmp_path / "pod-logs")


def test_kube_proxy_runs_iptables_mode_and_opens_node_ports_on_the_bridge_only(
    tmp_path: Path,
) -> None:
    config = kube_proxy_config(
        kubeconfig=tmp_path / "kp.kubeconfig",
        node_name="n",
        pod_cidr="10.244.0.0/24",
        node_address="10.244.0.1",
        healthz_port=1,
        metrics_port=2,
    )
    assert config["mode"] == "iptables"
    assert config["clusterCIDR"] == "10.244.0.0/24"
    assert config["nodePortAddresses"] == ["10.244.0.1/32"]
    for key in ("healthzBindAddress", "metricsBindAddress"):
        assert ipaddress.ip_address(config[key].rsplit(":", 1)[0]).is_loopback


def test_corefile_serves_the_cluster_domain_on_the_node_address(tmp_path: Path) -> None:
    text = corefile(bind="10.244.0.1", kubeconfig=tmp_path / "admin", ready_port=8181)
    assert "bind 10.244.0.1" in text
    assert "kubernetes cluster.local in-addr.arpa ip6.arpa" in text
    assert f"kubeconfig {tmp_path / 'admin'}" in text
    assert "ready 127.0.0.1:8181" in text
    # Nothing outside the machine can be reached, so no upstream is configured.
    assert "forward" not in text


def test_prometheus_scrapes_serving_pods_rest_port_at_tf_serving_path(tmp_path: Path) -> None:
    from tfmaas.dev.monitoring import file_sd_targets, scrape_config

    job = scrape_config(tmp_path / "targets.json")["scrape_configs"][0]
    assert job["metrics_path"] == "/monitoring/prometheus/metrics"
    assert job["file_sd_configs"][0]["files"] == [str(tmp_path / "targets.json")]
    pods = [
        {
            "metadata": {
                "namespace": "ml",
                "name": "b",
                "labels": {
                    "tfmaas.io/model-service": "reviews",
                    "tfmaas.io/version": "3",
                    "tfmaas.io/track": "stable",
                    "app": "not-copied",
                },
            },
            "status": {"phase": "Running", "podIP": "10.244.0.7"},
        },
        {"metadata": {"namespace": "ml", "name": "a"}, "status": {"phase": "Pending"}},
        {
            # A guarded pod advertises the access gateway's token-free metrics port.
            "metadata": {
                "namespace": "ml",
                "name": "c",
                "annotations": {"prometheus.io/port": "8502"},
            },
            "status": {"phase": "Running", "podIP": "10.244.0.8"},
        },
    ]
    assert file_sd_targets(pods) == [
        {
            "targets": ["10.244.0.7:8501"],
            "labels": {
                "namespace": "ml",
                "pod": "b",
                "model_service": "reviews",
                "model_version": "3",
                "track": "stable",
            },
        },
        {"targets": ["10.244.0.8:8502"], "labels": {"namespace": "ml", "pod": "c"}},
    ]


def test_local_prometheus_labels_serving_series_as_the_charts_pod_monitor_does() -> None:
    import re

    from tfmaas.dev.monitoring import POD_LABELS

    template = (
        Path(__file__).resolve().parents[2] / "charts" / "tfmaas" / "templates" / "_monitoring.tpl"
    ).read_text()
    block = template.split('define "tfmaas.podMonitorRelabelings"')[1].split("{{- end }}")[0]
    pairs = re.findall(r"__meta_kubernetes_pod_label_(\w+)\]\s+targetLabel: (\w+)", block)
    # Prometheus writes a pod label's "." and "/" as "_" in its meta label.
    assert {re.sub(r"[./-]", "_", key): name for key, name in POD_LABELS.items()} == dict(pairs)
