"""SQLite storage (the embedded default): stdlib sqlite3, WAL journal, busy timeout.

Threading: ONE connection guarded by a lock (`check_same_thread=False`). Every call holds the lock for
its statements, so calls from several threads are serialized and each multi-statement write is one
`BEGIN IMMEDIATE` transaction. Chosen over a connection per thread because threads come and go (a trade
actor per position) and per-thread connections would leak; SQLite has one writer at a time anyway, and
the embedded deployment is small. Other processes on the same file are tolerated (WAL + busy timeout,
migrations under BEGIN IMMEDIATE) but the placement lock is process-local only.

The connection is opened on first use, so `SqliteStorage(path)` never fails; an unopenable file raises
StorageUnavailable from each call until it can be opened.

Times are REAL epoch seconds, days 'YYYY-MM-DD' text and JSON text, as they are in Python (the `SQLITE`
dialect converts nothing). The statements are shared with PostgreSQL in storage/sql.py; only the bot
state merge is SQLite's own here.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from storage.errors import StorageConflict, StorageError, StorageUnavailable
from storage.locks import KeyedLocks
from storage.records import EntryView, LeaseClaim, OrderRecord
from storage.sql import (
    Columns,
    Dialect,
    Session,
    SqlBotState,
    SqlCandles,
    SqlDatabase,
    SqlInstruments,
    SqlLeases,
    SqlOptionChains,
    SqlStorage,
    SqlTrades,
    decode_json,
    encode_json,
    names,
)

__all__ = ["SQLITE", "SqliteStorage"]

T = TypeVar("T")

# Primary result codes meaning "not now": busy/locked beyond busy_timeout, I/O trouble, can't open.
_RETRY_LATER = {5, 6, 10, 14, 15}  # SQLITE_BUSY, LOCKED, IOERR, CANTOPEN, PROTOCOL
_CONSTRAINT = 19

SQLITE = Dialect(
    name="sqlite", mark="?",
    time_in="{}", time_out="{}", seconds_out="{}",
    day_in="{}", day_out="{}",
    json_in="{}", json_out="{}", json_number="json_extract({column}, '$.{key}')",
    time_type="REAL",
    migration_lock=None,  # the migrate transaction is BEGIN IMMEDIATE: a second migrator waits for it
)


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Translate sqlite3 errors into storage errors, once, here."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise StorageConflict(f"{what}: {exc}") from exc
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code == _CONSTRAINT:
            raise StorageConflict(f"{what}: {exc}") from exc
        if code in _RETRY_LATER:
            raise StorageUnavailable(f"{what}: {exc}") from exc
        raise StorageError(f"{what}: {exc}") from exc
    except OSError as exc:  # creating the parent directory
        raise StorageUnavailable(f"{what}: {exc}") from exc


def _statements(script: str) -> list[str]:
    """Split a SQL script into statements (executescript would COMMIT our transaction)."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        if not buffer and (not line.strip() or line.lstrip().startswith("--")):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        raise ValueError(f"incomplete SQL statement at the end of the migration: {buffer[:80]!r}")
    return statements


class _Database(SqlDatabase):
    dialect = SQLITE

    def __init__(self, path: Path, busy_timeout: float) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._lock = threading.RLock()
        self._in_transaction = threading.local()
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise StorageError("storage is closed")
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                   check_same_thread=False)
            try:
                _enable_wal(conn, self.busy_timeout)
                # FULL: a committed trade event survives a power cut (NORMAL could lose the last commits).
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
            except sqlite3.Error:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def read(self, what: str, work: Callable[[Session], T]) -> T:
        with self._lock, _translated(what):
            return work(_SqliteSession(self._connection()))

    def write(self, what: str, work: Callable[[Session], T]) -> T:
        """Run `work` in one BEGIN IMMEDIATE transaction (the write lock is taken up front, so two
        writers never deadlock on a read-to-write upgrade)."""
        with self._lock, _translated(what):
            conn = self._connection()
            if getattr(self._in_transaction, "active", False):
                return work(_SqliteSession(conn))  # inside transaction(): it commits
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(_SqliteSession(conn))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
            return result

    # Every write already is a transaction of its own, and the lock keeps this process's others out.
    atomic = write

    @contextmanager
    def transaction(self, timeout: float | None = None) -> Iterator[None]:
        """The process's one SQLite connection, in one BEGIN IMMEDIATE transaction for this thread; another
        thread's transaction is waited for up to `timeout` (default: the busy timeout), then StorageConflict."""
        if getattr(self._in_transaction, "active", False):
            yield
            return
        wait = self.busy_timeout if timeout is None else timeout
        if not self._lock.acquire(timeout=wait):
            raise StorageConflict(f"transaction: another thread held the database for {wait:g} s")
        try:
            with _translated("transaction"):
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")
            self._in_transaction.active = True
            try:
                yield
            except BaseException:
                self._in_transaction.active = False
                if conn.in_transaction:
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
            self._in_transaction.active = False
            with _translated("transaction commit"):
                conn.execute("COMMIT")
        finally:
            self._lock.release()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _enable_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """WAL persists in the file, so usually there is nothing to do. Switching to it needs a moment with no
    other connection in a transaction, and SQLite answers "locked" at once instead of waiting (the busy
    handler does not cover it): retry within the busy timeout."""
    deadline = time.monotonic() + busy_timeout
    while True:
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
            return
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)  # another connection holds the file for a moment: nothing to wait on but time


