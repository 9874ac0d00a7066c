"""The SQL both backends share: column lists, row mappers, filters, the repositories and the migrate loop.

A backend brings two things:
- a `Dialect`: how a parameter is marked (`%s` or `?`) and how times, days and JSON cross into and out of
  SQL. PostgreSQL keeps TIMESTAMPTZ, DATE and JSONB (operators query them by hand) and converts in SQL;
  SQLite keeps REAL epoch seconds, 'YYYY-MM-DD' text and JSON text as they are.
- a `SqlDatabase`: connections, transactions, error translation and outage handling (postgres.py and
  sqlite.py say how), offering `read`, `write` and `atomic` over a `Session`.

Every statement is rendered once per dialect from the column lists below; values only ever travel as
parameters (the rendered text holds column names, the dialect's fragments and parameter marks).

Rows come back alike from both: times as epoch seconds (float; a candle's ts as int), days as
'YYYY-MM-DD', JSON as text decoded here by `decode_json`, so one mapper per record serves both.

What differs beyond the dialect lives in the backend modules, as overrides: PostgreSQL's candle upsert
in one unnest statement, its journal lock, its one-statement checked append and its state merge with
`||`; SQLite's state merge in one BEGIN IMMEDIATE transaction. (The journal appends written here rely
on SQLite serializing writers; PostgreSQL's overrides do not need that.)
"""

from __future__ import annotations

import json
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import orjson

from core.instruments import Instrument
from core.market import Candle
from core.risk import DayFigures, LivePosition
from core.trade import ENTRY_LEG
from storage.errors import JournalConflict
from storage.records import (
    TERMINAL_TRADE_STATES,
    JournalEntry,
    OptionChainRecord,
    OrderRecord,
    TradeEventRecord,
    TradeLease,
    TradeRecord,
)
from storage.repositories import Storage, check_day, newest_revision_per_key
from storage.schema import load_migrations
from telemetry.logs import get_logger

__all__ = [
    "Dialect",
    "Session",
    "SqlBotState",
    "SqlCandles",
    "SqlDatabase",
    "SqlInstruments",
    "SqlLeases",
    "SqlOptionChains",
    "SqlStorage",
    "SqlTrades",
    "decode_json",
    "encode_json",
]

T = TypeVar("T")
Row = Sequence[Any]
JournalEvent = JournalEntry | tuple[str, str | None, str | None, dict[str, Any], float]

# --- JSON ------------------------------------------------------------------------------------------------

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# A literal of 19 or more digits may lie outside the 64-bit range; anything shorter is inside it.
_LONG_DIGITS = re.compile(r"\d{19}")


def encode_json(value: Any) -> str:
    # orjson, not json: json writes NaN, which JSONB refuses; orjson writes null.
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _int64_or_float(literal: str) -> int | float:
    number = int(literal)
    return number if _INT64_MIN <= number <= _INT64_MAX else float(literal)


def decode_json(text: str | bytes) -> Any:
    """Parse JSON read from either backend: an integer literal within the signed 64-bit range is an
    int, every other number a float (JSONB writes the float 1e20 as 100000000000000000000, an int that
    orjson then refuses to encode)."""
    if isinstance(text, bytes):
        text = text.decode()
    if _LONG_DIGITS.search(text) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass  # a number beyond a double (JSONB keeps 1e400): the standard parser makes it inf
    return json.loads(text, parse_int=_int64_or_float)


# --- dialect ---------------------------------------------------------------------------------------------

Kind = Literal["text", "int", "real", "time", "seconds", "day", "json"]
# text, int, real: as they are; time: epoch seconds (float) <-> the backend's time; seconds: the same as
# a whole number (a candle's ts); day: 'YYYY-MM-DD' <-> the backend's date; json: encoded text <-> JSON.
Columns = tuple[tuple[str, Kind], ...]


@dataclass(frozen=True, slots=True)
class Dialect:
    """The SQL fragments in which the backends differ. Templates take `{}`: the parameter mark for the
    `*_in` ones, a column for the `*_out` ones."""

    name: str  # "postgresql" | "sqlite"
    mark: str  # a parameter
    time_in: str
    time_out: str
    seconds_out: str
    day_in: str
    day_out: str
    json_in: str
    json_out: str
    json_number: str  # a number field of a JSON column: .format(column=..., key=...)
    time_type: str  # the column type of a time (schema_migrations)
    migration_lock: str | None  # run first in the migrate transaction (serializes migrators)

    def param(self, kind: Kind) -> str:
        if kind in ("time", "seconds"):
            return self.time_in.format(self.mark)
        if kind == "day":
            return self.day_in.format(self.mark)
        if kind == "json":
            return self.json_in.format(self.mark)
        return self.mark

    def column(self, name: str, kind: Kind) -> str:
        if kind == "time":
            return self.time_out.format(name)
        if kind == "seconds":
            return self.seconds_out.format(name)
        if kind == "day":
            return self.day_out.format(name)
        if kind == "json":
            return self.json_out.format(name)
        return name

    def select_list(self, columns: Columns) -> str:
        return ", ".join(self.column(name, kind) for name, kind in columns)

    def params(self, columns: Columns) -> str:
        return ", ".join(self.param(kind) for _, kind in columns)

    def marks(self, count: int) -> str:
        return ", ".join([self.mark] * count)


