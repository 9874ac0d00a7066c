"""Incremental indicators checked against independent textbook formulas written here in pandas/numpy.

The references recompute each indicator over the whole series from its definition (ewm with
adjust=False, explicit Wilder seeding, sliding windows, groupby per IST day) and never call the classes
under test. Agreement is required to 1e-9 relative after warm-up; values that cross zero (MACD, DI
spreads) get an absolute floor of 1e-9 times the scale of their inputs, since relative error is
meaningless at zero.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from core.indicators import (
    ADX,
    ATR,
    EMA,
    MACD,
    RSI,
    SMA,
    VWAP,
    BollingerBands,
    Supertrend,
)
from core.market import Candle

N_CANDLES = 3000
SESSION_MINUTES = 375
FIRST_SESSION_OPEN = 1_763_610_300  # 2025-11-20 09:15 IST
RTOL = 1e-9


def generate_candles(n: int = N_CANDLES, seed: int = 7, with_volume: bool = True) -> list[Candle]:
    """A random-walk index around 25 000 over several sessions of 1-minute candles (09:15-15:29 IST)."""
    rng = np.random.default_rng(seed)
    candles = []
    price = 25_000.0
    for i in range(n):
        day, minute = divmod(i, SESSION_MINUTES)
        ts = FIRST_SESSION_OPEN + day * 86_400 + minute * 60
        drift = 3.0 * np.sin(i / 150.0)  # alternating trends so directional indicators swing both ways
        open_ = price
        close = max(100.0, open_ + drift + rng.normal(0.0, 12.0))
        high = max(open_, close) + abs(rng.normal(0.0, 6.0))
        low = min(open_, close) - abs(rng.normal(0.0, 6.0))
        volume = int(rng.integers(1_000, 50_000)) if with_volume else 0
        candles.append(Candle("NIFTY", ts, open_, high, low, close, volume, ticks=10))
        price = close
    return candles


def frame(candles: Sequence[Candle]) -> pd.DataFrame:
    return pd.DataFrame({
        "ts": [c.ts for c in candles], "open": [c.open for c in candles], "high": [c.high for c in candles],
        "low": [c.low for c in candles], "close": [c.close for c in candles],
        "volume": [float(c.volume) for c in candles],
    })


def run(indicator: Any, inputs: Sequence[Any], pick: Callable[[Any], float] = float) -> np.ndarray:
    """Feed every input; NaN where the indicator is not warm yet."""
    out = np.full(len(inputs), np.nan)
    for i, x in enumerate(inputs):
        value = indicator.update(x)
        if value is not None:
            out[i] = pick(value)
    return out


def assert_matches(actual: np.ndarray, expected: np.ndarray, first_warm: int, scale: float = 0.0) -> None:
    assert np.isnan(actual[:first_warm]).all(), "reported a value before warm-up"
    assert not np.isnan(actual[first_warm:]).any(), "missing values after warm-up"
    np.testing.assert_allclose(actual[first_warm:], expected[first_warm:], rtol=RTOL, atol=RTOL * scale)


def wilder(values: pd.Series, period: int, start: int) -> pd.Series:
    """Wilder smoothing seeded with the mean of values[start : start + period], placed at start + period - 1."""
    seed_at = start + period - 1
    seed = values.iloc[start:start + period].mean()
    series = pd.concat([pd.Series([seed], index=[values.index[seed_at]]), values.iloc[seed_at + 1:]])
    smoothed = series.ewm(alpha=1.0 / period, adjust=False).mean()
    return smoothed.reindex(values.index)


def reference_true_range(df: pd.DataFrame) -> pd.Series:
    prev_close = df["close"].shift(1)
    tr = pd.concat([df["high"] - df["low"], (df["high"] - prev_close).abs(), (df["low"] - prev_close).abs()],
                   axis=1).max(axis=1)
    tr.iloc[0] = df["high"].iloc[0] - df["low"].iloc[0]
    return tr


def reference_atr(df: pd.DataFrame, period: int) -> pd.Series:
    return wilder(reference_true_range(df), period, start=0)


@pytest.fixture(scope="module")
def candles() -> list[Candle]:
    return generate_candles()


@pytest.fixture(scope="module")
def df(candles: list[Candle]) -> pd.DataFrame:
    return frame(candles)


@pytest.mark.parametrize("period", [1, 9, 21, 50])
def test_ema_matches_pandas_ewm_without_adjustment(df: pd.DataFrame, period: int) -> None:
    expected = df["close"].ewm(span=period, adjust=False).mean().to_numpy()
    actual = run(EMA(period), df["close"].tolist())
    assert_matches(actual, expected, first_warm=period - 1)


@pytest.mark.parametrize("period", [1, 5, 20, 200])
def test_sma_matches_the_exact_window_mean(df: pd.DataFrame, period: int) -> None:
    close = df["close"].to_numpy()
    expected = np.full(len(close), np.nan)
    expected[period - 1:] = sliding_window_view(close, period).mean(axis=1)
    assert_matches(run(SMA(period), close.tolist()), expected, first_warm=period - 1)


def test_sma_stays_exact_over_a_long_series_of_large_values() -> None:
    rng = np.random.default_rng(3)
    values = 1e7 + rng.normal(0.0, 1.0, 50_000).cumsum()
    sma = SMA(20)
    for v in values:
        sma.update(float(v))
    assert sma.value == pytest.approx(float(np.mean(values[-20:])), rel=1e-12)


@pytest.mark.parametrize("period", [2, 14])
def test_rsi_matches_wilders_definition(df: pd.DataFrame, period: int) -> None:
    delta = df["close"].diff()
    avg_gain = wilder(delta.clip(lower=0.0), period, start=1)
    avg_loss = wilder((-delta).clip(lower=0.0), period, start=1)
    expected = (100.0 - 100.0 / (1.0 + avg_gain / avg_loss)).to_numpy()
    assert_matches(run(RSI(period), df["close"].tolist()), expected, first_warm=period, scale=100.0)


def test_rsi_is_100_when_price_only_rises_and_50_when_it_never_moves() -> None:
    rising, flat = RSI(3), RSI(3)
    for i in range(10):
        rising.update(100.0 + i)
        flat.update(100.0)
    assert rising.value == 100.0
    assert flat.value == 50.0


def test_macd_line_signal_and_histogram_match_pandas(df: pd.DataFrame) -> None:
    close = df["close"]
    line = close.ewm(span=12, adjust=False).mean() - close.ewm(span=26, adjust=False).mean()
    signal = line.ewm(span=9, adjust=False).mean()
    macd = MACD(12, 26, 9)
    values = [macd.update(x) for x in close.tolist()]
    first_warm = 26 + 9 - 2
    for field, expected in (("line", line), ("signal", signal), ("hist", line - signal)):
        actual = np.array([np.nan if v is None else getattr(v, field) for v in values])
        assert_matches(actual, expected.to_numpy(), first_warm, scale=close.mean())


@pytest.mark.parametrize("period", [1, 14])
def test_atr_matches_wilders_average_true_range(candles: list[Candle], df: pd.DataFrame, period: int) -> None:
    expected = reference_atr(df, period).to_numpy()
    assert_matches(run(ATR(period), candles), expected, first_warm=period - 1, scale=10.0)


@pytest.mark.parametrize(("period", "k"), [(20, 2.0), (50, 2.5)])
def test_bollinger_bands_match_sma_plus_minus_population_std(df: pd.DataFrame, period: int, k: float) -> None:
    close = df["close"].to_numpy()
    windows = sliding_window_view(close, period)
    middle = np.full(len(close), np.nan)
    std = np.full(len(close), np.nan)
    middle[period - 1:] = windows.mean(axis=1)
    std[period - 1:] = windows.std(axis=1, ddof=0)
    upper, lower = middle + k * std, middle - k * std
    percent_b = (close - lower) / (upper - lower)
    bands = BollingerBands(period, k)
    values = [bands.update(x) for x in close.tolist()]
    scale = float(close.mean())
    for field, expected, field_scale in (("middle", middle, scale), ("upper", upper, scale),
                                         ("lower", lower, scale), ("percent_b", percent_b, 1.0)):
        actual = np.array([np.nan if v is None else getattr(v, field) for v in values])
        assert_matches(actual, expected, period - 1, scale=field_scale)
    # The band width itself (a small difference of large numbers) must be right too.
    width = np.array([np.nan if v is None else v.upper - v.lower for v in values])
    assert_matches(width, upper - lower, period - 1)


def test_vwap_is_volume_weighted_typical_price_reset_each_ist_session(candles: list[Candle],
                                                                      df: pd.DataFrame) -> None:
    day = (df["ts"] + 19_800) // 86_400
    typical = (df["high"] + df["low"] + df["close"]) / 3.0
    expected = ((typical * df["volume"]).groupby(day).cumsum() / df["volume"].groupby(day).cumsum()).to_numpy()
    actual = run(VWAP(), candles)
    assert_matches(actual, expected, first_warm=0)
    assert day.nunique() >= 8
    session_open = SESSION_MINUTES * 3
    assert actual[session_open] == pytest.approx(typical.iloc[session_open], rel=1e-12)


def test_vwap_without_volume_is_the_session_mean_typical_price() -> None:
    candles = generate_candles(SESSION_MINUTES * 2 + 10, with_volume=False)
    df = frame(candles)
    day = (df["ts"] + 19_800) // 86_400
    typical = (df["high"] + df["low"] + df["close"]) / 3.0
    expected = (typical.groupby(day).cumsum() / typical.groupby(day).cumcount().add(1)).to_numpy()
    assert_matches(run(VWAP(), candles), expected, first_warm=0)


def reference_supertrend(df: pd.DataFrame, period: int, multiplier: float) -> tuple[np.ndarray, np.ndarray]:
    atr = reference_atr(df, period).to_numpy()
    hl2 = ((df["high"] + df["low"]) / 2.0).to_numpy()
    close = df["close"].to_numpy()
    basic_upper, basic_lower = hl2 + multiplier * atr, hl2 - multiplier * atr
    line = np.full(len(df), np.nan)
    direction = np.full(len(df), np.nan)
    upper = lower = np.nan
    for i in range(period - 1, len(df)):
        if i == period - 1:
            upper, lower, trend = basic_upper[i], basic_lower[i], 1
        else:
            upper = basic_upper[i] if (basic_upper[i] < upper or close[i - 1] > upper) else upper
            lower = basic_lower[i] if (basic_lower[i] > lower or close[i - 1] < lower) else lower
            if direction[i - 1] == -1:
                trend = 1 if close[i] > upper else -1
            else:
                trend = -1 if close[i] < lower else 1
        direction[i] = trend
        line[i] = lower if trend == 1 else upper
    return line, direction


@pytest.mark.parametrize(("period", "multiplier"), [(10, 3.0), (7, 1.5)])
def test_supertrend_follows_the_band_flip_rules(candles: list[Candle], df: pd.DataFrame, period: int,
                                                multiplier: float) -> None:
    expected_line, expected_direction = reference_supertrend(df, period, multiplier)
    st = Supertrend(period, multiplier)
    values = [st.update(c) for c in candles]
    line = np.array([np.nan if v is None else v.line for v in values])
    direction = np.array([np.nan if v is None else v.direction for v in values])
    assert_matches(line, expected_line, period - 1, scale=df["close"].mean())
    np.testing.assert_array_equal(direction, expected_direction)
    flips = int((np.diff(direction[period - 1:]) != 0).sum())
    assert flips >= 10, "the series should exercise both trend directions"


@pytest.mark.parametrize("period", [5, 14])
def test_adx_and_directional_indicators_match_wilders_definition(candles: list[Candle], df: pd.DataFrame,
                                                                 period: int) -> None:
    up = df["high"].diff()
    down = -df["low"].diff()
    plus_dm = pd.Series(np.where((up > down) & (up > 0), up, 0.0))
    minus_dm = pd.Series(np.where((down > up) & (down > 0), down, 0.0))
    tr = reference_true_range(df)
    smoothed_tr = wilder(tr, period, start=1)
    plus_di = 100.0 * wilder(plus_dm, period, start=1) / smoothed_tr
    minus_di = 100.0 * wilder(minus_dm, period, start=1) / smoothed_tr
    dx = 100.0 * (plus_di - minus_di).abs() / (plus_di + minus_di)
    adx = wilder(dx, period, start=period)
    adx_indicator = ADX(period)
    values = [adx_indicator.update(c) for c in candles]
    first_warm = 2 * period - 1
    for field, expected in (("adx", adx), ("plus_di", plus_di), ("minus_di", minus_di)):
        actual = np.array([np.nan if v is None else getattr(v, field) for v in values])
        assert_matches(actual, expected.to_numpy(), first_warm, scale=100.0)


def test_every_indicator_reports_none_until_warm_and_keeps_its_last_value() -> None:
    candles = generate_candles(60)
    checks: list[tuple[Any, bool, int]] = [
        (EMA(9), False, 9), (SMA(20), False, 20), (RSI(14), False, 15), (MACD(12, 26, 9), False, 34),
        (ATR(14), True, 14), (BollingerBands(20), False, 20), (VWAP(), True, 1), (Supertrend(10), True, 10),
        (ADX(14), True, 28),
    ]
    for indicator, takes_candle, warm_after in checks:
        for i, candle in enumerate(candles[:warm_after]):
            value = indicator.update(candle if takes_candle else candle.close)
            name = type(indicator).__name__
            assert (value is None) == (i < warm_after - 1), f"{name} warm state wrong at input {i + 1}"
        assert indicator.value is not None
