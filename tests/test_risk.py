"""Specs for the pre-entry risk guard: every denial reason, breaches halt entries not exits, session roll."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from config.settings import RiskSettings
from core.market import from_iso
from core.risk import (
    SWITCH_GROUPS,
    Allowed,
    ClosedOutcome,
    Denied,
    DenyCode,
    EntryIntent,
    KillSwitchEngaged,
    KillSwitchReleased,
    LivePosition,
    ReconciliationHoldChanged,
    RiskLimits,
    RiskState,
    TradingHalted,
    TradingResumed,
    check_entry,
    check_exit,
    check_order,
    day_counters,
    day_figures,
    engage_kill_switch,
    flattens_on,
    ist_day,
    ist_day_start,
    loss_breach,
    new_risk_state,
    on_entry_abandoned,
    on_entry_started,
    on_trade_closed,
    release_kill_switch,
    resume_trading,
    roll_session,
    set_reconciliation_hold,
    square_off_due,
    start_flatten,
    switch_patch,
    with_open_positions,
    with_shared_switches,
    with_switches,
)

LIMITS = RiskLimits(daily_max_loss=5000.0, daily_max_loss_pct=2.0, capital=500_000.0,
                    consecutive_losses_limit=3, max_open_positions=2)
MORNING = from_iso("2026-11-20T10:00:00+05:30")
NEXT_MORNING = from_iso("2026-11-21T09:16:00+05:30")


def fresh() -> RiskState:
    return new_risk_state(MORNING)


def denial(state: RiskState, now: float = MORNING, limits: RiskLimits = LIMITS) -> Denied:
    decision = check_entry(limits, state, now)
    assert isinstance(decision, Denied), decision
    return decision


def test_a_fresh_day_inside_the_session_allows_entries() -> None:
    assert check_entry(LIMITS, fresh(), MORNING) == Allowed()
    assert fresh().day == "2026-11-20"


def test_limits_come_from_the_risk_settings() -> None:
    settings = RiskSettings(daily_max_loss=1234.0, max_open_positions=7, square_off_time="15:00")
    limits = RiskLimits.from_settings(settings)
    assert (limits.daily_max_loss, limits.max_open_positions, limits.square_off_time) == (1234.0, 7, "15:00")
    assert limits.daily_loss_pct_rupees == pytest.approx(500_000 * 0.02)


@pytest.mark.parametrize(("hhmm", "code"), [
    ("09:14", DenyCode.OUTSIDE_SESSION), ("15:30", DenyCode.OUTSIDE_SESSION), ("08:00", DenyCode.OUTSIDE_SESSION),
    ("15:15", DenyCode.AFTER_SQUARE_OFF), ("15:29", DenyCode.AFTER_SQUARE_OFF),
])
def test_entries_outside_the_session_or_after_square_off_are_denied(hhmm: str, code: str) -> None:
    now = from_iso(f"2026-11-20T{hhmm}:00+05:30")
    assert denial(fresh(), now).code == code


def test_session_boundaries_are_read_in_ist() -> None:
    assert check_entry(LIMITS, fresh(), from_iso("2026-11-20T03:45:00+00:00")) == Allowed()  # 09:15 IST
    assert square_off_due(LIMITS, from_iso("2026-11-20T09:45:00+00:00"))  # 15:15 IST
    assert not square_off_due(LIMITS, from_iso("2026-11-20T15:14:59+05:30"))


def test_a_session_ending_at_2400_runs_to_the_last_second_of_the_ist_day() -> None:
    limits = RiskLimits.from_settings(RiskSettings(session_start="00:00", session_end="24:00",
                                                   square_off_time="24:00"))
    assert check_entry(limits, fresh(), from_iso("2026-11-20T23:59:59+05:30")) == Allowed()
    assert check_entry(limits, fresh(), from_iso("2026-11-20T00:00:00+05:30")) == Allowed()
    assert not square_off_due(limits, from_iso("2026-11-20T23:59:59+05:30"))


def test_max_open_positions_counts_entries_in_flight() -> None:
    state = on_entry_started(on_entry_started(fresh()))
    assert denial(state).code == DenyCode.MAX_OPEN_POSITIONS
    assert check_entry(LIMITS, on_entry_abandoned(state), MORNING) == Allowed()
    assert on_entry_abandoned(fresh()).open_positions == 0
    assert with_open_positions(state, 1).open_positions == 1


def test_daily_loss_in_rupees_halts_entries_but_never_exits() -> None:
    state = on_entry_started(fresh())
    state, events = on_trade_closed(LIMITS, state, -5000.0, at=MORNING)
    assert events == [TradingHalted(at=MORNING, code=DenyCode.DAILY_MAX_LOSS, reason=state.halt_reason)]
    assert not state.trading_enabled and "₹5,000.00" in state.halt_reason
    assert denial(state).code == DenyCode.DAILY_MAX_LOSS
    assert check_exit(LIMITS, state, MORNING) == Allowed()


def test_daily_loss_percent_of_capital_halts() -> None:
    limits = replace(LIMITS, daily_max_loss=0.0)  # rupee rule off: only 2% of 5 lakh = 10,000 applies
    state, events = on_trade_closed(limits, fresh(), -9_999.0)
    assert events == [] and check_entry(limits, state, MORNING) == Allowed()
    state, events = on_trade_closed(limits, state, 2_000.0)
    state, events = on_trade_closed(limits, state, -2_001.0)
    assert [type(e) for e in events] == [TradingHalted]
    assert denial(state, limits=limits).code == DenyCode.DAILY_MAX_LOSS_PCT
    assert "2.0% of capital" in denial(state, limits=limits).reason


def test_consecutive_losses_halt_and_a_win_resets_the_streak() -> None:
    state = fresh()
    for pnl in (-10.0, -10.0, 5.0, -10.0, 0.0, -10.0):
        state, events = on_trade_closed(LIMITS, state, pnl)
        assert events == []
    assert state.consecutive_losses == 2  # the win reset it; the scratch trade left it alone
    state, events = on_trade_closed(LIMITS, state, -10.0)
    assert [e.code for e in events] == [DenyCode.CONSECUTIVE_LOSSES]  # type: ignore[attr-defined]
    assert denial(state).code == DenyCode.CONSECUTIVE_LOSSES
    state, events = on_trade_closed(LIMITS, state, -10.0)
    assert events == []  # already halted: halted once, not once per trade


def test_tightened_limits_deny_even_without_a_new_close() -> None:
    state, _ = on_trade_closed(LIMITS, fresh(), -3000.0)
    assert check_entry(LIMITS, state, MORNING) == Allowed()
    assert denial(state, limits=replace(LIMITS, daily_max_loss=2500.0)).code == DenyCode.DAILY_MAX_LOSS


def test_kill_switch_denies_entries_allows_exits_and_outranks_everything() -> None:
    state, events = engage_kill_switch(fresh(), "operator: news event", at=MORNING)
    assert events == [KillSwitchEngaged(at=MORNING, reason="operator: news event")]
    assert engage_kill_switch(state, "again")[1] == []
    state, _ = on_trade_closed(LIMITS, state, -99_999.0)
    decision = denial(state)
    assert decision.code == DenyCode.KILL_SWITCH and "news event" in decision.reason
    assert check_exit(LIMITS, state, MORNING) == Allowed()
    released, events = release_kill_switch(state, "all clear")
    assert events == [KillSwitchReleased(at=0.0, reason="all clear")] and not released.kill_switch_engaged


def test_reconciliation_hold_denies_entries_until_cleared() -> None:
    state, events = set_reconciliation_hold(fresh(), True, "broker shows 75 units of SEC_1 we do not know")
    assert [type(e) for e in events] == [ReconciliationHoldChanged]
    assert denial(state).code == DenyCode.RECONCILIATION_HOLD
    assert set_reconciliation_hold(state, True, "again")[1] == []
    state, _ = set_reconciliation_hold(state, False)
    assert check_entry(LIMITS, state, MORNING) == Allowed() and state.reconciliation_hold_reason == ""


def test_trading_disabled_by_configuration_is_denied_with_that_reason() -> None:
    decision = denial(fresh(), limits=replace(LIMITS, trading_enabled=False))
    assert decision.code == DenyCode.TRADING_DISABLED and "configuration" in decision.reason


def test_session_roll_lifts_breach_halts_and_counters_but_not_the_kill_switch_or_hold() -> None:
    state = on_entry_started(fresh())
    state, _ = on_trade_closed(LIMITS, state, -6000.0)
    state = on_entry_started(state)
    state, _ = engage_kill_switch(state, "operator")
    state, _ = set_reconciliation_hold(state, True, "diff")
    assert roll_session(state, from_iso("2026-11-20T23:59:59+05:30")) is state  # same IST day
    rolled = roll_session(state, NEXT_MORNING)
    assert rolled.day == "2026-11-21" and rolled.trading_enabled and rolled.halt_reason == ""
    assert rolled.realized_pnl == 0.0 and rolled.consecutive_losses == 0 and rolled.trades_closed == 0
    assert rolled.kill_switch_engaged and rolled.reconciliation_hold and rolled.open_positions == 1
    assert denial(rolled, NEXT_MORNING).code == DenyCode.KILL_SWITCH
    rolled, _ = release_kill_switch(rolled, "ok")
    rolled, _ = set_reconciliation_hold(rolled, False)
    assert check_entry(LIMITS, rolled, NEXT_MORNING) == Allowed()


def test_session_roll_alone_lets_a_halted_bot_trade_the_next_day() -> None:
    state, _ = on_trade_closed(LIMITS, fresh(), -6000.0)
    assert denial(state).code == DenyCode.DAILY_MAX_LOSS
    assert check_entry(LIMITS, roll_session(state, NEXT_MORNING), NEXT_MORNING) == Allowed()


def test_the_ist_day_changes_at_ist_midnight_not_utc() -> None:
    assert ist_day(from_iso("2026-11-20T18:29:59+00:00")) == "2026-11-20"
    assert ist_day(from_iso("2026-11-20T18:30:00+00:00")) == "2026-11-21"


def test_operator_resume_lifts_a_consecutive_loss_halt_but_loss_limits_still_apply() -> None:
    state = fresh()
    for _ in range(3):
        state, _ = on_trade_closed(LIMITS, state, -10.0)
    resumed, events = resume_trading(state, "operator reviewed")
    assert [type(e) for e in events] == [TradingResumed] and check_entry(LIMITS, resumed, MORNING) == Allowed()
    assert resume_trading(resumed, "again")[1] == []
    state, _ = on_trade_closed(LIMITS, fresh(), -7000.0)
    resumed, _ = resume_trading(state, "operator")
    assert denial(resumed).code == DenyCode.DAILY_MAX_LOSS  # the day's loss is still past the limit


def test_state_round_trips_through_json_for_bot_state() -> None:
    state, _ = on_trade_closed(LIMITS, on_entry_started(fresh()), -6000.0)
    state, _ = engage_kill_switch(state, "op")
    payload = json.loads(json.dumps(state.to_payload()))
    assert RiskState.from_payload(payload) == state
    assert RiskState.from_payload({**payload, "a_field_from_the_future": 1}) == state


# -- the order itself -------------------------------------------------------------------------------------------

ORDER_LIMITS = RiskLimits(max_qty_per_order=150, max_notional_per_trade=12_000.0, max_exposure=20_000.0,
                          max_price=1_000.0)


@pytest.mark.parametrize(("intent", "code"), [
    (EntryIntent("SEC_1", qty=225, price=100.0), DenyCode.MAX_QTY_PER_ORDER),
    (EntryIntent("SEC_1", qty=75, price=1e20), DenyCode.PRICE_OUT_OF_RANGE),
    (EntryIntent("SEC_1", qty=75, price=float("nan")), DenyCode.PRICE_OUT_OF_RANGE),
    (EntryIntent("SEC_1", qty=75, price=150.0, quote=100.0, band_pct=1.0, manual=True), DenyCode.PRICE_OUT_OF_BAND),
    (EntryIntent("SEC_1", qty=150, quote=100.0), DenyCode.MAX_NOTIONAL),  # priced from the quote
    (EntryIntent("SEC_1", qty=75, price=100.0), None),
    (EntryIntent("SEC_1", qty=75, price=150.0, quote=100.0, band_pct=1.0), None),  # a strategy's stale chain price
    (EntryIntent("SEC_1", qty=75, price=100.5, quote=100.0, band_pct=1.0, manual=True), None),
])
def test_an_order_is_held_to_its_size_price_and_notional(intent: EntryIntent, code: str | None) -> None:
    refused = check_order(ORDER_LIMITS, intent, fresh())
    assert (refused.code if refused else None) == code


def test_open_exposure_counts_what_every_live_trade_holds_and_asks_for() -> None:
    live = [LivePosition("A", "SEC_1", "BUY", open_qty=75, avg_price=100.0),  # marked at 110: 8,250
            LivePosition("B", "SEC_2", "SELL", open_qty=0, avg_price=0.0, working_qty=50, working_price=90.0)]
    state = day_counters(fresh(), day_figures([], live), {"SEC_1": 110.0}.get)
    assert state.exposure == pytest.approx(75 * 110 + 50 * 90) and state.open_positions == 2
    assert state.unrealized_pnl == pytest.approx(750.0)
    refused = check_order(ORDER_LIMITS, EntryIntent("SEC_3", qty=75, price=100.0), state)
    assert refused is not None and refused.code == DenyCode.MAX_EXPOSURE  # 12,750 + 7,500 > 20,000


# -- every process's trades, counted ----------------------------------------------------------------------------

def test_the_days_counters_come_from_every_processs_trades_net_of_charges_and_marked_to_market() -> None:
    closed = [ClosedOutcome(MORNING + 10, "W", 500.0), ClosedOutcome(MORNING + 20, "L1", -300.0),
              ClosedOutcome(MORNING + 30, "Z", 0.0), ClosedOutcome(MORNING + 40, "L2", -200.0)]
    live = [LivePosition("P", "SEC_1", "SELL", open_qty=50, avg_price=100.0, realized_net=-40.0)]  # partial exit
    state = day_counters(fresh(), day_figures(closed, live), {"SEC_1": 104.0}.get)
    assert state.realized_pnl == pytest.approx(500 - 300 - 200 - 40)
    assert state.unrealized_pnl == pytest.approx(-200.0)  # short 50 from 100, marked at 104
    assert state.day_pnl == pytest.approx(-240.0)
    assert (state.consecutive_losses, state.trades_closed, state.open_positions) == (2, 4, 1)  # 0 P&L keeps a streak
    resumed = replace(fresh(), resumed_at=MORNING + 25)
    assert day_counters(resumed, day_figures(closed, live), {}.get).consecutive_losses == 1  # since the resume


def test_a_loss_marked_to_market_halts_and_a_daily_loss_breach_flattens_but_a_streak_does_not() -> None:
    limits = RiskLimits(daily_max_loss=1000.0, consecutive_losses_limit=2)
    marked = day_counters(fresh(), day_figures([], [LivePosition("P", "SEC_1", "BUY", 75, 100.0)]),
                          {"SEC_1": 80.0}.get)
    halted, (event,) = loss_breach(limits, marked, MORNING)
    assert isinstance(event, TradingHalted) and event.code == DenyCode.DAILY_MAX_LOSS and not halted.trading_enabled
    assert flattens_on(limits, event) and not flattens_on(replace(limits, flatten_on_daily_loss=False), event)
    assert loss_breach(limits, halted, MORNING) == (halted, [])  # halted once
    streak = day_counters(fresh(), day_figures([ClosedOutcome(MORNING, "A", -1.0),
                                                ClosedOutcome(MORNING + 1, "B", -1.0)], []), {}.get)
    _, (event,) = loss_breach(limits, streak, MORNING)
    assert event.code == DenyCode.CONSECUTIVE_LOSSES and not flattens_on(limits, event)


# -- the switches every process shares ----------------------------------------------------------------------------

def test_switches_round_trip_through_the_shared_document_and_a_halt_or_flatten_ends_with_its_day() -> None:
    state, _ = engage_kill_switch(fresh(), "desk", at=MORNING)
    state = replace(start_flatten(state, "drill"), trading_enabled=False, halt_code="DAILY_MAX_LOSS", halt_reason="x")
    document = {k: v for group in SWITCH_GROUPS for k, v in switch_patch(state, group, MORNING).items()}
    today = with_switches(fresh(), document)
    assert (today.kill_switch_engaged, today.flattening, today.trading_enabled, today.halt_code) == \
        (True, "drill", False, "DAILY_MAX_LOSS")
    tomorrow = with_switches(new_risk_state(NEXT_MORNING), document)
    assert tomorrow.kill_switch_engaged and tomorrow.flattening == "" and tomorrow.trading_enabled


def test_an_unsaved_change_wins_over_the_document_only_while_it_is_the_newer_one() -> None:
    engaged, _ = engage_kill_switch(fresh(), "here", at=MORNING)
    mine = switch_patch(engaged, "kill_switch", MORNING + 5)
    older = {"kill_switch_engaged": False, "kill_switch_changed_at": MORNING + 1}
    newer = {"kill_switch_engaged": False, "kill_switch_reason": "", "kill_switch_changed_at": MORNING + 9}
    assert with_shared_switches(older, [mine])["kill_switch_engaged"] is True
    assert with_shared_switches(newer, [mine])["kill_switch_engaged"] is False  # released elsewhere, later
    assert ist_day_start(MORNING) == from_iso("2026-11-20T00:00:00+05:30")
