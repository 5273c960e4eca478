"""The only module that reads the wall clock or the monotonic clock.

Everything below the session takes time as data; the session asks a `Clock`.
Packet timestamps from the kernel are wall-clock (CLOCK_REALTIME), so live ticks
use the same base; the monotonic clock only measures how long to wait.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock seconds since the epoch, the time base of packet timestamps."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never steps, for deadlines and timeouts."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()
