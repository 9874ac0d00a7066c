"""PostgreSQL storage: psycopg 3 + psycopg_pool, every statement parameterized.

Connections: one `ConnectionPool` (autocommit connections; multi-statement writes use explicit
transactions) opened without waiting, so `PostgresStorage(...)` never fails when the database is down.
While it is down every call raises StorageUnavailable within about `connect_timeout` seconds (the pool
wait); when it is back the same object works again. Two details make recovery prompt:
- a pooled connection cut while idle is detected before use (a zero-timeout poll of its socket) and
  replaced, instead of failing the caller's first statement;
- the pool gives up background reconnection after a few seconds (`reconnect_timeout`), so it never sits
  in a long exponential backoff after the database returns: the next caller grows the pool at once.

Times are TIMESTAMPTZ in the database (operators query them by hand) and epoch seconds in Python; the
conversion is done in SQL (`to_timestamp`, `extract(epoch ...)`), as the `POSTGRESQL` dialect says. The
statements shared with SQLite are in storage/sql.py; the ones here are PostgreSQL's own (unnest, COPY,
advisory locks, `jsonb ||`).
"""

from __future__ import annotations

import functools
import math
import select
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from core.market import Candle
from storage.errors import JournalConflict, StorageConflict, StorageError, StorageUnavailable
from storage.locks import KeyedLocks, advisory_key
from storage.records import EntryView, LeaseClaim, OrderRecord, TradeEventRecord, TradeRecord
from storage.repositories import newest_revision_per_key
from storage.sql import (
    CANDLE_COLUMNS,
    EVENT_COLUMNS,
    ORDER_COLUMNS,
    TRADE_COLUMNS,
    Columns,
    Dialect,
    JournalEvent,
    Session,
    SqlBotState,
    SqlCandles,
    SqlDatabase,
    SqlInstruments,
    SqlLeases,
    SqlOptionChains,
    SqlStorage,
    SqlTrades,
    assignments,
    decode_json,
    encode_json,
    event_from_row,
    journal_rows,
    names,
    order_params,
    trade_params,
)
from telemetry.logs import get_logger, incident_id

__all__ = ["POSTGRESQL", "PostgresStorage"]

log = get_logger("storage.postgres")
T = TypeVar("T")
ENTRY_GATE_KEY = advisory_key("mybot:entry-gate")
_LOCK_PROBE_INTERVAL = 1.0  # seconds between probes of a database known to be down, from placement locks

POSTGRESQL = Dialect(
    name="postgresql", mark="%s",
    time_in="to_timestamp({})", time_out="extract(epoch FROM {})::float8",
    seconds_out="extract(epoch FROM {})::bigint",
    day_in="{}::date", day_out="to_char({}, 'YYYY-MM-DD')",
    json_in="{}::jsonb", json_out="{}::text", json_number="(({column}->>'{key}')::float8)",
    time_type="TIMESTAMPTZ",
    # Serializes migrators of the same schema across processes (MD5-based key, like the placement locks).
    migration_lock=("SELECT pg_advisory_xact_lock(('x' || substr(md5('mybot.migrate:' || "
                    "COALESCE(current_schema(), '')), 1, 16))::bit(64)::bigint)"),
)


@contextmanager
def _translated(what: str, timeout: float) -> Iterator[None]:
    """Translate psycopg errors into storage errors, once, here."""
    try:
        yield
    except PoolClosed as exc:
        raise StorageError("storage is closed") from exc
    except PoolTimeout as exc:
        raise StorageUnavailable(f"{what}: no database connection within {timeout:g}s") from exc
    except psycopg.errors.IntegrityError as exc:
        raise StorageConflict(f"{what}: {exc}") from exc
    except psycopg.errors.LockNotAvailable as exc:
        raise StorageConflict(f"{what}: {exc}") from exc
    except (psycopg.errors.TransactionRollback, psycopg.errors.QueryCanceled) as exc:
        raise StorageUnavailable(f"{what}: {exc}") from exc
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise StorageUnavailable(f"{what}: {exc}") from exc
    except psycopg.Error as exc:
        raise StorageError(f"{what}: {exc}") from exc


class StorageStillUnavailable(StorageUnavailable):
    """The database is known down and another call is probing it: this call fails at once."""


