"""A Clock for the sidecar that does not import numpy.

``core.ports.SystemClock`` is the same clock, but importing ``core.ports`` pulls in
``core.model.series`` and numpy (~0.1-0.2 s), and the sidecar's start-up delays the task's start
while the listener waits for it. Keep this module import-light; it must never grow logic.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


class MonotonicClock:
    """Satisfies ``core.ports.Clock``: monotonic seconds and the wall-clock time (UTC)."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)
