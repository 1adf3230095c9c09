"""TFLite models, served as TF Serving serves them with --prefer_tflite_model.

A version folder holding `model.tflite` is loaded into a `tf.lite.Interpreter` instead of as a
SavedModel. Each of the model's SignatureDefs becomes a Predict signature
(`tensorflow/serving/predict`) with the interpreter's input and output names, dtypes and
shapes (`shape_signature`, -1 for a free dimension), so metadata, Predict and the REST API see
it like any other model. One interpreter is not safe to call from two threads, so calls take
turns on it; TF Serving keeps a pool of interpreters instead.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tensorflow.core.protobuf import meta_graph_pb2

from tfmaas.serving.errors import invalid_argument
from tfmaas.serving.servable import Servable, Signature, Tensors, TensorSpec

TFLITE_FILE = "model.tflite"
PREDICT_METHOD = "tensorflow/serving/predict"


def has_tflite_model(version_path: Path) -> bool:
    return (version_path / TFLITE_FILE).is_file()


def _tensor_info(
    alias: str, info: meta_graph_pb2.TensorInfo, details: Mapping[str, Any]
) -> TensorSpec:
    """Fill the SignatureDef's TensorInfo from the interpreter's details; returns its spec."""
    import tensorflow as tf

    info.name = details["name"]
    info.dtype = tf.as_dtype(details["dtype"]).as_datatype_enum
    shape = [int(size) for size in details.get("shape_signature", details["shape"])]
    for size in shape:
        info.tensor_shape.dim.add().size = size
    return TensorSpec(alias=alias, dtype=info.dtype, shape=tuple(shape))


class TfLiteServable(Servable):
    """A `model.tflite` version with the interface of a SavedModel `Servable`."""

    def __init__(self, name: str, version: int, path: Path) -> None:
        import tensorflow as tf

        # Not Servable.__init__: nothing here is a SavedModel.
        self.name = name
        self.version = version
        self.path = path
        self._tf = tf
        self._lock = threading.Lock()
        self._interpreter = tf.lite.Interpreter(model_path=str(path / TFLITE_FILE))
        listed = self._interpreter.get_signature_list()
        if not listed:
            raise ValueError(
                f"{path / TFLITE_FILE} holds no SignatureDef; convert it with "
                "tf.lite.TFLiteConverter from a SavedModel or a Keras model"
            )
        self.signatures: dict[str, Signature] = {}
        self._numpy_dtypes: dict[tuple[str, str], Any] = {}
        for key in listed:
            runner = self._interpreter.get_signature_runner(key)
            definition = meta_graph_pb2.SignatureDef(method_name=PREDICT_METHOD)
            inputs, outputs = {}, {}
            for alias, details in runner.get_input_details().items():
                inputs[alias] = _tensor_info(alias, definition.inputs[alias], details)
                self._numpy_dtypes[(key, alias)] = details["dtype"]
            for alias, details in runner.get_output_details().items():
                outputs[alias] = _tensor_info(alias, definition.outputs[alias], details)
            self.signatures[key] = Signature(
                name=key,
                definition=definition,
                function=self._locked(runner),
                inputs=inputs,
                outputs=outputs,
            )
        # What metadata lists: a TFLite model's signatures are all it has.
        self._signature_defs = {key: found.definition for key, found in self.signatures.items()}

    def _locked(self, runner: Any):
        def call(feeds: Mapping[str, Any]) -> Mapping[str, Any]:
            with self._lock:
                # Copies: the interpreter reuses its output buffers on the next call.
                return {alias: np.array(value) for alias, value in runner(**feeds).items()}

        return call

    def run(self, signature: Signature, inputs: Tensors) -> Tensors:
        feeds = {
            alias: np.asarray(array, dtype=self._numpy_dtypes[(signature.name, alias)])
            for alias, array in inputs.items()
        }
        try:
            return dict(signature.function(feeds))
        except (ValueError, RuntimeError) as exc:
            # The interpreter's own message, e.g. a shape it cannot resize to.
            raise invalid_argument(str(exc)) from exc
