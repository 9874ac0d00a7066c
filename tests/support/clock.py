"""A clock a test can move: real time plus an offset the test sets (time keeps flowing meanwhile)."""

from __future__ import annotations

import threading
import time
from datetime import datetime

from core.market import IST

__all__ = ["SteppedClock", "ist"]


def ist(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: float = 0.0) -> float:
    """Epoch seconds of an IST wall-clock time."""
    return datetime(y, mo, d, h, mi, tzinfo=IST).timestamp() + s


class SteppedClock:
    """`now()` is the real time shifted by an offset; `set(t)` makes now() read t from this instant on.
    `monotonic()` is the real monotonic clock (timers, stale checks and backoff keep real pacing)."""

    def __init__(self, start: float | None = None) -> None:
        self._lock = threading.Lock()
        self._offset = 0.0
        if start is not None:
            self.set(start)

    def set(self, at: float) -> None:
        with self._lock:
            self._offset = at - time.time()

    def jump(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds

    def now(self) -> float:
        return time.time() + self._offset

    def monotonic(self) -> float:
        return time.monotonic()
