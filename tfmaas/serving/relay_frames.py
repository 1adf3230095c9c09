"""The frames the native gRPC front end and the model server exchange over their Unix socket.

A call is `size u32 | id u64 | method length u16 | method | request bytes`; an answer is
`size u32 | id u64 | status code u8 | response bytes or error message`; little-endian, `size`
counting what follows it. A call with an empty method cancels the call with that id (its client
went away). `tools/grpc-frontend/main.go` writes and reads the same layout.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

PREDICT = "/tensorflow.serving.PredictionService/Predict"

_CALL_HEADER = struct.Struct("<IQH")  # size, id, method length
_ANSWER_HEADER = struct.Struct("<IQB")  # size, id, status code
_ANSWER_OVERHEAD = _ANSWER_HEADER.size - 4
_SIZE_FIELD = 4


@dataclass(frozen=True)
class Call:
    id: int
    method: str  # empty: cancel the call with this id
    payload: bytes


def split_calls(buffer: bytearray) -> Iterator[Call]:
    """The complete calls at the start of `buffer`, removed from it as they are taken; a call
    still arriving stays for the next read."""
    offset = 0
    try:
        while len(buffer) - offset >= _CALL_HEADER.size:
            size, call_id, method_length = _CALL_HEADER.unpack_from(buffer, offset)
            end = offset + _SIZE_FIELD + size
            if end > len(buffer):
                break
            method_end = offset + _CALL_HEADER.size + method_length
            method = buffer[offset + _CALL_HEADER.size : method_end].decode()
            payload = bytes(buffer[method_end:end])
            offset = end
            yield Call(call_id, method, payload)
    finally:
        del buffer[:offset]


def encode_call(call: Call) -> bytes:
    """A call frame, as the front end writes it (for tests of this side)."""
    method = call.method.encode()
    size = _CALL_HEADER.size - _SIZE_FIELD + len(method) + len(call.payload)
    return _CALL_HEADER.pack(size, call.id, len(method)) + method + call.payload


def answer(call_id: int, code: grpc.StatusCode, payload: bytes) -> bytes:
    """An answer frame: the serialized response for OK, else the error message."""
    return _ANSWER_HEADER.pack(_ANSWER_OVERHEAD + len(payload), call_id, code.value[0]) + payload