def names(columns: Columns) -> str:
    return ", ".join(name for name, _ in columns)


def assignments(columns: Columns, keep: Iterable[str]) -> str:
    """`col = EXCLUDED.col, ...` for an upsert, except the columns in `keep` (the key, first values)."""
    kept = set(keep)
    return ", ".join(f"{name} = EXCLUDED.{name}" for name, _ in columns if name not in kept)


# --- tables ----------------------------------------------------------------------------------------------

CANDLE_COLUMNS: Columns = (
    ("symbol", "text"), ("ts", "seconds"), ("open", "real"), ("high", "real"), ("low", "real"),
    ("close", "real"), ("volume", "int"), ("ticks", "int"), ("revision", "int"), ("first_tick_ts", "time"),
    ("last_tick_ts", "time"),
)
CHAIN_COLUMNS: Columns = (("idx", "text"), ("expiry", "day"), ("payload", "json"), ("updated_at", "time"))
TRADE_COLUMNS: Columns = (
    ("pos_id", "text"), ("symbol", "text"), ("instrument", "text"), ("side", "text"), ("qty", "int"),
    ("filled_qty", "int"), ("entry_price", "real"), ("entry_time", "time"), ("exit_price", "real"),
    ("exit_time", "time"), ("fees", "real"), ("realized_pnl", "real"), ("state", "text"),
    ("opened_day", "day"), ("detail", "json"), ("created_at", "time"), ("updated_at", "time"),
)
EVENT_COLUMNS: Columns = (
    ("pos_id", "text"), ("seq", "int"), ("event", "text"), ("from_state", "text"), ("to_state", "text"),
    ("payload", "json"), ("at", "time"),
)
ORDER_COLUMNS: Columns = (
    ("correlation_id", "text"), ("pos_id", "text"), ("leg", "text"), ("broker_order_id", "text"),
    ("status", "text"), ("qty", "int"), ("filled_qty", "int"), ("avg_price", "real"), ("expected_price", "real"),
    ("created_at", "time"), ("updated_at", "time"),
)
LEASE_COLUMNS: Columns = (("pos_id", "text"), ("owner", "text"), ("acquired_at", "time"), ("heartbeat_at", "time"))
INSTRUMENT_COLUMNS: Columns = (
    ("segment", "text"), ("security_id", "text"), ("instrument", "text"), ("trading_symbol", "text"),
    ("underlying", "text"), ("lot_size", "int"), ("tick_size", "real"), ("expiry", "day"), ("strike", "real"),
    ("option_type", "text"), ("expiry_flag", "text"),
)
TERMINAL = tuple(sorted(TERMINAL_TRADE_STATES))
ENTRY_WORKING_STATES = tuple(sorted(state.value for state in ENTRY_LEG))  # an entry order may still fill
OPTION_TYPES = ("CE", "PE")


# --- row mappers (the same for both backends: see the module docstring) ----------------------------------


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def candle_from_row(row: Row) -> Candle:
    return Candle(row[0], int(row[1]), float(row[2]), float(row[3]), float(row[4]), float(row[5]), int(row[6]),
                  int(row[7]), int(row[8]), float(row[9] or 0.0), float(row[10] or 0.0))


def candle_params(candle: Candle, updated_at: float) -> tuple[Any, ...]:
    """CANDLE_COLUMNS + updated_at; an unknown tick time (0) is stored as NULL."""
    return (candle.symbol, int(candle.ts), float(candle.open), float(candle.high), float(candle.low),
            float(candle.close), int(candle.volume), int(candle.ticks), int(candle.revision),
            float(candle.first_tick_ts) or None, float(candle.last_tick_ts) or None, updated_at)


def chain_from_row(row: Row) -> OptionChainRecord:
    return OptionChainRecord(row[0], row[1], decode_json(row[2]), float(row[3]))


def trade_from_row(row: Row) -> TradeRecord:
    return TradeRecord(
        pos_id=row[0], symbol=row[1], instrument=row[2], side=row[3], qty=int(row[4]), filled_qty=int(row[5]),
        entry_price=_optional_float(row[6]), entry_time=_optional_float(row[7]),
        exit_price=_optional_float(row[8]), exit_time=_optional_float(row[9]), fees=float(row[10]),
        realized_pnl=_optional_float(row[11]), state=row[12], opened_day=row[13], detail=decode_json(row[14]),
        created_at=float(row[15]), updated_at=float(row[16]),
    )


