"""Trade actors on a real trader runtime (PostgreSQL, paper broker, real actor threads)."""

from __future__ import annotations

import time

import pytest

from actors.trading.trade_actor import Observe
from config.reference import rate_table
from core.charges import fill_charges
from core.orders import BrokerOrder, Leg, OrderStatus, Side, correlation_id
from core.risk import ist_day
from tests.support.trading import ScriptedBroker, TraderHarness, eventually, trader_settings


def test_entry_fills_then_exit_closes_with_the_journal_written_before_each_step(trading_url: str) -> None:
    with TraderHarness(trader_settings(trading_url)) as h:
        h.enter("LIFE-1")
        h.wait_state("LIFE-1", "POSITION_OPEN")
        h.quotes.set("SEC_49081", 104.0)
        h.exit("LIFE-1")
        h.wait_state("LIFE-1", "CLOSED")
        records = h.storage.trades.events("LIFE-1")
        assert [r.event for r in records] == ["SignalAccepted", "EntryRequested", "OrderPlaced", "OrderFilled",
                                              "ExitRequested", "OrderPlaced", "OrderFilled"]
        assert [r.seq for r in records] == list(range(1, 8))
        assert records[-1].from_state == "EXIT_ORDER_PLACED" and records[-1].to_state == "CLOSED"
        row = h.storage.trades.get_trade("LIFE-1")
        assert row.side == "BUY" and row.qty == 75 and row.filled_qty == 75
        assert row.entry_price == pytest.approx(100.0) and row.exit_price == pytest.approx(104.0)
        assert row.realized_pnl == pytest.approx(4.0 * 75)
        assert row.entry_time is not None and row.exit_time is not None
        orders = {o.leg: o for o in h.storage.trades.orders("LIFE-1")}
        assert orders["ENTRY"].correlation_id == correlation_id("LIFE-1", Leg.ENTRY)
        assert orders["EXIT"].broker_order_id is not None
        # The orders rows say what the broker last said: both legs fully traded at their prices.
        assert (orders["ENTRY"].status, orders["ENTRY"].filled_qty) == ("TRADED", 75)
        assert (orders["EXIT"].status, orders["EXIT"].filled_qty) == ("TRADED", 75)
        assert orders["EXIT"].avg_price == pytest.approx(104.0)
        # Marketable LIMIT prices: quote +- protection_band_pct (1 %).
        entry, exit_ = h.broker.places
        assert entry.price == pytest.approx(101.0) and exit_.price == pytest.approx(102.96)
        eventually(lambda: "LIFE-1" not in h.trader.book, message="closed trade leaves the book")
        # Charges are paid on both fills (brokerage, STT on the sell, exchange, SEBI, stamp, GST) and the risk
        # guard counts the P&L net of them.
        day = ist_day(time.time())
        rates = rate_table(h.settings.charges)
        fees = (fill_charges(rates, side="BUY", qty=75, price=100.0, day=day).total
                + fill_charges(rates, side="SELL", qty=75, price=104.0, day=day).total)
        assert fees > 40.0 and row.fees == pytest.approx(fees, abs=0.01)
        assert h.trader.risk.snapshot().realized_pnl == pytest.approx(300.0 - fees, abs=0.01)


def test_never_filling_order_times_out_and_is_cancelled(trading_url: str) -> None:
    settings = trader_settings(trading_url, execution={"order_timeout_seconds": 0.3})
    with TraderHarness(settings) as h:
        h.broker.hold_fills(True)
        h.enter("LIFE-2")
        h.wait_state("LIFE-2", "CANCELLED")
        assert h.events("LIFE-2") == ["SignalAccepted", "EntryRequested", "OrderPlaced", "OrderTimedOut",
                                      "OrderCancelled"]
        (order,) = h.broker.orders_for(correlation_id("LIFE-2", Leg.ENTRY))
        assert order.status is OrderStatus.CANCELLED and h.broker.cancels == [order.order_id]
        eventually(lambda: h.trader.risk.snapshot().open_positions == 0, message="slot freed")


def test_fill_arriving_after_the_timeout_still_opens_the_position(trading_url: str) -> None:
    settings = trader_settings(trading_url, execution={"order_timeout_seconds": 0.3})
    with TraderHarness(settings) as h:
        h.broker.hold_fills(True)
        h.broker.fill_before_cancel = True  # the exchange fills it just before our cancel lands
        h.enter("LIFE-3")
        h.wait_state("LIFE-3", "POSITION_OPEN")
        assert h.events("LIFE-3") == ["SignalAccepted", "EntryRequested", "OrderPlaced", "OrderTimedOut",
                                      "OrderFilled"]
        assert h.storage.trades.get_trade("LIFE-3").filled_qty == 75
        assert h.trader.book.get("LIFE-3").open_qty == 75


