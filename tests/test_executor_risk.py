"""The risk guard in front of every entry, on a real trader runtime: breaches deny entries, exits go on."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.support.trading import TraderHarness, eventually, trader_settings

PRICES = {"SEC_49081": 100.0, "SEC_49082": 100.0, "SEC_49083": 100.0}



def _denial(h: TraderHarness, pos_id: str) -> str:
    h.wait_state(pos_id, "DENIED")
    records = h.storage.trades.events(pos_id)
    assert [r.event for r in records] == ["SignalAccepted", "EntryDenied"]
    return str(records[-1].payload["reason"])


def _round_trip(h: TraderHarness, pos_id: str, symbol: str, exit_price: float) -> None:
    h.quotes.set(symbol, 100.0)
    h.enter(pos_id, symbol=symbol)
    h.wait_state(pos_id, "POSITION_OPEN")
    h.quotes.set(symbol, exit_price)
    h.exit(pos_id)
    h.wait_state(pos_id, "CLOSED")


def test_daily_loss_breach_denies_entries_but_still_allows_exits(trading_url: str) -> None:
    settings = trader_settings(trading_url, risk={"daily_max_loss": 500.0})
    with TraderHarness(settings, prices=PRICES) as h:
        h.enter("RISK-2", symbol="SEC_49082")
        h.wait_state("RISK-2", "POSITION_OPEN")
        _round_trip(h, "RISK-1", "SEC_49081", 90.0)  # -10 x 75 = -750 > the 500 limit
        eventually(lambda: not h.trader.risk.snapshot().trading_enabled, message="halted")
        h.enter("RISK-3", symbol="SEC_49083")
        assert _denial(h, "RISK-3").startswith("DAILY_MAX_LOSS")
        assert not any(p.pos_id == "RISK-3" for p in h.broker.places)
        h.exit("RISK-2")  # exits are never blocked
        h.wait_state("RISK-2", "CLOSED")
        risk = h.trader.api.risk()
        assert risk["trading_enabled"] is False and risk["halt_code"] == "DAILY_MAX_LOSS"
        # Net of charges: the losing round trip's -750 and the other trade's result, less what both paid.
        rows = [h.storage.trades.get_trade(pos_id) for pos_id in ("RISK-1", "RISK-2")]
        net = sum((row.realized_pnl or 0.0) - row.fees for row in rows)
        assert rows[0].realized_pnl == pytest.approx(-750.0) and all(row.fees > 0 for row in rows)
        assert risk["realized_pnl"] == pytest.approx(net, abs=0.02) and "daily loss" in risk["why"]


def test_consecutive_losses_breach_denies_entries(trading_url: str) -> None:
    settings = trader_settings(trading_url, risk={"consecutive_losses_limit": 2})
    with TraderHarness(settings, prices=PRICES) as h:
        _round_trip(h, "LOSS-1", "SEC_49081", 99.0)
        _round_trip(h, "LOSS-2", "SEC_49082", 99.0)
        eventually(lambda: h.trader.risk.snapshot().consecutive_losses == 2)
        h.enter("LOSS-3", symbol="SEC_49083")
        assert _denial(h, "LOSS-3").startswith("CONSECUTIVE_LOSSES")
        assert h.trader.api.risk()["consecutive_losses"] == 2


def test_square_off_time_exits_every_open_position_and_denies_new_entries(trading_url: str) -> None:
    with TraderHarness(trader_settings(trading_url), prices=PRICES) as h:
        h.enter("SQ-1", symbol="SEC_49081")
        h.enter("SQ-2", symbol="SEC_49082")
        h.wait_state("SQ-1", "POSITION_OPEN")
        h.wait_state("SQ-2", "POSITION_OPEN")
        # The session's square-off time is configuration; move it to "now has passed it".
        h.trader.risk.limits = replace(h.trader.risk.limits, square_off_time="00:00")
        h.wait_state("SQ-1", "CLOSED")
        h.wait_state("SQ-2", "CLOSED")
        assert h.storage.trades.get_trade("SQ-1").detail["exit_reason"].startswith("SQUARE_OFF")
        h.enter("SQ-3", symbol="SEC_49083")
        assert _denial(h, "SQ-3").startswith("AFTER_SQUARE_OFF")


def test_risk_switches_survive_a_restart_and_counters_are_rebuilt_from_the_book(trading_url: str) -> None:
    settings = trader_settings(trading_url)
    with TraderHarness(settings, prices=PRICES) as h:
        _round_trip(h, "KEEP-1", "SEC_49081", 98.0)
        h.trader.api.kill_switch(True, "end of day")
    with TraderHarness(settings, prices=PRICES) as h:
        state = h.trader.risk.snapshot()
        assert state.kill_switch_engaged and "end of day" in state.kill_switch_reason
        row = h.storage.trades.get_trade("KEEP-1")
        assert row.realized_pnl == pytest.approx(-150.0) and row.fees > 0  # net of its charges, counted
        assert state.realized_pnl == pytest.approx(-150.0 - row.fees) and state.consecutive_losses == 1
        h.enter("KEEP-2", symbol="SEC_49082")
        assert _denial(h, "KEEP-2").startswith("KILL_SWITCH")
