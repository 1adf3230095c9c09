"""One loaded model version: its signatures, request validation, and the call into TensorFlow.

Signature metadata comes from `saved_model.pb` itself (the exact SignatureDef TF Serving would
report). How a signature runs depends on who wrote the SavedModel:

- TF2 exports (an object graph: `tf.saved_model.save`, Keras): the loaded concrete functions,
  traced once at export, so a request costs one eager call with no retracing;
- TF1 exports (SavedModelBuilder, estimators: no object graph): the stored graph in a
  `tf.compat.v1.Session`, fed and fetched by the SignatureDef's tensor names, which is what
  TF Serving does for every model. Loading them as TF2 functions would re-trace each signature
  against the shapes its SignatureDef records, and those are often not the graph's own (a
  hand-written TensorInfo with no shape reads as a scalar): `Shapes must be equal rank`.

Neither path checks input shapes against the SignatureDef: TF Serving does not either
(predict_util.cc checks the input names, and Session::Run the dtypes), so a shape the graph can
compute with is answered and one it cannot is the graph's own INVALID_ARGUMENT.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from tfmaas.client.tensors import dtype_name
from tfmaas.serving.errors import failed_precondition, invalid_argument

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
INIT_OP_SIGNATURE = "__saved_model_init_op"
SERVE_TAG = "serve"

Tensors = dict[str, np.ndarray]
SignatureCall = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class TensorSpec:
    alias: str
    dtype: int
    shape: tuple[int, ...] | None  # None: unknown rank; -1: unknown dimension

    def check(self, index: int, request_dtype: int) -> None:
        """The dtype, as the runtime checks its feeds; the shape is the graph's business."""
        if request_dtype != self.dtype:
            raise invalid_argument(
                f"Expects arg[{index}] to be {dtype_name(self.dtype)} but "
                f"{dtype_name(request_dtype)} is provided"
            )


def _spec(alias: str, info: meta_graph_pb2.TensorInfo) -> TensorSpec:
    shape = None
    if not info.tensor_shape.unknown_rank:
        shape = tuple(dim.size for dim in info.tensor_shape.dim)
    return TensorSpec(alias=alias, dtype=info.dtype, shape=shape)


@dataclass
class Signature:
    name: str
    definition: meta_graph_pb2.SignatureDef
    function: SignatureCall  # numpy feeds by alias -> numpy outputs by alias
    inputs: dict[str, TensorSpec] = field(default_factory=dict)
    outputs: dict[str, TensorSpec] = field(default_factory=dict)

    def validate(self, request: Mapping[str, tuple[np.ndarray, int]]) -> None:
        """`request`: alias -> (array, dtype enum it was sent as). Raises TF Serving's errors."""
        if len(request) != len(self.inputs) or set(request) != set(self.inputs):
            sent, wanted = sorted(request), sorted(self.inputs)
            extra = [name for name in sent if name not in self.inputs]
            missing = [name for name in wanted if name not in request]
            if len(request) == len(self.inputs) and extra:
                raise invalid_argument(
                    f"input tensor alias not found in signature: {extra[0]}. "
                    f"Inputs expected to be in the set {{{','.join(wanted)}}}."
                )
            raise invalid_argument(
                f"input size does not match signature: {len(sent)}!={len(wanted)} "
                f"len({{{','.join(sent)}}}) != len({{{','.join(wanted)}}}). "
                f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}."
            )
        for index, alias in enumerate(sorted(self.inputs)):
            _, dtype = request[alias]
            self.inputs[alias].check(index, dtype)

    def select_outputs(self, output_filter: list[str]) -> list[str]:
        if not output_filter:
            return sorted(self.outputs)
        for alias in output_filter:
            if alias not in self.outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {alias} Outputs expected to be "
                    f"in the set {{{','.join(sorted(self.outputs))}}}."
                )
        if len(set(output_filter)) != len(output_filter):
            raise invalid_argument("duplicate output tensor alias in output_filter")
        return list(output_filter)


class Servable:
    """A SavedModel version ready to answer requests."""

    def __init__(self, name: str, version: int, path: Path) -> None:
        import tensorflow as tf

        self.name = name
        self.version = version
        self.path = path
        self._tf = tf
        meta_graph = _serving_meta_graph(path)
        # Metadata reports every SignatureDef, callable or not (TF2's __saved_model_init_op
        # too), as TF Serving's get_model_metadata_impl.cc copies the MetaGraph's map whole.
        self._signature_defs = meta_graph.signature_def
        # `_owner` (the loaded object, or the session) holds the variables the calls use, for
        # as long as this version is referenced, including by requests still running after it
        # was unloaded.
        calls, self._owner = (
            _object_graph_calls(path, meta_graph)
            if meta_graph.object_graph_def.nodes
            else _session_calls(path, meta_graph)
        )
        self.signatures: dict[str, Signature] = {}
        for key, call in calls.items():
            definition = meta_graph.signature_def[key]
            self.signatures[key] = Signature(
                name=key,
                definition=definition,
                function=call,
                inputs={a: _spec(a, i) for a, i in definition.inputs.items()},
                outputs={a: _spec(a, i) for a, i in definition.outputs.items()},
            )

    def signature(self, name: str) -> Signature:
        key = name or DEFAULT_SIGNATURE
        found = self.signatures.get(key)
        if found is None:
            raise failed_precondition(f'Serving signature key "{key}" not found.')
        return found

    def run(self, signature: Signature, inputs: Tensors) -> Tensors:
        try:
            return dict(signature.function(inputs))
        except self._tf.errors.InvalidArgumentError as exc:
            raise invalid_argument(exc.message) from exc

    def signature_def_map(self) -> meta_graph_pb2.SignatureDef:
        from tensorflow_serving.apis import get_model_metadata_pb2

        result = get_model_metadata_pb2.SignatureDefMap()
        for key, definition in self._signature_defs.items():
            result.signature_def[key].CopyFrom(definition)
        return result


