"""Signal policy specs: entry/exit gates, sizing, ATM option selection, deterministic pos_ids."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from config.settings import StrategySettings
from core.market import Candle
from core.orders import CORRELATION_ID_MAX, Leg, Side, correlation_id
from core.risk import RiskLimits, check_entry, new_risk_state
from core.scoring import Score, ScoreEngine
from core.signals import (
    EXIT_SCORE,
    OPEN_GATE,
    EntryGate,
    EntrySignalRaised,
    ExitSignalRaised,
    SignalPolicy,
    lots_for,
    make_pos_id,
    pick_atm_option,
)

CANDLE_TS = 1_763_622_000  # 2025-11-20 12:30 IST
SETTINGS = StrategySettings()  # entry >= 0.65, exit >= 0.6, base_lot 1 (lot), tiers 0.65->1, 0.75->2, 0.85->3


def candle(symbol: str = "NIFTY", ts: int = CANDLE_TS, close: float = 25_642.0) -> Candle:
    return Candle(symbol, ts, close - 5, close + 3, close - 8, close, 0, ticks=20)


def score(direction: int = 1, entry: float = 0.7, final: float | None = None, momentum: float = 0.0,
          exit_confidence: float = 1.0, symbol: str = "NIFTY") -> Score:
    final = 0.5 * direction if final is None else final
    return Score(score_0_100=100 * abs(final), direction=direction, entry_score=entry, exit_score=0.0,
                 entry_confidence=1.0, exit_confidence=exit_confidence,
                 components={"final": final, "momentum": momentum, "saturation": 0.7}, symbol=symbol,
                 ts=CANDLE_TS)


def chain(last_price: float = 25_642.8) -> dict[str, Any]:
    """The Dhan /optionchain body (dhan-api.md), a few strikes around the money."""
    def leg(security_id: int | None, price: float) -> dict[str, Any]:
        return {"security_id": security_id, "last_price": price, "oi": 1000, "implied_volatility": 9.8}
    return {"data": {"last_price": last_price, "oc": {
        "25600.000000": {"ce": leg(42510, 160.0), "pe": leg(42511, 110.0)},
        "25650.000000": {"ce": leg(42528, 134.0), "pe": leg(42529, 140.5)},
        "25700.000000": {"ce": leg(42540, 108.0), "pe": leg(42541, 170.0)},
    }}, "status": "success"}


def decide(policy: SignalPolicy, sc: Score, *, open_positions: dict[str, tuple[str, int]] | None = None,
           market_open: bool = True, feed_stale: bool = False, option_chain: dict[str, Any] | None = None,
           lot_size: int = 75, max_qty: int | None = None, symbol: str = "NIFTY",
           bar: Candle | None = None, now: float | None = None) -> list[EntrySignalRaised | ExitSignalRaised]:
    gate = EntryGate(market_open=market_open, feed_stale=feed_stale)
    return policy.decide(symbol, sc, bar or candle(symbol), open_positions or {}, gate,
                         option_chain, lot_size, max_qty=max_qty, now=now)


# --- entries ----------------------------------------------------------------------------------------------

def test_entry_long_buys_the_atm_call_from_the_option_chain() -> None:
    [signal] = decide(SignalPolicy(SETTINGS), score(1, entry=0.7), option_chain=chain())
    assert isinstance(signal, EntrySignalRaised)
    assert signal.instrument == "SEC_42528" and signal.option_type == "CE" and signal.strike == 25_650.0
    assert signal.side is Side.BUY and signal.price == 134.0 and signal.direction == 1
    assert signal.qty == 75 and signal.lots == 1
    assert signal.pos_id == "NIFTY-2511201230-1" and signal.candle_ts == CANDLE_TS
    assert signal.at == CANDLE_TS + 60  # the candle's close when no `now` is given
    assert signal.score.entry_score == 0.7 and "ATM CE 25650" in signal.note


def test_entry_short_buys_the_atm_put() -> None:
    [signal] = decide(SignalPolicy(SETTINGS), score(-1, entry=0.8), option_chain=chain())
    assert isinstance(signal, EntrySignalRaised)
    assert (signal.instrument, signal.option_type, signal.side, signal.price) == ("SEC_42529", "PE", Side.BUY,
                                                                                  140.5)
    assert signal.direction == -1


def test_the_sdk_wrapped_chain_is_understood_too() -> None:
    wrapped = {"status": "success", "remarks": "", "data": chain()}
    pick = pick_atm_option(wrapped, 1, fallback_price=0.0)
    assert pick is not None and pick.instrument == "SEC_42528"
    inner = chain()["data"]
    assert pick_atm_option(inner, 1, fallback_price=0.0) == pick


@pytest.mark.parametrize(("last_price", "direction", "strike"), [
    (25_624.9, 1, 25_600.0), (25_625.0, 1, 25_600.0), (25_676.0, -1, 25_700.0), (30_000.0, 1, 25_700.0),
])
def test_atm_is_the_strike_nearest_the_underlying_lower_on_a_tie(last_price: float, direction: int,
                                                                  strike: float) -> None:
    pick = pick_atm_option(chain(last_price), direction, fallback_price=0.0)
    assert pick is not None and pick.strike == strike and pick.underlying_price == last_price


def test_a_strike_without_a_security_id_or_premium_is_skipped_for_the_next_nearest() -> None:
    payload = chain()
    payload["data"]["oc"]["25650.000000"]["ce"]["security_id"] = None
    payload["data"]["oc"]["25650.000000"]["pe"]["last_price"] = 0
    long_pick = pick_atm_option(payload, 1, 0.0)
    short_pick = pick_atm_option(payload, -1, 0.0)
    assert long_pick is not None and long_pick.strike == 25_600.0
    assert short_pick is not None and short_pick.strike == 25_600.0


def test_without_a_chain_the_symbol_itself_is_traded_and_the_signal_says_so() -> None:
    policy = SignalPolicy(SETTINGS)
    [long_signal] = decide(policy, score(1), option_chain=None)
    [short_signal] = decide(policy, score(-1), option_chain={"data": {"oc": {}}}, symbol="BANKNIFTY",
                            bar=candle("BANKNIFTY", close=52_000.0))
    assert isinstance(long_signal, EntrySignalRaised) and isinstance(short_signal, EntrySignalRaised)
    assert (long_signal.instrument, long_signal.side, long_signal.price) == ("NIFTY", Side.BUY, 25_642.0)
    assert (short_signal.instrument, short_signal.side) == ("BANKNIFTY", Side.SELL)
    assert "no option chain" in long_signal.note and "trading the symbol itself" in short_signal.note
    assert long_signal.strike is None and long_signal.option_type == ""


GATES = [
    pytest.param({"sc": score(1, entry=0.64)}, "entry_score 0.6400 < 0.65", id="below threshold"),
    pytest.param({"open_positions": {"NIFTY": ("NIFTY-2511201001-1", -1)}}, "position already open",
                 id="position open"),
    pytest.param({"market_open": False}, "market closed", id="outside the session"),
    pytest.param({"feed_stale": True}, "feed stale", id="feed stale"),
    pytest.param({"sc": score(0, entry=0.9, final=0.0)}, "no direction", id="no direction"),
]


@pytest.mark.parametrize(("change", "reason"), GATES)
def test_no_entry_unless_every_gate_passes(change: dict[str, Any], reason: str) -> None:
    policy = SignalPolicy(SETTINGS)
    args: dict[str, Any] = {"sc": score(1, entry=0.7, momentum=0.5), "open_positions": {},
                            "market_open": True, "feed_stale": False}
    args.update(change)
    signals = decide(policy, args["sc"], open_positions=args["open_positions"], market_open=args["market_open"],
                     feed_stale=args["feed_stale"], option_chain=chain())
    assert not [s for s in signals if isinstance(s, EntrySignalRaised)]
    gate = EntryGate(market_open=args["market_open"], feed_stale=args["feed_stale"])
    assert policy.entry_blocker("NIFTY", args["sc"], args["open_positions"], gate, CANDLE_TS + 60) == reason


def test_entry_exactly_at_the_threshold_is_raised() -> None:
    assert decide(SignalPolicy(SETTINGS), score(1, entry=0.65))


# --- sizing -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("entry", "lots"), [(0.65, 1), (0.7499, 1), (0.75, 2), (0.84, 2), (0.85, 3), (1.0, 3)])
def test_sizing_tiers_pick_the_highest_reached_threshold(entry: float, lots: int) -> None:
    [signal] = decide(SignalPolicy(SETTINGS), score(1, entry=entry))
    assert isinstance(signal, EntrySignalRaised)
    assert signal.lots == lots and signal.qty == 75 * lots


def test_base_lot_counts_lots_per_underlying_and_units_come_from_the_contracts_lot_size() -> None:
    """Issue 10: strategy.base_lot counts LOTS (it used to count units), strategy.lots_per_underlying
    overrides it per underlying, and the units per lot are the instrument master's lot of the contract
    traded (the caller's `lot_size`); an unknown lot size (<= 0) trades nothing rather than guess."""
    policy = SignalPolicy(StrategySettings(base_lot=2, lots_per_underlying={"BANKNIFTY": 3}))
    [nifty] = decide(policy, score(1, entry=0.8), lot_size=65)  # tier 2 lots x base 2 = 4 lots of 65
    [bank] = decide(policy, score(1, entry=0.8), lot_size=30, symbol="BANKNIFTY")  # 2 x 3 = 6 lots of 30
    assert isinstance(nifty, EntrySignalRaised) and isinstance(bank, EntrySignalRaised)
    assert (nifty.lots, nifty.qty) == (4, 260) and (bank.lots, bank.qty) == (6, 180)
    assert decide(policy, score(1, entry=0.8), lot_size=0) == []


@pytest.mark.parametrize(("max_qty", "qty"), [(None, 225), (1000, 225), (200, 150), (150, 150), (75, 75),
                                              (74, None), (0, None)])
def test_max_qty_caps_to_whole_lots_and_less_than_a_lot_means_no_entry(max_qty: int | None,
                                                                       qty: int | None) -> None:
    signals = decide(SignalPolicy(SETTINGS), score(1, entry=0.9), max_qty=max_qty)
    assert [s.qty for s in signals if isinstance(s, EntrySignalRaised)] == ([] if qty is None else [qty])


def test_lots_for_without_a_reached_tier_is_one_lot() -> None:
    assert lots_for(0.5, {"0.65": 1, "0.75": 2}) == 1
    assert lots_for(0.9, {"0.9": 4, "0.75": 2}) == 4


# --- exits ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("held", "final", "momentum", "raised"), [
    (1, -0.5, 0.0, True),     # against the long: 0.5 / 0.7 = 0.71 >= 0.6
    (1, -0.3, 0.0, False),    # 0.43 < 0.6
    (1, 0.3, -0.65, True),    # momentum faded against the long
    (-1, 0.5, 0.0, True),
    (-1, -0.5, 0.5, False),
])
def test_exit_when_the_exit_score_for_the_held_direction_reaches_the_threshold(held: int, final: float,
                                                                                momentum: float,
                                                                                raised: bool) -> None:
    positions = {"NIFTY": ("NIFTY-2511201001-1", held)}
    signals = decide(SignalPolicy(SETTINGS), score(1 if final > 0 else -1, entry=0.95, final=final,
                                                    momentum=momentum), open_positions=positions)
    if raised:
        [signal] = signals
        assert isinstance(signal, ExitSignalRaised)
        assert (signal.pos_id, signal.reason, signal.symbol) == ("NIFTY-2511201001-1", EXIT_SCORE, "NIFTY")
        assert signal.exit_score >= SETTINGS.mds_exit_score_min and signal.at == CANDLE_TS + 60
    else:
        assert signals == []  # and no entry either: the symbol already has a position


