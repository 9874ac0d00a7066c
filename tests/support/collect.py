"""The one collector: what a callback, listener or fake received, thread-safe, awaited on a condition."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Collector"]

T = TypeVar("T")


class Collector(Generic[T]):
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.items: list[T] = []

    def add(self, item: T) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    __call__ = add

    def extend(self, items: list[T]) -> None:
        with self._cond:
            self.items.extend(items)
            self._cond.notify_all()

    def snapshot(self) -> list[T]:
        with self._cond:
            return list(self.items)

    def wait_for(self, predicate: Callable[[list[T]], bool], timeout: float = 5.0) -> bool:
        """True once predicate(items) holds, False after `timeout` seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.items), timeout)

    def wait_count(self, count: int, timeout: float = 5.0) -> list[T]:
        """The items once there are at least `count` (AssertionError after `timeout`)."""
        if not self.wait_for(lambda items: len(items) >= count, timeout):
            raise AssertionError(f"{len(self.items)} of {count} items within {timeout} s: {self.items[-5:]}")
        return self.snapshot()

    def __len__(self) -> int:
        with self._cond:
            return len(self.items)
