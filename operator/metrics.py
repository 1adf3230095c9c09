"""The operator's own Prometheus metrics: how often it reconciles, how long that takes,
what fails, and how many training Jobs it started."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter(
    "tfmaas_operator_reconciles",
    "Reconciles of a ModelService, by result (ok, invalid, transient, error).",
    ["result"],
    registry=REGISTRY,
)
TRIGGERS = Counter(
    "tfmaas_operator_reconcile_triggers",
    "What started each reconcile (create, update, resume, resync, owned).",
    ["trigger"],
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "tfmaas_operator_reconcile_duration_seconds",
    "Wall time of one reconcile, API calls included.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
TRAINING_JOBS = Counter(
    "tfmaas_operator_training_jobs_started",
    "Training Jobs the operator created.",
    registry=REGISTRY,
)


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Expose /metrics on a background thread."""
    start_http_server(port, addr=address, registry=REGISTRY)
