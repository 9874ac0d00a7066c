"""Specs for P&L: long and short, partial exits, fees, the day's summary from trade contexts."""

from __future__ import annotations

from dataclasses import replace

import pytest

from core.market import from_iso
from core.orders import Side
from core.pnl import PositionBook, daily_pnl, realized_pnl, unrealized_pnl
from core.trade import TradeContext, TradeState

DAY = from_iso("2026-11-20T12:00:00+05:30")


def test_long_and_short_realized_pnl_with_fees() -> None:
    assert realized_pnl(Side.BUY, 75, 100.0, 110.0) == pytest.approx(750.0)
    assert realized_pnl(Side.SELL, 75, 100.0, 110.0) == pytest.approx(-750.0)
    assert realized_pnl(Side.SELL, 75, 100.0, 90.0, fees=40.0) == pytest.approx(710.0)
    assert unrealized_pnl(Side.BUY, 10, 100.0, 95.0) == pytest.approx(-50.0)
    with pytest.raises(ValueError):
        realized_pnl(Side.BUY, -1, 1.0, 2.0)


def test_book_averages_entries_and_realizes_partial_exits() -> None:
    book = PositionBook(Side.BUY).enter(50, 100.0, fee=10.0).enter(50, 102.0, fee=10.0)
    assert book.open_qty == 100 and book.avg_entry_price == pytest.approx(101.0)
    book = book.exit(40, 105.0, fee=10.0)
    assert book.open_qty == 60 and book.realized == pytest.approx(40 * 4.0 - 30.0)
    book = book.exit(60, 99.0)
    assert book.open_qty == 0 and book.exited_qty == 100
    assert book.avg_exit_price == pytest.approx((40 * 105 + 60 * 99) / 100)
    assert book.realized == pytest.approx(40 * 4.0 + 60 * -2.0 - 30.0) and book.fees == pytest.approx(30.0)


def test_short_book_gains_when_price_falls_and_refuses_overselling() -> None:
    book = PositionBook(Side.SELL).enter(100, 200.0).exit(30, 190.0)
    assert book.realized == pytest.approx(300.0) and book.unrealized(180.0) == pytest.approx(70 * 20.0)
    with pytest.raises(ValueError, match="cannot exit"):
        book.exit(71, 180.0)
    with pytest.raises(ValueError):
        book.enter(0, 1.0)


def trade(symbol: str, side: Side, entered: int, exited: int, entry: float, realized: float,
          closed_at: float = 0.0) -> TradeContext:
    state = TradeState.CLOSED if closed_at else TradeState.POSITION_OPEN
    return replace(TradeContext(), pos_id=symbol, symbol=symbol, side=side, qty=entered, state=state,
                   entry_filled_qty=entered, exit_filled_qty=exited, avg_entry_price=entry,
                   realized_pnl=realized, opened_at=DAY - 600, closed_at=closed_at)


def test_daily_pnl_sums_todays_closes_and_marks_open_positions() -> None:
    trades = [
        trade("SEC_1", Side.BUY, 75, 75, 100.0, 300.0, closed_at=DAY),
        trade("SEC_2", Side.BUY, 75, 75, 100.0, -900.0, closed_at=DAY - 86_400),  # yesterday's
        trade("SEC_3", Side.BUY, 150, 50, 100.0, 200.0),  # open, partly exited today
        trade("SEC_4", Side.SELL, 50, 0, 80.0, 0.0),  # open short
        trade("SEC_5", Side.BUY, 25, 0, 40.0, 0.0),  # open, no quote
    ]
    quotes = {"SEC_3": 104.0, "SEC_4": 82.0}
    summary = daily_pnl(trades, quotes, day_of=DAY)
    assert summary.realized == pytest.approx(500.0)
    assert summary.unrealized == pytest.approx(100 * 4.0 + 50 * -2.0)
    assert summary.open_positions == 3 and summary.unpriced_symbols == ("SEC_5",)
    assert summary.open_exposure == pytest.approx(100 * 104.0 + 50 * 82.0 + 25 * 40.0)
    assert summary.total == pytest.approx(summary.realized + summary.unrealized)
    assert daily_pnl(trades, quotes).realized == pytest.approx(-400.0)  # no day: everything
    assert summary.as_dict()["unpriced_symbols"] == ["SEC_5"]
