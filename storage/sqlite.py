"""SQLite storage (the embedded default): stdlib sqlite3, WAL journal, busy timeout.

Threading: ONE connection guarded by a lock (`check_same_thread=False`). Every call holds the lock for
its statements, so calls from several threads are serialized and each multi-statement write is one
`BEGIN IMMEDIATE` transaction. Chosen over a connection per thread because threads come and go (a trade
actor per position) and per-thread connections would leak; SQLite has one writer at a time anyway, and
the embedded deployment is small. Other processes on the same file are tolerated (WAL + busy timeout,
migrations under BEGIN IMMEDIATE) but the placement lock is process-local only.

The connection is opened on first use, so `SqliteStorage(path)` never fails; an unopenable file raises
StorageUnavailable from each call until it can be opened.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import orjson

from core.market import Candle
from storage.errors import StorageConflict, StorageError, StorageUnavailable
from storage.locks import KeyedLocks
from storage.records import (
    TERMINAL_TRADE_STATES,
    OptionChainRecord,
    OrderRecord,
    TradeEventRecord,
    TradeRecord,
)
from storage.repositories import Storage, check_day, newest_revision_per_key
from storage.schema import load_migrations
from telemetry.logs import get_logger

__all__ = ["SqliteStorage"]

log = get_logger("storage.sqlite")
T = TypeVar("T")

# Primary result codes meaning "not now": busy/locked beyond busy_timeout, I/O trouble, can't open.
_RETRY_LATER = {5, 6, 10, 14, 15}  # SQLITE_BUSY, LOCKED, IOERR, CANTOPEN, PROTOCOL
_CONSTRAINT = 19


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _loads(text: str) -> Any:
    return orjson.loads(text)


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


class _Database:
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

    def read(self, what: str, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock, _translated(what):
            return work(self._connection())

    def write(self, what: str, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in one BEGIN IMMEDIATE transaction (the write lock is taken up front, so two
        writers never deadlock on a read-to-write upgrade)."""
        with self._lock, _translated(what):
            conn = self._connection()
            if getattr(self._in_transaction, "active", False):
                return work(conn)  # inside transaction(): it commits
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
            return result

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if getattr(self._in_transaction, "active", False):
            yield
            return
        with self._lock:
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


_CANDLE_COLUMNS = ("symbol, ts, open, high, low, close, volume, ticks, revision, "
                   "COALESCE(first_tick_ts, 0), COALESCE(last_tick_ts, 0)")

_UPSERT_CANDLE = """
INSERT INTO candles (symbol, ts, open, high, low, close, volume, ticks, revision, first_tick_ts, last_tick_ts,
                     updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULLIF(?, 0), NULLIF(?, 0), ?)
ON CONFLICT (symbol, ts) DO UPDATE SET
    open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,
    volume = excluded.volume, ticks = excluded.ticks, revision = excluded.revision,
    first_tick_ts = excluded.first_tick_ts, last_tick_ts = excluded.last_tick_ts, updated_at = excluded.updated_at
WHERE candles.revision <= excluded.revision
"""


def _candle(row: Sequence[Any]) -> Candle:
    return Candle(row[0], int(row[1]), float(row[2]), float(row[3]), float(row[4]), float(row[5]), int(row[6]),
                  int(row[7]), int(row[8]), float(row[9]), float(row[10]))


