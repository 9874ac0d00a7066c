"""Profit and loss: realized P&L of long and short positions with partial exits, and a day's summary.

Prices are per unit, quantities are units (lots x lot size). Fees are optional and always subtract.
Pure: no clock, no I/O. The trade machine uses `realized_pnl`; the status API and the risk shell use
`daily_pnl` over the trade contexts they hold (anything with the `PositionView` attributes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from core.market import DAY, ist_day_start
from core.orders import Side

__all__ = [
    "PnlSummary",
    "PositionBook",
    "PositionView",
    "daily_pnl",
    "realized_pnl",
    "unrealized_pnl",
]


def _direction(side: Side) -> int:
    """+1 for a long position (entered with a BUY), -1 for a short one (entered with a SELL)."""
    return 1 if side is Side.BUY else -1


def realized_pnl(side: Side, qty: int, entry_price: float, exit_price: float, fees: float = 0.0) -> float:
    """P&L of closing `qty` units of a position entered on `side` at entry_price, exited at exit_price."""
    if qty < 0:
        raise ValueError(f"qty must not be negative, got {qty}")
    return _direction(side) * (exit_price - entry_price) * qty - fees


def unrealized_pnl(side: Side, open_qty: int, avg_entry_price: float, mark: float) -> float:
    """What the open units would realize if closed at `mark` (no fees: they are not yet paid)."""
    return realized_pnl(side, open_qty, avg_entry_price, mark)


@dataclass(frozen=True, slots=True)
class PositionBook:
    """One position, built from fills by average cost: entries raise the cost basis, exits realize P&L.

    `side` is the entry side (BUY = long). Exits beyond the open quantity are refused rather than
    flipping the position: a flip is two trades in this system, each with its own pos_id.
    """

    side: Side
    open_qty: int = 0
    avg_entry_price: float = 0.0
    entered_qty: int = 0
    exited_qty: int = 0
    avg_exit_price: float = 0.0
    realized: float = 0.0
    fees: float = 0.0

    def enter(self, qty: int, price: float, fee: float = 0.0) -> PositionBook:
        if qty <= 0:
            raise ValueError(f"an entry fill needs a positive qty, got {qty}")
        total = self.open_qty + qty
        avg = (self.avg_entry_price * self.open_qty + price * qty) / total
        return replace(self, open_qty=total, avg_entry_price=avg, entered_qty=self.entered_qty + qty,
                       realized=self.realized - fee, fees=self.fees + fee)

    def exit(self, qty: int, price: float, fee: float = 0.0) -> PositionBook:
        if qty <= 0:
            raise ValueError(f"an exit fill needs a positive qty, got {qty}")
        if qty > self.open_qty:
            raise ValueError(f"cannot exit {qty} units of a position holding {self.open_qty}")
        exited = self.exited_qty + qty
        avg_exit = (self.avg_exit_price * self.exited_qty + price * qty) / exited
        gained = realized_pnl(self.side, qty, self.avg_entry_price, price, fee)
        return replace(self, open_qty=self.open_qty - qty, exited_qty=exited, avg_exit_price=avg_exit,
                       realized=self.realized + gained, fees=self.fees + fee)

    def unrealized(self, mark: float) -> float:
        return unrealized_pnl(self.side, self.open_qty, self.avg_entry_price, mark)


class PositionView(Protocol):
    """What `daily_pnl` reads from a trade (core.trade.TradeContext has these)."""

    @property
    def symbol(self) -> str: ...

    @property
    def side(self) -> Side: ...

    @property
    def open_qty(self) -> int: ...

    @property
    def avg_entry_price(self) -> float: ...

    @property
    def realized_pnl(self) -> float: ...

    @property
    def opened_at(self) -> float: ...

    @property
    def closed_at(self) -> float: ...


@dataclass(frozen=True, slots=True)
class PnlSummary:
    realized: float
    unrealized: float
    open_positions: int
    open_exposure: float  # notional of the open units at their mark (quote, else entry price)
    unpriced_symbols: tuple[str, ...]  # open symbols with no quote: their unrealized P&L counts as 0

    @property
    def total(self) -> float:
        return self.realized + self.unrealized

    def as_dict(self) -> dict[str, object]:
        return {"realized": self.realized, "unrealized": self.unrealized, "total": self.total,
                "open_positions": self.open_positions, "open_exposure": self.open_exposure,
                "unpriced_symbols": list(self.unpriced_symbols)}


def daily_pnl(trades: Iterable[PositionView], quotes: Mapping[str, float], day_of: float | None = None) -> PnlSummary:
    """The day's realized and unrealized P&L and the open exposure.

    With `day_of` (any epoch second of the IST day wanted), realized P&L counts trades closed that day,
    plus partial exits of positions still open; open positions always count (they are today's risk).
    Without it every trade counts.
    """
    realized = unrealized = exposure = 0.0
    open_positions = 0
    unpriced: list[str] = []
    window = None if day_of is None else (ist_day_start(day_of), ist_day_start(day_of) + DAY)
    for trade in trades:
        is_open = trade.open_qty > 0
        if is_open or window is None or window[0] <= trade.closed_at < window[1]:
            realized += trade.realized_pnl
        if not is_open:
            continue
        open_positions += 1
        mark = quotes.get(trade.symbol)
        if mark is None:
            if trade.symbol not in unpriced:
                unpriced.append(trade.symbol)
            exposure += trade.open_qty * trade.avg_entry_price
            continue
        unrealized += unrealized_pnl(trade.side, trade.open_qty, trade.avg_entry_price, mark)
        exposure += trade.open_qty * mark
    return PnlSummary(realized=realized, unrealized=unrealized, open_positions=open_positions,
                      open_exposure=exposure, unpriced_symbols=tuple(unpriced))