def test_exits_are_raised_even_when_the_market_is_closed_or_the_feed_stale() -> None:
    positions = {"NIFTY": ("NIFTY-2511201001-1", 1)}
    signals = decide(SignalPolicy(SETTINGS), score(-1, final=-0.6), open_positions=positions,
                     market_open=False, feed_stale=True, now=1_763_623_000.5)
    assert [type(s) for s in signals] == [ExitSignalRaised]
    assert signals[0].at == 1_763_623_000.5


# --- pos_id -----------------------------------------------------------------------------------------------

def test_pos_id_is_derived_from_the_ist_candle_time_and_fits_a_readable_correlation_id() -> None:
    for symbol in ("NIFTY", "BANKNIFTY", "FINNIFTY"):
        pos_id = make_pos_id(symbol, CANDLE_TS)
        assert pos_id == f"{symbol}-2511201230-1"
        assert len(pos_id) <= 22
        assert correlation_id(pos_id, Leg.ENTRY) == f"{pos_id}-E"
        assert len(correlation_id(pos_id, Leg.EXIT, attempt=9)) <= CORRELATION_ID_MAX


def test_deciding_the_same_candle_again_gives_a_new_pos_id_and_a_new_candle_starts_over() -> None:
    policy = SignalPolicy(SETTINGS)
    ids = [decide(policy, score(1))[0].pos_id for _ in range(3)]
    later = decide(policy, score(1), bar=candle(ts=CANDLE_TS + 60))[0].pos_id
    other_symbol = decide(policy, score(1), symbol="BANKNIFTY", bar=candle("BANKNIFTY"))[0].pos_id
    assert ids == ["NIFTY-2511201230-1", "NIFTY-2511201230-2", "NIFTY-2511201230-3"]
    assert later == "NIFTY-2511201231-1" and other_symbol == "BANKNIFTY-2511201230-1"


