"""Repository interfaces, the `Storage` facade, and `open_storage(url)` choosing the backend.

    storage = open_storage("postgresql://mybot@127.0.0.1:5432/mybot")   # never fails if the DB is down
    storage.migrate()
    storage.candles.upsert_many(closed_candles)
    with storage.placement_lock(pos_id):
        if storage.trades.claim_intent(pos_id, "ENTRY", correlation_id, now): ...

Every method may raise `StorageUnavailable` (retry later), `StorageConflict` or `StorageError`
(see storage.errors); `ValueError` for bad input (a malformed day, a non-1-minute candle).

JSON columns (chain payloads, journal payloads, trade details, bot state) come back as plain dicts
whose numbers follow one rule on both backends: an integer literal within the signed 64-bit range is an
`int`; every other number is a `float`. So a quantity or a seq stays an int, and nothing read back is an
int the JSON encoders refuse (PostgreSQL's JSONB writes the float 1e20 as the integer
100000000000000000000). A float written with a fraction (orjson writes 100.0 as "100.0", and JSONB keeps
that scale) comes back a float on both backends. The one difference: on PostgreSQL, an integral float of
magnitude 1e16 or more inside the 64-bit range (orjson writes it as "1e+16", JSONB as
10000000000000000) comes back an int of the same value; no price, quantity or P&L comes near it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import date
from types import TracebackType
from typing import Any, Protocol

from core.instruments import Instrument
from core.market import Candle
from core.risk import DayFigures
from storage.records import (
    EntryView,
    JournalEntry,
    LeaseClaim,
    OptionChainRecord,
    OrderRecord,
    TradeEventRecord,
    TradeLease,
    TradeRecord,
)

__all__ = [
    "BotStateRepository",
    "CandleRepository",
    "InstrumentRepository",
    "OptionChainRepository",
    "Storage",
    "TradeLeaseRepository",
    "TradeRepository",
    "check_day",
    "newest_revision_per_key",
]


class CandleRepository(Protocol):
    """1-minute candles keyed by (symbol, ts = bucket start, epoch seconds)."""

    def upsert_many(self, candles: Sequence[Candle]) -> int:
        """Write a batch in one statement and one transaction; returns the rows written.

        Idempotent on (symbol, ts). A stored row is replaced only by an equal or higher `revision`
        (a late tick revises a candle; an older revision arriving late is ignored and not counted).
        """
        ...

    def latest(self, symbol: str, limit: int) -> list[Candle]:
        """The `limit` most recent candles of `symbol`, oldest first."""
        ...

    def between(self, symbol: str, start_ts: int, end_ts: int) -> list[Candle]:
        """Candles with start_ts <= ts < end_ts, oldest first."""
        ...

    def last_ts(self, symbol: str) -> int | None: ...

    def symbols(self) -> list[str]: ...


class OptionChainRepository(Protocol):
    def upsert(self, idx: str, expiry: str, payload: dict[str, Any], updated_at: float) -> None:
        """Store the chain of (idx, expiry); a stored chain is replaced only by an equally new or newer one."""
        ...

    def latest(self, idx: str, expiry: str | None = None, today: str | None = None) -> OptionChainRecord | None:
        """The chain of `expiry`; without one, the nearest expiry on or after `today` (YYYY-MM-DD) when
        given, else the most recently updated chain of `idx`."""
        ...

    def expiries(self, idx: str) -> list[str]:
        """Stored expiries of `idx`, ascending."""
        ...


class TradeRepository(Protocol):
    def upsert_trade(self, trade: TradeRecord) -> None:
        """Insert or replace the position's row; the first `created_at` is kept."""
        ...

    def get_trade(self, pos_id: str) -> TradeRecord | None: ...

    def list_trades(self, state: str | None = None, day: str | None = None) -> list[TradeRecord]:
        """Trades filtered by state and/or opened_day, in creation order."""
        ...

    def open_trades(self) -> list[TradeRecord]:
        """The rows of trades not in a terminal state (any process), in creation order."""
        ...

    def open_pos_ids(self) -> list[str]:
        """pos_ids of trades not in a terminal state (CLOSED, REJECTED, CANCELLED), in creation order."""
        ...

    def append_events(self, pos_id: str, expected_seq: int,
                      events: Sequence[JournalEntry | tuple[str, str | None, str | None, dict[str, Any], float]],
                      ) -> list[TradeEventRecord]:
        """Append `events` as seq expected_seq + 1, + 2, ... all together or not at all; returns them.

        Raises `JournalConflict` when the journal's length is not `expected_seq` (another writer got
        there first, or the caller skipped ahead): nothing is written. Inside `Storage.transaction()` it
        joins the transaction; on PostgreSQL a conflict there aborts the whole transaction (let the
        exception leave the block). An empty `events` only checks the length.
        """
        ...

    def closed_since(self, ts: float) -> list[TradeRecord]:
        """Trades CLOSED at or after `ts` (by exit_time), whatever day they opened; ordered by exit_time,
        then pos_id (the order of their outcomes, for consecutive-loss counting)."""
        ...

    def day_figures(self, day_start: float, streak_limit: int = 50) -> DayFigures:
        """What every process's trades say for the risk guard, aggregated in one statement: trades CLOSED at or
        after `day_start` (count, P&L net of fees), the newest `streak_limit` of them with a non-zero net
        outcome as (closed_at, net), newest first, and the live trades per symbol and side (units open, their
        cost, entry units still working and their value, partial-exit P&L net of fees)."""
        ...

    def partially_exited(self) -> list[TradeRecord]:
        """Trades not in a terminal state whose exits have partly filled: `realized_pnl` is the P&L
        realized so far (the row does not say when each part filled). Creation order."""
        ...

    def record_step(self, pos_id: str, expected_seq: int,
                    events: Sequence[JournalEntry | tuple[str, str | None, str | None, dict[str, Any], float]],
                    trade: TradeRecord, order: OrderRecord | None = None,
                    durable: bool = True) -> list[TradeEventRecord]:
        """One step of a trade, atomically: `append_events` (same JournalConflict) and, with it, the trades
        row and the orders row the step leaves (PostgreSQL: one statement, one round trip).

        `durable=False` for a step that only records what the broker already did (placed, filled,
        cancelled): it may be committed without waiting for the disk, so a database crash can lose the
        last moments of such steps, which the trade's recovery observes again at the broker. A step that
        precedes anything sent to the broker must be durable."""
        ...

    def events(self, pos_id: str) -> list[TradeEventRecord]:
        """The position's journal ordered by seq."""
        ...

    def record_order(self, order: OrderRecord) -> None:
        """Insert or update by correlation_id; keeps the first created_at and a known broker_order_id."""
        ...

    def orders(self, pos_id: str) -> list[OrderRecord]: ...

    def order(self, correlation_id: str) -> OrderRecord | None: ...

    def claim_intent(self, pos_id: str, leg: str, correlation_id: str, at: float) -> bool:
        """Record the intent to place `correlation_id`; False when it was already claimed (by anyone,
        in any process): the caller must then not place it."""
        ...


