"""Repository interfaces, the `Storage` facade, and `open_storage(url)` choosing the backend.

    storage = open_storage("postgresql://mybot@127.0.0.1:5432/mybot")   # never fails if the DB is down
    storage.migrate()
    storage.candles.upsert_many(closed_candles)
    with storage.placement_lock(pos_id):
        if storage.trades.claim_intent(pos_id, "ENTRY", correlation_id, now): ...

Every method may raise `StorageUnavailable` (retry later), `StorageConflict` or `StorageError`
(see storage.errors); `ValueError` for bad input (a malformed day, a non-1-minute candle).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import date
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from core.market import Candle
from storage.records import OptionChainRecord, OrderRecord, TradeEventRecord, TradeRecord

__all__ = [
    "BotStateRepository",
    "CandleRepository",
    "OptionChainRepository",
    "Storage",
    "TradeRepository",
    "check_day",
    "newest_revision_per_key",
    "open_storage",
    "sqlite_path",
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

    def open_pos_ids(self) -> list[str]:
        """pos_ids of trades not in a terminal state (CLOSED, REJECTED, CANCELLED), in creation order."""
        ...

    def append_event(self, pos_id: str, event: str, from_state: str | None, to_state: str | None,
                     payload: dict[str, Any], at: float) -> TradeEventRecord:
        """Append to the position's journal; seq = previous max + 1, assigned atomically."""
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
    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, value: dict[str, Any], at: float) -> None: ...


class Storage(ABC):
    """Every repository of one database, plus its lifecycle. Thread-safe."""

    backend: str  # "postgresql" | "sqlite"
    candles: CandleRepository
    option_chains: OptionChainRepository
    trades: TradeRepository
    bot_state: BotStateRepository

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
    def placement_lock(self, pos_id: str, timeout: float = 30.0) -> AbstractContextManager[None]:
        """Hold the placement lock of `pos_id` for the `with` block (re-entrant in one thread).

        Raises StorageConflict when it is not obtained within `timeout` seconds."""

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def open_storage(url: str, connect_timeout: float = 3.0, password: str = "") -> Storage:
    """The Storage for `url`: `sqlite:///relative/or/absolute/path` or `postgresql://...`.

    Never touches the database: when it is down, the object is still made and every call raises
    StorageUnavailable until it is back.
    """
    if url.startswith("sqlite:///"):
        from storage.sqlite import SqliteStorage

        return SqliteStorage(sqlite_path(url), busy_timeout=connect_timeout)
    if url.startswith(("postgresql://", "postgres://")):
        from storage.postgres import PostgresStorage

        return PostgresStorage(url, connect_timeout=connect_timeout, password=password)
    raise ValueError(f"unsupported storage URL scheme: {url.split(':', 1)[0]!r} "
                     "(expected sqlite:/// or postgresql://)")


def sqlite_path(url: str) -> Path:
    """`sqlite:///var/x.db` -> ./var/x.db (relative to the working directory); `sqlite:////abs/x.db` -> /abs/x.db."""
    raw = url[len("sqlite:///"):].split("?", 1)[0]
    if not raw:
        raise ValueError("sqlite URL has no path")
    path = Path(raw)
    return path if path.is_absolute() else Path(os.getcwd()) / path


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