def test_a_replay_through_engine_and_policy_gives_identical_signals_with_unique_pos_ids() -> None:
    rng = np.random.default_rng(5)
    candles = []
    price = 25_000.0
    for i in range(375 * 3):
        day, minute = divmod(i, 375)
        ts = 1_763_610_300 + day * 86_400 + minute * 60
        close = price + 3.0 * np.sin(i / 40.0) + float(rng.normal(0.0, 6.0))
        candles.append(Candle("NIFTY", ts, price, max(price, close) + 2, min(price, close) - 2, close))
        price = close

    def replay() -> list[EntrySignalRaised | ExitSignalRaised]:
        engine, policy = ScoreEngine(SETTINGS), SignalPolicy(SETTINGS)
        book: dict[str, tuple[str, int]] = {}
        out: list[EntrySignalRaised | ExitSignalRaised] = []
        for bar in candles:
            held = book["NIFTY"][1] if "NIFTY" in book else 0
            sc = engine.on_candle(bar, held)
            if sc is None:
                continue
            for signal in policy.decide("NIFTY", sc, bar, book, OPEN_GATE, copy.deepcopy(chain(bar.close)), 75):
                out.append(signal)
                if isinstance(signal, EntrySignalRaised):
                    book["NIFTY"] = (signal.pos_id, signal.direction)
                else:
                    del book["NIFTY"]
        return out

    first, second = replay(), replay()
    assert first == second
    entries = [s for s in first if isinstance(s, EntrySignalRaised)]
    exits = [s for s in first if isinstance(s, ExitSignalRaised)]
    assert len(entries) >= 4 and len(exits) >= 3
    assert len({s.pos_id for s in entries}) == len(entries)
    assert {s.direction for s in entries} == {1, -1}
    # entries and exits alternate, each exit closing the entry before it
    for entry, exit_signal in zip(entries, exits, strict=False):
        assert exit_signal.pos_id == entry.pos_id and exit_signal.at > entry.at


