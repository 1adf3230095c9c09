"""The operator's own Prometheus metrics: how often it reconciles, how long that takes,
what fails, how many training Jobs it started, and where each ModelService stands."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

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

# One series per ModelService. Its namespace and name are Kubernetes-validated (DNS labels),
# so they are safe label values; model_metrics.py removes the series when the ModelService goes.
MODEL_LABELS = ("namespace", "modelservice")


def _model_gauge(name: str, documentation: str) -> Gauge:
    return Gauge(name, documentation, MODEL_LABELS, registry=REGISTRY)


MODEL_GAUGES = {
    "served_version": _model_gauge(
        "tfmaas_modelservice_served_version",
        "Version the stable track has fully rolled out (absent before the first).",
    ),
    "canary_version": _model_gauge(
        "tfmaas_modelservice_canary_version", "Version on the canary track (absent without one)."
    ),
    "latest_version": _model_gauge(
        "tfmaas_modelservice_latest_version", "Newest version trained or training."
    ),
    "served_accuracy": _model_gauge(
        "tfmaas_modelservice_served_accuracy", "Test accuracy of the served version."
    ),
    "served_f1": _model_gauge("tfmaas_modelservice_served_f1", "Test F1 of the served version."),
    "ready": _model_gauge(
        "tfmaas_modelservice_ready", "1 when the Ready condition is True, else 0."
    ),
    "training_running": _model_gauge(
        "tfmaas_modelservice_training_running", "1 while a version is training, else 0."
    ),
    "training_failed": _model_gauge(
        "tfmaas_modelservice_training_failed",
        "1 when the newest version's training failed, else 0.",
    ),
    "below_quality_gate": _model_gauge(
        "tfmaas_modelservice_below_quality_gate",
        "1 when the newest trained version did not pass the quality gate, else 0.",
    ),
}
# Not derived from status (which keeps no durations): set when a reconcile finds a training
# finished, so the value steps once per version; model_metrics.remove drops it too.
LAST_TRAINING_SECONDS = _model_gauge(
    "tfmaas_modelservice_last_training_seconds",
    "Wall time of the newest training the operator saw finish (its Job's start to end).",
)


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Expose /metrics on a background thread."""
    start_http_server(port, addr=address, registry=REGISTRY)
