"""Order values exchanged with brokers. Pure: no clock, no I/O."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "BrokerOrder",
    "BrokerPosition",
    "BrokerTrade",
    "Leg",
    "OrderRequest",
    "OrderStatus",
    "Side",
    "correlation_id",
    "correlation_id_matches",
    "marketable_limit",
]


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class Leg(StrEnum):
    ENTRY = "ENTRY"
    EXIT = "EXIT"
    STOP = "STOP"  # the broker-side stop resting at the broker while the position is open


_LEG_SUFFIX = {Leg.ENTRY: "E", Leg.EXIT: "X", Leg.STOP: "S"}
_SUFFIX_LEG = {suffix: leg for leg, suffix in _LEG_SUFFIX.items()}


class OrderStatus(StrEnum):
    """Dhan's statuses (annexure); TRANSIT = accepted by Dhan, not yet at the exchange."""

    TRANSIT = "TRANSIT"
    PENDING = "PENDING"
    PART_TRADED = "PART_TRADED"
    TRADED = "TRADED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"

    @property
    def is_terminal(self) -> bool:
        return self in (OrderStatus.TRADED, OrderStatus.REJECTED, OrderStatus.CANCELLED, OrderStatus.EXPIRED)


# Dhan measured the correlationId limit at 25 characters (the docs say 30).
CORRELATION_ID_MAX = 25


def correlation_id(pos_id: str, leg: Leg, attempt: int = 0) -> str:
    """The broker correlationId for one leg of one position: same inputs, same id, so a resend is idempotent.

    Readable when it fits (`<pos_id>-E`); otherwise a stable digest of pos_id keeps it within 25 characters.
    `attempt` > 0 is only for a deliberate new order after the previous one reached a terminal state.
    """
    suffix = _LEG_SUFFIX[leg] + (str(attempt) if attempt else "")
    plain = f"{pos_id}-{suffix}"
    if len(plain) <= CORRELATION_ID_MAX and all(c.isalnum() or c in "-_" for c in pos_id):
        return plain
    digest = hashlib.md5(pos_id.encode()).hexdigest()[: CORRELATION_ID_MAX - len(suffix) - 2]
    return f"h{digest}-{suffix}"


def marketable_limit(price: float, side: Side, band_pct: float) -> float:
    """A LIMIT price that crosses the market by band_pct: above the quote to buy, below it to sell."""
    factor = 1 + band_pct / 100.0 if side is Side.BUY else 1 - band_pct / 100.0
    return round(max(price * factor, 0.0), 2)


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What the executor asks a broker to do. `price` is the marketable LIMIT price (protection band applied)."""

    correlation_id: str
    pos_id: str
    leg: Leg
    symbol: str  # NIFTY / BANKNIFTY / SEC_<id>
    side: Side
    qty: int
    price: float
    expected_price: float  # the quote the decision was made on; slippage is measured against it
    trigger_price: float = 0.0  # > 0: a stop-loss order, working only once the market trades at this price


@dataclass(frozen=True, slots=True)
class BrokerOrder:
    """The broker's view of one order."""

    order_id: str
    correlation_id: str
    symbol: str
    side: Side
    qty: int
    status: OrderStatus
    filled_qty: int = 0
    avg_price: float = 0.0
    price: float = 0.0
    reason: str = ""
    updated_at: float = 0.0
    trigger_price: float = 0.0  # a stop-loss order's trigger (0: a plain LIMIT)

    @property
    def remaining_qty(self) -> int:
        return self.qty - self.filled_qty


@dataclass(frozen=True, slots=True)
class BrokerPosition:
    symbol: str
    net_qty: int  # > 0 long, < 0 short
    buy_avg: float = 0.0
    sell_avg: float = 0.0
    realized_pnl: float = 0.0


@dataclass(frozen=True, slots=True)
class BrokerTrade:
    order_id: str
    symbol: str
    side: Side
    qty: int
    price: float
    at: float


def correlation_id_matches(pos_id: str, cid: str) -> bool:
    """Is cid one of the readable correlation ids `core.orders.correlation_id` gives pos_id?"""
    stem, _, suffix = cid.rpartition("-")
    if stem != pos_id or suffix[:1] not in _SUFFIX_LEG or not (suffix[1:] == "" or suffix[1:].isdigit()):
        return False
    leg = _SUFFIX_LEG[suffix[0]]
    attempt = int(suffix[1:]) if suffix[1:] else 0
    return correlation_id(pos_id, leg, attempt) == cid