def trade_params(trade: TradeRecord) -> tuple[Any, ...]:
    return (trade.pos_id, trade.symbol, trade.instrument, trade.side, trade.qty, trade.filled_qty,
            _optional_float(trade.entry_price), _optional_float(trade.entry_time), _optional_float(trade.exit_price),
            _optional_float(trade.exit_time), float(trade.fees), _optional_float(trade.realized_pnl), trade.state,
            check_day(trade.opened_day), encode_json(trade.detail), float(trade.created_at),
            float(trade.updated_at))


def event_from_row(row: Row) -> TradeEventRecord:
    return TradeEventRecord(row[0], int(row[1]), row[2], row[3], row[4], decode_json(row[5]), float(row[6]))


def order_from_row(row: Row) -> OrderRecord:
    return OrderRecord(row[0], row[1], row[2], row[3], row[4], int(row[5]), int(row[6]), _optional_float(row[7]),
                       _optional_float(row[8]), float(row[9]), float(row[10]))


def order_params(order: OrderRecord) -> tuple[Any, ...]:
    return (order.correlation_id, order.pos_id, order.leg, order.broker_order_id, order.status, order.qty,
            order.filled_qty, _optional_float(order.avg_price), _optional_float(order.expected_price),
            float(order.created_at), float(order.updated_at))


def lease_from_row(row: Row) -> TradeLease:
    return TradeLease(row[0], row[1], float(row[2]), float(row[3]))


def instrument_from_row(row: Row) -> Instrument:
    return Instrument(row[0], row[1], row[2], row[3], row[4], int(row[5]), float(row[6]), row[7] or "",
                      float(row[8]), row[9], row[10])


def instrument_params(item: Instrument) -> tuple[Any, ...]:
    """INSTRUMENT_COLUMNS; no expiry ("") is stored as NULL."""
    return (item.segment, item.security_id, item.instrument, item.trading_symbol, item.underlying,
            int(item.lot_size), float(item.tick_size), check_day(item.expiry) if item.expiry else None,
            float(item.strike), item.option_type, item.expiry_flag)


def journal_rows(pos_id: str, expected_seq: int, events: Sequence[JournalEvent]) -> list[tuple[Any, ...]]:
    """EVENT_COLUMNS of each event, numbered from expected_seq + 1."""
    rows = []
    for offset, (event, from_state, to_state, payload, at) in enumerate(events, start=1):
        if not event:
            raise ValueError(f"journal event {offset} of {pos_id!r} has no name")
        rows.append((pos_id, expected_seq + offset, event, from_state, to_state, encode_json(payload), float(at)))
    return rows


# --- database --------------------------------------------------------------------------------------------


