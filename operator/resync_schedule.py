"""When each known ModelService is next due its periodic resync, and the resourceVersion its
watch last reported.

kopf's own timers would do this with an asyncio task, a stopper and a live copy of the whole
object for every ModelService; at a thousand ModelServices those copies were most of the
operator's memory. A resync needs only the resourceVersion (to tell whether it is settled),
so one table of strings and one loop (Reconciler.resync_forever) do the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

Key = tuple[str, str]


@dataclass
class ResyncSchedule:
    interval: float
    clock: Callable[[], float] = time.monotonic
    # key -> (when it is next due, the resourceVersion last seen)
    _entries: dict[Key, tuple[float, str | None]] = field(default_factory=dict)

    def saw(self, key: Key, resource_version: str | None) -> None:
        """The watch reported this ModelService: known from now on, first due one interval
        after it was first seen (as a kopf timer's initial delay)."""
        due = self._entries.get(key, (self.clock() + self.interval, None))[0]
        self._entries[key] = (due, resource_version)

    def forget(self, key: Key) -> None:
        self._entries.pop(key, None)

    def due(self) -> list[tuple[Key, str | None]]:
        """The ModelServices due now, each then due again one interval later."""
        now = self.clock()
        found = [(key, version) for key, (due, version) in self._entries.items() if due <= now]
        for key, version in found:
            self._entries[key] = (now + self.interval, version)
        return found

    def __len__(self) -> int:
        return len(self._entries)
