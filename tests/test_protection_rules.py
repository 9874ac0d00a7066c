"""The protective exit rules (core/protection.py) and their place in the trade journal: pure, no threads."""

from __future__ import annotations

import pytest

from core.orders import Side
from core.protection import (
    NO_PROTECTION,
    ExitReason,
    Guard,
    ProtectionError,
    ProtectionRules,
    rule_problems,
    time_due,
    watch,
)
from core.trade import SignalAccepted, TradeState, apply, event_from_payload, opening_events, rebuild


def run(guard: Guard, *prices: float) -> tuple[Guard, ExitReason | None, int]:
    """Feed prices in order until one exits: (the guard, the reason, how many prices were taken)."""
    for taken, price in enumerate(prices, start=1):
        guard, reason = watch(guard, price)
        if reason is not None:
            return guard, reason, taken
    return guard, None, len(prices)


def test_a_long_stop_lies_below_the_entry_and_fires_when_a_price_reaches_it() -> None:
    guard = Guard(Side.BUY, 100.0, 0.0, ProtectionRules(stop_loss_pct=10.0))
    assert guard.stop_level == pytest.approx(90.0) and guard.target_level is None and guard.trail_level is None
    _, reason, taken = run(guard, 99.0, 95.0, 90.05, 90.0, 80.0)
    assert (reason, taken) == (ExitReason.STOP_LOSS, 4)


def test_a_short_positions_levels_are_mirrored() -> None:
    guard = Guard(Side.SELL, 100.0, 0.0, ProtectionRules(stop_loss_pct=10.0, target_pct=20.0))
    assert guard.stop_level == pytest.approx(110.0) and guard.target_level == pytest.approx(80.0)
    assert run(guard, 105.0, 110.0)[1] is ExitReason.STOP_LOSS
    assert run(guard, 90.0, 80.0)[1] is ExitReason.TARGET


def test_the_target_fires_at_its_level_and_not_before() -> None:
    guard = Guard(Side.BUY, 100.0, 0.0, ProtectionRules(target_pct=25.0))
    _, reason, taken = run(guard, 110.0, 124.95, 125.0)
    assert (reason, taken) == (ExitReason.TARGET, 3)


def test_the_trailing_stop_follows_a_rise_only_tightens_then_exits() -> None:
    guard = Guard(Side.BUY, 100.0, 0.0, ProtectionRules(trailing_stop_pct=10.0))
    assert guard.trail_level == pytest.approx(90.0)
    guard, reason, _ = run(guard, 110.0, 120.0, 115.0)  # the fall back to 115 does not lower the trail
    assert reason is None and guard.best == 120.0 and guard.trail_level == pytest.approx(108.0)
    _, reason, taken = run(guard, 108.5, 107.9)
    assert (reason, taken) == (ExitReason.TRAILING_STOP, 2)


def test_a_gap_through_the_stop_is_a_stop_loss_even_with_a_trail_and_the_trail_never_moves_on_it() -> None:
    guard = Guard(Side.BUY, 100.0, 0.0, ProtectionRules(stop_loss_pct=5.0, trailing_stop_pct=3.0))
    guard, reason, _ = run(guard, 102.0)
    assert reason is None and guard.trail_level == pytest.approx(98.94)
    assert watch(guard, 94.0)[1] is ExitReason.STOP_LOSS  # below both: the stop (the larger loss) is named
    assert watch(guard, 98.0)[1] is ExitReason.TRAILING_STOP


def test_time_exit_counts_from_the_first_fill() -> None:
    guard = Guard(Side.BUY, 100.0, 1_000.0, ProtectionRules(max_holding_minutes=30.0))
    assert not time_due(guard, 1_000.0 + 30 * 60 - 1) and time_due(guard, 1_000.0 + 30 * 60)
    assert not time_due(Guard(Side.BUY, 100.0, 0.0, NO_PROTECTION), 1e12)


def test_rules_are_merged_over_defaults_and_every_bad_value_is_named() -> None:
    defaults = ProtectionRules(stop_loss_pct=20.0, max_holding_minutes=60.0)
    merged = defaults.merged({"trailing_stop_pct": 5.0, "stop_loss_pct": None})
    assert merged == ProtectionRules(stop_loss_pct=20.0, trailing_stop_pct=5.0, max_holding_minutes=60.0)
    with pytest.raises(ProtectionError) as raised:
        defaults.merged({"stop_loss_pct": 100.0, "target_pct": -1.0, "trail": 5.0})
    text = str(raised.value)
    assert "stop_loss_pct: must be >= 0 and < 100" in text and "target_pct: must be >= 0" in text
    assert "trail: not a protective exit rule" in text
    assert rule_problems({"trailing_stop_pct": True, "max_holding_minutes": float("nan")}) == [
        "trailing_stop_pct: must be a number, got True", "max_holding_minutes: must be a number, got nan"]
    assert not NO_PROTECTION.enabled and ProtectionRules(max_holding_minutes=1.0).enabled


def test_the_rules_are_journaled_with_the_signal_and_rebuilt_from_it() -> None:
    rules = ProtectionRules(stop_loss_pct=15.0, trailing_stop_pct=8.0)
    events = opening_events(at=1.0, pos_id="P-1", symbol="SEC_1", instrument="NIFTY 24000 CE", side=Side.BUY,
                            qty=65, price=100.0, quote=100.0, allowed=True, denial="", band_pct=1.0, reason="t",
                            protection=rules)
    signal = events[0]
    assert isinstance(signal, SignalAccepted) and signal.to_payload()["stop_loss_pct"] == 15.0
    context = rebuild(event_from_payload(e.name, e.to_payload()) for e in events)
    assert context.protection == rules and context.state is TradeState.ENTRY_PENDING
    assert context.to_payload()["protection"]["trailing_stop_pct"] == 8.0
    # A journal written before protective exits decodes to no protection.
    old = {k: v for k, v in signal.to_payload().items() if k not in rules.as_dict()}
    before, _ = apply(rebuild([]), event_from_payload("SignalAccepted", old))
    assert before.protection == NO_PROTECTION