class BotStateRepository(Protocol):
    """Small named JSON documents shared by every process on the database (risk switches, holds)."""

    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, value: dict[str, Any], at: float) -> None:
        """Replace the whole document (erases fields other writers set: prefer `merge`)."""
        ...

    def merge(self, key: str, patch: dict[str, Any], at: float, remove: Sequence[str] = ()) -> dict[str, Any]:
        """Atomically drop the top-level fields `remove`, then set those of `patch` (shallow: a nested
        dict replaces the stored one whole; None is stored as null), creating the document if needed.
        Fields other writers set are kept. Returns the document as stored now."""
        ...


class TradeLeaseRepository(Protocol):
    """Owner leases: one process manages a trade at a time. `now` and `ttl` are the caller's (seconds);
    the database clock is never read. A lease is live while now < heartbeat_at + ttl."""

    def claim(self, pos_id: str, owner: str, now: float, ttl: float) -> bool:
        """Take the lease of `pos_id` for `owner`: True when it had none, it had expired, or it was
        already ours (the heartbeat is renewed); False while another owner's lease is live."""
        ...

    def renew(self, owner: str, now: float) -> list[str]:
        """Heartbeat every lease `owner` holds, in one statement; returns their pos_ids, sorted. A trade
        missing from it is no longer ours (another process adopted it after our lease expired)."""
        ...

    def release(self, pos_id: str, owner: str) -> bool:
        """Drop our lease of `pos_id` (when the trade is done); False when it was not ours."""
        ...

    def owner_of(self, pos_id: str) -> TradeLease | None: ...

    def adoptable(self, owner: str, now: float, ttl: float) -> list[str]:
        """pos_ids of non-terminal trades `owner` may manage: no lease, an expired one, or ours.
        Creation order. Claim each before managing it: another process may be adopting too."""
        ...


