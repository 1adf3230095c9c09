"""A small custom-metrics API server for the local cluster, in place of prometheus-adapter.

prometheus-adapter cannot be built here (its Go module is not served by the module proxy), so
the local stack answers `custom.metrics.k8s.io/v1beta2` itself with the same rule the chart
ships for prometheus-adapter: per pod, `sum by (pod) (rate(:tensorflow:serving:request_count
[window]))`, published as the Pods metric the serving HPAs target. The API server reaches it
through an APIService like any aggregated API; it serves read-only metrics and nothing else.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from tfmaas.timestamps import now_rfc3339

GROUP = "custom.metrics.k8s.io"
VERSION = "v1beta2"
DEFAULT_METRIC = "tfserving_requests_per_second"
SOURCE_SERIES = ":tensorflow:serving:request_count"
_POD_METRIC_PATH = re.compile(
    rf"^/apis/{re.escape(GROUP)}/{VERSION}/namespaces/(?P<namespace>[^/]+)/pods/"
    r"(?P<name>[^/]+)/(?P<metric>[^/]+)$"
)

# (namespace, label selector) -> pod names; rate query -> {pod: requests per second}
PodLister = Callable[[str, str], list[str]]
RateQuery = Callable[[str], dict[str, float]]


def rate_query(namespace: str, pods: list[str], window: str) -> str:
    """The chart's adapter rule, for the given pods."""
    # Pod names are DNS labels: only "." is a regex metacharacter, and a PromQL string needs
    # its backslash doubled (re.escape's "\\-" is an invalid PromQL escape).
    pod_regex = "|".join(pod.replace(".", "\\\\.") for pod in pods)
    return (
        f'sum by (pod) (rate({SOURCE_SERIES}{{namespace="{namespace}",pod=~"{pod_regex}"}}'
        f"[{window}]))"
    )


def quantity(value: float) -> str:
    """A Kubernetes quantity in milli-units, as metrics APIs report rates."""
    return f"{round(value * 1000)}m"


def resource_list(metric: str) -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{GROUP}/{VERSION}",
        "resources": [
            {
                "name": f"pods/{metric}",
                "singularName": "",
                "namespaced": True,
                "kind": "MetricValueList",
                "verbs": ["get"],
            }
        ],
    }


def metric_values(
    *, namespace: str, pods: list[str], rates: dict[str, float], metric: str, window_seconds: int
) -> dict[str, Any]:
    now = now_rfc3339()
    return {
        "kind": "MetricValueList",
        "apiVersion": f"{GROUP}/{VERSION}",
        "metadata": {},
        "items": [
            {
                "describedObject": {
                    "kind": "Pod",
                    "namespace": namespace,
                    "name": pod,
                    "apiVersion": "/v1",
                },
                "metric": {"name": metric},
                "timestamp": now,
                "windowSeconds": window_seconds,
                "value": quantity(rates.get(pod, 0.0)),
            }
            for pod in pods
        ],
    }


class CustomMetricsServer:
    """HTTPS on 127.0.0.1:`port`; certificate and key from the cluster's CA."""

    def __init__(
        self,
        *,
        list_pods: PodLister,
        query_rates: RateQuery,
        cert: Path,
        key: Path,
        metric: str = DEFAULT_METRIC,
        window: str = "1m",
    ) -> None:
        self.list_pods = list_pods
        self.query_rates = query_rates
        self.metric = metric
        self.window = window
        self.window_seconds = int(window.rstrip("ms")) * (60 if window.endswith("m") else 1)
        handler = self._handler()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> CustomMetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, path: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        if path in ("/healthz", "/readyz", "/livez"):
            return 200, {"status": "ok"}
        if path == f"/apis/{GROUP}/{VERSION}":
            return 200, resource_list(self.metric)
        match = _POD_METRIC_PATH.match(path)
        if not match or match["metric"] != self.metric:
            return 404, _status(404, f"no metric at {path}")
        namespace = match["namespace"]
        selector = query.get("labelSelector", [""])[0]
        pods = self.list_pods(namespace, selector)
        if match["name"] != "*":
            pods = [pod for pod in pods if pod == match["name"]] or [match["name"]]
        rates = self.query_rates(rate_query(namespace, pods, self.window)) if pods else {}
        return 200, metric_values(
            namespace=namespace,
            pods=pods,
            rates=rates,
            metric=self.metric,
            window_seconds=self.window_seconds,
        )

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parsed = urlparse(self.path)
                try:
                    code, body = server.answer(unquote(parsed.path), parse_qs(parsed.query))
                except Exception as exc:
                    code, body = 500, _status(500, str(exc))
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler


def _status(code: int, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "code": code,
    }
