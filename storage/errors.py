"""Storage errors, classified by what the caller should do.

Driver errors (psycopg, sqlite3, redis) are translated into these once, inside the adapters; nothing
above `storage/` ever sees a driver exception.

- `StorageUnavailable`: the database is unreachable, the connection was lost, or a wait timed out.
  Retry later; the same `Storage` object recovers by itself when the database comes back.
- `StorageConflict`: the write collides with existing data (unique violation, a lock held elsewhere).
  Retrying the same write will not help; read the current state instead.
  - `JournalConflict`: a checked journal append found the journal at another length than expected
    (another writer appended first, or the caller's view is stale). Re-read the journal.
- `BusUnavailable`: the message bus (Redis) is unreachable. Retry later or degrade.
- `StorageError` (the base) on its own: a bug or a broken deployment (missing table, bad SQL, closed
  storage). Needs an operator.
"""

from __future__ import annotations

__all__ = ["BusUnavailable", "JournalConflict", "StorageConflict", "StorageError", "StorageUnavailable"]


class StorageError(Exception):
    """Base of every storage and bus error; raised as such when an operator is needed."""


class StorageUnavailable(StorageError):
    """The database cannot be reached right now (refused, lost, timed out): retry later."""


class StorageConflict(StorageError):
    """The write conflicts with what is stored (unique violation, lock held elsewhere)."""


class JournalConflict(StorageConflict):
    """A checked append (`trades.append_events`) found the journal of `pos_id` not at `expected_seq`."""

    def __init__(self, pos_id: str, expected_seq: int, detail: str = "") -> None:
        message = f"journal of {pos_id!r} is not at seq {expected_seq} (another writer appended first?)"
        super().__init__(f"{message}: {detail}" if detail else message)
        self.pos_id = pos_id
        self.expected_seq = expected_seq


class BusUnavailable(StorageError):
    """The message bus cannot be reached right now: retry later or carry on without it."""
