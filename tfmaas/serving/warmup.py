"""TF Serving's model warmup: replay `assets.extra/tf_serving_warmup_requests` before serving.

The file is a TFRecord of tensorflow.serving.PredictionLog records; each Predict, Classify,
Regress or MultiInference request in it runs once on the new version before it becomes
AVAILABLE, so its first real requests do not pay for graph initialisation. A record that fails
fails the load, as in TF Serving. The file is a data file: its size, its record count (TF
Serving's own cap of 1000) and each request's tensors (the request limits) are bounded.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from tfmaas.client.tensors import TensorConversionError, decoded_size, to_numpy
from tfmaas.serving import inference
from tfmaas.serving.core import checked_plan
from tfmaas.serving.limits import RequestLimits
from tfmaas.serving.runner import ServedVersion
from tfmaas.serving.servable import DEFAULT_SIGNATURE

log = logging.getLogger(__name__)

WARMUP_FILE = Path("assets.extra", "tf_serving_warmup_requests")
MAX_RECORDS = 1000  # TF Serving's kMaxNumRecords
MAX_FILE_BYTES = 1 << 30


class WarmupError(Exception):
    pass


def warmup_file(version_path: Path) -> Path | None:
    path = version_path / WARMUP_FILE
    return path if path.is_file() else None


def read_records(path: Path) -> list[prediction_log_pb2.PredictionLog]:
    import tensorflow as tf

    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise WarmupError(
            f"{path}: {size} bytes, over the {MAX_FILE_BYTES} bytes a warmup file may hold"
        )
    records: list[prediction_log_pb2.PredictionLog] = []
    for data in tf.data.TFRecordDataset(str(path)):
        if len(records) == MAX_RECORDS:
            raise WarmupError(
                f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}"
            )
        records.append(prediction_log_pb2.PredictionLog.FromString(data.numpy()))
    return records


def _predict(
    served: ServedVersion, request: predict_pb2.PredictRequest, limits: RequestLimits
) -> None:
    signature = served.signature(request.model_spec.signature_name or DEFAULT_SIGNATURE)
    budget = limits.budget()
    inputs = {}
    for alias, proto in request.inputs.items():
        try:
            elements, nbytes = decoded_size(proto)
            budget.charge(elements=elements, nbytes=nbytes)
            inputs[alias] = (to_numpy(proto), proto.dtype)
        except TensorConversionError as exc:
            raise WarmupError(f"tensor parsing error: {alias} ({exc})") from exc
    plan = checked_plan(served, signature, inputs, list(request.output_filter))
    served.run(plan.signature, plan.inputs)


def replay(served: ServedVersion, name: str, path: Path, limits: RequestLimits) -> int:
    """Run every request of the warmup file once; returns how many ran."""
    records = read_records(path)
    for record in records:
        kind = record.WhichOneof("log_type")
        if kind == "predict_log":
            _predict(served, record.predict_log.request, limits)
        elif kind == "classify_log":
            inference.classify_on(served, name, record.classify_log.request, limits)
        elif kind == "regress_log":
            inference.regress_on(served, name, record.regress_log.request, limits)
        elif kind == "multi_inference_log":
            inference.multi_inference_on(served, name, record.multi_inference_log.request, limits)
        else:
            raise WarmupError(f"Unsupported log_type for warmup: {kind}")
    return len(records)
