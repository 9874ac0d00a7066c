"""A trade's fills, read from its journal, and what they cost: `trade_charges(rates, journal)`.

The journal (core.trade events, as stored in trade_events) reports fills cumulatively per order
(`OrderPartiallyFilled` / `OrderFilled`: the order's filled_qty and avg_price so far). Each increase is one
fill: its quantity is the increase, its price the increase of the order's traded value divided by it. The
entry leg trades on the trade's side (from `SignalAccepted`), the exit leg on the other; the first fill of
an order pays its brokerage (core.charges.fill_charges). A repeated report (recovery observes a fill again)
adds nothing. Fill days are IST dates of the events' times.

Charges model index OPTIONS (NSE by default): the caller decides which trades they apply to.
Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from core.charges import Charges, Fill, RateTable, fill_charges
from core.market import IST
from core.orders import Leg, Side

__all__ = ["FILL_EVENTS", "fills_from_journal", "gross_of_fills", "trade_charges"]

FILL_EVENTS = frozenset({"OrderPartiallyFilled", "OrderFilled"})
_PRICE_PLACES = Decimal("0.000001")


def fills_from_journal(journal: Iterable[tuple[str, Mapping[str, Any]]], *, exchange: str = "NSE") -> list[Fill]:
    """The fills of one trade from its journal, in journal order: (event name, payload) pairs."""
    entry_side: Side | None = None
    seen: dict[str, tuple[int, Decimal]] = {}  # order id -> (filled qty, traded value) reported so far
    fills: list[Fill] = []
    for name, payload in journal:
        if name == "SignalAccepted":
            entry_side = Side(str(payload["side"]))
            continue
        if name not in FILL_EVENTS:
            continue
        if entry_side is None:
            raise ValueError("a fill before the SignalAccepted that says the trade's side")
        order_id = str(payload["order_id"])
        qty = int(payload["filled_qty"])
        value = Decimal(str(payload["avg_price"])) * qty
        before_qty, before_value = seen.get(order_id, (0, Decimal(0)))
        if qty <= before_qty:
            continue
        seen[order_id] = (qty, value)
        added = qty - before_qty
        price = ((value - before_value) / added).quantize(_PRICE_PLACES)
        leg = Leg(str(payload["leg"]))
        side = entry_side if leg is Leg.ENTRY else (Side.SELL if entry_side is Side.BUY else Side.BUY)
        day = datetime.fromtimestamp(float(payload["at"]), IST).date().isoformat()
        fills.append(Fill(side=side, qty=added, price=float(price), day=day, exchange=exchange,
                          first_fill_of_order=before_qty == 0))
    return fills


def trade_charges(rates: RateTable, journal: Iterable[tuple[str, Mapping[str, Any]]], *,
                  exchange: str = "NSE") -> Charges:
    """What the trade's fills so far cost (brokerage, STT, exchange, IPFT, SEBI, stamp, GST)."""
    total = Charges()
    for fill in fills_from_journal(journal, exchange=exchange):
        total = total + fill_charges(rates, side=fill.side, qty=fill.qty, price=fill.price, day=fill.day,
                                     exchange=fill.exchange, first_fill_of_order=fill.first_fill_of_order)
    return total


def gross_of_fills(fills: Iterable[Fill]) -> float:
    """Premium sold minus premium bought: the gross P&L once the fills close the position."""
    total = Decimal(0)
    for fill in fills:
        value = Decimal(str(fill.price)) * fill.qty
        total += value if Side(str(fill.side).upper()) is Side.SELL else -value
    return float(total)
