"""Protective exits on a real trader runtime (issue 10, item 4): the protection monitor reads every tick the
MDS publishes on the bus for a held contract, and a stop-loss, target, trailing stop or time exit goes out
through the trade's normal exit path (journaled, priced from the quote book, filled by the broker).

Runs on SQLite and PostgreSQL (trading_url); ticks are published on the runtime's bus exactly as the MDS
publisher does (`ticks:<symbol>`, actors/market_data/messages.py), the exit fills at the pinned quote.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import pytest
import requests

from actors.brokers.base import TemporaryBrokerError
from actors.market_data.messages import ticks_message
from core.market import Tick
from core.orders import Side
from tests.support.trading import TOKEN, TraderHarness, eventually, trader_settings
from tests.tcp_proxy import TcpProxy

SYMBOL = "SEC_49081"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def tick(h: TraderHarness, price: float) -> None:
    """The market trades at `price`: the quote the exit is priced from, then the tick on the bus."""
    h.quotes.set(SYMBOL, price)
    h.runtime.bus.publish(f"ticks:{SYMBOL}", ticks_message(SYMBOL, [Tick(SYMBOL, 0.0, price, 1)]))


def protection(h: TraderHarness) -> dict:
    return h.trader.api.status()["protection"]


def armed(h: TraderHarness, pos_id: str) -> dict:
    return eventually(lambda: protection(h)["positions"].get(pos_id), message=f"{pos_id} guarded")


def exit_reason(h: TraderHarness, pos_id: str) -> str:
    return h.storage.trades.get_trade(pos_id).detail["exit_reason"]


def test_the_price_falls_through_the_stop_and_the_exit_fills(trading_url: str,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with TraderHarness(trader_settings(trading_url, exits={"stop_loss_pct": 10.0})) as h:
        h.enter("STOP-1")
        h.wait_state("STOP-1", "POSITION_OPEN")
        assert armed(h, "STOP-1")["stop"] == pytest.approx(90.0)
        [row] = requests.get(f"{h.url}/v1/positions", timeout=5).json()["positions"]  # the dashboard's columns
        assert row["stop_price"] == pytest.approx(90.0) and row["target_price"] is None
        tick(h, 95.0)
        tick(h, 90.5)
        assert h.state("STOP-1") == "POSITION_OPEN"
        tick(h, 89.5)
        h.wait_state("STOP-1", "CLOSED")
        assert exit_reason(h, "STOP-1") == "STOP_LOSS"
        row = h.storage.trades.get_trade("STOP-1")
        assert row.exit_price == pytest.approx(89.5) and row.realized_pnl == pytest.approx(-10.5 * 75)
        [journaled] = [e for e in h.storage.trades.events("STOP-1") if e.event == "ExitRequested"]
        assert journaled.payload["reason"] == "STOP_LOSS"
        # The broker-side stop rested 2 % beyond the local stop (88.2) from the fill on, and was cancelled
        # before the exit order went out: the two never both sell.
        assert [(p.leg.value, p.trigger_price) for p in h.broker.places] == [("ENTRY", 0.0), ("STOP", 88.2),
                                                                            ("EXIT", 0.0)]
        names = h.events("STOP-1")
        assert names.index("StopCancelRequested") < names.index("OrderCancelled") < names.index("ExitRequested")
        [line] = [r for r in caplog.records if getattr(r, "event", "") == "PROTECTIVE_EXIT"]
        assert "STOP_LOSS at 89.5" in line.getMessage() and line.stop == pytest.approx(90.0)
        eventually(lambda: not protection(h)["positions"], message="nothing guarded once closed")
        assert protection(h)["exits"] == {"STOP_LOSS": 1}


def test_the_trailing_stop_follows_a_rise_then_exits(trading_url: str) -> None:
    with TraderHarness(trader_settings(trading_url)) as h:
        h.enter("TRAIL-1", exits={"trailing_stop_pct": 10.0})  # the strategy's own rule for this signal
        h.wait_state("TRAIL-1", "POSITION_OPEN")
        assert armed(h, "TRAIL-1")["trail"] == pytest.approx(90.0)
        for price in (105.0, 112.0, 120.0, 116.0):
            tick(h, price)
        eventually(lambda: protection(h)["positions"]["TRAIL-1"]["trail"] == pytest.approx(108.0),
                   message="the trail follows the best price, 120")
        # the broker-side stop follows the trail: 2 % below 108
        eventually(lambda: h.trader.book.get("TRAIL-1").stop_trigger_price == pytest.approx(105.84),
                   message="the broker-side stop moved up")
        assert "StopMoved" in h.events("TRAIL-1")
        tick(h, 108.5)
        assert h.state("TRAIL-1") == "POSITION_OPEN"
        tick(h, 107.9)
        h.wait_state("TRAIL-1", "CLOSED")
        assert exit_reason(h, "TRAIL-1") == "TRAILING_STOP"
        assert h.storage.trades.get_trade("TRAIL-1").exit_price == pytest.approx(107.9)


def test_a_restart_of_the_protection_monitor_keeps_the_trail_where_it_was(trading_url: str) -> None:
    with TraderHarness(trader_settings(trading_url, exits={"trailing_stop_pct": 10.0})) as h:
        h.enter("TRAIL-2")
        h.wait_state("TRAIL-2", "POSITION_OPEN")
        armed(h, "TRAIL-2")
        tick(h, 120.0)
        eventually(lambda: protection(h)["positions"]["TRAIL-2"]["best"] == 120.0, message="best 120")
        h.runtime.restart_actor("protection")
        armed(h, "TRAIL-2")
        tick(h, 107.9)  # below the trail of 120 (108); a trail started again from the entry (90) would hold
        h.wait_state("TRAIL-2", "CLOSED")
        assert exit_reason(h, "TRAIL-2") == "TRAILING_STOP"


def test_a_manual_entry_sets_its_own_target_and_bad_rules_are_refused_naming_them(trading_url: str) -> None:
    with TraderHarness(trader_settings(trading_url, exits={"stop_loss_pct": 10.0})) as h:
        url = f"{h.url}/v1/trades"
        body = {"pos_id": "MAN-1", "symbol": SYMBOL, "side": "BUY", "qty": 75, "price": 100.0}
        for field, value in (("stop_loss_pct", 100.0), ("target_pct", -5), ("trailing_stop_pct", "5"),
                             ("max_holding_minutes", True)):
            refused = requests.post(url, json={**body, field: value}, headers=AUTH, timeout=5)
            assert refused.status_code == 400 and refused.json()["param"] == field, refused.text
        assert h.storage.trades.get_trade("MAN-1") is None  # nothing journaled
        answer = requests.post(url, json={**body, "target_pct": 20.0}, headers=AUTH, timeout=5)
        assert answer.status_code == 202, answer.text
        h.wait_state("MAN-1", "POSITION_OPEN")
        levels = armed(h, "MAN-1")
        assert levels["target"] == pytest.approx(120.0) and levels["stop"] == pytest.approx(90.0)  # + the default
        trade = requests.get(f"{url}/MAN-1", timeout=5).json()
        assert trade["live"]["protection"]["target_pct"] == 20.0
        tick(h, 119.0)
        tick(h, 120.0)
        h.wait_state("MAN-1", "CLOSED")
        assert exit_reason(h, "MAN-1") == "TARGET"


def test_a_position_held_too_long_is_exited_and_a_short_is_stopped_above_its_entry(trading_url: str) -> None:
    settings = trader_settings(trading_url, exits={"check_seconds": 0.05})
    with TraderHarness(settings) as h:
        h.enter("TIME-1", exits={"max_holding_minutes": 0.01})  # 0.6 s
        h.wait_state("TIME-1", "CLOSED")
        assert exit_reason(h, "TIME-1") == "TIME_EXIT"
        h.enter("SHORT-1", side=Side.SELL, exits={"stop_loss_pct": 5.0})
        h.wait_state("SHORT-1", "POSITION_OPEN")
        assert armed(h, "SHORT-1")["stop"] == pytest.approx(105.0)
        tick(h, 104.0)
        tick(h, 105.0)
        h.wait_state("SHORT-1", "CLOSED")
        assert exit_reason(h, "SHORT-1") == "STOP_LOSS"


def test_without_ticks_the_fresh_quote_still_protects_the_position(trading_url: str) -> None:
    """A role trader whose MDS does not publish the contract, or a bus outage: the check timer reads the quote
    book (fresh prices only) and the stop still fires."""
    settings = trader_settings(trading_url, exits={"stop_loss_pct": 10.0, "check_seconds": 0.05},
                               execution={"max_quote_age_seconds": 0.2})
    with TraderHarness(settings) as h:
        h.enter("QUOTE-1")
        h.wait_state("QUOTE-1", "POSITION_OPEN")
        armed(h, "QUOTE-1")
        h.quotes.set(SYMBOL, 89.0)  # no tick on the bus
        h.wait_state("QUOTE-1", "CLOSED")
        assert exit_reason(h, "QUOTE-1") == "STOP_LOSS"


def test_a_strategy_signal_with_unusable_rules_is_refused_before_anything_is_journaled(trading_url: str) -> None:
    with TraderHarness(trader_settings(trading_url)) as h:
        h.enter("BAD-1", exits={"stop_loss_pct": 150.0})
        eventually(lambda: h.trader.api.status()["entries"]["denied"] == 1, message="denied")
        assert h.storage.trades.get_trade("BAD-1") is None and not h.broker.places


def test_the_broker_side_stop_closes_the_position_when_this_process_does_not_act(trading_url: str) -> None:
    """The price falls through the broker's stop while this process sees no tick and its quote check is far off
    (a process stuck or cut off): the broker's stop order fills, and that fill closes the trade."""
    settings = trader_settings(trading_url, exits={"stop_loss_pct": 10.0, "check_seconds": 60.0})
    with TraderHarness(settings) as h:
        h.enter("BSTOP-1")
        h.wait_state("BSTOP-1", "POSITION_OPEN")
        eventually(lambda: h.trader.book.get("BSTOP-1").stop_status == "WORKING", message="the stop rests")
        h.quotes.set(SYMBOL, 87.0)  # the broker (paper) sees the market below the stop's trigger, 88.2
        h.wait_state("BSTOP-1", "CLOSED")
        row = h.storage.trades.get_trade("BSTOP-1")
        assert row.detail["exit_reason"] == "BROKER_STOP" and row.exit_price == pytest.approx(87.0)
        assert [p.leg.value for p in h.broker.places] == ["ENTRY", "STOP"]  # the stop did the exit


