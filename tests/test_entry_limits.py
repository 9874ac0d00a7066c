"""Limits a trader expects (issue 9, requirements 6 and 8), through the real trading subtree on PostgreSQL:
order size, notional and open exposure; a manual price held to the live quote; the day's loss marked to
market and net of charges, a breach that flattens; and an entry that waited (a 429) checked and priced again
before it goes, the kill switch cancelling entries still working at the broker."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from actors.brokers.base import TemporaryBrokerError
from core.orders import Leg, correlation_id
from tests.support.trading import TOKEN, TraderHarness, trader_settings
from tests.support.waiting import eventually


def _post(h: TraderHarness, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"{h.url}{path}", method="POST", data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _manual(h: TraderHarness, pos_id: str, qty: int = 75, price: float | None = 100.0) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {"pos_id": pos_id, "symbol": "SEC_49081", "side": "BUY", "qty": qty}
    if price is not None:
        body["price"] = price
    return _post(h, "/v1/trades", body)


def _denial(h: TraderHarness, pos_id: str) -> str:
    h.wait_state(pos_id, "DENIED")
    return str(h.storage.trades.get_trade(pos_id).detail["reason"])


def test_a_manual_price_of_1e20_is_a_400_naming_price_and_nothing_is_journaled(trading_url: str) -> None:
    with TraderHarness(trader_settings(trading_url, execution={"lot_sizes": {"SEC_49081": 75}})) as h:
        status, body = _manual(h, "HUGE-1", price=1e20)
        assert status == 400 and body["param"] == "price" and "200000" in body["detail"], body
        assert h.storage.trades.get_trade("HUGE-1") is None and not h.broker.places


def test_a_manual_price_must_lie_within_the_band_of_the_live_quote(trading_url: str) -> None:
    with TraderHarness(trader_settings(trading_url, execution={"lot_sizes": {"SEC_49081": 75}})) as h:
        status, body = _manual(h, "BAND-1", price=150.0)  # the quote is 100; the band 1 %
        assert status == 403 and body["code"] == "PRICE_OUT_OF_BAND", body
        assert "50.00% from the live quote 100" in body["reason"]
        status, body = _manual(h, "BAND-2", price=100.5)
        assert status == 202, body
        h.wait_state("BAND-2", "POSITION_OPEN")
        assert [p.pos_id for p in h.broker.places] == ["BAND-2"]


def test_size_notional_and_exposure_limits_apply_to_manual_and_strategy_entries(trading_url: str) -> None:
    settings = trader_settings(trading_url, execution={"lot_sizes": {"SEC_49081": 75}},
                               risk={"max_qty_per_order": 150, "max_notional_per_trade": 12_000.0,
                                     "max_exposure": 20_000.0})
    with TraderHarness(settings) as h:
        status, body = _manual(h, "SIZE-1", qty=225)
        assert status == 403 and body["code"] == "MAX_QTY_PER_ORDER", body
        h.enter("SIZE-2", qty=225)  # the strategy's signal meets the same rule
        assert _denial(h, "SIZE-2").startswith("MAX_QTY_PER_ORDER: qty 225 is over the limit of 150")
        status, body = _manual(h, "NOTIONAL-1", qty=150)  # 150 x 100 = 15,000 > 12,000
        assert status == 403 and body["code"] == "MAX_NOTIONAL", body
        for pos_id in ("EXPO-1", "EXPO-2"):  # 7,500 each
            h.enter(pos_id)
            h.wait_state(pos_id, "POSITION_OPEN")
        h.enter("EXPO-3")  # 15,000 open + 7,500 > 20,000
        assert _denial(h, "EXPO-3").startswith("MAX_EXPOSURE: open notional ₹15,000.00 + ₹7,500.00")
        assert sorted(p.pos_id for p in h.broker.places) == ["EXPO-1", "EXPO-2"]


def test_the_daily_loss_is_marked_to_market_and_a_breach_halts_and_flattens(trading_url: str) -> None:
    """No trade has closed: the open position's unrealized loss alone breaches the limit."""
    with TraderHarness(trader_settings(trading_url, risk={"daily_max_loss": 1000.0})) as h:
        h.enter("MTM-1")
        h.wait_state("MTM-1", "POSITION_OPEN")
        h.quotes.set("SEC_49081", 80.0)  # 75 x -20 = -1,500 unrealized, and the entry's charges
        h.wait_state("MTM-1", "CLOSED")
        exit_reason = h.storage.trades.get_trade("MTM-1").detail["exit_reason"]
        assert exit_reason.startswith("FLATTEN: daily loss limit: daily loss ₹"), exit_reason
        risk = h.trader.api.risk()
        assert risk["halt_code"] == "DAILY_MAX_LOSS" and risk["trading_enabled"] is False
        h.enter("MTM-2")
        assert _denial(h, "MTM-2").startswith("DAILY_MAX_LOSS")


