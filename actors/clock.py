"""Clocks for the shell: the system clock for live runs, a virtual clock driven by ticks for replays.

Pure logic never reads a clock; actors read one of these and pass the time in.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

__all__ = ["Clock", "SystemClock", "VirtualClock"]


class Clock(Protocol):
    def now(self) -> float:
        """Epoch seconds."""

    def monotonic(self) -> float: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class VirtualClock:
    """Time is the latest event time it was advanced to; it never goes backwards."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def advance(self, ts: float) -> None:
        with self._lock:
            if ts > self._now:
                self._now = ts

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now
