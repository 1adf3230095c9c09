"""Our TensorProto codec agrees with TensorFlow's own on every dtype tfmaas models use."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from tfmaas.client.tensors import TensorConversionError, from_numpy, strings_proto, to_numpy


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


def test_values_that_do_not_fill_the_shape_are_rejected() -> None:
    proto = strings_proto(["a", "b"])
    proto.tensor_shape.dim[0].size = 3
    with pytest.raises(TensorConversionError, match="do not fill shape"):
        to_numpy(proto)
