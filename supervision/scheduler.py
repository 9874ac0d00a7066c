"""One timer thread for the whole process: delayed calls without a thread per timer.

Actors schedule tells to themselves here (timeouts, candle close timers, restart backoff); a handler never
sleeps. Callbacks run on the scheduler thread and must be quick (a tell), never blocking.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from telemetry.logs import get_logger

__all__ = ["Scheduler", "Timer"]

log = get_logger("mybot.scheduler")


class Timer:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    _shared: Scheduler | None = None
    _shared_lock = threading.Lock()

    def __init__(self, name: str = "scheduler") -> None:
        self._heap: list[tuple[float, int, Timer, Callable[..., Any], tuple[Any, ...]]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @classmethod
    def shared(cls) -> Scheduler:
        with cls._shared_lock:
            if cls._shared is None or cls._shared._stopped:
                cls._shared = Scheduler("mybot-scheduler")
            return cls._shared

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> Timer:
        timer = Timer()
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + max(0.0, delay), next(self._counter), timer, fn, args))
            self._cond.notify()
        return timer

    def call_every(self, interval: float, fn: Callable[..., Any], *args: Any) -> Timer:
        """Repeat fn every interval seconds (drift-free) until the returned timer is cancelled."""
        handle = Timer()
        start = time.monotonic()

        def tick(n: int) -> None:
            if handle.cancelled:
                return
            fn(*args)
            due = start + (n + 1) * interval
            inner = self.call_later(max(0.0, due - time.monotonic()), tick, n + 1)
            del inner  # the outer handle's flag governs the chain

        self.call_later(interval, tick, 0)
        return handle

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                _, _, timer, fn, args = heapq.heappop(self._heap)
            if timer.cancelled:
                continue
            try:
                fn(*args)
            except Exception as exc:  # a timer callback must never kill the timer thread
                log.event("TIMER_CALLBACK_FAILED", f"{fn!r}: {exc}", level=40, exc_info=exc)
