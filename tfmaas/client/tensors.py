"""TensorProto <-> numpy for the dtypes a served model speaks, without calling into TensorFlow.

`tf.make_ndarray` / `tf.make_tensor_proto` cost tens of microseconds per call, which is most of a
one-sentence request's budget; filling `string_val` / `float_val` directly is cheaper. The
server and the client share these so both sides agree on the wire format TF Serving uses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2

# dtype enum -> (numpy dtype, the repeated field that carries values when tensor_content is empty)
_NUMERIC: dict[int, tuple[Any, str]] = {
    types_pb2.DT_FLOAT: (np.float32, "float_val"),
    types_pb2.DT_DOUBLE: (np.float64, "double_val"),
    types_pb2.DT_INT32: (np.int32, "int_val"),
    types_pb2.DT_INT16: (np.int16, "int_val"),
    types_pb2.DT_INT8: (np.int8, "int_val"),
    types_pb2.DT_UINT8: (np.uint8, "int_val"),
    types_pb2.DT_UINT16: (np.uint16, "int_val"),
    types_pb2.DT_INT64: (np.int64, "int64_val"),
    types_pb2.DT_UINT32: (np.uint32, "uint32_val"),
    types_pb2.DT_UINT64: (np.uint64, "uint64_val"),
    types_pb2.DT_BOOL: (np.bool_, "bool_val"),
}
_FROM_NUMPY: dict[Any, int] = {
    np.dtype(np.float32): types_pb2.DT_FLOAT,
    np.dtype(np.float64): types_pb2.DT_DOUBLE,
    np.dtype(np.int32): types_pb2.DT_INT32,
    np.dtype(np.int16): types_pb2.DT_INT16,
    np.dtype(np.int8): types_pb2.DT_INT8,
    np.dtype(np.uint8): types_pb2.DT_UINT8,
    np.dtype(np.uint16): types_pb2.DT_UINT16,
    np.dtype(np.int64): types_pb2.DT_INT64,
    np.dtype(np.uint32): types_pb2.DT_UINT32,
    np.dtype(np.uint64): types_pb2.DT_UINT64,
    np.dtype(np.bool_): types_pb2.DT_BOOL,
}


class TensorConversionError(ValueError):
    """A TensorProto whose values do not fit its shape or dtype."""


def dtype_name(dtype: int) -> str:
    """`DT_STRING` -> `string`, the spelling TensorFlow's own error messages use."""
    try:
        return types_pb2.DataType.Name(dtype).removeprefix("DT_").lower()
    except ValueError:
        return f"dtype({dtype})"


def numpy_dtype(dtype: int) -> Any | None:
    """The numpy dtype of a numeric DataType enum; None for strings and exotic types."""
    known = _NUMERIC.get(dtype)
    return known[0] if known else None


def shape_of(proto: tensor_pb2.TensorProto) -> tuple[int, ...]:
    return tuple(dim.size for dim in proto.tensor_shape.dim)


# A decoded string element costs a numpy object pointer and a TensorFlow tstring besides its bytes.
STRING_ELEMENT_OVERHEAD = 32
_UNKNOWN_ITEMSIZE = 16  # the widest dtype left to TensorFlow (complex128)


def _checked_shape(proto: tensor_pb2.TensorProto) -> tuple[int, ...]:
    shape = shape_of(proto)
    if any(size < 0 for size in shape):
        raise TensorConversionError(f"negative dimension in shape {list(shape)}")
    return shape