class _Database(SqlDatabase):
    """The pool plus the rules for borrowing from it, and the outage gate.

    Healthy: calls borrow from the pool (waiting at most `connect_timeout`). Once a call finds the
    database unreachable, the gate closes: each later call first tries one direct connection (only one
    thread at a time; the others fail at once), so a refused database fails calls in milliseconds
    instead of a pool wait each. The first probe that connects serves its call, opens the gate and
    logs STORAGE_RECOVERED; the pool refills on demand.
    """

    dialect = POSTGRESQL

    def __init__(self, url: str, connect_timeout: float, password: str, pool_size: int) -> None:
        self.url = url
        self.timeout = connect_timeout
        self.connect_kwargs: dict[str, Any] = {
            "autocommit": True,
            # libpq counts whole seconds and enforces at least 2.
            "connect_timeout": max(2, math.ceil(connect_timeout)),
            "application_name": "mybot",
            # A peer that vanishes without closing the socket is noticed in ~25 s rather than hours.
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": 15_000,
        }
        if password:
            self.connect_kwargs["password"] = password
        self.pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            kwargs=self.connect_kwargs,
            min_size=1,
            max_size=pool_size,
            open=False,
            timeout=connect_timeout,
            # Give up background reconnection soon: a caller then grows the pool at once, rather than
            # the pool sitting in a long exponential backoff after the database is back.
            reconnect_timeout=max(2.0, connect_timeout),
            reconnect_failed=self._reconnect_failed,
            name="mybot-storage",
            num_workers=2,
        )
        self.pool.open(wait=False)
        # Placement locks hold a transaction open across a broker call: they get their own small pool
        # so they never starve repository calls, and no connect (~4 ms) per lock.
        self.lock_pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            kwargs={**self.connect_kwargs, "autocommit": False},
            min_size=0,
            max_size=8,
            open=False,
            timeout=connect_timeout,
            reconnect_timeout=max(2.0, connect_timeout),
            name="mybot-locks",
            num_workers=1,
        )
        self.lock_pool.open(wait=False)
        self._healthy = True
        self._local = threading.local()
        self._last_error = ""
        self._outage = ("", 0.0)  # the open DATABASE_OUTAGE incident: its id, since (epoch)
        self._health_lock = threading.Lock()
        self._probe_lock = threading.Lock()
        self._next_lock_probe = 0.0  # while down, placement locks probe at most once per interval

    def _reconnect_failed(self, pool: ConnectionPool[Any]) -> None:
        log.event("STORAGE_RECONNECT_FAILED", "pool gave up a background reconnection; the next call retries",
                  level=30)

    def _mark(self, healthy: bool, detail: str = "") -> None:
        with self._health_lock:
            if not healthy:
                self._last_error = detail
            if healthy == self._healthy:
                return
            self._healthy = healthy
            if not healthy:
                now = time.time()
                self._outage = (incident_id("DATABASE_OUTAGE", "postgresql", now), now)
            outage, since = self._outage
        if healthy:
            log.event("STORAGE_RECOVERED", "database reachable again", incident_id=outage,
                      outage_seconds=round(time.time() - since, 3))
        else:
            log.event("STORAGE_UNAVAILABLE", "database unreachable", level=30, detail=detail, incident_id=outage)

    def in_transaction(self) -> bool:
        return getattr(self._local, "conn", None) is not None

    def bind(self, conn: psycopg.Connection[Any] | None) -> None:
        """Every repository call of this thread uses `conn` (inside a transaction the caller runs), or not."""
        self._local.conn = conn

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if getattr(self._local, "conn", None) is not None:
            yield  # nested: part of the outer transaction
            return
        with self.connection("transaction") as conn:
            with _translated("transaction", self.timeout), conn.transaction():
                self._local.conn = conn
                try:
                    yield
                finally:
                    self._local.conn = None

    @contextmanager
    def connection(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        bound = getattr(self._local, "conn", None)
        if bound is not None:  # inside transaction(): every call shares its connection
            with _translated(what, self.timeout):
                yield bound
            return
        conn: psycopg.Connection[Any] | None = None
        lost = False
        try:
            with _translated(what, self.timeout):
                conn, pooled = self._acquire()
                try:
                    yield conn
                finally:
                    lost = conn.closed
                    if pooled:
                        self.pool.putconn(conn)
                    else:
                        conn.close()
        except StorageStillUnavailable:
            raise  # the outage is known: its cause stays the last error (quoting this one nests it)
        except StorageUnavailable as exc:
            if conn is None or lost:  # no connection, or it broke: an outage, not a busy database
                self._mark(False, str(exc))
            raise
        if not self._healthy:
            self._mark(True)

    def _acquire(self) -> tuple[psycopg.Connection[Any], bool]:
        """(connection, borrowed from the pool?)"""
        if self._healthy:
            return self._checkout(), True
        if not self._probe_lock.acquire(blocking=False):
            raise StorageStillUnavailable(f"database unreachable (another call is probing it): {self._last_error}")
        try:
            conn = psycopg.connect(self.url, **self.connect_kwargs)
        finally:
            self._probe_lock.release()
        self._mark(True)
        return conn, False

    def _checkout(self, pool: ConnectionPool[psycopg.Connection[Any]] | None = None) -> psycopg.Connection[Any]:
        pool = self.pool if pool is None else pool
        deadline = time.monotonic() + self.timeout
        while True:
            conn = pool.getconn(timeout=max(deadline - time.monotonic(), 0.001))
            if _alive(conn):
                return conn
            # Cut while idle in the pool: close it so the pool replaces it, and try the next one.
            conn.close()
            pool.putconn(conn)

    def lock_connection(self, what: str) -> psycopg.Connection[Any]:
        """A connection for a placement lock, from the lock pool (its transaction is ours until returned).

        While the database is known to be down this probes it at most once a second and otherwise fails at
        once instead of waiting `connect_timeout`: a flatten of many positions during an outage must not
        queue one wait per exit."""
        if not self._healthy:
            now = time.monotonic()
            if now < self._next_lock_probe:
                raise StorageUnavailable(f"{what}: database unreachable: {self._last_error}")
            self._next_lock_probe = now + _LOCK_PROBE_INTERVAL
            with self.connection(what):  # a probe: marks the database healthy, or raises at once
                pass
        try:
            with _translated(what, self.timeout):
                return self._checkout(self.lock_pool)
        except StorageUnavailable as exc:
            self._mark(False, str(exc))
            raise

    def return_lock_connection(self, conn: psycopg.Connection[Any]) -> None:
        if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            try:
                conn.rollback()  # releases the advisory lock if the block did not commit
            except psycopg.Error:
                conn.close()
        self.lock_pool.putconn(conn)

    def read(self, what: str, work: Callable[[Session], T]) -> T:
        with self.connection(what) as conn:
            return work(_PgSession(conn))

    # Autocommit: one statement is its own transaction, without BEGIN/COMMIT round trips.
    write = read

    def atomic(self, what: str, work: Callable[[Session], T]) -> T:
        with self.connection(what) as conn:
            if self.in_transaction():
                return work(_PgSession(conn))  # part of the caller's transaction()
            with conn.transaction():
                return work(_PgSession(conn))

    def close(self) -> None:
        self.lock_pool.close(timeout=5.0)
        self.pool.close(timeout=5.0)


def _alive(conn: psycopg.Connection[Any]) -> bool:
    """Cheap check of an idle pooled connection: an idle socket has nothing to read; if it has, it is
    either closed by the peer or carries a notice — a round trip tells which."""
    if conn.closed:
        return False
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
        if readable:
            conn.execute("")
    except (psycopg.Error, OSError, ValueError):
        return False
    return True


class _PgSession(Session):
    __slots__ = ("_conn",)

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql, params).rowcount

    # Results in binary: float8 and bigint columns skip text parsing (measured on candle reads).
    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Sequence[Any] | None:
        return self._conn.execute(sql, params, binary=True).fetchone()

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        return list(self._conn.execute(sql, params, binary=True).fetchall())

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        with self._conn.cursor() as cursor:
            cursor.executemany(sql, rows)
            return cursor.rowcount

    def bulk_insert(self, table: str, columns: Columns, rows: Iterable[Sequence[Any]]) -> None:
        with self._conn.cursor() as cursor, cursor.copy(f"COPY {table} ({names(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def script(self, sql: str) -> None:
        self._conn.execute(sql)


# Binary parameters (%b): the server parses 1000-element float arrays much faster than their text form
# (measured: ~13 ms instead of ~21 ms per 1000-row batch).
_UPSERT_CANDLES = f"""
INSERT INTO candles AS c ({names(CANDLE_COLUMNS)}, updated_at)
SELECT u.symbol, to_timestamp(u.ts), u.open, u.high, u.low, u.close, u.volume, u.ticks, u.revision,
       to_timestamp(NULLIF(u.first_tick_ts, 0)), to_timestamp(NULLIF(u.last_tick_ts, 0)), to_timestamp(%b)
FROM unnest(%b::text[], %b::bigint[], %b::float8[], %b::float8[], %b::float8[], %b::float8[],
            %b::bigint[], %b::int[], %b::int[], %b::float8[], %b::float8[])
     AS u({names(CANDLE_COLUMNS)})
ON CONFLICT (symbol, ts) DO UPDATE SET {assignments((*CANDLE_COLUMNS, ("updated_at", "time")), keep=("symbol", "ts"))}
WHERE c.revision <= EXCLUDED.revision
"""


class PostgresCandles(SqlCandles):
    def upsert_many(self, candles: Sequence[Candle]) -> int:
        """One statement over arrays (unnest) instead of a statement per candle."""
        batch = newest_revision_per_key(candles)
        if not batch:
            return 0
        params = (
            time.time(),
            [c.symbol for c in batch], [int(c.ts) for c in batch],
            [float(c.open) for c in batch], [float(c.high) for c in batch],
            [float(c.low) for c in batch], [float(c.close) for c in batch],
            [int(c.volume) for c in batch], [int(c.ticks) for c in batch], [int(c.revision) for c in batch],
            [float(c.first_tick_ts) for c in batch], [float(c.last_tick_ts) for c in batch],
        )
        return self._db.execute("upsert candles", _UPSERT_CANDLES, params)


# The checked append in one statement: the rows go in only if the journal holds `expected_seq` events
# (no row otherwise), and a writer that raced us to the same seq is stopped by the (pos_id, seq) key.
# The rows are a VALUES list (one statement per count, built once): no array parameters to escape.
_RETURN_EVENTS = f"RETURNING {POSTGRESQL.select_list(EVENT_COLUMNS)}"


@functools.lru_cache(maxsize=16)
def _append_checked(count: int) -> str:
    values = ", ".join(f"({n}, %s::text, %s::text, %s::text, %s::text, %s::float8)" for n in range(1, count + 1))
    return f"""
INSERT INTO trade_events ({names(EVENT_COLUMNS)})
SELECT %s, %s + e.n, e.event, e.from_state, e.to_state, e.payload::jsonb, to_timestamp(e.at)
FROM (VALUES {values}) AS e(n, event, from_state, to_state, payload, at)
WHERE (SELECT COALESCE(MAX(seq), 0) FROM trade_events WHERE pos_id = %s) = %s
"""


_TRADE_PROJECTION = f"""
trade AS (
    INSERT INTO trades ({names(TRADE_COLUMNS)}) SELECT {POSTGRESQL.params(TRADE_COLUMNS)}
    WHERE EXISTS (SELECT 1 FROM appended)
    ON CONFLICT (pos_id) DO UPDATE SET {assignments(TRADE_COLUMNS, keep=("pos_id", "created_at"))}
)"""
_ORDER_PROJECTION = f"""
ord AS (
    INSERT INTO orders AS o ({names(ORDER_COLUMNS)}) SELECT {POSTGRESQL.params(ORDER_COLUMNS)}
    WHERE EXISTS (SELECT 1 FROM appended)
    ON CONFLICT (correlation_id) DO UPDATE SET
        {assignments(ORDER_COLUMNS, keep=("correlation_id", "broker_order_id", "created_at"))},
        broker_order_id = COALESCE(EXCLUDED.broker_order_id, o.broker_order_id)
)"""


@functools.lru_cache(maxsize=32)
def _step(count: int, with_order: bool) -> str:
    """The checked append and, only if it appended, the trades row (and the orders row)."""
    projections = _TRADE_PROJECTION + ("," + _ORDER_PROJECTION if with_order else "")
    return f"WITH appended AS ({_append_checked(count).strip()} {_RETURN_EVENTS}),{projections}\n" \
           "SELECT * FROM appended"


def _append_params(pos_id: str, expected_seq: int, rows: list[tuple[Any, ...]]) -> list[Any]:
    params: list[Any] = [pos_id, expected_seq]
    for row in rows:
        params.extend(row[2:])
    params += [pos_id, expected_seq]
    return params


class PostgresTrades(SqlTrades):
    def __init__(self, db: _Database) -> None:
        super().__init__(db)
        self._pg = db

    def append_events(self, pos_id: str, expected_seq: int,
                      events: Sequence[JournalEvent]) -> list[TradeEventRecord]:
        rows = journal_rows(pos_id, expected_seq, events)
        if not rows:
            length = self._db.fetchone("journal length", self.journal_length, (pos_id,))
            if length is None or int(length[0]) != expected_seq:
                raise JournalConflict(pos_id, expected_seq)
            return []
        sql = _append_checked(len(rows)) + _RETURN_EVENTS
        params = _append_params(pos_id, expected_seq, rows)

        def work(session: Session) -> list[Sequence[Any]]:
            try:
                return session.fetchall(sql, params)
            except psycopg.errors.UniqueViolation as exc:  # a racing writer took a seq first
                raise JournalConflict(pos_id, expected_seq, "another writer took the seq") from exc

        stored = self._db.write("append trade events", work)
        if len(stored) != len(rows):  # the length check failed: nothing was inserted
            raise JournalConflict(pos_id, expected_seq)
        return sorted((event_from_row(row) for row in stored), key=lambda record: record.seq)

    def record_step(self, pos_id: str, expected_seq: int, events: Sequence[JournalEvent], trade: TradeRecord,
                    order: OrderRecord | None = None, durable: bool = True) -> list[TradeEventRecord]:
        """One statement, one round trip: the checked append and, only if it appended, the projections.
        Not durable: committed without waiting for the WAL flush (BEGIN, SET LOCAL synchronous_commit
        off, the statement and COMMIT pipelined: still one round trip)."""
        rows = journal_rows(pos_id, expected_seq, events)
        if not rows:
            return super().record_step(pos_id, expected_seq, events, trade, order, durable)
        params = [*_append_params(pos_id, expected_seq, rows), *trade_params(trade)]
        if order is not None:
            params += order_params(order)
        sql = _step(len(rows), order is not None)
        try:
            with self._pg.connection("record trade step") as conn:
                if durable or self._pg.in_transaction():
                    stored = conn.execute(sql, params, binary=True).fetchall()
                else:
                    stored = _unsynced(conn, sql, params)
        except StorageConflict as exc:
            if isinstance(exc.__cause__, psycopg.errors.UniqueViolation):  # a racing writer took a seq first
                raise JournalConflict(pos_id, expected_seq, "another writer took the seq") from exc
            raise
        if len(stored) != len(rows):  # the length check failed: nothing was written
            raise JournalConflict(pos_id, expected_seq)
        return sorted((event_from_row(row) for row in stored), key=lambda record: record.seq)


def _unsynced(conn: psycopg.Connection[Any], sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
    """One statement in its own transaction, committed without waiting for the disk; one round trip."""
    try:
        with conn.pipeline():
            conn.execute("BEGIN")
            conn.execute("SET LOCAL synchronous_commit TO off")
            cursor = conn.execute(sql, params, binary=True)
            conn.execute("COMMIT")
    finally:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.execute("ROLLBACK")  # the statement failed: its transaction block is aborted
    return list(cursor.fetchall())


# The intent and its orders row in one statement: the row is written only when this call made the claim.
_CLAIM = f"""
WITH claim AS (
    INSERT INTO order_intents (correlation_id, pos_id, leg, claimed_at) VALUES (%s, %s, %s, to_timestamp(%s))
    ON CONFLICT (correlation_id) DO NOTHING RETURNING correlation_id
)
INSERT INTO orders AS o ({names(ORDER_COLUMNS)}) SELECT {POSTGRESQL.params(ORDER_COLUMNS)}
WHERE EXISTS (SELECT 1 FROM claim)
ON CONFLICT (correlation_id) DO UPDATE SET
    {assignments(ORDER_COLUMNS, keep=("correlation_id", "broker_order_id", "created_at"))}
"""


_MERGE_STATE = """
INSERT INTO bot_state AS b (key, value, updated_at) VALUES (%s, %s::jsonb, to_timestamp(%s))
ON CONFLICT (key) DO UPDATE SET value = (b.value - %s::text[]) || EXCLUDED.value, updated_at = EXCLUDED.updated_at
RETURNING value::text
"""


class PostgresBotState(SqlBotState):
    def merge(self, key: str, patch: dict[str, Any], at: float, remove: Sequence[str] = ()) -> dict[str, Any]:
        """One statement: the row lock of the upsert orders concurrent mergers, and each applies its
        patch to the document the previous one left."""
        params = (key, encode_json(patch), float(at), [str(name) for name in remove])
        row = self._db.write("merge bot state", lambda session: session.fetchone(_MERGE_STATE, params))
        assert row is not None  # an upsert with RETURNING yields its row
        return dict(decode_json(row[0]))


class PostgresStorage(SqlStorage):
    """Storage on PostgreSQL; see the module docstring for connection handling."""

    def __init__(self, url: str, connect_timeout: float = 3.0, password: str = "", pool_size: int = 8) -> None:
        self._pg = _Database(url, connect_timeout, password, pool_size)
        super().__init__(self._pg)
        self._local_locks = KeyedLocks()
        self._closed = False
        self.candles = PostgresCandles(self._pg)
        self.option_chains = SqlOptionChains(self._pg)
        self._trades = PostgresTrades(self._pg)
        self.trades = self._trades
        self._bot_state = PostgresBotState(self._pg)
        self.bot_state = self._bot_state
        self._leases = SqlLeases(self._pg)
        self.leases = self._leases
        self.instruments = SqlInstruments(self._pg)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pg.close()

    @contextmanager
    def entry_gate(self, risk_key: str, day_start: float, lease: LeaseClaim | None = None,
                   timeout: float = 5.0) -> Iterator[EntryView]:
        """BEGIN, `pg_advisory_xact_lock(advisory_key("mybot:entry-gate"))` (with its lock_timeout), the lease
        claim and the reads, pipelined: one round trip. The reads are statements after the lock's, so they
        see every entry committed before it was granted. Every repository call of this thread inside the
        block joins the transaction; the lock goes with its commit (queued in the pipeline) or rollback."""
        if self._closed:
            raise StorageError("storage is closed")
        with self._pg.connection("entry gate") as conn, _translated("entry gate", self._pg.timeout):
            with conn.pipeline() as pipeline, conn.transaction():
                conn.execute("SELECT set_config('lock_timeout', %s, true), pg_advisory_xact_lock(%s)",
                             (f"{max(1, int(timeout * 1000))}ms", ENTRY_GATE_KEY))
                claim = None if lease is None else conn.execute(self._leases.claim_sql, self._leases.claim_params(
                    lease.pos_id, lease.owner, lease.now, lease.ttl))
                document = conn.execute(self._bot_state.get_sql, (risk_key,))
                figures = conn.execute(self._trades.day_figures_sql, self._trades.day_figures_params(day_start))
                pipeline.sync()
                row = document.fetchone()
                view = EntryView(dict(decode_json(row[0])) if row is not None else {},
                                 self._trades.day_figures_from(figures.fetchall()),
                                 None if claim is None else claim.rowcount == 1)
                self._pg.bind(conn)
                try:
                    yield view
                finally:
                    self._pg.bind(None)

    @contextmanager
    def placement_lock(self, pos_id: str, timeout: float = 30.0,
                       claim: OrderRecord | None = None) -> Iterator[bool]:
        """Process-local lock, then `pg_advisory_xact_lock(advisory_key(pos_id))` in a transaction on a
        connection of the lock pool (not the repositories' pool), held until the block exits.

        With `claim`, the intent and its orders row are written in that same transaction (one more round
        trip; the block gets whether this call claimed it). They commit with the lock's release, without
        waiting for the disk (synchronous_commit off): a placement lost to a database crash is resolved
        at the broker by the trade's recovery, which never submits blindly.

        Re-entrant in one thread (the inner block takes no second database lock). If the connection is
        lost while held, PostgreSQL releases the lock and rolls the claim back.
        """
        if self._closed:
            raise StorageError("storage is closed")
        deadline = time.monotonic() + timeout
        with self._local_locks.hold(pos_id, timeout) as reentry:
            if reentry:
                yield self.trades.claim_intent(pos_id, claim.leg, claim.correlation_id,
                                               claim.created_at) if claim is not None else True
                return
            remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))
            conn = self._pg.lock_connection(f"placement lock {pos_id}")
            try:
                with _translated(f"placement lock {pos_id}", self._pg.timeout):
                    # One round trip: the lock and the claim are pipelined (the server runs them in order);
                    # the select list runs left to right, so the settings come before the lock.
                    with conn.pipeline():
                        conn.execute("SELECT set_config('lock_timeout', %s, true), "
                                     "set_config('synchronous_commit', 'off', true), pg_advisory_xact_lock(%s)",
                                     (f"{remaining_ms}ms", advisory_key(pos_id)))
                        if claim is not None:
                            claiming = conn.execute(_CLAIM, (claim.correlation_id, claim.pos_id, claim.leg,
                                                             float(claim.created_at), *order_params(claim)))
                    claimed = claiming.rowcount == 1 if claim is not None else True
                yield claimed
                with _translated(f"placement lock {pos_id}", self._pg.timeout):
                    conn.commit()
            finally:
                self._pg.return_lock_connection(conn)
