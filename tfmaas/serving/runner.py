"""A loaded version as the request path sees it: one call, batched or direct."""

from __future__ import annotations

import threading

from tfmaas.serving.batching import Batcher, Tensors, batch_rows
from tfmaas.serving.config import BatchingOptions
from tfmaas.serving.servable import Servable, Signature


class ServedVersion:
    def __init__(self, servable: Servable, batching: BatchingOptions | None) -> None:
        self.servable = servable
        self._batching = batching
        self._batchers: dict[str, Batcher] = {}
        self._lock = threading.Lock()

    @property
    def version(self) -> int:
        return self.servable.version

    def signature(self, name: str) -> Signature:
        return self.servable.signature(name)

    def run(self, signature: Signature, inputs: Tensors) -> Tensors:
        if self._batching is None:
            return self.servable.run(signature, inputs)
        batch_rows(inputs)  # same 0th-dimension rule as the batched path, checked up front
        return self._batcher(signature).submit(inputs)

    def _batcher(self, signature: Signature) -> Batcher:
        batcher = self._batchers.get(signature.name)
        if batcher is None:
            with self._lock:
                batcher = self._batchers.get(signature.name)
                if batcher is None:
                    assert self._batching is not None
                    batcher = Batcher(
                        lambda inputs: self.servable.run(signature, inputs),
                        self._batching,
                        name=f"{self.servable.name}-{self.version}-{signature.name}",
                    )
                    self._batchers[signature.name] = batcher
        return batcher

    def close(self) -> None:
        with self._lock:
            batchers, self._batchers = list(self._batchers.values()), {}
        for batcher in batchers:
            batcher.close()
