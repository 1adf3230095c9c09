"""Our TensorProto codec agrees with TensorFlow's own on every dtype tfmaas models use."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from tfmaas.client.tensors import (
    STRING_ELEMENT_OVERHEAD,
    TensorConversionError,
    decoded_size,
    from_numpy,
    strings_proto,
    to_numpy,
)


@pytest.mark.parametrize(
    "array",
    [
        np.array([[0.25, 0.75], [1.0, 0.0]], dtype=np.float32),
        np.array([3, -1], dtype=np.int64),
        np.array([1, 2, 3], dtype=np.int32),
        np.array([True, False]),
        np.array([1.5], dtype=np.float64),
        np.array(["好".encode(), b"\xff\x00"], dtype=object),
        np.zeros((0, 2), dtype=np.float32),
    ],
)
def test_round_trip_matches_tensorflow(array: np.ndarray) -> None:
    ours = from_numpy(array)
    np.testing.assert_array_equal(tf.make_ndarray(ours), array)
    np.testing.assert_array_equal(to_numpy(tf.make_tensor_proto(array)), array)
    np.testing.assert_array_equal(to_numpy(ours), array)


def test_strings_proto_is_a_1d_string_tensor() -> None:
    proto = strings_proto(["很好", b"raw"])
    assert proto.dtype == types_pb2.DT_STRING
    assert [d.size for d in proto.tensor_shape.dim] == [2]
    assert tf.make_ndarray(proto).tolist() == ["很好".encode(), b"raw"]


def test_tensor_content_is_decoded() -> None:
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    proto.tensor_shape.dim.add().size = 3
    proto.tensor_content = np.array([1, 2, 3], dtype=np.float32).tobytes()
    assert to_numpy(proto).tolist() == [1.0, 2.0, 3.0]


def test_fewer_values_than_the_shape_repeat_the_last_as_tensorflow_does() -> None:
    proto = strings_proto(["a", "b"])
    proto.tensor_shape.dim[0].size = 4
    assert to_numpy(proto).tolist() == tf.make_ndarray(proto).tolist() == [b"a", b"b", b"b", b"b"]
    floats = tf.make_tensor_proto([1.5, 2.5], dtype=tf.float32)
    floats.tensor_content = b""
    floats.float_val.extend([1.5, 2.5])
    floats.tensor_shape.dim[0].size = 3
    assert to_numpy(floats).tolist() == [1.5, 2.5, 2.5]
    empty = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT32)
    empty.tensor_shape.dim.add().size = 2
    assert to_numpy(empty).tolist() == [0, 0]


def test_more_values_than_the_shape_are_rejected() -> None:
    proto = strings_proto(["a", "b", "c"])
    proto.tensor_shape.dim[0].size = 2
    with pytest.raises(TensorConversionError, match="do not fit shape"):
        to_numpy(proto)


def test_decoded_size_counts_the_declared_shape_without_allocating() -> None:
    proto = strings_proto(["abc"])
    proto.tensor_shape.dim[0].size = 10**12  # a decode would need terabytes
    assert decoded_size(proto) == (10**12, 10**12 * (3 + STRING_ELEMENT_OVERHEAD))
    floats = tensor_pb2.TensorProto(dtype=types_pb2.DT_DOUBLE)
    floats.tensor_shape.dim.add().size = 5
    floats.tensor_shape.dim.add().size = 7
    assert decoded_size(floats) == (35, 35 * 8)
    floats.tensor_shape.dim[0].size = -1
    with pytest.raises(TensorConversionError, match="negative dimension"):
        decoded_size(floats)
