"""Rows as frozen dataclasses: what the repositories take and return.

Times are epoch seconds (float); `None` where not yet known. PostgreSQL keeps them as TIMESTAMPTZ, so
they round-trip to the microsecond (a finer fraction is rounded). Days are 'YYYY-MM-DD' in IST. JSON columns
are plain dicts. Candles are `core.market.Candle`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from core.risk import DayFigures
from core.trade import TERMINAL_STATES

__all__ = [
    "TERMINAL_TRADE_STATES",
    "JournalEntry",
    "OptionChainRecord",
    "OrderRecord",
    "TradeEventRecord",
    "EntryView",
    "LeaseClaim",
    "TradeLease",
    "TradeRecord",
]

# A trade in one of these states needs no more attention (not replayed at start, not reconciled).
# The trade state machine owns what "terminal" means; the store only filters on it.
TERMINAL_TRADE_STATES: frozenset[str] = frozenset(state.value for state in TERMINAL_STATES)


@dataclass(frozen=True, slots=True)
class OptionChainRecord:
    idx: str
    expiry: str  # YYYY-MM-DD
    payload: dict[str, Any]
    updated_at: float


@dataclass(frozen=True, slots=True)
class TradeRecord:
    """One position, as the trade actor last saw it (the journal in trade_events says how it got here)."""

    pos_id: str
    symbol: str
    instrument: str
    side: str
    qty: int
    filled_qty: int
    entry_price: float | None
    entry_time: float | None
    exit_price: float | None
    exit_time: float | None
    fees: float
    realized_pnl: float | None
    state: str
    opened_day: str  # YYYY-MM-DD, IST
    detail: dict[str, Any]
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class TradeEventRecord:
    """One entry of a trade's append-only journal; `seq` is 1, 2, 3, ... per pos_id."""

    pos_id: str
    seq: int
    event: str
    from_state: str | None
    to_state: str | None
    payload: dict[str, Any]
    at: float


class JournalEntry(NamedTuple):
    """One event to append with `trades.append_events` (a plain 5-tuple in this order works as well)."""

    event: str
    from_state: str | None
    to_state: str | None
    payload: dict[str, Any]
    at: float


@dataclass(frozen=True, slots=True)
class TradeLease:
    """Who manages a trade: the owner (a process id string) and its last heartbeat (epoch seconds).

    The lease is live while `now < heartbeat_at + ttl`; after that another process may adopt the trade.
    """

    pos_id: str
    owner: str
    acquired_at: float  # when this owner took it
    heartbeat_at: float


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """One broker order of a position, keyed by the correlation id we sent with it."""

    correlation_id: str
    pos_id: str
    leg: str  # ENTRY | EXIT
    broker_order_id: str | None
    status: str
    qty: int
    filled_qty: int
    avg_price: float | None
    expected_price: float | None
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class LeaseClaim:
    """Take the lease of `pos_id` for `owner` (see TradeLeaseRepository.claim)."""

    pos_id: str
    owner: str
    now: float
    ttl: float


@dataclass(frozen=True, slots=True)
class EntryView:
    """What an entry is decided on, read under the entry gate: the shared risk document, what every
    process's trades say today, and whether the new trade's lease was claimed."""

    document: dict[str, Any]
    figures: DayFigures
    lease_claimed: bool | None = None  # None: no claim asked
