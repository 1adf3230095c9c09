"""tensorflow.serving.PredictionService and ModelService over the official messages.

The servicers serve both gRPC front ends; the native one calls the unary methods with a stand-in
context and has its own Predict path over `predict_plan` and `predict_response`.

With the grpc.aio front end, Predict is a coroutine on the event loop: the loop parses and
answers every request, and a batched request waits on a future that its batch thread resolves,
so a request costs no thread switch of its own and a whole batch wakes the loop once. Unbatched
model calls run on `model_executor`'s threads, which keeps concurrent requests running on every
core. The other methods are synchronous and run on the server's migration thread pool: Classify,
Regress and MultiInference hold one of its threads while their model runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tfmaas.client.tensors import TensorConversionError, decoded_size, fill, to_numpy
from tfmaas.errors import UserError
from tfmaas.serving import inference
from tfmaas.serving.core import PredictPlan, PredictResult, ServingCore, checked_plan, internal
from tfmaas.serving.errors import ServingError, invalid_argument

log = logging.getLogger(__name__)


def model_ref(spec) -> tuple[str, int | None, str]:
    version = spec.version.value if spec.HasField("version") else None
    label = spec.version_label if spec.WhichOneof("version_choice") == "version_label" else ""
    return spec.name, version, label


def _abort(context: grpc.ServicerContext, error: ServingError) -> None:
    context.abort(error.code, error.message)


def predict_plan(
    core: ServingCore, request: predict_pb2.PredictRequest, name: str, version, label: str
) -> PredictPlan:
    """The request's inputs decoded and checked against the model it names. The model and
    signature come first, and each tensor is charged to the request's budget from its declared
    shape before it is decoded."""
    served, signature = core.target(
        model_name=name,
        version=version,
        label=label,
        signature_name=request.model_spec.signature_name,
    )
    budget = core.limits.budget()
    inputs = {}
    for alias, proto in request.inputs.items():
        try:
            elements, nbytes = decoded_size(proto)
            budget.charge(elements=elements, nbytes=nbytes)
            inputs[alias] = (to_numpy(proto), proto.dtype)
        except TensorConversionError as exc:
            raise invalid_argument(f"tensor parsing error: {alias} ({exc})") from exc
    return checked_plan(served, signature, inputs, list(request.output_filter))


def predict_response(name: str, result: PredictResult) -> predict_pb2.PredictResponse:
    response = predict_pb2.PredictResponse()
    response.model_spec.name = name
    response.model_spec.version.value = result.version
    response.model_spec.signature_name = result.signature.name
    for alias, array in result.outputs.items():
        fill(response.outputs[alias], array, result.signature.outputs[alias].dtype)
    return response


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: ServingCore, model_executor: Executor) -> None:
        self._core = core
        self._model_executor = model_executor
        self._in_flight = 0  # Predict calls on the loop now; only the loop thread touches it

    async def Predict(self, request, context):
        started = time.perf_counter()
        name, version, label = model_ref(request.model_spec)
        code = "CANCELLED"  # unless it ends otherwise: the client went away mid-call
        self._in_flight += 1
        try:
            response = await self._predict(request, name, version, label)
            code = "OK"
            return response
        except ServingError as exc:
            code = exc.code_name
            await context.abort(exc.code, exc.message)
        except Exception as exc:
            log.exception("Predict failed")
            error = internal(exc)
            code = error.code_name
            await context.abort(error.code, error.message)
        finally:
            self._in_flight -= 1
            self._core.observe(name, "predict", "GRPC", code, started)

    async def _predict(self, request, name: str, version: int | None, label: str):
        plan = predict_plan(self._core, request, name, version, label)
        outputs = await plan.served.run_async(
            plan.signature, plan.inputs, self._model_executor, alone=self._in_flight == 1
        )
        return predict_response(name, plan.result(outputs))

    def GetModelMetadata(self, request, context):
        try:
            fields = list(request.metadata_field)
            if not fields:
                raise invalid_argument(
                    "GetModelMetadataRequest must specify at least one metadata_field"
                )
            for field in fields:
                if field != "signature_def":
                    raise invalid_argument(f"Metadata field {field} is not supported")
            name, version, label = model_ref(request.model_spec)
            served = self._core.registry.resolve(name, version, label)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = name
            response.model_spec.version.value = served.version
            response.metadata["signature_def"].Pack(served.servable.signature_def_map())
            return response
        except ServingError as exc:
            _abort(context, exc)

    def Classify(self, request, context):
        return self._infer("classify", inference.classify, request, context)

    def Regress(self, request, context):
        return self._infer("regress", inference.regress, request, context)

    def MultiInference(self, request, context):
        # TF Serving resolves the model from the first task's spec.
        spec = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
        return self._infer(
            "multi_inference", inference.multi_inference, request, context, spec=spec
        )

    def _infer(
        self,
        api: str,
        serve: Callable[[ServingCore, inference.ModelRef, Any], Any],
        request: Any,
        context: grpc.ServicerContext,
        *,
        spec: model_pb2.ModelSpec | None = None,
    ) -> Any:
        """A classify/regress/multi-inference call, counted in the request metrics."""
        started = time.perf_counter()
        name, version, label = model_ref(spec if spec is not None else request.model_spec)
        code = "OK"
        try:
            return serve(self._core, inference.ModelRef(name, version, label), request)
        except ServingError as exc:
            code = exc.code_name
            _abort(context, exc)
        except Exception as exc:
            log.exception("%s failed", api)
            error = internal(exc)
            code = error.code_name
            _abort(context, error)
        finally:
            self._core.observe(name, api, "GRPC", code, started)
        return None


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: ServingCore, *, allow_reload: bool = False) -> None:
        self._core = core
        self._allow_reload = allow_reload

    def GetModelStatus(self, request, context):
        try:
            name, version, label = model_ref(request.model_spec)
            records = self._core.registry.status(name, version, label)
        except ServingError as exc:
            _abort(context, exc)
            return None
        response = get_model_status_pb2.GetModelStatusResponse()
        for record in records:
            status = response.model_version_status.add()
            status.version = record.version
            status.state = int(record.state)
            if record.error:
                status.status.error_code = 2  # tensorflow.error.UNKNOWN
                status.status.error_message = record.error
        return response

    def HandleReloadConfigRequest(self, request, context):
        if not self._allow_reload:
            # Anyone who reaches the port could unload every model with an empty config.
            _abort(
                context,
                ServingError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "config reload over gRPC is off on this server; start it with "
                    "--allow_grpc_config_reload=true to allow it, or change --model_config_file",
                ),
            )
            return None
        response = model_management_pb2.ReloadConfigResponse()
        try:
            self._core.registry.apply_config(request.config)
        except ServingError as exc:
            response.status.error_code = exc.code.value[0]
            response.status.error_message = exc.message
        except UserError as exc:
            response.status.error_code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
            response.status.error_message = str(exc)
        return response
