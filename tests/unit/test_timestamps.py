"""The timestamp every part of tfmaas writes."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from tfmaas.timestamps import now_rfc3339


def test_utc_to_the_second_as_kubernetes_writes_it() -> None:
    stamp = now_rfc3339()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp)
    parsed = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert abs((datetime.now(timezone.utc) - parsed).total_seconds()) < 3600