def _shaped(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    try:
        return array.reshape(shape)
    except ValueError as exc:  # numpy's own bound on a dimension, even of an empty array
        raise TensorConversionError(f"numpy cannot hold shape {list(shape)}") from exc


def decoded_size(proto: tensor_pb2.TensorProto) -> tuple[int, int]:
    """(elements, bytes) that `to_numpy(proto)` would allocate, found without allocating: the
    declared shape, not the values on the wire, decides what a decode costs."""
    count = math.prod(_checked_shape(proto))
    if proto.dtype == types_pb2.DT_STRING:
        values = proto.string_val
        held = sum(len(value) for value in values)
        if values and count > len(values):
            held += (count - len(values)) * len(values[-1])  # the last value, repeated
        return count, held + count * STRING_ELEMENT_OVERHEAD
    known = _NUMERIC.get(proto.dtype)
    itemsize = np.dtype(known[0]).itemsize if known else _UNKNOWN_ITEMSIZE
    return count, count * itemsize


def to_numpy(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """Decode a TensorProto the way TensorFlow's `Tensor::FromProto` does: fewer values than the
    shape holds are filled up with the last value (none at all: zeros, empty strings). Raises
    TensorConversionError when values and shape disagree otherwise. It allocates what the shape
    declares: callers decoding untrusted protos check `decoded_size` first."""
    shape = _checked_shape(proto)
    count = math.prod(shape)  # numpy's prod costs more than the rest of a small decode
    if proto.dtype == types_pb2.DT_STRING:
        values = list(proto.string_val)
        if len(values) > count:
            raise TensorConversionError(
                f"{len(values)} string values do not fit shape {list(shape)}"
            )
        if len(values) < count:
            values += [values[-1] if values else b""] * (count - len(values))
        array = np.empty(count, dtype=object)
        array[:] = values
        return _shaped(array, shape)
    known = _NUMERIC.get(proto.dtype)
    if known is None:
        import tensorflow as tf  # rare dtypes (half, complex, ...) are left to TensorFlow

        try:
            return tf.make_ndarray(proto)
        except Exception as exc:
            raise TensorConversionError(str(exc)) from exc
    np_dtype, field = known
    if proto.tensor_content:
        try:
            return np.frombuffer(proto.tensor_content, dtype=np_dtype).reshape(shape).copy()
        except ValueError as exc:
            raise TensorConversionError(
                f"tensor_content does not fill shape {list(shape)}"
            ) from exc
    values = getattr(proto, field)
    if len(values) > count:
        raise TensorConversionError(f"{len(values)} values do not fit shape {list(shape)}")
    # Like TensorFlow's static_cast, numpy wraps an int_val too wide for int8/int16/uint8/uint16.
    decoded = np.asarray(values, dtype=np_dtype)
    if len(values) == count:
        return _shaped(decoded, shape)
    array = np.zeros(count, dtype=np_dtype)
    if len(values):
        array[: len(values)] = decoded
        array[len(values) :] = decoded[-1]
    return _shaped(array, shape)


def _set_shape(proto: tensor_pb2.TensorProto, shape: Sequence[int]) -> None:
    proto.tensor_shape.Clear()
    dims = proto.tensor_shape.dim
    for size in shape:
        dims.add().size = int(size)


def strings_proto(values: Sequence[str | bytes]) -> tensor_pb2.TensorProto:
    """A 1-D DT_STRING tensor: the `text` input of every tfmaas model."""
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
    proto.tensor_shape.dim.add().size = len(values)
    proto.string_val.extend(v.encode("utf-8") if isinstance(v, str) else v for v in values)
    return proto


def from_numpy(array: Any, dtype: int | None = None) -> tensor_pb2.TensorProto:
    """Encode like TF Serving's default (`AsProtoField`): typed value fields, no tensor_content."""
    proto = tensor_pb2.TensorProto()
    fill(proto, array, dtype)
    return proto


def fill(proto: tensor_pb2.TensorProto, array: Any, dtype: int | None = None) -> None:
    """`from_numpy` into an existing (empty) TensorProto, such as a response's output entry:
    saves building a second message and copying it over."""
    array = np.asarray(array)
    _set_shape(proto, array.shape)
    if dtype == types_pb2.DT_STRING or array.dtype.kind in ("O", "S", "U"):
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(
            v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in array.ravel().tolist()
        )
        return
    if dtype is None:
        dtype = _FROM_NUMPY.get(array.dtype)
    known = _NUMERIC.get(dtype) if dtype is not None else None
    if dtype is None or known is None:
        import tensorflow as tf

        proto.CopyFrom(tf.make_tensor_proto(array))
        return
    np_dtype, field = known
    proto.dtype = dtype
    getattr(proto, field).extend(array.astype(np_dtype, copy=False).ravel().tolist())
