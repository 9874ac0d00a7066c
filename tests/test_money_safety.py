"""Money safety on the failure paths (issue 9): each test injects one failure through real parts and checks
that no position is duplicated, lost or forgotten. Real PostgreSQL, real actor threads, the paper broker
(or the fake Dhan over real sockets where the broker's own behaviour is the point)."""

from __future__ import annotations

from actors.clock import SystemClock
from actors.trading.quotes import QuoteBook
from core.orders import Leg, correlation_id
from tests.support.trading import ScriptedBroker, TraderHarness, eventually, trader_settings


def test_an_exit_chased_by_a_market_moving_away_is_retried_with_a_wider_price_until_it_fills(pg_url: str) -> None:
    """The trader's quote goes stale at 100 while the market falls to 96: every exit order at the stale price
    ends unfilled; each next one waits a little longer and crosses a little further, until one fills."""
    market = QuoteBook()
    market.set("SEC_49081", 100.0)
    settings = trader_settings(pg_url, execution={
        "order_timeout_seconds": 0.3, "exit_retry_initial_seconds": 0.05, "exit_retry_max_seconds": 0.2,
        "exit_band_step_pct": 0.5, "exit_band_max_pct": 5.0}, broker={"protection_band_pct": 1.0})
    broker = ScriptedBroker(market, SystemClock())  # fills at the exchange's price, not the trader's quote
    with TraderHarness(settings, broker=broker, prices={"SEC_49081": 100.0}) as h:
        h.enter("CHASE-1")
        h.wait_state("CHASE-1", "POSITION_OPEN")
        market.set("SEC_49081", 96.0)  # the market falls away; the trader still sees 100
        h.exit("CHASE-1")
        h.wait_state("CHASE-1", "CLOSED", timeout=20.0)
        exits = [r for r in h.broker.places if r.leg is Leg.EXIT]
        # bands 1.5, 2.0, ... 4.5 % below 100: the first limit at or below 96 x (1 - slippage) fills
        assert 2 <= len(exits) <= 8, [r.price for r in exits]
        assert all(a.price > b.price for a, b in zip(exits, exits[1:], strict=False))  # each crosses further
        assert exits[-1].price <= 96.0
        assert [r.correlation_id for r in exits] == [correlation_id("CHASE-1", Leg.EXIT, n) for n in range(len(exits))]
        trade = h.storage.trades.get_trade("CHASE-1")
        assert trade.detail["exit_reason"] == "EXIT_SCORE"  # the exit keeps its reason across retries
        assert sum(p.net_qty for p in h.broker.positions() if p.symbol == "SEC_49081") == 0
        eventually(lambda: h.trader.book.get("CHASE-1") is None, message="the closed trade leaves the book")
