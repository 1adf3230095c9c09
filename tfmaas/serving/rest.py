"""TF Serving's REST API (`/v1/models/...`) and the Prometheus endpoint, on one HTTP port.

Request and response JSON follow TF Serving's documented shapes: `instances` (row) answers
`predictions`, `inputs` (columnar) answers `outputs`; binary strings travel as `{"b64": ...}`.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import numpy as np
from tensorflow.core.protobuf import error_codes_pb2
from tensorflow_serving.apis import get_model_status_pb2, model_pb2

from tfmaas.client.tensors import STRING_ELEMENT_OVERHEAD, dtype_name, numpy_dtype
from tfmaas.serving import inference, rest_inference, tfs_json
from tfmaas.serving.core import ServingCore, checked_plan, internal
from tfmaas.serving.errors import ServingError, invalid_argument, unavailable
from tfmaas.serving.limits import MAX_JSON_DEPTH, MAX_REQUEST_BYTES, RequestBudget, RequestLimits
from tfmaas.serving.metrics import CONTENT_TYPE
from tfmaas.serving.servable import DEFAULT_SIGNATURE, Signature, TensorSpec, is_string_dtype

log = logging.getLogger(__name__)

_MODEL_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>-?\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<method>[A-Za-z]+))?/?$"
)
_INFERENCE = {"classify": rest_inference.classify, "regress": rest_inference.regress}
MAX_BODY_BYTES = MAX_REQUEST_BYTES


def _decode_string(value: Any, alias: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except ValueError as exc:
            raise invalid_argument(f"input '{alias}': invalid base64: {exc}") from exc
    raise invalid_argument(
        f"input '{alias}' expects strings (or {{\"b64\": ...}}), got {json.dumps(value)[:80]}"
    )


def _strings(value: Any, alias: str) -> Any:
    if isinstance(value, list):
        return [_strings(item, alias) for item in value]
    return _decode_string(value, alias)


def json_to_array(value: Any, spec: TensorSpec) -> tuple[np.ndarray, int]:
    try:
        if is_string_dtype(spec.dtype):
            decoded = _strings(value, spec.alias)
            array = np.array(decoded, dtype=object)
            if array.dtype != object or (array.size and isinstance(array.flat[0], list)):
                raise ValueError("ragged")
        else:
            np_dtype = numpy_dtype(spec.dtype)
            if np_dtype is None:
                raise invalid_argument(
                    f"input '{spec.alias}': dtype {dtype_name(spec.dtype)} cannot be sent as JSON"
                )
            array = np.asarray(value, dtype=np_dtype)
    except (ValueError, TypeError, OverflowError) as exc:  # OverflowError: 1e19 as an int64
        raise invalid_argument(
            f"input '{spec.alias}' is not a rectangular list of {dtype_name(spec.dtype)} values"
        ) from exc
    return array, spec.dtype


def _is_named_instance(item: Any) -> bool:
    return isinstance(item, dict) and set(item) != {"b64"}


def _json_tensor_size(value: Any) -> tuple[int, int]:
    """(elements, characters in string leaves) of a JSON tensor, walked without recursion; a
    list nested deeper than MAX_JSON_DEPTH is refused before numpy ever sees it."""
    elements = characters = 0
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, list):
            if depth >= MAX_JSON_DEPTH:
                raise invalid_argument(
                    f"an input nests lists deeper than {MAX_JSON_DEPTH} levels; "
                    "no tensor has that many dimensions"
                )
            stack.extend((child, depth + 1) for child in item)
            continue
        elements += 1
        if isinstance(item, str):
            characters += len(item)
        elif isinstance(item, dict) and isinstance(item.get("b64"), str):
            characters += len(item["b64"])
    return elements, characters


def _charge(budget: RequestBudget, value: Any, spec: TensorSpec | None) -> None:
    elements, characters = _json_tensor_size(value)
    if spec is not None and not is_string_dtype(spec.dtype):
        np_dtype = numpy_dtype(spec.dtype)
        itemsize = np.dtype(np_dtype).itemsize if np_dtype is not None else 8
        budget.charge(elements=elements, nbytes=elements * itemsize)
    else:
        # A UTF-8 character takes at most 4 bytes; base64 shrinks.
        budget.charge(elements=elements, nbytes=4 * characters + elements * STRING_ELEMENT_OVERHEAD)


def inputs_from_body(
    body: dict[str, Any], signature: Signature, *, budget: RequestBudget | None = None
) -> dict[str, tuple[np.ndarray, int]]:
    """The body's tensors, each charged to `budget` (the default limits unless given) before
    it is converted."""
    budget = budget or RequestLimits().budget()
    has_instances, has_inputs = "instances" in body, "inputs" in body
    if has_instances == has_inputs:
        raise invalid_argument(
            "Missing 'inputs' or 'instances' key"
            if not has_instances
            else "Not both 'inputs' and 'instances' keys may be given"
        )
    specs = signature.inputs
    if has_instances:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise invalid_argument("'instances' must be a non-empty JSON list")
        if all(_is_named_instance(item) for item in instances):
            columns: dict[str, list[Any]] = {}
            for item in instances:
                if set(item) != set(columns or item):
                    raise invalid_argument("every instance must name the same inputs")
                for alias, value in item.items():
                    columns.setdefault(alias, []).append(value)
            values: dict[str, Any] = columns
        elif len(specs) == 1:
            values = {next(iter(specs)): instances}
        else:
            raise invalid_argument(
                f"the signature has {len(specs)} inputs, so each instance must be an object "
                f"naming them: {sorted(specs)}"
            )
    else:
        given = body["inputs"]
        if isinstance(given, dict) and _is_named_instance(given):
            values = given
        elif len(specs) == 1:
            values = {next(iter(specs)): given}
        else:
            raise invalid_argument(f"'inputs' must be an object naming the inputs {sorted(specs)}")
    result = {}
    for alias, value in values.items():
        spec = specs.get(alias)
        _charge(budget, value, spec)
        if spec is None:  # let the shared validation produce TF Serving's message
            result[alias] = (np.asarray(value, dtype=object), 0)
        else:
            result[alias] = json_to_array(value, spec)
    return result


def _jsonable(value: Any, alias: str) -> Any:
    if isinstance(value, list):
        return [_jsonable(item, alias) for item in value]
    if isinstance(value, bytes):
        if not alias.endswith("_bytes"):
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                pass
        return {"b64": base64.b64encode(value).decode("ascii")}
    return value


def _float32_values(array: np.ndarray) -> Any:
    """float32 values as the doubles TF Serving's JSON holds for them.

    json_tensor.cc's WriteDecimal prints a float with six significant digits when they read
    back as the same float, else with nine (max_digits10), so 0.1f answers 0.1 where a plain
    float -> double conversion answers 0.10000000149011612, and 0.7310586f answers 0.731058598.
    Parsing that text gives the double a TF Serving client receives.
    """
    flat = array.ravel()
    with np.errstate(invalid="ignore", over="ignore"):
        short = np.array([float(f"{value:.6g}") for value in flat.tolist()], dtype=np.float64)
        exact = short.astype(np.float32) == flat
    if not exact.all():
        # NaN and infinities stay as they are: json writes NaN / Infinity, as TF Serving does.
        for index in np.flatnonzero(~exact).tolist():
            value = float(flat[index])
            short[index] = float(f"{value:.9g}") if math.isfinite(value) else value
    return short.reshape(array.shape).tolist()


def _column(array: np.ndarray, alias: str) -> Any:
    if array.dtype == np.float32:
        return _float32_values(array)
    return _jsonable(array.tolist(), alias)


def outputs_to_json(outputs: dict[str, np.ndarray], row_format: bool) -> dict[str, Any]:
    columns = {alias: _column(array, alias) for alias, array in outputs.items()}
    if not row_format:
        if len(columns) == 1:
            return {"outputs": next(iter(columns.values()))}
        return {"outputs": columns}
    sizes = {array.shape[0] if array.ndim else -1 for array in outputs.values()}
    if len(sizes) != 1 or -1 in sizes:
        raise invalid_argument(
            "the outputs do not share a batch size, so they cannot be returned as rows; "
            "send 'inputs' (columnar) instead of 'instances'"
        )
    if len(columns) == 1:
        return {"predictions": next(iter(columns.values()))}
    rows = sizes.pop()
    return {
        "predictions": [
            {alias: column[i] for alias, column in columns.items()} for i in range(rows)
        ]
    }


def request_body(data: bytes) -> dict[str, Any]:
    """A REST request's JSON object, with `signature_name` (if any) a string: what :predict,
    :classify and :regress all take."""
    try:
        body = json.loads(data or b"null")
    except ValueError as exc:
        raise invalid_argument(f"JSON Parse error: {exc}") from exc
    except RecursionError as exc:
        raise invalid_argument(
            f"JSON Parse error: nested deeper than this server parses ({exc})"
        ) from exc
    if not isinstance(body, dict):
        raise invalid_argument("the request body must be a JSON object")
    if not isinstance(body.get("signature_name", ""), str):
        raise invalid_argument("'signature_name' key must be a string value.")
    return body


class RestApi:
    def __init__(self, core: ServingCore, metrics_path: str | None) -> None:
        self.core = core
        self.metrics_path = metrics_path
        # Set when the server shuts down: model status (the readiness probe's path) answers
        # 503, as gRPC health answers NOT_SERVING, while predictions in flight still finish.
        self.draining = False

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, str, bytes]:
        path = path.split("?", 1)[0]
        if method == "GET" and self.metrics_path and path == self.metrics_path:
            assert self.core.metrics is not None
            return 200, CONTENT_TYPE, self.core.metrics.exposition().encode("utf-8")
        match = _MODEL_PATH.match(path)
        try:
            if match is None:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Malformed request: {method} {path}")
            version = int(match["version"]) if match["version"] is not None else None
            label = match["label"] or ""
            name = match["name"]
            if method == "GET" and match["method"] is None:
                if match["metadata"]:
                    return self._text(200, self.metadata(name, version, label))
                if self.draining:
                    raise unavailable("the server is shutting down")
                return self._text(200, self.status(name, version, label))
            if method == "POST" and match["method"] == "predict":
                return self._json(200, self.predict(name, version, label, body))
            if method == "POST" and match["method"] in _INFERENCE:
                ref = inference.ModelRef(name, version, label)
                return self._json(200, self.infer(match["method"], ref, body))
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Malformed request: {method} {path}")
        except ServingError as exc:
            return self._json(exc.http_status, {"error": exc.message})
        except Exception as exc:
            log.exception("REST %s %s failed", method, path)
            return self._json(500, {"error": internal(exc).message})

    @staticmethod
    def _text(status: int, text: str) -> tuple[int, str, bytes]:
        return status, "application/json", text.encode("utf-8")

    @staticmethod
    def _json(status: int, payload: Any) -> tuple[int, str, bytes]:
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return status, "application/json", data

    def status(self, name: str, version: int | None, label: str) -> str:
        """GetModelStatusResponse, printed as TF Serving prints it (tfs_json)."""
        response = get_model_status_pb2.GetModelStatusResponse()
        for record in self.core.registry.status(name, version, label):
            entry = response.model_version_status.add(version=record.version, state=record.state)
            entry.status.SetInParent()  # always set, OK included (get_model_status_impl.cc)
            if record.error:
                entry.status.error_code = error_codes_pb2.UNKNOWN
                entry.status.error_message = record.error
        return tfs_json.message_to_json(response, proto_field_names=False)

    def metadata(self, name: str, version: int | None, label: str) -> str:
        """GetModelMetadataResponse's model spec and signature map, printed and joined as TF
        Serving's REST handler does (tfs_json)."""
        served = self.core.registry.resolve(name, version, label)
        spec = model_pb2.ModelSpec(name=name)
        spec.version.value = served.version
        return tfs_json.model_metadata_json(spec, served.servable.signature_def_map())

    @contextmanager
    def _observed(self, name: str, api: str) -> Iterator[None]:
        """Counts the request under its outcome's code, as the gRPC side does."""
        started = time.perf_counter()
        code = "OK"
        try:
            yield
        except ServingError as exc:
            code = exc.code_name
            raise
        except Exception:
            code = "INTERNAL"
            raise
        finally:
            self.core.observe(name, api, "REST", code, started)

    def infer(self, api: str, ref: inference.ModelRef, body: bytes) -> dict[str, Any]:
        with self._observed(ref.name, api):
            return _INFERENCE[api](self.core, ref, request_body(body))

    def predict(self, name: str, version: int | None, label: str, body: bytes) -> dict[str, Any]:
        with self._observed(name, "predict"):
            request = request_body(body)
            served = self.core.registry.resolve(name, version, label)
            key = request.get("signature_name", "") or DEFAULT_SIGNATURE
            if key not in served.servable.signatures:
                # REST looks the signature up to decode the JSON, and words its miss apart
                # from gRPC's (http_rest_api_handler.cc, GetInfoMap).
                raise invalid_argument(
                    f'Serving signature name: "{key}" not found in signature def'
                )
            signature = served.signature(key)
            inputs = inputs_from_body(request, signature, budget=self.core.limits.budget())
            plan = checked_plan(served, signature, inputs)
            result = plan.result(served.run(plan.signature, plan.inputs))
            return outputs_to_json(result.outputs, row_format="instances" in request)


__all__ = ["RestApi"]