def test_without_flatten_on_daily_loss_a_breach_only_halts(trading_url: str) -> None:
    settings = trader_settings(trading_url, risk={"daily_max_loss": 1000.0, "flatten_on_daily_loss": False})
    with TraderHarness(settings) as h:
        h.enter("HALT-1")
        h.wait_state("HALT-1", "POSITION_OPEN")
        h.quotes.set("SEC_49081", 80.0)
        eventually(lambda: h.trader.api.risk()["halt_code"] == "DAILY_MAX_LOSS", message="halted on the mark")
        assert h.trader.risk.exit_all_reason(h.clock.now()) == ""
        assert h.state("HALT-1") == "POSITION_OPEN" and len(h.broker.places) == 1


def test_an_entry_that_waited_is_not_sent_after_the_kill_switch(trading_url: str) -> None:
    settings = trader_settings(trading_url, execution={"submit_retry_seconds": 0.5})
    with TraderHarness(settings) as h:
        h.broker.fail_next_place(TemporaryBrokerError("429 too many requests", "DH-904"))
        h.enter("LATE-1")
        eventually(lambda: len(h.broker.places) == 1, message="the first submit, refused with a 429")
        h.trader.api.kill_switch(True, "news")
        h.wait_state("LATE-1", "REJECTED")
        reason = h.storage.trades.get_trade("LATE-1").detail["reason"]
        assert reason.startswith("resend refused: KILL_SWITCH"), reason
        assert len(h.broker.places) == 1 and not h.broker.orders_for(correlation_id("LATE-1", Leg.ENTRY))


def test_an_entry_that_waited_is_priced_again_from_the_fresh_quote(trading_url: str) -> None:
    settings = trader_settings(trading_url, execution={"submit_retry_seconds": 0.5})
    with TraderHarness(settings) as h:
        h.broker.fail_next_place(TemporaryBrokerError("429 too many requests", "DH-904"))
        h.enter("LATE-2")
        eventually(lambda: len(h.broker.places) == 1, message="the first submit, refused with a 429")
        h.quotes.set("SEC_49081", 104.0)  # the market moved while the entry waited
        h.wait_state("LATE-2", "POSITION_OPEN")
        first, resent = h.broker.places
        assert first.price == 101.0 and resent.price == 105.04  # 104 + the 1 % band
        assert "EntryRepriced" in h.events("LATE-2")


def test_the_kill_switch_cancels_entries_working_at_the_broker_and_keeps_their_fills(trading_url: str) -> None:
    with TraderHarness(trader_settings(trading_url, execution={"order_timeout_seconds": 60.0})) as h:
        h.broker.hold_fills(True)  # entries rest at the broker
        h.enter("WORK-1")
        h.wait_state("WORK-1", "ORDER_PLACED")
        h.trader.api.kill_switch(True, "news")
        h.wait_state("WORK-1", "CANCELLED")
        assert "EntryCancelRequested" in h.events("WORK-1") and len(h.broker.cancels) == 1
        assert h.broker.orders_for(correlation_id("WORK-1", Leg.ENTRY))[0].status.value == "CANCELLED"
