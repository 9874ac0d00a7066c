"""Process-local per-key locks and the advisory-lock key of a pos_id.

`KeyedLocks` is the first line of defence against placing the same position twice: one lock per key,
re-entrant for the thread that holds it (the seed's "process-local re-entrant lock"), with a timeout,
and forgotten once nobody holds or waits for it (so a long-running process does not grow a dict of every
pos_id ever seen).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from storage.errors import StorageConflict

__all__ = ["KeyedLocks", "advisory_key"]


def advisory_key(text: str) -> int:
    """The first 8 bytes of MD5(text) as a signed bigint: the seed's "MD5-based keys".

    The same key in SQL, for an operator looking at pg_locks:
    `('x' || substr(md5(<pos_id>), 1, 16))::bit(64)::bigint`.
    """
    return int.from_bytes(hashlib.md5(text.encode("utf-8")).digest()[:8], "big", signed=True)


class _Entry:
    __slots__ = ("depth", "lock", "owner", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.owner: int | None = None
        self.depth = 0
        self.users = 0  # threads holding or waiting for `lock`


class KeyedLocks:
    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        with self._mutex:
            return len(self._entries)

    @contextmanager
    def hold(self, key: str, timeout: float | None = None) -> Iterator[bool]:
        """Hold the lock of `key`; yields True when this thread already held it (a re-entry).

        Raises StorageConflict when the lock is not free within `timeout` seconds (None = wait forever).
        """
        me = threading.get_ident()
        with self._mutex:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry()
            reentry = entry.owner == me
            if reentry:
                entry.depth += 1
            else:
                entry.users += 1
        if reentry:
            try:
                yield True
            finally:
                with self._mutex:
                    entry.depth -= 1
            return
        try:
            if not entry.lock.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
                raise StorageConflict(f"lock {key!r} is held by another thread (waited {timeout}s)")
            entry.owner, entry.depth = me, 1
            try:
                yield False
            finally:
                entry.owner, entry.depth = None, 0
                entry.lock.release()
        finally:
            with self._mutex:
                entry.users -= 1
                if entry.users == 0:
                    del self._entries[key]
