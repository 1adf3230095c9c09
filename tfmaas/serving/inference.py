"""Classify, Regress and MultiInference with TF Serving's semantics, for every front end.

A classification signature (method `tensorflow/serving/classify`) takes serialized tf.Examples
at `inputs` and answers `classes` (strings) and/or `scores` (floats), each [batch, num_classes];
a regression signature (`tensorflow/serving/regress`) answers `outputs`, [batch] or [batch, 1].
The checks and their messages follow TF Serving's classifier.cc, regressor.cc and
multi_inference.cc, so a client sees the same status for the same mistake.

MultiInference runs several heads of one model on one Input. TF Serving runs them in one
session call; here each head's signature runs on the same decoded examples, which gives the
same answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    model_pb2,
    regression_pb2,
)

from tfmaas.serving.core import ServingCore
from tfmaas.serving.errors import ServingError, failed_precondition, invalid_argument
from tfmaas.serving.examples import serialized_examples
from tfmaas.serving.limits import RequestLimits
from tfmaas.serving.runner import ServedVersion
from tfmaas.serving.servable import DEFAULT_SIGNATURE, Signature

CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
INPUTS, CLASSES, SCORES, OUTPUTS = "inputs", "classes", "scores", "outputs"


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int | None
    label: str


def _signature_def(served: ServedVersion, signature_name: str, method: str) -> Signature:
    key = signature_name or DEFAULT_SIGNATURE
    signature = served.servable.signatures.get(key)
    if signature is None:
        raise invalid_argument(f"No signature was found with the name: {key}")
    _check_method(signature, method)
    return signature


def _check_method(signature: Signature, method: str) -> None:
    """TF Serving's PreProcessClassification / PreProcessRegression checks."""
    definition = signature.definition
    kind = "classification" if method == CLASSIFY else "regression"
    if definition.method_name != method:
        raise invalid_argument(
            f"Expected {kind} signature method_name to be {method}. Was: {definition.method_name}"
        )
    if len(definition.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if method == CLASSIFY:
        if len(definition.outputs) not in (1, 2):
            raise invalid_argument(
                f"Expected one or two output Tensors, found {len(definition.outputs)}"
            )
        if INPUTS not in definition.inputs:
            raise failed_precondition(
                f"No classification inputs found in SignatureDef {signature.name}"
            )
        if CLASSES not in definition.outputs and SCORES not in definition.outputs:
            raise failed_precondition(
                'Expected classification signature outputs to contain at least one of "classes" '
                f'or "scores". Signature was: {signature.name}'
            )
    else:
        if len(definition.outputs) != 1:
            raise invalid_argument("Expected one output Tensor.")
        if INPUTS not in definition.inputs:
            raise failed_precondition(
                f"No regression inputs found in SignatureDef {signature.name}"
            )
        if OUTPUTS not in definition.outputs:
            raise failed_precondition(
                f"No regression outputs found in SignatureDef {signature.name}"
            )


def _run(served: ServedVersion, signature: Signature, examples: np.ndarray) -> dict:
    return served.run(signature, {INPUTS: examples})


def _shape(array: np.ndarray) -> str:
    return "[" + ",".join(str(size) for size in array.shape) + "]"


def classification_result(
    outputs: dict[str, np.ndarray], num_examples: int
) -> classification_pb2.ClassificationResult:
    """TF Serving's PostProcessClassificationResult."""
    classes, scores = outputs.get(CLASSES), outputs.get(SCORES)
    for name, array, dtype in ((CLASSES, classes, "DT_STRING"), (SCORES, scores, "DT_FLOAT")):
        if array is None:
            continue
        if array.ndim != 2:
            raise invalid_argument(
                f"Expected Tensor shape: [batch_size num_classes] but got {_shape(array)}"
            )
        wanted = array.dtype == object if name == CLASSES else array.dtype == np.float32
        if not wanted:
            raise invalid_argument(f"Expected {name} Tensor of {dtype}. Got: {array.dtype}")
        if array.shape[0] != num_examples:
            raise invalid_argument(
                f"Expected {name} output batch size of {num_examples}. Got: {array.shape[0]}"
            )
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(
            "Tensors class and score should match in dim_size(1). "
            f"Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    present = classes if classes is not None else scores
    assert present is not None
    result = classification_pb2.ClassificationResult()
    for row in range(num_examples):
        classifications = result.classifications.add()
        for column in range(present.shape[1]):
            entry = classifications.classes.add()
            if classes is not None:
                entry.label = bytes(classes[row, column]).decode("utf-8", errors="replace")
            if scores is not None:
                entry.score = float(scores[row, column])
    return result


def regression_result(
    outputs: dict[str, np.ndarray], num_examples: int
) -> regression_pb2.RegressionResult:
    """TF Serving's PostProcessRegressionResult."""
    array = outputs[OUTPUTS]
    if not (array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1)):
        raise invalid_argument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
            f"but got {_shape(array)}"
        )
    if array.shape[0] != num_examples:
        raise invalid_argument(
            f"Input batch size did not match output batch size: {num_examples} vs. {array.shape[0]}"
        )
    if array.dtype != np.float32:
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: {array.dtype}")
    result = regression_pb2.RegressionResult()
    for value in array.reshape(-1):
        result.regressions.add().value = float(value)
    return result