RISK_GATES = [
    pytest.param(EntryGate(after_square_off=True, square_off_time="15:15"), "at or after square-off 15:15 IST",
                 id="after square-off"),
    pytest.param(EntryGate(max_open_positions=0), "0 open positions (limit 0)", id="max open positions"),
    pytest.param(EntryGate(risk=new_risk_state(CANDLE_TS), risk_limits=RiskLimits(trading_enabled=False)),
                 "trading disabled by configuration (risk.trading_enabled)", id="trading disabled"),
    pytest.param(EntryGate(risk=replace(new_risk_state(CANDLE_TS), kill_switch_engaged=True,
                                        kill_switch_reason="news"), risk_limits=RiskLimits()),
                 "kill switch engaged: news", id="kill switch"),
    pytest.param(EntryGate(risk=replace(new_risk_state(CANDLE_TS), reconciliation_hold=True,
                                        reconciliation_hold_reason="orphan"), risk_limits=RiskLimits()),
                 "reconciliation hold: orphan", id="reconciliation hold"),
    pytest.param(EntryGate(risk=replace(new_risk_state(CANDLE_TS), realized_pnl=-6000.0),
                           risk_limits=RiskLimits(daily_max_loss=5000.0)), None, id="daily loss breached"),
    pytest.param(EntryGate(candle_age_seconds=400, max_candle_age_seconds=120),
                 "candle closed 400 s ago (limit 120 s)", id="old candle"),
]


@pytest.mark.parametrize(("gate", "reason"), RISK_GATES)
def test_the_policy_owns_the_whole_entry_gate_and_says_why_in_the_guards_words(gate: EntryGate,
                                                                                reason: str | None) -> None:
    policy = SignalPolicy(SETTINGS)
    got = policy.entry_blocker("NIFTY", score(1, entry=0.7, momentum=0.5), {}, gate, CANDLE_TS + 60)
    if reason is None:  # the guard's own wording for a breach; what matters is that it refuses
        limits, state = gate.risk_limits, gate.risk
        assert limits is not None and state is not None
        assert got == check_entry(limits, state, CANDLE_TS + 60).reason  # type: ignore[union-attr]
    else:
        assert got == reason
    assert not decide_with(policy, gate)


def test_an_open_gate_lets_a_qualifying_score_through() -> None:
    assert decide_with(SignalPolicy(SETTINGS), EntryGate(risk=new_risk_state(CANDLE_TS), risk_limits=RiskLimits()))


def decide_with(policy: SignalPolicy, gate: EntryGate) -> list[EntrySignalRaised | ExitSignalRaised]:
    return policy.decide("NIFTY", score(1, entry=0.7, momentum=0.5), candle(), {}, gate, chain(), 75)
