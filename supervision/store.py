"""Crash-only state: the little an actor must not lose when it restarts, held outside the actor.

An actor's own fields die with it and are rebuilt in `started()`. What must outlive a restart (a
ledger of orders known not to have been sent, counters an operator reads) lives in a `Store`: one
immutable value, replaced whole under a lock. Writers (the actor, on its own thread) call `update`;
readers on any thread (HTTP, status) call `get` and receive a snapshot that can never change under them.

    counters: Store[ExecutorCounters] = Store("executor.counters", ExecutorCounters())
    counters.bump("submits")
    counters.get().submits
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Store"]

T = TypeVar("T")


class Store(Generic[T]):
    def __init__(self, name: str, initial: T) -> None:
        self.name = name
        self._value = initial
        self._lock = threading.Lock()

    def get(self) -> T:
        """The current value (immutable: a frozen dataclass or the like)."""
        return self._value

    def update(self, change: Callable[[T], T]) -> T:
        """Replace the value with `change(value)`, atomically against other writers; returns the new value."""
        with self._lock:
            self._value = change(self._value)
            return self._value

    def set(self, value: T) -> None:
        with self._lock:
            self._value = value

    def bump(self, field: str, by: int = 1) -> T:
        """Add `by` to an int field of a frozen dataclass value."""

        def bumped(value: Any) -> Any:
            return dataclasses.replace(value, **{field: getattr(value, field) + by})

        return self.update(bumped)

    def __repr__(self) -> str:
        return f"Store({self.name!r}, {self._value!r})"