def test_without_a_broker_side_stop_only_the_local_stop_acts(trading_url: str) -> None:
    settings = trader_settings(trading_url, exits={"stop_loss_pct": 10.0, "broker_stop_pct": 0.0})
    with TraderHarness(settings) as h:
        h.enter("NOBSTOP-1")
        h.wait_state("NOBSTOP-1", "POSITION_OPEN")
        armed(h, "NOBSTOP-1")
        tick(h, 89.0)
        h.wait_state("NOBSTOP-1", "CLOSED")
        assert [p.leg.value for p in h.broker.places] == ["ENTRY", "EXIT"]


def test_a_position_opened_while_postgresql_is_down_gets_its_broker_stop_and_its_stop_loss_exit(pg_url: str) -> None:
    """The entry fills while PostgreSQL is cut: the broker-side stop is placed without the database (as an exit
    is; the exit waits for it, so it must not wait for the database), and the stop-loss exit that follows
    cancels it and closes the position during the cut; the journal catches up once the database answers."""
    parts = urlsplit(pg_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    url = pg_url.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")
    settings = trader_settings(url, storage={"connect_timeout_seconds": 1.0}, reconcile={"interval_seconds": 1.0},
                               exits={"stop_loss_pct": 10.0})
    with proxy, TraderHarness(settings) as h:
        h.broker.hold_fills(True)
        h.enter("CUT-STOP-1")
        h.wait_state("CUT-STOP-1", "ORDER_PLACED")
        proxy.stop_accepting_and_cut("refuse")
        h.broker.hold_fills(False)  # the entry fills during the cut
        eventually(lambda: [p.leg.value for p in h.broker.places] == ["ENTRY", "STOP"], 10.0,
                   message="the broker-side stop placed during the cut")
        armed(h, "CUT-STOP-1")
        tick(h, 89.0)
        eventually(lambda: sum(p.net_qty for p in h.broker.positions()) == 0, 10.0,
                   message="the stop-loss exit placed and filled during the cut")
        assert [p.leg.value for p in h.broker.places] == ["ENTRY", "STOP", "EXIT"]
        proxy.resume()
        h.wait_state("CUT-STOP-1", "CLOSED", timeout=15.0)
        assert exit_reason(h, "CUT-STOP-1") == "STOP_LOSS"
        names = h.events("CUT-STOP-1")
        assert names.index("StopCancelRequested") < names.index("ExitRequested")


def test_a_trail_that_moved_before_the_stop_reached_the_broker_moves_it_once_it_rests(trading_url: str) -> None:
    """The broker-side stop's first submit is not sent (a 429) and waits for its retry while the price rises:
    once the stop rests at the broker it is moved to where the trail is by then, not left at the entry's level."""
    settings = trader_settings(trading_url, exits={"trailing_stop_pct": 10.0},
                               execution={"submit_retry_seconds": 3.0})
    with TraderHarness(settings) as h:
        h.broker.hold_fills(True)
        h.enter("TRAIL-LATE-1")
        h.wait_state("TRAIL-LATE-1", "ORDER_PLACED")
        h.broker.fail_next_place(TemporaryBrokerError("429: too many requests (test)", code="DH-904"))
        h.broker.hold_fills(False)
        h.wait_state("TRAIL-LATE-1", "POSITION_OPEN")
        armed(h, "TRAIL-LATE-1")
        eventually(lambda: h.trader.book.get("TRAIL-LATE-1").stop_status == "PENDING",
                   message="the stop's submit not sent, waiting for its retry")
        tick(h, 120.0)
        eventually(lambda: protection(h)["positions"]["TRAIL-LATE-1"]["best"] == 120.0, message="the trail rose")
        eventually(lambda: h.trader.book.get("TRAIL-LATE-1").stop_status == "WORKING", message="the stop rests")
        eventually(lambda: h.trader.book.get("TRAIL-LATE-1").stop_trigger_price == pytest.approx(105.84),
                   message="the stop moved to 2 % below the trail of 108")