class _SqliteSession(Session):
    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql, params).rowcount

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Sequence[Any] | None:
        row: Sequence[Any] | None = self._conn.execute(sql, params).fetchone()
        return row

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        return self._conn.execute(sql, params).fetchall()

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        # total_changes, not rowcount: an upsert whose WHERE skips the row changes nothing.
        before = self._conn.total_changes
        self._conn.executemany(sql, rows)
        return self._conn.total_changes - before

    def bulk_insert(self, table: str, columns: Columns, rows: Iterable[Sequence[Any]]) -> None:
        marks = ", ".join("?" * len(columns))
        self._conn.executemany(f"INSERT INTO {table} ({names(columns)}) VALUES ({marks})", rows)

    def script(self, sql: str) -> None:
        for statement in _statements(sql):  # executescript would COMMIT our transaction
            self._conn.execute(statement)


class SqliteBotState(SqlBotState):
    def merge(self, key: str, patch: dict[str, Any], at: float, remove: Sequence[str] = ()) -> dict[str, Any]:
        """Read, merge and write in one BEGIN IMMEDIATE transaction: no other writer comes between.
        (Not json_patch(): it merges nested objects and deletes null fields; PostgreSQL's `||` does not.)"""
        get, put = self._get, self._put

        def work(session: Session) -> dict[str, Any]:
            row = session.fetchone(get, (key,))
            merged: dict[str, Any] = {} if row is None else dict(decode_json(row[0]))
            for name in remove:
                merged.pop(name, None)
            merged.update(patch)
            text = encode_json(merged)
            session.execute(put, (key, text, float(at)))
            return dict(decode_json(text))

        return self._db.atomic("merge bot state", work)


class SqliteStorage(SqlStorage):
    """Storage in one SQLite file; see the module docstring for threading."""

    def __init__(self, path: Path | str, busy_timeout: float = 3.0) -> None:
        self.path = Path(path)
        self._file = _Database(self.path, busy_timeout)
        super().__init__(self._file)
        self._local_locks = KeyedLocks()
        self.candles = SqlCandles(self._file)
        self.option_chains = SqlOptionChains(self._file)
        self._trades = SqlTrades(self._file)
        self.trades = self._trades
        self.bot_state = SqliteBotState(self._file)
        self.leases = SqlLeases(self._file)
        self.instruments = SqlInstruments(self._file)

    def close(self) -> None:
        self._file.close()

    @contextmanager
    def entry_gate(self, risk_key: str, day_start: float, lease: LeaseClaim | None = None,
                   timeout: float = 5.0) -> Iterator[EntryView]:
        """A BEGIN IMMEDIATE transaction: SQLite's one writer lock serializes entries (single-process by
        design; the file lock keeps a second process out too)."""
        if self._file.closed:
            raise StorageError("storage is closed")
        with self._file.transaction(timeout):
            claimed = None if lease is None else self.leases.claim(lease.pos_id, lease.owner, lease.now, lease.ttl)
            yield EntryView(self.bot_state.get(risk_key) or {}, self._trades.day_figures(day_start), claimed)

    @contextmanager
    def placement_lock(self, pos_id: str, timeout: float = 30.0,
                       claim: OrderRecord | None = None) -> Iterator[bool]:
        """Process-local lock only: SQLite deployments are single-process by design (the embedded
        `role: all`); a multi-process deployment needs PostgreSQL. Re-entrant in one thread. With `claim`,
        the intent and its orders row are committed before the block runs; it gets whether this call
        claimed it."""
        if self._file.closed:
            raise StorageError("storage is closed")
        with self._local_locks.hold(pos_id, timeout):
            if claim is None:
                yield True
                return
            yield self._file.atomic("claim order intent",
                                    lambda session: self._trades.claim_in(session, claim))