class Session(ABC):
    """Statements on one connection, inside whatever `SqlDatabase` call lent it."""

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the rows it changed."""

    @abstractmethod
    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...

    @abstractmethod
    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    @abstractmethod
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """Run one statement per row; returns the rows changed."""

    @abstractmethod
    def bulk_insert(self, table: str, columns: Columns, rows: Iterable[Sequence[Any]]) -> None:
        """Insert many rows as fast as the backend can (COPY on PostgreSQL)."""

    @abstractmethod
    def script(self, sql: str) -> None:
        """Run a migration script (several statements, no parameters)."""


class SqlDatabase(ABC):
    """How a backend lends sessions. Every call translates driver errors into storage errors."""

    dialect: Dialect

    @abstractmethod
    def read(self, what: str, work: Callable[[Session], T]) -> T:
        """Reads, and single statements that need no transaction of their own."""

    @abstractmethod
    def write(self, what: str, work: Callable[[Session], T]) -> T:
        """One writing statement (atomic by itself on PostgreSQL; in BEGIN IMMEDIATE on SQLite)."""

    @abstractmethod
    def atomic(self, what: str, work: Callable[[Session], T]) -> T:
        """Several statements that commit together or not at all; joins `transaction()`."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]: ...

    def fetchone(self, what: str, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return self.read(what, lambda session: session.fetchone(sql, params))

    def fetchall(self, what: str, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.read(what, lambda session: session.fetchall(sql, params))

    def execute(self, what: str, sql: str, params: Sequence[Any] = ()) -> int:
        return self.write(what, lambda session: session.execute(sql, params))


# --- repositories ----------------------------------------------------------------------------------------


class SqlCandles:
    def __init__(self, db: SqlDatabase) -> None:
        self._db = db
        d = db.dialect
        m = d.mark
        select = f"SELECT {d.select_list(CANDLE_COLUMNS)} FROM candles"
        self._latest = f"{select} WHERE symbol = {m} ORDER BY ts DESC LIMIT {m}"
        self._between = (f"{select} WHERE symbol = {m} AND ts >= {d.param('seconds')} "
                         f"AND ts < {d.param('seconds')} ORDER BY ts")
        self._last_ts = f"SELECT {d.seconds_out.format('max(ts)')} FROM candles WHERE symbol = {m}"
        written = (*CANDLE_COLUMNS, ("updated_at", "time"))
        self._upsert = f"""
            INSERT INTO candles AS c ({names(written)}) VALUES ({d.params(written)})
            ON CONFLICT (symbol, ts) DO UPDATE SET {assignments(written, keep=("symbol", "ts"))}
            WHERE c.revision <= EXCLUDED.revision"""

    def upsert_many(self, candles: Sequence[Candle]) -> int:
        batch = newest_revision_per_key(candles)
        if not batch:
            return 0
        now = time.time()
        rows = [candle_params(candle, now) for candle in batch]
        return self._db.write("upsert candles", lambda session: session.executemany(self._upsert, rows))

    def latest(self, symbol: str, limit: int) -> list[Candle]:
        rows = self._db.fetchall("latest candles", self._latest, (symbol, max(limit, 0)))
        return [candle_from_row(row) for row in reversed(rows)]

    def between(self, symbol: str, start_ts: int, end_ts: int) -> list[Candle]:
        rows = self._db.fetchall("candles between", self._between, (symbol, int(start_ts), int(end_ts)))
        return [candle_from_row(row) for row in rows]

    def last_ts(self, symbol: str) -> int | None:
        row = self._db.fetchone("last candle", self._last_ts, (symbol,))
        return None if row is None or row[0] is None else int(row[0])

    # A loose index scan: one index probe per symbol instead of reading every candle (both backends
    # answer min() from the primary key's index).
    _SYMBOLS = """
        WITH RECURSIVE s(symbol) AS (
            SELECT min(symbol) FROM candles
            UNION ALL
            SELECT (SELECT min(c.symbol) FROM candles c WHERE c.symbol > s.symbol) FROM s WHERE s.symbol IS NOT NULL
        )
        SELECT symbol FROM s WHERE symbol IS NOT NULL"""

    def symbols(self) -> list[str]:
        return [row[0] for row in self._db.fetchall("candle symbols", self._SYMBOLS)]


class SqlOptionChains:
    def __init__(self, db: SqlDatabase) -> None:
        self._db = db
        d = db.dialect
        m = d.mark
        select = f"SELECT {d.select_list(CHAIN_COLUMNS)} FROM option_chains"
        self._upsert = f"""
            INSERT INTO option_chains AS oc ({names(CHAIN_COLUMNS)}) VALUES ({d.params(CHAIN_COLUMNS)})
            ON CONFLICT (idx, expiry) DO UPDATE SET {assignments(CHAIN_COLUMNS, keep=("idx", "expiry"))}
            WHERE oc.updated_at <= EXCLUDED.updated_at"""
        self._of_expiry = f"{select} WHERE idx = {m} AND expiry = {d.param('day')}"
        self._nearest = f"{select} WHERE idx = {m} AND expiry >= {d.param('day')} ORDER BY expiry LIMIT 1"
        self._freshest = f"{select} WHERE idx = {m} ORDER BY updated_at DESC LIMIT 1"
        self._expiries = f"SELECT {d.column('expiry', 'day')} FROM option_chains WHERE idx = {m} ORDER BY expiry"

    def upsert(self, idx: str, expiry: str, payload: dict[str, Any], updated_at: float) -> None:
        params = (idx, check_day(expiry), encode_json(payload), float(updated_at))
        self._db.execute("upsert option chain", self._upsert, params)

    def latest(self, idx: str, expiry: str | None = None, today: str | None = None) -> OptionChainRecord | None:
        params: tuple[str, ...]
        if expiry is not None:
            sql, params = self._of_expiry, (idx, check_day(expiry))
        elif today is not None:
            sql, params = self._nearest, (idx, check_day(today))
        else:
            sql, params = self._freshest, (idx,)
        row = self._db.fetchone("latest option chain", sql, params)
        return None if row is None else chain_from_row(row)

    def expiries(self, idx: str) -> list[str]:
        return [row[0] for row in self._db.fetchall("option chain expiries", self._expiries, (idx,))]


class SqlTrades:
    """Trades, their journal, their orders and order intents.

    The journal appends here rely on the backend serializing writers (SQLite's BEGIN IMMEDIATE);
    PostgreSQL overrides both (a journal lock; one checked statement)."""

    def __init__(self, db: SqlDatabase) -> None:
        self._db = db
        d = self._dialect = db.dialect
        m = d.mark
        self._select = f"SELECT {d.select_list(TRADE_COLUMNS)} FROM trades"
        self._upsert = f"""
            INSERT INTO trades ({names(TRADE_COLUMNS)}) VALUES ({d.params(TRADE_COLUMNS)})
            ON CONFLICT (pos_id) DO UPDATE SET {assignments(TRADE_COLUMNS, keep=("pos_id", "created_at"))}"""
        self._get = f"{self._select} WHERE pos_id = {m}"
        self._not_terminal = f"state NOT IN ({d.marks(len(TERMINAL))})"
        self._open = f"SELECT pos_id FROM trades WHERE {self._not_terminal} ORDER BY created_at, pos_id"
        self._closed_since = (f"{self._select} WHERE state = {m} AND exit_time >= {d.param('time')} "
                              "ORDER BY exit_time, pos_id")
        self._partially_exited = (f"{self._select} WHERE {self._not_terminal} AND realized_pnl IS NOT NULL "
                                  "ORDER BY created_at, pos_id")
        open_qty = f"COALESCE({d.json_number.format(column='detail', key='open_qty')}, filled_qty)"
        limit = (f"COALESCE({d.json_number.format(column='detail', key='entry_limit_price')}, "
                 f"{d.json_number.format(column='detail', key='expected_entry_price')}, 0)")
        working = f"CASE WHEN state IN ({d.marks(len(ENTRY_WORKING_STATES))}) THEN qty - filled_qty ELSE 0 END"
        net = "(COALESCE(realized_pnl, 0) - fees)"
        number, text = "CAST(NULL AS DOUBLE PRECISION)", "CAST(NULL AS TEXT)"
        # One statement, one round trip: a row per live (symbol, side), one for today's closes, one per recent
        # outcome (the losing streak).
        self._day_figures = f"""
            SELECT 'live', symbol, side, COUNT(*), SUM({open_qty}), SUM({open_qty} * COALESCE(entry_price, 0)),
                   SUM({working}), SUM({working} * {limit}), SUM({net})
            FROM trades WHERE {self._not_terminal} GROUP BY symbol, side
            UNION ALL
            SELECT 'closed', {text}, {text}, COUNT(*), {number}, {number}, {number}, {number}, COALESCE(SUM({net}), 0)
            FROM trades WHERE state = 'CLOSED' AND exit_time >= {d.param('time')}
            UNION ALL
            SELECT 'outcome', {text}, {text}, NULL, closed_at, {number}, {number}, {number}, outcome FROM (
                SELECT {d.column('exit_time', 'time')} AS closed_at, {net} AS outcome FROM trades
                WHERE state = 'CLOSED' AND exit_time >= {d.param('time')} AND {net} <> 0
                ORDER BY exit_time DESC, pos_id DESC LIMIT {m}) recent"""
        self.event_columns = d.select_list(EVENT_COLUMNS)
        self._insert_event = f"""
            INSERT INTO trade_events ({names(EVENT_COLUMNS)}) VALUES ({d.params(EVENT_COLUMNS)})
            RETURNING {self.event_columns}"""
        self._events = f"SELECT {self.event_columns} FROM trade_events WHERE pos_id = {m} ORDER BY seq"
        self.journal_length = f"SELECT COALESCE(MAX(seq), 0) FROM trade_events WHERE pos_id = {m}"
        self._record_order = f"""
            INSERT INTO orders AS o ({names(ORDER_COLUMNS)}) VALUES ({d.params(ORDER_COLUMNS)})
            ON CONFLICT (correlation_id) DO UPDATE SET
                {assignments(ORDER_COLUMNS, keep=("correlation_id", "broker_order_id", "created_at"))},
                broker_order_id = COALESCE(EXCLUDED.broker_order_id, o.broker_order_id)"""
        order_select = f"SELECT {d.select_list(ORDER_COLUMNS)} FROM orders"
        self._orders = f"{order_select} WHERE pos_id = {m} ORDER BY created_at, correlation_id"
        self._order = f"{order_select} WHERE correlation_id = {m}"
        self._claim = f"""
            INSERT INTO order_intents (correlation_id, pos_id, leg, claimed_at) VALUES ({m}, {m}, {m}, {d.param('time')})
            ON CONFLICT (correlation_id) DO NOTHING"""

    def upsert_trade(self, trade: TradeRecord) -> None:
        self._db.execute("upsert trade", self._upsert, trade_params(trade))

    def get_trade(self, pos_id: str) -> TradeRecord | None:
        row = self._db.fetchone("get trade", self._get, (pos_id,))
        return None if row is None else trade_from_row(row)

    def list_trades(self, state: str | None = None, day: str | None = None) -> list[TradeRecord]:
        conditions: list[str] = []
        params: list[Any] = []
        if state is not None:
            conditions.append(f"state = {self._dialect.mark}")
            params.append(state)
        if day is not None:
            conditions.append(f"opened_day = {self._dialect.param('day')}")
            params.append(check_day(day))
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = self._db.fetchall("list trades", f"{self._select} {where} ORDER BY created_at, pos_id", params)
        return [trade_from_row(row) for row in rows]

    def open_pos_ids(self) -> list[str]:
        return [row[0] for row in self._db.fetchall("open trades", self._open, TERMINAL)]

    def open_trades(self) -> list[TradeRecord]:
        rows = self._db.fetchall("open trade rows", f"{self._select} WHERE {self._not_terminal} "
                                                     "ORDER BY created_at, pos_id", TERMINAL)
        return [trade_from_row(row) for row in rows]

    def closed_since(self, ts: float) -> list[TradeRecord]:
        rows = self._db.fetchall("closed trades", self._closed_since, ("CLOSED", float(ts)))
        return [trade_from_row(row) for row in rows]

    def day_figures(self, day_start: float, streak_limit: int = 50) -> DayFigures:
        return self.day_figures_from(self._db.fetchall("risk figures", self._day_figures,
                                                       self.day_figures_params(day_start, streak_limit)))

    @property
    def day_figures_sql(self) -> str:
        return self._day_figures

    @staticmethod
    def day_figures_params(day_start: float, streak_limit: int = 50) -> tuple[Any, ...]:
        return (*ENTRY_WORKING_STATES, *ENTRY_WORKING_STATES, *TERMINAL, float(day_start), float(day_start),
                int(streak_limit))

    @staticmethod
    def day_figures_from(rows: Sequence[Sequence[Any]]) -> DayFigures:
        closed, realized, live = 0, 0.0, 0
        outcomes: list[tuple[float, float]] = []
        positions: list[LivePosition] = []
        for kind, symbol, side, count, open_qty, cost, working, working_value, net in rows:
            if kind == "live":
                live += int(count)
                units = int(open_qty or 0)
                positions.append(LivePosition(
                    pos_id="", symbol=symbol, side=side, open_qty=units,
                    avg_price=float(cost or 0.0) / units if units else 0.0, working_qty=int(working or 0),
                    working_price=float(working_value or 0.0) / int(working) if working else 0.0,
                    realized_net=float(net or 0.0)))
            elif kind == "closed":
                closed, realized = int(count), float(net or 0.0)
            else:
                outcomes.append((float(open_qty), float(net)))  # (closed_at, net P&L), newest first
        return DayFigures(trades_closed=closed, realized_net_closed=realized, recent_outcomes=tuple(outcomes),
                          live_trades=live, positions=tuple(sorted(positions, key=lambda p: (p.symbol, p.side))))

    def partially_exited(self) -> list[TradeRecord]:
        return [trade_from_row(row) for row in self._db.fetchall("partly exited trades", self._partially_exited,
                                                                 TERMINAL)]

    def append_events(self, pos_id: str, expected_seq: int,
                      events: Sequence[JournalEvent]) -> list[TradeEventRecord]:
        """Checked append for backends whose writers are serialized (SQLite: BEGIN IMMEDIATE): the
        length is read and the rows are inserted in one transaction no other writer can enter."""
        return self._db.atomic("append trade events",
                               lambda session: self._append_in(session, pos_id, expected_seq, events))

    def _append_in(self, session: Session, pos_id: str, expected_seq: int,
                   events: Sequence[JournalEvent]) -> list[TradeEventRecord]:
        rows = journal_rows(pos_id, expected_seq, events)
        length = session.fetchone(self.journal_length, (pos_id,))
        if length is None or int(length[0]) != expected_seq:
            raise JournalConflict(pos_id, expected_seq, f"it holds {None if length is None else length[0]}")
        appended = []
        for row in rows:
            stored = session.fetchone(self._insert_event, row)
            assert stored is not None
            appended.append(event_from_row(stored))
        return appended

    def record_step(self, pos_id: str, expected_seq: int, events: Sequence[JournalEvent], trade: TradeRecord,
                    order: OrderRecord | None = None, durable: bool = True) -> list[TradeEventRecord]:
        """The checked append and its projections (the trades row, the orders row) in one transaction.
        SQLite commits every transaction the same way (synchronous=FULL): `durable` changes nothing."""

        def work(session: Session) -> list[TradeEventRecord]:
            appended = self._append_in(session, pos_id, expected_seq, events)
            session.execute(self._upsert, trade_params(trade))
            if order is not None:
                session.execute(self._record_order, order_params(order))
            return appended

        return self._db.atomic("record trade step", work)

    def claim_in(self, session: Session, order: OrderRecord) -> bool:
        """Claim order.correlation_id and write its orders row (status as given) on `session`: True when
        this call claimed it, False when it was claimed before (by anyone); the row is then left alone."""
        if session.execute(self._claim, (order.correlation_id, order.pos_id, order.leg, float(order.created_at))) != 1:
            return False
        session.execute(self._record_order, order_params(order))
        return True

    def events(self, pos_id: str) -> list[TradeEventRecord]:
        return [event_from_row(row) for row in self._db.fetchall("trade events", self._events, (pos_id,))]

    def record_order(self, order: OrderRecord) -> None:
        self._db.execute("record order", self._record_order, order_params(order))

    def orders(self, pos_id: str) -> list[OrderRecord]:
        return [order_from_row(row) for row in self._db.fetchall("orders", self._orders, (pos_id,))]

    def order(self, correlation_id: str) -> OrderRecord | None:
        row = self._db.fetchone("order", self._order, (correlation_id,))
        return None if row is None else order_from_row(row)

    def claim_intent(self, pos_id: str, leg: str, correlation_id: str, at: float) -> bool:
        inserted = self._db.execute("claim order intent", self._claim, (correlation_id, pos_id, leg, float(at)))
        return inserted == 1


class SqlBotState:
    """get and put; `merge` is the backend's (it needs the backend's way to be atomic)."""

    def __init__(self, db: SqlDatabase) -> None:
        self._db = db
        d = db.dialect
        self._get = f"SELECT {d.column('value', 'json')} FROM bot_state WHERE key = {d.mark}"
        self._put = f"""
            INSERT INTO bot_state (key, value, updated_at) VALUES ({d.mark}, {d.param('json')}, {d.param('time')})
            ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at"""

    @property
    def get_sql(self) -> str:
        return self._get

    def get(self, key: str) -> dict[str, Any] | None:
        row = self._db.fetchone("get bot state", self._get, (key,))
        return None if row is None else dict(decode_json(row[0]))

    def put(self, key: str, value: dict[str, Any], at: float) -> None:
        self._db.execute("put bot state", self._put, (key, encode_json(value), float(at)))


class SqlLeases:
    def __init__(self, db: SqlDatabase) -> None:
        self._db = db
        d = db.dialect
        m = d.mark
        t = d.param("time")
        # Taken when new, ours, or expired (heartbeat at or before now - ttl). Under a race the database
        # re-checks the WHERE on the row as the other writer left it, so one claimant wins.
        self._claim = f"""
            INSERT INTO trade_leases AS l ({names(LEASE_COLUMNS)}) VALUES ({d.params(LEASE_COLUMNS)})
            ON CONFLICT (pos_id) DO UPDATE SET
                owner = EXCLUDED.owner, heartbeat_at = EXCLUDED.heartbeat_at,
                acquired_at = CASE WHEN l.owner = EXCLUDED.owner THEN l.acquired_at ELSE EXCLUDED.acquired_at END
            WHERE l.owner = EXCLUDED.owner OR l.heartbeat_at <= {t}"""
        self._renew = f"UPDATE trade_leases SET heartbeat_at = {t} WHERE owner = {m} RETURNING pos_id"
        self._release = f"DELETE FROM trade_leases WHERE pos_id = {m} AND owner = {m}"
        self._owner = f"SELECT {d.select_list(LEASE_COLUMNS)} FROM trade_leases WHERE pos_id = {m}"
        self._adoptable = f"""
            SELECT t.pos_id FROM trades t LEFT JOIN trade_leases l ON l.pos_id = t.pos_id
            WHERE t.state NOT IN ({d.marks(len(TERMINAL))})
              AND (l.pos_id IS NULL OR l.owner = {m} OR l.heartbeat_at <= {t})
            ORDER BY t.created_at, t.pos_id"""

    @property
    def claim_sql(self) -> str:
        return self._claim

    @staticmethod
    def claim_params(pos_id: str, owner: str, now: float, ttl: float) -> tuple[Any, ...]:
        return (pos_id, owner, float(now), float(now), float(now) - float(ttl))

    def claim(self, pos_id: str, owner: str, now: float, ttl: float) -> bool:
        return self._db.execute("claim trade lease", self._claim, self.claim_params(pos_id, owner, now, ttl)) == 1

    def renew(self, owner: str, now: float) -> list[str]:
        rows = self._db.write("renew trade leases",
                              lambda session: session.fetchall(self._renew, (float(now), owner)))
        return sorted(row[0] for row in rows)

    def release(self, pos_id: str, owner: str) -> bool:
        return self._db.execute("release trade lease", self._release, (pos_id, owner)) == 1

    def owner_of(self, pos_id: str) -> TradeLease | None:
        row = self._db.fetchone("trade lease", self._owner, (pos_id,))
        return None if row is None else lease_from_row(row)

    def adoptable(self, owner: str, now: float, ttl: float) -> list[str]:
        rows = self._db.fetchall("adoptable trades", self._adoptable, (*TERMINAL, owner, float(now) - float(ttl)))
        return [row[0] for row in rows]


class SqlInstruments:
    def __init__(self, db: SqlDatabase) -> None:
        self._db = db
        d = db.dialect
        m = d.mark
        select = f"SELECT {d.select_list(INSTRUMENT_COLUMNS)} FROM instruments"
        self._get = f"{select} WHERE segment = {m} AND security_id = {m}"
        self._all = f"{select} ORDER BY segment, security_id"
        self._by_symbol = f"{select} WHERE upper(trading_symbol) = upper({m}) ORDER BY segment, security_id"
        options = f"{select} WHERE underlying = {m} AND option_type IN ({m}, {m})"
        self._options = f"{options} ORDER BY expiry, strike, option_type, segment, security_id"
        self._options_of = (f"{options} AND expiry = {d.param('day')} "
                            "ORDER BY strike, option_type, segment, security_id")
        self._expiries = (f"SELECT DISTINCT {d.column('expiry', 'day')}, expiry FROM instruments "
                          f"WHERE underlying = {m} AND option_type IN ({m}, {m}) ORDER BY expiry")
        self._loaded_at = f"SELECT {d.column('loaded_at', 'time')} FROM instrument_master WHERE id = 1"
        self._stamp = f"""
            INSERT INTO instrument_master (id, loaded_at, row_count) VALUES (1, {d.param('time')}, {m})
            ON CONFLICT (id) DO UPDATE SET loaded_at = EXCLUDED.loaded_at, row_count = EXCLUDED.row_count"""

    def replace_all(self, rows: Iterable[Instrument], loaded_at: float) -> int:
        count = 0

        def counted() -> Iterator[tuple[Any, ...]]:
            nonlocal count
            for item in rows:
                count += 1
                yield instrument_params(item)

        def work(session: Session) -> int:
            # DELETE, not TRUNCATE: readers keep reading the old master until the commit, unblocked.
            session.execute("DELETE FROM instruments")
            session.bulk_insert("instruments", INSTRUMENT_COLUMNS, counted())
            session.execute(self._stamp, (float(loaded_at), count))
            return count

        return self._db.atomic("replace instruments", work)

    def get(self, segment: str, security_id: str) -> Instrument | None:
        row = self._db.fetchone("instrument", self._get, (segment, security_id))
        return None if row is None else instrument_from_row(row)

    def all(self) -> list[Instrument]:
        return [instrument_from_row(row) for row in self._db.fetchall("instruments", self._all)]

    def by_trading_symbol(self, text: str) -> list[Instrument]:
        return [instrument_from_row(row) for row in self._db.fetchall("instrument by symbol", self._by_symbol,
                                                                      (text,))]

    def options(self, underlying: str, expiry: str | None = None) -> list[Instrument]:
        params: tuple[str, ...]
        if expiry is None:
            sql, params = self._options, (underlying, *OPTION_TYPES)
        else:
            sql, params = self._options_of, (underlying, *OPTION_TYPES, check_day(expiry))
        rows = self._db.fetchall("options", sql, params)
        return [instrument_from_row(row) for row in rows]

    def expiries(self, underlying: str) -> list[str]:
        return [row[0] for row in self._db.fetchall("option expiries", self._expiries, (underlying, *OPTION_TYPES))]

    def loaded_at(self) -> float | None:
        row = self._db.fetchone("instruments loaded at", self._loaded_at)
        return None if row is None else float(row[0])


# --- storage ---------------------------------------------------------------------------------------------


class SqlStorage(Storage):
    """What both backends' Storage share: the migrate loop, ping and transactions over a SqlDatabase.
    Subclasses set the repositories and provide close() and placement_lock()."""

    def __init__(self, db: SqlDatabase) -> None:
        self._db = db
        self.backend = db.dialect.name
        self._log = get_logger(f"storage.{self.backend}")

    def migrate(self) -> list[int]:
        migrations = load_migrations(self.backend)
        d = self._db.dialect

        def work(session: Session) -> list[int]:
            # One transaction for all pending migrations: a failure leaves the schema as it was
            # (PostgreSQL's DDL is transactional; SQLite's too). A second migrator waits for it.
            if d.migration_lock:
                session.execute(d.migration_lock)
            session.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                            f"(version INTEGER PRIMARY KEY, applied_at {d.time_type} NOT NULL)")
            done = {int(row[0]) for row in session.fetchall("SELECT version FROM schema_migrations")}
            applied: list[int] = []
            for migration in migrations:
                if migration.version in done:
                    continue
                session.script(migration.sql)
                session.execute(f"INSERT INTO schema_migrations (version, applied_at) VALUES ({d.mark}, "
                                f"{d.param('time')})", (migration.version, time.time()))
                applied.append(migration.version)
            return applied

        applied = self._db.atomic("migrate", work)
        if applied:
            self._log.event("STORAGE_MIGRATED", "applied migrations", backend=self.backend, versions=applied)
        return applied

    def ping(self) -> None:
        self._db.fetchone("ping", "SELECT 1")

    def transaction(self) -> AbstractContextManager[None]:
        return self._db.transaction()
