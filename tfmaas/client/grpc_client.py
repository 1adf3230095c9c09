"""gRPC client for TF Serving's PredictionService / ModelService (and tfmaas's embedded server).

Behind a headless Service, `dns:///name.namespace.svc:8500` with `round_robin=True` spreads calls
over every pod: one HTTP/2 connection per pod, re-resolved as pods come and go. UNAVAILABLE
(a pod restarting, a connection aged out by `grpc.max_connection_age_ms`) is retried with backoff;
any other failure is raised as PredictionError carrying the server's code and message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tfmaas.client.explanations import EXPLAIN_SIGNATURE, Explanation, to_explanations
from tfmaas.client.predictions import Prediction, PredictionError, to_predictions
from tfmaas.client.retry import with_backoff
from tfmaas.client.tensors import from_numpy, strings_proto, to_numpy

T = TypeVar("T")
_STATE_NAMES = {
    0: "UNKNOWN",
    10: "START",
    20: "LOADING",
    30: "AVAILABLE",
    40: "UNLOADING",
    50: "END",
}
_MAX_MESSAGE_BYTES = 2**31 - 1


def _fill_spec(
    spec: Any, model: str, version: int | None, label: str | None, signature: str
) -> None:
    if version is not None and label:
        raise PredictionError("INVALID_ARGUMENT", "choose a version or a label, not both")
    spec.name = model
    if signature:
        spec.signature_name = signature
    if version is not None:
        spec.version.value = version
    elif label:
        spec.version_label = label


def _status_code(error: grpc.RpcError) -> grpc.StatusCode:
    return error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN


def _unavailable(error: Exception) -> bool:
    """The server is (for now) unreachable: worth another try once it is back."""
    return isinstance(error, grpc.RpcError) and _status_code(error) == grpc.StatusCode.UNAVAILABLE


class GrpcClient:
    def __init__(
        self,
        target: str,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        round_robin: bool | None = None,
        options: Sequence[tuple[str, Any]] = (),
        token: str | None = None,
        root_certificates: bytes | None = None,
    ) -> None:
        """`token` goes with every call as `authorization: Bearer` (what a ModelService with
        access control wants); `root_certificates` (PEM) switches the channel to TLS."""
        if round_robin is None:
            round_robin = target.startswith(("dns:", "ipv4:", "ipv6:"))
        channel_options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
        ]
        if round_robin:
            channel_options.append(("grpc.lb_policy_name", "round_robin"))
        channel_options.extend(options)
        self.target = target
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        # Metadata rather than call credentials: gRPC sends those only over TLS, and a gateway
        # without TLS (inside a trusted network) still wants the token.
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        if root_certificates is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(target, credentials, options=channel_options)
        else:
            self._channel = grpc.insecure_channel(target, options=channel_options)
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Callable[..., T], request: Any) -> T:
        try:
            return with_backoff(
                lambda: method(request, timeout=self.timeout, metadata=self._metadata),
                retries=self.retries,
                backoff=self.backoff,
                transient=_unavailable,
            )
        except grpc.RpcError as exc:
            code = _status_code(exc)
            details = exc.details() if hasattr(exc, "details") else str(exc)
            if code == grpc.StatusCode.UNAVAILABLE:
                details = f"cannot reach {self.target}: {details}"
            raise PredictionError(code.name, details or code.name) from exc

    def predict_raw(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        version: int | None = None,
        label: str | None = None,
        signature: str = "",
        output_filter: Sequence[str] = (),
    ) -> predict_pb2.PredictResponse:
        """`inputs`: alias -> TensorProto or anything numpy can turn into an array."""
        request = predict_pb2.PredictRequest()
        _fill_spec(request.model_spec, model, version, label, signature)
        for alias, value in inputs.items():
            if hasattr(value, "SerializeToString"):
                request.inputs[alias].CopyFrom(value)
            else:
                request.inputs[alias].CopyFrom(from_numpy(value))
        request.output_filter.extend(output_filter)
        return self._call(self._predict.Predict, request)

    def predict(
        self,
        model: str,
        texts: Sequence[str],
        *,
        version: int | None = None,
        label: str | None = None,
        classes: Sequence[str] | None = None,
        signature: str = "",
    ) -> list[Prediction]:
        response = self.predict_raw(
            model,
            {"text": strings_proto(list(texts))},
            version=version,
            label=label,
            signature=signature,
        )
        outputs = {alias: to_numpy(proto) for alias, proto in response.outputs.items()}
        return to_predictions(outputs, classes)

    def explain(
        self,
        model: str,
        texts: Sequence[str],
        *,
        version: int | None = None,
        label: str | None = None,
    ) -> list[Explanation]:
        """Why the model predicts what it does: Predict on the version's `explain` signature."""
        response = self.predict_raw(
            model,
            {"text": strings_proto(list(texts))},
            version=version,
            label=label,
            signature=EXPLAIN_SIGNATURE,
        )
        return to_explanations({alias: to_numpy(p) for alias, p in response.outputs.items()})

    def metadata(
        self, model: str, *, version: int | None = None, label: str | None = None
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        _fill_spec(request.model_spec, model, version, label, "")
        return self._call(self._predict.GetModelMetadata, request)

    def signature_defs(
        self, model: str, *, version: int | None = None, label: str | None = None
    ) -> get_model_metadata_pb2.SignatureDefMap:
        response = self.metadata(model, version=version, label=label)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        return signatures

    def status(
        self, model: str, *, version: int | None = None, label: str | None = None
    ) -> list[dict[str, Any]]:
        request = get_model_status_pb2.GetModelStatusRequest()
        _fill_spec(request.model_spec, model, version, label, "")
        response = self._call(self._models.GetModelStatus, request)
        return [
            {
                "version": status.version,
                "state": _STATE_NAMES.get(status.state, str(status.state)),
                "error": status.status.error_message,
            }
            for status in response.model_version_status
        ]

    def wait_for_version(
        self,
        model: str,
        version: int | None = None,
        *,
        label: str | None = None,
        timeout: float = 60.0,
    ) -> int:
        """Block until `version` (or any version) of `model` is AVAILABLE; returns it.

        With `label`, also until the label names that version: a server that reloads its config
        loads a new version before it moves the label, so the version alone is not enough.
        """
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            try:
                available = [s["version"] for s in self.status(model) if s["state"] == "AVAILABLE"]
                wanted = max(available, default=None) if version is None else version
                if wanted is not None and wanted in available:
                    if not label:
                        return wanted
                    labelled = self.status(model, label=label)[0]["version"]
                    if labelled == wanted:
                        return wanted
                    last = f"label {label!r} names version {labelled}"
                else:
                    last = f"available versions: {available}"
            except PredictionError as exc:
                last = str(exc)
            time.sleep(0.2)
        wanted_text = f"version {version}" if version is not None else "a version"
        if label:
            wanted_text += f" labelled {label!r}"
        raise PredictionError(
            "DEADLINE_EXCEEDED", f"{wanted_text} of {model} not available: {last}"
        )