def _model_spec(spec: model_pb2.ModelSpec, name: str, signature_name: str, version: int) -> None:
    spec.name = name
    spec.signature_name = signature_name or DEFAULT_SIGNATURE
    spec.version.value = version


def classify(
    core: ServingCore,
    ref: ModelRef,
    request: classification_pb2.ClassificationRequest,
) -> classification_pb2.ClassificationResponse:
    served = core.registry.resolve(ref.name, ref.version, ref.label)
    return classify_on(served, ref.name, request, core.limits)


def classify_on(
    served: ServedVersion,
    name: str,
    request: classification_pb2.ClassificationRequest,
    limits: RequestLimits,
) -> classification_pb2.ClassificationResponse:
    """Classify on a version already resolved (or not registered yet: model warmup)."""
    response = classification_pb2.ClassificationResponse()
    _run_one_head(
        served,
        name,
        request,
        limits,
        method=CLASSIFY,
        post_process=classification_result,
        into=response,
    )
    return response


def regress(
    core: ServingCore,
    ref: ModelRef,
    request: regression_pb2.RegressionRequest,
) -> regression_pb2.RegressionResponse:
    served = core.registry.resolve(ref.name, ref.version, ref.label)
    return regress_on(served, ref.name, request, core.limits)


def regress_on(
    served: ServedVersion,
    name: str,
    request: regression_pb2.RegressionRequest,
    limits: RequestLimits,
) -> regression_pb2.RegressionResponse:
    response = regression_pb2.RegressionResponse()
    _run_one_head(
        served, name, request, limits, method=REGRESS, post_process=regression_result, into=response
    )
    return response


def _run_one_head(
    served: ServedVersion,
    name: str,
    request: classification_pb2.ClassificationRequest | regression_pb2.RegressionRequest,
    limits: RequestLimits,
    *,
    method: str,
    post_process: Callable[[dict[str, np.ndarray], int], Any],
    into: classification_pb2.ClassificationResponse | regression_pb2.RegressionResponse,
) -> None:
    """Classify and Regress differ only in the method and in how outputs become a result."""
    signature_name = request.model_spec.signature_name
    signature = _signature_def(served, signature_name, method)
    examples = serialized_examples(request.input, budget=limits.budget())
    outputs = _run(served, signature, examples)
    into.result.CopyFrom(post_process(outputs, len(examples)))
    _model_spec(into.model_spec, name, signature_name, served.version)


def multi_inference(
    core: ServingCore,
    ref: ModelRef,
    request: inference_pb2.MultiInferenceRequest,
) -> inference_pb2.MultiInferenceResponse:
    """`ref` is the first task's model: TF Serving resolves the version from it alone."""
    served = core.registry.resolve(ref.name, ref.version, ref.label)
    return multi_inference_on(served, ref.name, request, core.limits)


def multi_inference_on(
    served: ServedVersion,
    model_name: str,
    request: inference_pb2.MultiInferenceRequest,
    limits: RequestLimits,
) -> inference_pb2.MultiInferenceResponse:
    heads: list[tuple[inference_pb2.InferenceTask, Signature]] = []
    seen: set[str] = set()
    input_tensor = ""
    for task in request.tasks:
        if not task.model_spec.name:
            raise invalid_argument("Found ModelSpec with an empty model name.")
        if task.model_spec.name != model_name:
            raise invalid_argument(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name."
            )
        key_name = task.model_spec.signature_name or DEFAULT_SIGNATURE
        if key_name in seen:
            raise invalid_argument(f"Duplicate evaluation of signature: {key_name}")
        seen.add(key_name)
        signature = served.servable.signatures.get(key_name)
        if signature is None:
            raise invalid_argument(f"Requested signature not found in model graph: {key_name}")
        if task.method_name not in (CLASSIFY, REGRESS):
            raise ServingError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"Unsupported signature method_name: {task.method_name}",
            )
        _check_method(signature, task.method_name)
        name = signature.definition.inputs[INPUTS].name
        if input_tensor and name != input_tensor:
            raise invalid_argument("Input tensor must be the same for all Signatures.")
        input_tensor = name
        heads.append((task, signature))
    if not heads:
        raise invalid_argument("MultiInferenceRequest has no tasks.")
    examples = serialized_examples(request.input, budget=limits.budget())
    response = inference_pb2.MultiInferenceResponse()
    for task, signature in heads:
        outputs = _run(served, signature, examples)
        result = response.results.add()
        if task.method_name == CLASSIFY:
            result.classification_result.CopyFrom(classification_result(outputs, len(examples)))
        else:
            result.regression_result.CopyFrom(regression_result(outputs, len(examples)))
        _model_spec(
            result.model_spec, task.model_spec.name, task.model_spec.signature_name, served.version
        )
    return response
