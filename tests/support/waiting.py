"""The one bounded wait for a condition no event announces (a database row, another process's state).

Where an event exists (a Collector, a Condition, a threading.Event), tests wait on it instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["eventually"]

T = TypeVar("T")


def eventually(predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.01,
               message: str | Callable[[], str] = "") -> T:
    """Wait until predicate() is truthy and return it; fail after `timeout` seconds saying what was awaited
    (a callable message is asked at that moment, so it can tell the state it ended in)."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()  # never set: a bounded pause between looks that yields the GIL
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            said = message() if callable(message) else message
            raise AssertionError(f"condition not met within {timeout} s: {said or predicate}")
        pause.wait(interval)


def wait_until(condition: Callable[[], Any], timeout: float = 5.0, message: str = "") -> None:
    """`eventually` for a condition whose value does not matter."""
    eventually(lambda: bool(condition()), timeout, message=message)