class InstrumentRepository(Protocol):
    """The scrip master (`core.instruments.Instrument` rows), keyed by (segment, security_id)."""

    def replace_all(self, rows: Iterable[Instrument], loaded_at: float) -> int:
        """Replace the whole master in one transaction (readers see the old or the new one, never a
        mix); returns the rows stored. `rows` may be a generator (it is streamed). Raises ValueError for
        a malformed expiry and StorageConflict for a repeated (segment, security_id); nothing changes."""
        ...

    def get(self, segment: str, security_id: str) -> Instrument | None: ...

    def all(self) -> list[Instrument]:
        """The whole stored master, by segment and security id (what a process restores at start)."""
        ...

    def by_trading_symbol(self, text: str) -> list[Instrument]:
        """Instruments whose trading symbol is `text`, ignoring case (one, unless two segments share
        it), ordered by segment."""
        ...

    def options(self, underlying: str, expiry: str | None = None) -> list[Instrument]:
        """Options (CE/PE) of `underlying`, of one expiry or all; ordered by expiry, strike, type."""
        ...

    def expiries(self, underlying: str) -> list[str]:
        """Expiries of the options of `underlying`, ascending."""
        ...

    def loaded_at(self) -> float | None:
        """When the stored master was loaded (`replace_all`'s `loaded_at`); None before the first load."""
        ...


class Storage(ABC):
    """Every repository of one database, plus its lifecycle. Thread-safe."""

    backend: str  # "postgresql" | "sqlite"
    candles: CandleRepository
    option_chains: OptionChainRepository
    trades: TradeRepository
    bot_state: BotStateRepository
    leases: TradeLeaseRepository
    instruments: InstrumentRepository

    @abstractmethod
    def migrate(self) -> list[int]:
        """Apply pending migrations in order (idempotent, safe from two processes at once);
        returns the versions applied now."""

    @abstractmethod
    def ping(self) -> None:
        """Return when the database answers; raise StorageUnavailable otherwise."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; later calls raise StorageError."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """Every repository call made by this thread inside the block commits together, or not at all
        (one fsync instead of one per write). Nested blocks join the outer one."""

    @abstractmethod
    def entry_gate(self, risk_key: str, day_start: float, lease: LeaseClaim | None = None,
                   timeout: float = 5.0) -> AbstractContextManager[EntryView]:
        """Serialize new entries across every process on this database: the block is one transaction (like
        `transaction()`) holding the one entry lock, in which the block gets what the risk check needs (the
        document `risk_key` of bot_state, `trades.day_figures(day_start)`, and, with `lease`, whether the
        new trade's lease was claimed), so that check and the new trade's first journal step commit
        together, before another entry may look. PostgreSQL: the lock and the reads are one round trip.
        Raises StorageConflict when the lock is not obtained within `timeout` seconds."""

    @abstractmethod
    def placement_lock(self, pos_id: str, timeout: float = 30.0,
                       claim: OrderRecord | None = None) -> AbstractContextManager[bool]:
        """Hold the placement lock of `pos_id` for the `with` block (re-entrant in one thread).

        With `claim` (the SUBMITTING orders row of the placement), the intent is claimed under the lock
        and the block gets True when this call claimed it, False when it was claimed before (by anyone,
        in any process): then it must not be placed again. Without, the block gets True.
        Raises StorageConflict when the lock is not obtained within `timeout` seconds."""

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def check_day(text: str) -> str:
    """Validate a 'YYYY-MM-DD' day (ValueError otherwise) and return it."""
    if len(text) != 10:
        raise ValueError(f"not a YYYY-MM-DD day: {text!r}")
    date.fromisoformat(text)
    return text


def newest_revision_per_key(candles: Iterable[Candle]) -> list[Candle]:
    """One candle per (symbol, ts): the highest revision, the later one on a tie (a batch may carry
    both the first version of a candle and its revision; one upsert statement may touch a row once)."""
    chosen: dict[tuple[str, int], Candle] = {}
    for candle in candles:
        if candle.timeframe != 60:
            raise ValueError(f"only 1-minute candles are stored, got timeframe={candle.timeframe} "
                             f"for {candle.symbol}@{candle.ts}")
        key = (candle.symbol, candle.ts)
        held = chosen.get(key)
        if held is None or candle.revision >= held.revision:
            chosen[key] = candle
    return list(chosen.values())
