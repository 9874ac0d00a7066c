"""Score engine specs: conflict reduction, bucket/timeframe weighting, warm-up, aggregation, outputs."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from config.settings import StrategySettings
from core.aggregate import aggregate
from core.market import Candle
from core.scoring import (
    BUCKETS,
    IndicatorParams,
    IndicatorSet,
    Score,
    ScoreEngine,
    combine_timeframes,
    exit_score,
)

ROOT = Path(__file__).resolve().parent.parent
SESSION_OPEN = 1_763_610_300  # 2025-11-20 09:15 IST
SESSION_MINUTES = 375


def series(n: int, drift: float = 0.0, noise: float = 10.0, seed: int = 11, symbol: str = "NIFTY",
           volume: bool = True, start: float = 25_000.0) -> list[Candle]:
    """1m candles over consecutive sessions (09:15-15:29 IST), constant drift per minute plus noise."""
    rng = np.random.default_rng(seed)
    out = []
    price = start
    for i in range(n):
        day, minute = divmod(i, SESSION_MINUTES)
        ts = SESSION_OPEN + day * 86_400 + minute * 60
        open_ = price
        close = open_ + drift + float(rng.normal(0.0, noise))
        high = max(open_, close) + abs(float(rng.normal(0.0, noise / 3)))
        low = min(open_, close) - abs(float(rng.normal(0.0, noise / 3)))
        vol = int(rng.integers(1_000, 20_000)) if volume else 0
        out.append(Candle(symbol, ts, open_, high, low, close, vol, ticks=5))
        price = close
    return out


def run_engine(engine: ScoreEngine, candles: list[Candle], held: int = 0) -> list[Score | None]:
    return [engine.on_candle(c, held) for c in candles]


# --- multi-timeframe conflict reduction ----------------------------------------------------------------

CONFLICT_TABLE = [
    # (weights/scores, gamma, expected weighted, expected agreement, expected final)
    pytest.param([(0.2, 0.5), (0.35, 0.5), (0.45, 0.5)], 1.0, 0.5, 1.0, 0.5, id="all agree: unchanged"),
    pytest.param([(0.2, 0.1), (0.35, 0.4), (0.45, 0.8)], 1.0, 0.52, 1.0, 0.52, id="agree, different sizes"),
    pytest.param([(0.5, 0.6), (0.5, -0.6)], 1.0, 0.0, 0.0, 0.0, id="opposite equal: neutral"),
    pytest.param([(0.2, -0.5), (0.8, 0.5)], 1.0, 0.3, 0.6, 0.18, id="partial conflict: reduced"),
    pytest.param([(0.2, -0.5), (0.8, 0.5)], 2.0, 0.3, 0.6, 0.108, id="gamma 2 reduces more"),
    pytest.param([(0.2, -0.5), (0.8, 0.5)], 0.0, 0.3, 0.6, 0.3, id="gamma 0 disables"),
    pytest.param([(0.3, 0.0), (0.7, 0.0)], 1.0, 0.0, 1.0, 0.0, id="all neutral: nothing disagrees"),
    pytest.param([(1.0, -0.7)], 1.0, -0.7, 1.0, -0.7, id="single timeframe"),
]


@pytest.mark.parametrize(("pairs", "gamma", "weighted", "agreement", "final"), CONFLICT_TABLE)
def test_conflict_reduction_follows_the_documented_rule(pairs: list[tuple[float, float]], gamma: float,
                                                        weighted: float, agreement: float,
                                                        final: float) -> None:
    got = combine_timeframes(pairs, gamma)
    assert got == pytest.approx((weighted, agreement, final), abs=1e-12)


def test_partial_disagreement_lands_strictly_between_neutral_and_the_plain_weighted_mean() -> None:
    for minority in (-0.1, -0.3, -0.6, -0.9):
        weighted, agreement, final = combine_timeframes([(0.45, 0.6), (0.35, 0.4), (0.2, minority)], 1.0)
        assert 0.0 < agreement < 1.0
        assert 0.0 < final < weighted


# --- indicator set: components, buckets, timeframe score -------------------------------------------------

BUCKET_MEMBERS = {
    "trend": ("ema_cross", "ema_slope", "macd_hist", "supertrend", "adx_di"),
    "momentum": ("rsi", "macd_line"),
    "volatility": ("bollinger_b", "atr_regime"),
    "volume": ("vwap", "volume_ratio"),
}
WEIGHTS = {"trend": 0.4, "momentum": 0.3, "volatility": 0.15, "volume": 0.15}


def test_bucket_is_the_mean_of_its_components_and_timeframe_score_their_weighted_mean() -> None:
    indicator_set = IndicatorSet(60, IndicatorParams(), WEIGHTS)
    checked = 0
    for candle in series(400):
        indicator_set.update(candle)
        c = indicator_set.components
        if "60s.score" not in c:
            continue
        numerator = denominator = 0.0
        for bucket, members in BUCKET_MEMBERS.items():
            present = [c[f"60s.{m}"] for m in members if f"60s.{m}" in c]
            if present:
                assert c[f"60s.{bucket}"] == pytest.approx(sum(present) / len(present), abs=1e-12)
                numerator += WEIGHTS[bucket] * c[f"60s.{bucket}"]
                denominator += WEIGHTS[bucket]
            else:
                assert f"60s.{bucket}" not in c
        assert c["60s.score"] == pytest.approx(numerator / denominator, abs=1e-12)
        assert indicator_set.score == c["60s.score"]
        checked += 1
    assert checked > 350
    assert all(f"60s.{m}" in c for members in BUCKET_MEMBERS.values() for m in members)
    assert all(-1.0 <= v <= 1.0 for v in c.values())


def test_volume_components_need_volume_but_vwap_still_scores_without_it() -> None:
    indicator_set = IndicatorSet(60, IndicatorParams(), WEIGHTS)
    for candle in series(100, volume=False):
        indicator_set.update(candle)
    assert "60s.volume_ratio" not in indicator_set.components
    assert indicator_set.components["60s.volume"] == indicator_set.components["60s.vwap"]


def test_a_steady_uptrend_scores_bullish_on_every_component_that_measures_direction() -> None:
    indicator_set = IndicatorSet(60, IndicatorParams(), WEIGHTS)
    for candle in series(200, drift=6.0, noise=2.0):
        indicator_set.update(candle)
    c = indicator_set.components
    # (macd_hist measures acceleration: a constant-speed trend leaves it near 0, either sign)
    for name in ("ema_cross", "ema_slope", "supertrend", "adx_di", "rsi", "macd_line", "vwap"):
        assert c[f"60s.{name}"] > 0.3, name
    assert c["60s.score"] > 0.5


# --- the engine --------------------------------------------------------------------------------------------

def test_engine_reports_nothing_until_warmup_candles_then_a_score_every_minute() -> None:
    engine = ScoreEngine(StrategySettings(warmup_candles=40))
    results = run_engine(engine, series(60))
    assert all(r is None for r in results[:39])
    assert all(isinstance(r, Score) for r in results[39:])
    assert not engine.warm("BANKNIFTY") and engine.warm("NIFTY")


def test_every_output_is_in_range_and_consistent_with_its_components() -> None:
    engine = ScoreEngine(StrategySettings())
    scores = [s for s in run_engine(engine, series(SESSION_MINUTES * 3, drift=0.5), held=1) if s]
    assert len(scores) > 1000
    saturation = StrategySettings().score_saturation
    for s in scores:
        c = s.components
        assert 0.0 <= s.score_0_100 <= 100.0 and s.score_0_100 == pytest.approx(100 * abs(c["final"]))
        assert s.direction == (1 if c["final"] > 0 else -1 if c["final"] < 0 else 0)
        for value in (s.entry_score, s.exit_score, s.entry_confidence, s.exit_confidence, c["warmth"]):
            assert 0.0 <= value <= 1.0
        strength = min(1.0, abs(c["final"]) / saturation)
        assert c["strength"] == pytest.approx(strength)
        assert s.entry_confidence == pytest.approx(c["warmth"] * c["agreement"])
        assert s.exit_confidence == pytest.approx(c["warmth"] * (1 + c["agreement"]) / 2)
        assert s.entry_score == pytest.approx(strength * s.entry_confidence)
        assert s.held == 1 and s.exit_score == s.exit_for(1)
    last = scores[-1].components
    for tf in (60, 300, 900):
        for members in BUCKET_MEMBERS.values():
            for name in members:
                assert f"{tf}s.{name}" in last
        for key in (*BUCKETS, "score", "readiness"):
            assert f"{tf}s.{key}" in last
    for key in ("weighted", "agreement", "final", "warmth", "momentum", "strength"):
        assert key in last


def test_engine_timeframe_scores_combine_by_the_conflict_rule() -> None:
    engine = ScoreEngine(StrategySettings())
    score = run_engine(engine, series(SESSION_MINUTES * 3))[-1]
    assert score is not None
    c = score.components
    weights = StrategySettings().timeframe_weights
    pairs = [(weights[str(tf)], c[f"{tf}s.score"]) for tf in (60, 300, 900)]
    assert (c["weighted"], c["agreement"], c["final"]) == pytest.approx(combine_timeframes(pairs, 1.0))


def test_higher_timeframes_are_fed_the_aggregated_closed_candles() -> None:
    candles = series(SESSION_MINUTES * 2 + 37)
    engine = ScoreEngine(StrategySettings())
    run_engine(engine, candles)
    params = IndicatorParams.from_config(StrategySettings())
    for tf in (300, 900):
        reference = IndicatorSet(tf, params, StrategySettings().bucket_weights)
        closed = aggregate(candles, tf)
        if candles[-1].ts + 60 < closed[-1].ts + tf:
            closed = closed[:-1]  # the last bucket is still forming
        for bucket in closed:
            reference.update(bucket)
        engine_set = engine.indicator_set("NIFTY", tf)
        assert engine_set is not None
        assert engine_set.candles == len(closed) and engine_set.last_ts == closed[-1].ts
        assert engine_set.components == reference.components


def test_a_sustained_uptrend_is_an_entry_long_and_an_exit_for_a_short() -> None:
    engine = ScoreEngine(StrategySettings())
    score = run_engine(engine, series(SESSION_MINUTES * 2, drift=4.0, noise=6.0))[-1]
    assert score is not None
    assert score.direction == 1
    assert score.components["warmth"] == pytest.approx(1.0)
    assert score.entry_score >= StrategySettings().mds_entry_score_min
    assert score.exit_for(1) < 0.2
    assert score.exit_for(-1) >= StrategySettings().mds_exit_score_min


def test_a_sustained_downtrend_is_an_entry_short() -> None:
    engine = ScoreEngine(StrategySettings())
    score = run_engine(engine, series(SESSION_MINUTES * 2, drift=-4.0, noise=6.0))[-1]
    assert score is not None
    assert score.direction == -1
    assert score.entry_score >= StrategySettings().mds_entry_score_min
    assert score.exit_for(1) >= StrategySettings().mds_exit_score_min


def test_cold_higher_timeframes_lower_confidence_instead_of_being_guessed() -> None:
    engine = ScoreEngine(StrategySettings())
    score = run_engine(engine, series(40, drift=4.0, noise=6.0))[-1]
    assert score is not None
    c = score.components
    weights = StrategySettings().timeframe_weights
    expected_warmth = sum(weights[str(tf)] * c[f"{tf}s.readiness"] for tf in (60, 300, 900))
    assert c["warmth"] == pytest.approx(expected_warmth)
    assert c["warmth"] < 0.5
    assert score.entry_confidence <= c["warmth"]


def test_duplicate_and_out_of_order_candles_are_ignored() -> None:
    candles = series(80)
    engine = ScoreEngine(StrategySettings())
    run_engine(engine, candles)
    before = engine.indicator_set("NIFTY", 60)
    assert before is not None
    components = dict(before.components)
    revised = dataclasses.replace(candles[-1], close=candles[-1].close + 50, revision=1)
    assert engine.on_candle(revised) is None
    assert engine.on_candle(candles[10]) is None
    assert before.components == components and before.candles == 80


def test_symbols_are_scored_independently_and_replays_are_identical() -> None:
    nifty = series(SESSION_MINUTES, seed=1, symbol="NIFTY")
    bank = series(SESSION_MINUTES, seed=2, symbol="BANKNIFTY", start=52_000.0)
    shared = ScoreEngine(StrategySettings())
    interleaved = {"NIFTY": [], "BANKNIFTY": []}  # type: dict[str, list[Score | None]]
    for a, b in zip(nifty, bank, strict=True):
        interleaved["NIFTY"].append(shared.on_candle(a))
        interleaved["BANKNIFTY"].append(shared.on_candle(b))
    assert interleaved["NIFTY"] == run_engine(ScoreEngine(StrategySettings()), nifty)
    assert interleaved["BANKNIFTY"] == run_engine(ScoreEngine(StrategySettings()), bank)


def test_engine_refuses_candles_that_are_not_one_minute() -> None:
    engine = ScoreEngine(StrategySettings())
    with pytest.raises(ValueError, match="1-minute"):
        engine.on_candle(dataclasses.replace(series(1)[0], timeframe=300))


@pytest.mark.parametrize(("overrides", "message"), [
    ({"ema_fast": 30, "ema_slow": 21}, "ema_fast"),
    ({"timeframe_weights": {"60": 0.0, "300": 0.0, "900": 0.0}}, "weight 0"),
    ({"bucket_weights": {"trend": 0.0}}, "bucket_weights"),
])
def test_engine_refuses_inconsistent_settings(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ScoreEngine(StrategySettings(**overrides))  # type: ignore[arg-type]


# --- exit score --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("held", "final", "momentum", "expected"), [
    (1, 0.35, 0.5, 0.0),      # move with the long, momentum with it: stay
    (1, -0.35, 0.0, 0.5),     # move against the long at half saturation
    (1, -0.9, 0.0, 1.0),      # beyond saturation: full strength
    (1, 0.2, -0.8, 0.8),      # trend still up but momentum turned: the fade
    (-1, 0.35, 0.0, 0.5),     # the same move against a short
    (-1, -0.5, -0.6, 0.0),
    (0, -0.9, -0.9, 0.0),     # flat: nothing to exit
])
def test_exit_score_is_the_larger_of_the_move_against_and_the_momentum_fade(held: int, final: float,
                                                                             momentum: float,
                                                                             expected: float) -> None:
    assert exit_score(held, final, momentum, 0.7, 1.0) == pytest.approx(expected)
    assert exit_score(held, final, momentum, 0.7, 0.5) == pytest.approx(expected * 0.5)
    score = Score(0.0, 0, 0.0, 0.0, 0.0, 0.5,
                  components={"final": final, "momentum": momentum, "saturation": 0.7})
    assert score.exit_for(held) == pytest.approx(expected * 0.5)


def test_score_as_json_is_plain_rounded_data() -> None:
    score = run_engine(ScoreEngine(StrategySettings()), series(60))[-1]
    assert score is not None
    data = score.as_json()
    assert data["symbol"] == "NIFTY" and data["ts"] == score.ts
    components = data["components"]
    assert isinstance(components, dict) and set(components) == set(score.components)
    assert all(isinstance(v, float) and math.isfinite(v) for v in components.values())