class SqliteCandles:
    def __init__(self, db: _Database) -> None:
        self._db = db

    def upsert_many(self, candles: Sequence[Candle]) -> int:
        batch = newest_revision_per_key(candles)
        if not batch:
            return 0
        now = time.time()
        rows = [(c.symbol, int(c.ts), float(c.open), float(c.high), float(c.low), float(c.close), int(c.volume),
                 int(c.ticks), int(c.revision), float(c.first_tick_ts), float(c.last_tick_ts), now) for c in batch]

        def work(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.executemany(_UPSERT_CANDLE, rows)
            return conn.total_changes - before

        return self._db.write("upsert candles", work)

    def latest(self, symbol: str, limit: int) -> list[Candle]:
        sql = f"SELECT {_CANDLE_COLUMNS} FROM candles WHERE symbol = ? ORDER BY ts DESC LIMIT ?"
        rows = self._db.read("latest candles", lambda conn: conn.execute(sql, (symbol, max(limit, 0))).fetchall())
        return [_candle(row) for row in reversed(rows)]

    def between(self, symbol: str, start_ts: int, end_ts: int) -> list[Candle]:
        sql = f"SELECT {_CANDLE_COLUMNS} FROM candles WHERE symbol = ? AND ts >= ? AND ts < ? ORDER BY ts"
        rows = self._db.read("candles between",
                             lambda conn: conn.execute(sql, (symbol, int(start_ts), int(end_ts))).fetchall())
        return [_candle(row) for row in rows]

    def last_ts(self, symbol: str) -> int | None:
        row = self._db.read("last candle", lambda conn: conn.execute(
            "SELECT max(ts) FROM candles WHERE symbol = ?", (symbol,)).fetchone())
        return None if row is None or row[0] is None else int(row[0])

    def symbols(self) -> list[str]:
        rows = self._db.read("candle symbols", lambda conn: conn.execute(
            "SELECT DISTINCT symbol FROM candles ORDER BY symbol").fetchall())
        return [row[0] for row in rows]


_CHAIN_COLUMNS = "idx, expiry, payload, updated_at"


def _chain(row: Sequence[Any]) -> OptionChainRecord:
    return OptionChainRecord(row[0], row[1], _loads(row[2]), float(row[3]))


class SqliteOptionChains:
    def __init__(self, db: _Database) -> None:
        self._db = db

    def upsert(self, idx: str, expiry: str, payload: dict[str, Any], updated_at: float) -> None:
        sql = """
            INSERT INTO option_chains (idx, expiry, payload, updated_at) VALUES (?, ?, ?, ?)
            ON CONFLICT (idx, expiry) DO UPDATE SET payload = excluded.payload, updated_at = excluded.updated_at
            WHERE option_chains.updated_at <= excluded.updated_at"""
        params = (idx, check_day(expiry), _dumps(payload), float(updated_at))
        self._db.write("upsert option chain", lambda conn: conn.execute(sql, params))

    def latest(self, idx: str, expiry: str | None = None, today: str | None = None) -> OptionChainRecord | None:
        if expiry is not None:
            sql = f"SELECT {_CHAIN_COLUMNS} FROM option_chains WHERE idx = ? AND expiry = ?"
            params: tuple[Any, ...] = (idx, check_day(expiry))
        elif today is not None:
            sql = (f"SELECT {_CHAIN_COLUMNS} FROM option_chains WHERE idx = ? AND expiry >= ? "
                   "ORDER BY expiry LIMIT 1")
            params = (idx, check_day(today))
        else:
            sql = f"SELECT {_CHAIN_COLUMNS} FROM option_chains WHERE idx = ? ORDER BY updated_at DESC LIMIT 1"
            params = (idx,)
        row = self._db.read("latest option chain", lambda conn: conn.execute(sql, params).fetchone())
        return None if row is None else _chain(row)

    def expiries(self, idx: str) -> list[str]:
        rows = self._db.read("option chain expiries", lambda conn: conn.execute(
            "SELECT expiry FROM option_chains WHERE idx = ? ORDER BY expiry", (idx,)).fetchall())
        return [row[0] for row in rows]


_TRADE_COLUMNS = ("pos_id, symbol, instrument, side, qty, filled_qty, entry_price, entry_time, exit_price, "
                  "exit_time, fees, realized_pnl, state, opened_day, detail, created_at, updated_at")
_EVENT_COLUMNS = "pos_id, seq, event, from_state, to_state, payload, at"
_ORDER_COLUMNS = ("correlation_id, pos_id, leg, broker_order_id, status, qty, filled_qty, avg_price, "
                  "expected_price, created_at, updated_at")

_UPSERT_TRADE = f"""
INSERT INTO trades ({_TRADE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (pos_id) DO UPDATE SET
    symbol = excluded.symbol, instrument = excluded.instrument, side = excluded.side, qty = excluded.qty,
    filled_qty = excluded.filled_qty, entry_price = excluded.entry_price, entry_time = excluded.entry_time,
    exit_price = excluded.exit_price, exit_time = excluded.exit_time, fees = excluded.fees,
    realized_pnl = excluded.realized_pnl, state = excluded.state, opened_day = excluded.opened_day,
    detail = excluded.detail, updated_at = excluded.updated_at
"""

_APPEND_EVENT = f"""
INSERT INTO trade_events ({_EVENT_COLUMNS})
SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ?, ?, ? FROM trade_events WHERE pos_id = ?
RETURNING {_EVENT_COLUMNS}
"""

_RECORD_ORDER = f"""
INSERT INTO orders ({_ORDER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (correlation_id) DO UPDATE SET
    pos_id = excluded.pos_id, leg = excluded.leg,
    broker_order_id = COALESCE(excluded.broker_order_id, orders.broker_order_id),
    status = excluded.status, qty = excluded.qty, filled_qty = excluded.filled_qty,
    avg_price = excluded.avg_price, expected_price = excluded.expected_price, updated_at = excluded.updated_at
"""


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _trade(row: Sequence[Any]) -> TradeRecord:
    return TradeRecord(
        pos_id=row[0], symbol=row[1], instrument=row[2], side=row[3], qty=int(row[4]), filled_qty=int(row[5]),
        entry_price=_optional_float(row[6]), entry_time=_optional_float(row[7]),
        exit_price=_optional_float(row[8]), exit_time=_optional_float(row[9]), fees=float(row[10]),
        realized_pnl=_optional_float(row[11]), state=row[12], opened_day=row[13], detail=_loads(row[14]),
        created_at=float(row[15]), updated_at=float(row[16]),
    )


def _event(row: Sequence[Any]) -> TradeEventRecord:
    return TradeEventRecord(row[0], int(row[1]), row[2], row[3], row[4], _loads(row[5]), float(row[6]))


def _order(row: Sequence[Any]) -> OrderRecord:
    return OrderRecord(row[0], row[1], row[2], row[3], row[4], int(row[5]), int(row[6]), _optional_float(row[7]),
                       _optional_float(row[8]), float(row[9]), float(row[10]))


class SqliteTrades:
    def __init__(self, db: _Database) -> None:
        self._db = db

    def upsert_trade(self, trade: TradeRecord) -> None:
        params = (trade.pos_id, trade.symbol, trade.instrument, trade.side, trade.qty, trade.filled_qty,
                  trade.entry_price, trade.entry_time, trade.exit_price, trade.exit_time, trade.fees,
                  trade.realized_pnl, trade.state, check_day(trade.opened_day), _dumps(trade.detail),
                  trade.created_at, trade.updated_at)
        self._db.write("upsert trade", lambda conn: conn.execute(_UPSERT_TRADE, params))

    def get_trade(self, pos_id: str) -> TradeRecord | None:
        row = self._db.read("get trade", lambda conn: conn.execute(
            f"SELECT {_TRADE_COLUMNS} FROM trades WHERE pos_id = ?", (pos_id,)).fetchone())
        return None if row is None else _trade(row)

    def list_trades(self, state: str | None = None, day: str | None = None) -> list[TradeRecord]:
        conditions: list[str] = []
        params: list[Any] = []
        if state is not None:
            conditions.append("state = ?")
            params.append(state)
        if day is not None:
            conditions.append("opened_day = ?")
            params.append(check_day(day))
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = f"SELECT {_TRADE_COLUMNS} FROM trades {where} ORDER BY created_at, pos_id"
        rows = self._db.read("list trades", lambda conn: conn.execute(sql, params).fetchall())
        return [_trade(row) for row in rows]

    def open_pos_ids(self) -> list[str]:
        terminal = sorted(TERMINAL_TRADE_STATES)
        marks = ", ".join("?" * len(terminal))
        sql = f"SELECT pos_id FROM trades WHERE state NOT IN ({marks}) ORDER BY created_at, pos_id"
        rows = self._db.read("open trades", lambda conn: conn.execute(sql, terminal).fetchall())
        return [row[0] for row in rows]

    def append_event(self, pos_id: str, event: str, from_state: str | None, to_state: str | None,
                     payload: dict[str, Any], at: float) -> TradeEventRecord:
        params = (pos_id, event, from_state, to_state, _dumps(payload), float(at), pos_id)
        row = self._db.write("append trade event", lambda conn: conn.execute(_APPEND_EVENT, params).fetchone())
        return _event(row)

    def events(self, pos_id: str) -> list[TradeEventRecord]:
        rows = self._db.read("trade events", lambda conn: conn.execute(
            f"SELECT {_EVENT_COLUMNS} FROM trade_events WHERE pos_id = ? ORDER BY seq", (pos_id,)).fetchall())
        return [_event(row) for row in rows]

    def record_order(self, order: OrderRecord) -> None:
        params = (order.correlation_id, order.pos_id, order.leg, order.broker_order_id, order.status, order.qty,
                  order.filled_qty, order.avg_price, order.expected_price, order.created_at, order.updated_at)
        self._db.write("record order", lambda conn: conn.execute(_RECORD_ORDER, params))

    def orders(self, pos_id: str) -> list[OrderRecord]:
        rows = self._db.read("orders", lambda conn: conn.execute(
            f"SELECT {_ORDER_COLUMNS} FROM orders WHERE pos_id = ? ORDER BY created_at, correlation_id",
            (pos_id,)).fetchall())
        return [_order(row) for row in rows]

    def order(self, correlation_id: str) -> OrderRecord | None:
        row = self._db.read("order", lambda conn: conn.execute(
            f"SELECT {_ORDER_COLUMNS} FROM orders WHERE correlation_id = ?", (correlation_id,)).fetchone())
        return None if row is None else _order(row)

    def claim_intent(self, pos_id: str, leg: str, correlation_id: str, at: float) -> bool:
        sql = """INSERT INTO order_intents (correlation_id, pos_id, leg, claimed_at) VALUES (?, ?, ?, ?)
                 ON CONFLICT (correlation_id) DO NOTHING"""
        inserted = self._db.write("claim order intent", lambda conn: conn.execute(
            sql, (correlation_id, pos_id, leg, float(at))).rowcount)
        return inserted == 1


class SqliteBotState:
    def __init__(self, db: _Database) -> None:
        self._db = db

    def get(self, key: str) -> dict[str, Any] | None:
        row = self._db.read("get bot state", lambda conn: conn.execute(
            "SELECT value FROM bot_state WHERE key = ?", (key,)).fetchone())
        return None if row is None else _loads(row[0])

    def put(self, key: str, value: dict[str, Any], at: float) -> None:
        sql = """INSERT INTO bot_state (key, value, updated_at) VALUES (?, ?, ?)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"""
        self._db.write("put bot state", lambda conn: conn.execute(sql, (key, _dumps(value), float(at))))


class SqliteStorage(Storage):
    """Storage in one SQLite file; see the module docstring for threading."""

    backend = "sqlite"

    def __init__(self, path: Path | str, busy_timeout: float = 3.0) -> None:
        self.path = Path(path)
        self._db = _Database(self.path, busy_timeout)
        self._local_locks = KeyedLocks()
        self.candles = SqliteCandles(self._db)
        self.option_chains = SqliteOptionChains(self._db)
        self.trades = SqliteTrades(self._db)
        self.bot_state = SqliteBotState(self._db)

    def migrate(self) -> list[int]:
        migrations = load_migrations(self.backend)

        def work(conn: sqlite3.Connection) -> list[int]:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                         "(version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations").fetchall()}
            applied: list[int] = []
            for migration in migrations:
                if migration.version in done:
                    continue
                for statement in _statements(migration.sql):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                             (migration.version, time.time()))
                applied.append(migration.version)
            return applied

        # BEGIN IMMEDIATE: a second process migrating at the same time waits, then finds nothing to do.
        applied = self._db.write("migrate", work)
        if applied:
            log.event("STORAGE_MIGRATED", "applied migrations", backend=self.backend, versions=applied)
        return applied

    def ping(self) -> None:
        self._db.read("ping", lambda conn: conn.execute("SELECT 1").fetchone())

    def close(self) -> None:
        self._db.close()

    def transaction(self) -> AbstractContextManager[None]:
        return self._db.transaction()

    @contextmanager
    def placement_lock(self, pos_id: str, timeout: float = 30.0) -> Iterator[None]:
        """Process-local lock only: SQLite deployments are single-process by design (the embedded
        `role: all`); a multi-process deployment needs PostgreSQL. Re-entrant in one thread."""
        if self._db.closed:
            raise StorageError("storage is closed")
        with self._local_locks.hold(pos_id, timeout):
            yield