def test_fill_with_slippage_over_the_limit_raises_order_slippage_then_exits(trading_url: str) -> None:
    settings = trader_settings(trading_url, execution={"max_slippage_pct": 0.5})
    with TraderHarness(settings, prices={"SEC_49081": 102.0}) as h:
        h.enter("LIFE-4", price=100.0)  # decided at 100, the market is at 102: 2 % adverse
        h.wait_state("LIFE-4", "CLOSED")
        records = h.storage.trades.events("LIFE-4")
        names = [r.event for r in records]
        assert names[:6] == ["SignalAccepted", "EntryRequested", "OrderPlaced", "OrderFilled",
                             "OrderSlippageDetected", "ExitRequested"]
        slippage = records[4].payload
        assert slippage["expected"] == 100.0 and slippage["actual"] == pytest.approx(102.0)
        assert slippage["pct"] == pytest.approx(2.0) and slippage["limit_pct"] == 0.5
        assert records[5].payload["reason"].startswith("ORDER_SLIPPAGE")


def test_crashed_trade_actor_rebuilds_from_the_journal_then_reconciles_with_the_broker(trading_url: str) -> None:
    settings = trader_settings(trading_url, reconcile={"interval_seconds": 60.0})
    broker_holder: list[ScriptedBroker] = []
    with TraderHarness(settings) as h:
        broker_holder.append(h.broker)
        h.broker.hold_fills(True)
        h.enter("LIFE-5")
        h.wait_state("LIFE-5", "ORDER_PLACED")
        h.broker.deliver_updates = False  # the fill is lost on its way ...
        h.broker.hold_fills(False)
        eventually(lambda: h.broker.dropped and h.broker.dropped[-1].status is OrderStatus.TRADED)
        assert h.state("LIFE-5") == "ORDER_PLACED"
        handle = h.trader.trades.find_child("LIFE-5")
        handle.tell(object())  # ... and the trade actor crashes (an unknown message)
        h.wait_state("LIFE-5", "POSITION_OPEN")  # the restart found the fill at the broker
        assert h.events("LIFE-5") == ["SignalAccepted", "EntryRequested", "OrderPlaced", "OrderFilled"]
        assert handle.status()["restarts"] == 1
        assert len(h.broker.places) == 1


def test_illegal_transition_is_refused_and_logged_never_applied(trading_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with TraderHarness(trader_settings(trading_url)) as h:
        h.enter("LIFE-6")
        h.wait_state("LIFE-6", "POSITION_OPEN")
        before = h.events("LIFE-6")
        context = h.trader.book.get("LIFE-6")
        bogus = BrokerOrder(order_id=context.entry_order_id, correlation_id=context.entry_correlation_id,
                            symbol="SEC_49081", side=Side.BUY, qty=150, status=OrderStatus.TRADED,
                            filled_qty=150, avg_price=100.0)
        with caplog.at_level("WARNING"):
            h.trader.trades.find_child("LIFE-6").tell(Observe(bogus, "test"))
            eventually(lambda: h.trader.risk.snapshot().reconciliation_hold, message="quarantine")
        assert h.events("LIFE-6") == before
        assert h.trader.book.get("LIFE-6").open_qty == 75
        assert any(getattr(r, "event", "") == "TRANSITION_REFUSED" for r in caplog.records)


def test_exit_asked_before_the_entry_is_placed_is_applied_once_it_is(trading_url: str) -> None:
    from actors.brokers.base import TemporaryBrokerError

    settings = trader_settings(trading_url, execution={"submit_retry_seconds": 0.3})
    with TraderHarness(settings) as h:
        h.broker.hold_fills(True)
        h.broker.fail_next_place(TemporaryBrokerError("429", "DH-904"))  # the submit is retried in 0.3 s
        h.enter("LIFE-7")
        eventually(lambda: "LIFE-7" in h.trader.book and h.trader.book.get("LIFE-7").state.value == "ENTRY_PENDING")
        h.exit("LIFE-7")
        h.wait_state("LIFE-7", "CANCELLED")  # placed, then the waiting exit cancelled the unfilled entry
        assert h.events("LIFE-7") == ["SignalAccepted", "EntryRequested", "OrderPlaced", "ExitRequested",
                                      "OrderCancelled"]


def test_timed_out_order_the_broker_no_longer_knows_ends_without_a_position(trading_url: str) -> None:
    settings = trader_settings(trading_url, execution={"order_timeout_seconds": 0.2})
    with TraderHarness(settings) as h:
        h.broker.hold_fills(True)
        h.enter("LIFE-8")
        h.wait_state("LIFE-8", "ORDER_PLACED")
        h.broker.lose_everything()  # the cancel finds nothing; neither does the lookup after it
        h.wait_state("LIFE-8", "CANCELLED")
        records = h.storage.trades.events("LIFE-8")
        assert [r.event for r in records][-2:] == ["OrderTimedOut", "OrderCancelled"]
        assert records[-1].payload["reason"] == "the broker does not know the order"
