"""The server's bounds on what callers may cost it, each refused with a status that names the flag.

- What one Predict request may decode into: elements and bytes over all its input tensors. A
  TensorProto declares its shape apart from its values, and TensorFlow fills a shape that has
  fewer values than elements by repeating the last one, so a few bytes on the wire can ask for
  gigabytes. Every front end charges a request's tensors here, from their declared shapes, before
  it allocates anything, and only once the model and signature are known.
- How many unbatched calls may be in flight: a queue without a bound turns an overload into
  unbounded memory and latency for everyone; a refusal with RESOURCE_EXHAUSTED (HTTP 429) tells a
  client to back off or try another replica.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc

from tfmaas.serving.errors import ServingError, invalid_argument
from tfmaas.serving.flags import DEFAULT_MAX_BYTES, DEFAULT_MAX_ELEMENTS, ServerFlags

# The largest request either port reads: a REST body, a gRPC message. Four times the default
# tensor-byte cap, since a request's encoding may be larger than what it decodes into (JSON text,
# varints of small integers); TF Serving takes gRPC messages up to 2 GiB, which the cap on decoded
# tensors would refuse anyway, after the server had held all of it in memory.
MAX_REQUEST_BYTES = 256 << 20
# A rank-64 JSON list is far past any model's inputs, and well inside Python's recursion limit.
MAX_JSON_DEPTH = 64

ELEMENTS_FLAG = "--max_request_elements"
BYTES_FLAG = "--max_request_tensor_bytes"


@dataclass(frozen=True)
class RequestLimits:
    max_elements: int = DEFAULT_MAX_ELEMENTS
    max_bytes: int = DEFAULT_MAX_BYTES

    @classmethod
    def of(cls, flags: ServerFlags) -> RequestLimits:
        return cls(
            max_elements=flags.max_request_elements, max_bytes=flags.max_request_tensor_bytes
        )

    def budget(self) -> RequestBudget:
        return RequestBudget(self)


class RequestBudget:
    """What one request has decoded so far; `charge` before allocating the next tensor."""

    def __init__(self, limits: RequestLimits) -> None:
        self._limits = limits
        self.elements = 0
        self.bytes = 0

    def charge(self, *, elements: int, nbytes: int) -> None:
        self.elements += elements
        self.bytes += nbytes
        if self.elements > self._limits.max_elements:
            raise over_limit(
                f"{self.elements} tensor elements", self._limits.max_elements, ELEMENTS_FLAG
            )
        if self.bytes > self._limits.max_bytes:
            raise over_limit(f"{self.bytes} bytes of tensors", self._limits.max_bytes, BYTES_FLAG)


def over_limit(what: str, limit: int, flag: str) -> ServingError:
    # Only numbers and the flag: nothing the client wrote is echoed back.
    return invalid_argument(
        f"the request decodes to {what}, over this server's limit of {limit} ({flag})"
    )


class InFlightLimit:
    """A bound on calls in flight that refuses the one over it at once instead of queueing it."""

    def __init__(self, limit: int, *, flag: str) -> None:
        if limit < 1:
            raise ValueError(f"an in-flight limit must be >= 1, got {limit}")
        self.limit = limit
        self._flag = flag
        self._slots = threading.BoundedSemaphore(limit)

    def acquire(self) -> None:
        """Take a slot, or raise RESOURCE_EXHAUSTED without waiting for one."""
        if not self._slots.acquire(blocking=False):
            raise ServingError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the server already runs its limit of {self.limit} unbatched requests "
                f"(--{self._flag}); retry later or on another replica",
            )

    def release(self) -> None:
        self._slots.release()

    @contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()