def _object_graph_calls(
    path: Path, meta_graph: meta_graph_pb2.MetaGraphDef
) -> tuple[dict[str, SignatureCall], Any]:
    """A TF2 export's signatures, each through its loaded concrete function."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path), tags=[SERVE_TAG])
    calls: dict[str, SignatureCall] = {}
    for key, definition in meta_graph.signature_def.items():
        if key not in loaded.signatures:
            continue  # e.g. TF1 init signatures with no callable
        function = direct_call(loaded.signatures[key], list(definition.inputs))
        dtypes = {alias: tf.as_dtype(info.dtype) for alias, info in definition.inputs.items()}

        def call(
            feeds: Mapping[str, np.ndarray],
            function: Callable[[Mapping[str, Any]], Mapping[str, Any]] = function,
            dtypes: dict[str, Any] = dtypes,
        ) -> Tensors:
            tensors = {a: tf.convert_to_tensor(v, dtype=dtypes[a]) for a, v in feeds.items()}
            return {alias: tensor.numpy() for alias, tensor in function(tensors).items()}

        calls[key] = call
    return calls, loaded


def _session_calls(
    path: Path, meta_graph: meta_graph_pb2.MetaGraphDef
) -> tuple[dict[str, SignatureCall], Any]:
    """A TF1 export's signatures, run as TF Serving runs them: Session::Run on the stored graph,
    fed and fetched by the tensor names in each SignatureDef (predict_util.cc, RunPredict)."""
    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2

    threading = tf.config.threading
    session = tf.compat.v1.Session(
        graph=tf.Graph(),
        config=config_pb2.ConfigProto(
            intra_op_parallelism_threads=threading.get_intra_op_parallelism_threads(),
            inter_op_parallelism_threads=threading.get_inter_op_parallelism_threads(),
            allow_soft_placement=True,
        ),
    )
    tf.compat.v1.saved_model.loader.load(session, [SERVE_TAG], str(path))
    calls: dict[str, SignatureCall] = {}
    for key, definition in meta_graph.signature_def.items():
        if key == INIT_OP_SIGNATURE or not definition.outputs:
            continue  # runs at load (by the loader), not per request
        calls[key] = _session_call(session, definition)
    return calls, session


def _session_call(session: Any, definition: meta_graph_pb2.SignatureDef) -> SignatureCall:
    from tensorflow.core.protobuf import config_pb2

    aliases = sorted(definition.inputs)
    outputs = sorted(definition.outputs)
    options = config_pb2.CallableOptions(
        feed=[definition.inputs[alias].name for alias in aliases],
        fetch=[definition.outputs[alias].name for alias in outputs],
    )
    # The callable feeds the runtime directly, as C++ Session::Run does; the public
    # `session.run` would first refuse any shape other than the placeholder's, which TF
    # Serving never does.
    make = getattr(session, "_make_callable_from_options", None)
    if make is None:
        fetches = list(options.fetch)

        def public(feeds: Mapping[str, np.ndarray]) -> Tensors:
            feed_dict = {definition.inputs[a].name: feeds[a] for a in aliases}
            return dict(zip(outputs, session.run(fetches, feed_dict), strict=True))

        return public
    runner = make(options)

    def run(feeds: Mapping[str, np.ndarray]) -> Tensors:
        return dict(zip(outputs, runner(*(feeds[a] for a in aliases)), strict=True))

    return run


def direct_call(
    function: Any, aliases: list[str]
) -> Callable[[Mapping[str, Any]], Mapping[str, Any]]:
    """The loaded signature as `feeds -> outputs`, entering its traced graph directly.

    The public `function(**feeds)` re-binds the keyword arguments against the signature's
    FunctionType on every call, which costs about 0.15 ms of Python per request, more than the
    rest of our request path. The feeds are already validated against the SignatureDef, so the
    flat call runs the same graph with the same tensors. Where a TensorFlow release lacks the
    internals this relies on, the public call is used instead.
    """

    def public(feeds: Mapping[str, Any]) -> Mapping[str, Any]:
        return function(**feeds)

    inference = getattr(function, "_inference_function", None)
    keywords = getattr(function, "_arg_keywords", None)
    captured = getattr(function, "captured_inputs", None)
    if (
        inference is None
        or not hasattr(inference, "call_preflattened")
        or keywords is None
        or captured is None
        or sorted(keywords) != sorted(aliases)
        or any(_is_distributed(value) for value in captured)
    ):
        return public
    order = list(keywords)
    tail = list(captured)

    def flat(feeds: Mapping[str, Any]) -> Mapping[str, Any]:
        return inference.call_preflattened([feeds[name] for name in order] + tail)

    return flat


def _is_distributed(value: Any) -> bool:
    # Distributed variables need the wrapper's replica-context handling: keep the public call.
    return type(value).__module__.startswith("tensorflow.python.distribute")


def _serving_meta_graph(path: Path) -> meta_graph_pb2.MetaGraphDef:
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    for meta_graph in saved_model.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return meta_graph
    raise ValueError(f"{path}: no MetaGraph tagged '{SERVE_TAG}' in saved_model.pb")


def is_string_dtype(dtype: int) -> bool:
    return dtype == types_pb2.DT_STRING
