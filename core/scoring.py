"""The score engine: indicators on several timeframes -> one explained, normalized `Score` per 1m candle.

Pipeline (pure: candles in, scores out; no clock, no I/O):

1. `ScoreEngine.on_candle(candle_1m)` aggregates the 1-minute candles of each symbol into every configured
   timeframe (`aggregate.IncrementalAggregator`: buckets anchored at 09:15 IST, a bucket closes with its
   last minute, or with the first minute of a later bucket if its last minutes never came). Each
   timeframe's `IndicatorSet` is updated once per CLOSED candle of that timeframe, so a 15m score changes
   every 15 minutes.
2. Raw indicator scores, each in -1..+1, bullish positive (ATR = the timeframe's Wilder ATR, which makes
   price distances comparable across symbols and timeframes):
     trend      ema_cross  = tanh((EMA fast - EMA slow) / (2 * ATR))
                ema_slope  = tanh(3 * (EMA slow - previous EMA slow) / ATR)
                macd_hist  = tanh(1.5 * MACD histogram / ATR)
                supertrend = Supertrend direction (+1 / -1)
                adx_di     = (+DI - -DI) / (+DI + -DI) * min(1, ADX / 40)   (the DI spread, weighted by
                             how strongly the market trends at all)
     momentum   rsi        = clamp((RSI - 50) / 30, -1, 1)                 (RSI 80 -> +1, 20 -> -1)
                macd_line  = tanh(MACD line / (2 * ATR))
     volatility bollinger_b = clamp(%B - 0.5, -1, 1)                       (upper band +0.5, lower -0.5;
                             a close a whole band width beyond a band +/-1)
                atr_regime = side * clamp(ATR / SMA(ATR) - 1, 0, 1)         (volatility expansion confirms
                             the side of price vs the Bollinger middle; contraction says nothing: 0)
     volume     vwap       = tanh((close - session VWAP) / (ATR * sqrt(session candles)))  (price wanders
                             from VWAP like a random walk, ~ATR * sqrt(n) after n candles: this is its
                             z-score rather than a distance that saturates by mid-session)
                volume_ratio = sign(close - open) * clamp(volume / SMA(volume) - 1, 0, 1)
                             (absent while average volume is 0: index feeds carry no volume)
   A component whose indicators are not warm yet is absent (not zero). The gains are calibrated so that
   on a driftless random walk each component's median |score| is ~0.25: noise stays near neutral and
   only a sustained move saturates a component.
3. Bucket score = mean of its present components. Timeframe score s_i = sum(bucket_weights[b] * bucket_b)
   / sum(bucket_weights[b]) over the present buckets (equal to the plain weighted sum when all are there
   and the weights add up to 1; the division keeps s_i in -1..+1 while a bucket is still warming up).
4. Multi-timeframe conflict reduction. With w_i = timeframe_weights and s_i over the timeframes that
   have a score:
       weighted  = sum(w_i * s_i) / sum(w_i)
       agreement = |sum(w_i * s_i)| / sum(w_i * |s_i|)    (1 when all agree in sign, -> 0 as they cancel;
                                                           1 when every s_i is 0: nothing disagrees)
       final     = weighted * agreement ** gamma          (gamma = mtf_conflict_gamma; 0 disables)
   so disagreement pulls the score toward neutral while agreement leaves it unchanged.
5. Outputs (`Score`):
       direction       = sign(final)
       score_0_100     = 100 * |final|                     (the weighted model's strength, before confidence)
       strength        = min(1, |final| / score_saturation)
       warmth          = sum(w_i * readiness_i) / sum(w_i) over ALL configured timeframes, readiness_i =
                         the fraction of that timeframe's indicators that are warm (missing history lowers
                         confidence instead of being guessed)
       entry_confidence = warmth * agreement
       entry_score      = strength * entry_confidence
     Agreement counts twice for an entry (it shrinks `final`, then the confidence): deliberately, an entry
     needs a case that is both strong and undisputed across timeframes. Warmth: with the default periods
     a timeframe is fully ready after ~34 of its candles (MACD 26 + 9), i.e. ~8.5 hours of 15m candles, so
     the shell should feed stored history through `on_candle` before live candles.
     For a position held in direction d (+1 long, -1 short):
       against   = min(1, max(0, -d * final) / score_saturation)   (strength of the move against d)
       fade      = clamp(-d * momentum, 0, 1), momentum = the w_i-weighted momentum bucket (RSI/MACD
                   turning against d: loss of momentum before the trend score flips)
       exit_confidence = warmth * (1 + agreement) / 2       (conflict halves it at most: it must not hold
                                                            a position in place the way it blocks an entry)
       exit_score = max(against, fade) * exit_confidence
     `Score.exit_score` is for the direction the engine was told (`held_direction`, 0 = flat -> 0);
     `Score.exit_for(d)` gives it for any d from the same components.
`components` carries every raw score ("300s.rsi"), bucket ("300s.trend"), timeframe score ("300s.score")
and readiness ("300s.readiness"), plus weighted, agreement, final, warmth, momentum (the cross-timeframe
momentum used by the fade), strength and saturation.

Candles for a symbol must arrive in time order, closed (revision 0); one with a ts not after the last one
seen (a duplicate or a revision) is ignored — indicators cannot take a value back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from core.aggregate import IncrementalAggregator
from core.indicators import ADX, ATR, EMA, MACD, RSI, SMA, VWAP, BollingerBands, Supertrend
from core.market import Candle

__all__ = [
    "BUCKETS",
    "IndicatorParams",
    "IndicatorSet",
    "Score",
    "ScoreEngine",
    "StrategyConfig",
    "combine_timeframes",
    "exit_score",
]

BUCKETS = ("trend", "momentum", "volatility", "volume")
MINUTE = 60

# Gains mapping indicator magnitudes (in ATRs) onto tanh; calibrated on a driftless random walk (module
# docstring) so that noise gives a median |score| near 0.25 and sustained trends approach 1.
EMA_CROSS_GAIN = 0.5
EMA_SLOPE_GAIN = 3.0  # EMA(21) moves ~alpha * gap per candle: a 1-ATR gap is a ~0.09-ATR slope
MACD_HIST_GAIN = 1.5
MACD_LINE_GAIN = 0.5
ADX_FULL_TREND = 40.0  # ADX at which the DI spread counts fully
RSI_FULL_SCALE = 30.0  # RSI points from 50 that score +/-1


class StrategyConfig(Protocol):
    """What the engine reads from `config.settings.StrategySettings` (the core does not import it)."""

    @property
    def timeframes(self) -> tuple[int, ...]: ...
    @property
    def timeframe_weights(self) -> Mapping[str, float]: ...
    @property
    def bucket_weights(self) -> Mapping[str, float]: ...
    @property
    def warmup_candles(self) -> int: ...
    @property
    def mtf_conflict_gamma(self) -> float: ...
    @property
    def score_saturation(self) -> float: ...
    @property
    def ema_fast(self) -> int: ...
    @property
    def ema_slow(self) -> int: ...
    @property
    def rsi_period(self) -> int: ...
    @property
    def macd_fast(self) -> int: ...
    @property
    def macd_slow(self) -> int: ...
    @property
    def macd_signal(self) -> int: ...
    @property
    def atr_period(self) -> int: ...
    @property
    def atr_regime_period(self) -> int: ...
    @property
    def bollinger_period(self) -> int: ...
    @property
    def bollinger_k(self) -> float: ...
    @property
    def supertrend_period(self) -> int: ...
    @property
    def supertrend_multiplier(self) -> float: ...
    @property
    def adx_period(self) -> int: ...
    @property
    def volume_avg_period(self) -> int: ...


@dataclass(frozen=True)
class IndicatorParams:
    ema_fast: int = 9
    ema_slow: int = 21
    rsi_period: int = 14
    macd_fast: int = 12
    macd_slow: int = 26
    macd_signal: int = 9
    atr_period: int = 14
    atr_regime_period: int = 20
    bollinger_period: int = 20
    bollinger_k: float = 2.0
    supertrend_period: int = 10
    supertrend_multiplier: float = 3.0
    adx_period: int = 14
    volume_avg_period: int = 20

    def __post_init__(self) -> None:
        if self.ema_fast >= self.ema_slow:
            raise ValueError(f"ema_fast ({self.ema_fast}) must be shorter than ema_slow ({self.ema_slow})")
        if self.macd_fast >= self.macd_slow:
            raise ValueError(f"macd_fast ({self.macd_fast}) must be shorter than macd_slow ({self.macd_slow})")

    @classmethod
    def from_config(cls, config: StrategyConfig) -> IndicatorParams:
        return cls(**{name: getattr(config, name) for name in cls.__dataclass_fields__})


def _clamp(x: float, low: float = -1.0, high: float = 1.0) -> float:
    return low if x < low else high if x > high else x


def _sign(x: float) -> float:
    return 1.0 if x > 0.0 else -1.0 if x < 0.0 else 0.0


class IndicatorSet:
    """Every indicator of one (symbol, timeframe), updated per closed candle, with its cached scores.

    `update` is the hot path of the strategy (once per 1m candle for the 1m set): scores are accumulated
    in locals and written straight into a dict with precomputed keys instead of building lists.
    """

    INDICATOR_COUNT = 11

    def __init__(self, timeframe: int, params: IndicatorParams, bucket_weights: Mapping[str, float]) -> None:
        self.timeframe = timeframe
        self.params = params
        self._weights = tuple(float(bucket_weights.get(b, 0.0)) for b in BUCKETS)
        prefix = f"{timeframe}s."
        self._keys = {name: prefix + name for name in (
            "ema_cross", "ema_slope", "macd_hist", "supertrend", "adx_di", "rsi", "macd_line", "bollinger_b",
            "atr_regime", "vwap", "volume_ratio", *BUCKETS, "score", "readiness")}
        self.ema_fast = EMA(params.ema_fast)
        self.ema_slow = EMA(params.ema_slow)
        self.rsi = RSI(params.rsi_period)
        self.macd = MACD(params.macd_fast, params.macd_slow, params.macd_signal)
        self.atr = ATR(params.atr_period)
        self.atr_average = SMA(params.atr_regime_period)
        self.bollinger = BollingerBands(params.bollinger_period, params.bollinger_k)
        self.vwap = VWAP()
        self.supertrend = Supertrend(params.supertrend_period, params.supertrend_multiplier)
        self.adx = ADX(params.adx_period)
        self.volume_average = SMA(params.volume_avg_period)
        self.candles = 0
        self.last_ts: int | None = None
        # Cached results of the last update: read on every 1m candle, recomputed once per timeframe close.
        self.score: float | None = None
        self.momentum: float | None = None
        self.readiness = 0.0
        self.components: dict[str, float] = {}

    def update(self, candle: Candle) -> None:
        close = candle.close
        prev_ema_slow = self.ema_slow.value
        ema_fast = self.ema_fast.update(close)
        ema_slow = self.ema_slow.update(close)
        rsi = self.rsi.update(close)
        macd = self.macd.update(close)
        atr = self.atr.update(candle)
        atr_average = self.atr_average.update(atr) if atr is not None else None
        bands = self.bollinger.update(close)
        vwap = self.vwap.update(candle)
        supertrend = self.supertrend.update(candle)
        adx = self.adx.update(candle)
        volume_average = self.volume_average.update(float(candle.volume))
        self.candles += 1
        self.last_ts = candle.ts

        k = self._keys
        c: dict[str, float] = {}
        trend = momentum = volatility = volume = 0.0
        n_trend = n_momentum = n_volatility = n_volume = 0
        tanh = math.tanh
        if atr is not None and atr > 0.0:
            if ema_fast is not None and ema_slow is not None:
                x = c[k["ema_cross"]] = tanh(EMA_CROSS_GAIN * (ema_fast - ema_slow) / atr)
                trend += x
                n_trend += 1
                if prev_ema_slow is not None:
                    x = c[k["ema_slope"]] = tanh(EMA_SLOPE_GAIN * (ema_slow - prev_ema_slow) / atr)
                    trend += x
                    n_trend += 1
            if macd is not None:
                x = c[k["macd_hist"]] = tanh(MACD_HIST_GAIN * macd.hist / atr)
                trend += x
                n_trend += 1
                x = c[k["macd_line"]] = tanh(MACD_LINE_GAIN * macd.line / atr)
                momentum += x
                n_momentum += 1
            if vwap is not None:
                x = c[k["vwap"]] = tanh((close - vwap) / (atr * math.sqrt(self.vwap.session_candles)))
                volume += x
                n_volume += 1
        if supertrend is not None:
            x = c[k["supertrend"]] = float(supertrend.direction)
            trend += x
            n_trend += 1
        if adx is not None:
            di_sum = adx.plus_di + adx.minus_di
            spread = (adx.plus_di - adx.minus_di) / di_sum if di_sum > 0.0 else 0.0
            x = c[k["adx_di"]] = spread * min(1.0, adx.adx / ADX_FULL_TREND)
            trend += x
            n_trend += 1
        if rsi is not None:
            x = c[k["rsi"]] = _clamp((rsi - 50.0) / RSI_FULL_SCALE)
            momentum += x
            n_momentum += 1
        if bands is not None:
            x = c[k["bollinger_b"]] = _clamp(bands.percent_b - 0.5)
            volatility += x
            n_volatility += 1
            if atr is not None and atr_average is not None and atr_average > 0.0:
                x = c[k["atr_regime"]] = (_sign(close - bands.middle)
                                          * _clamp(atr / atr_average - 1.0, 0.0, 1.0))
                volatility += x
                n_volatility += 1
        if volume_average is not None and volume_average > 0.0:
            x = c[k["volume_ratio"]] = (_sign(close - candle.open)
                                        * _clamp(candle.volume / volume_average - 1.0, 0.0, 1.0))
            volume += x
            n_volume += 1

        weighted = weight_sum = 0.0
        w_trend, w_momentum, w_volatility, w_volume = self._weights
        if n_trend:
            x = c[k["trend"]] = trend / n_trend
            weighted += w_trend * x
            weight_sum += w_trend
        if n_momentum:
            x = c[k["momentum"]] = momentum / n_momentum
            weighted += w_momentum * x
            weight_sum += w_momentum
            self.momentum = x
        else:
            self.momentum = None
        if n_volatility:
            x = c[k["volatility"]] = volatility / n_volatility
            weighted += w_volatility * x
            weight_sum += w_volatility
        if n_volume:
            x = c[k["volume"]] = volume / n_volume
            weighted += w_volume * x
            weight_sum += w_volume
        if self.readiness < 1.0:
            warm = sum(1 for v in (ema_fast, ema_slow, rsi, macd, atr, atr_average, bands, vwap, supertrend,
                                   adx, volume_average) if v is not None)
            self.readiness = warm / self.INDICATOR_COUNT
        c[k["readiness"]] = self.readiness
        if weight_sum > 0.0:
            self.score = c[k["score"]] = weighted / weight_sum
        else:
            self.score = None
        self.components = c


@dataclass(frozen=True)
class Score:
    """One symbol's verdict after a closed 1m candle. See the module docstring for every definition."""

    score_0_100: float
    direction: int  # +1 bullish, -1 bearish, 0 neutral
    entry_score: float  # 0..1
    exit_score: float  # 0..1, for `held` (0 when flat)
    entry_confidence: float  # 0..1
    exit_confidence: float  # 0..1
    components: dict[str, float] = field(default_factory=dict)
    symbol: str = ""
    ts: int = 0  # start of the 1m candle that produced it
    held: int = 0  # the position direction exit_score refers to

    def exit_for(self, held: int) -> float:
        """exit_score for a position held in direction `held` (+1 long, -1 short; 0 -> 0)."""
        c = self.components
        return exit_score(held, c["final"], c["momentum"], c["saturation"], self.exit_confidence)

    def as_json(self) -> dict[str, object]:
        """Compact plain data for log lines and the trade timeline (floats to 4 decimals)."""
        return {
            "symbol": self.symbol, "ts": self.ts, "score": round(self.score_0_100, 2),
            "direction": self.direction, "entry_score": round(self.entry_score, 4),
            "exit_score": round(self.exit_score, 4), "entry_confidence": round(self.entry_confidence, 4),
            "exit_confidence": round(self.exit_confidence, 4), "held": self.held,
            "components": {k: round(v, 4) for k, v in self.components.items()},
        }


def combine_timeframes(scores: Iterable[tuple[float, float]], gamma: float) -> tuple[float, float, float]:
    """(weight, score) pairs -> (weighted, agreement, final) by the conflict-reduction rule (docstring, 4)."""
    signed = absolute = weights = 0.0
    for weight, score in scores:
        signed += weight * score
        absolute += weight * abs(score)
        weights += weight
    if weights <= 0.0:
        return 0.0, 1.0, 0.0
    weighted = signed / weights
    agreement = abs(signed) / absolute if absolute > 0.0 else 1.0
    final = weighted if gamma == 0.0 or agreement == 1.0 else weighted * agreement ** gamma
    return weighted, agreement, final


def exit_score(held: int, final: float, momentum: float, saturation: float, exit_confidence: float) -> float:
    """max(against, fade) * exit_confidence for a position held in direction `held` (docstring, 5)."""
    if held == 0:
        return 0.0
    against = min(1.0, max(0.0, -held * final) / saturation)
    fade = _clamp(-held * momentum, 0.0, 1.0)
    return max(against, fade) * exit_confidence


class _SymbolState:
    def __init__(self, timeframes: tuple[int, ...], params: IndicatorParams,
                 bucket_weights: Mapping[str, float]) -> None:
        self.sets = {tf: IndicatorSet(tf, params, bucket_weights) for tf in timeframes}
        self.aggregators = {tf: IncrementalAggregator(tf) for tf in timeframes if tf != MINUTE}
        self.minutes = 0
        self.last_ts: int | None = None


class ScoreEngine:
    """Per-symbol multi-timeframe scoring of closed 1-minute candles (one engine serves many symbols)."""

    def __init__(self, settings: StrategyConfig) -> None:
        self.timeframes = tuple(sorted(set(settings.timeframes)))
        if not self.timeframes:
            raise ValueError("strategy.timeframes is empty")
        for tf in self.timeframes:
            if tf % MINUTE or tf < MINUTE:
                raise ValueError(f"timeframe {tf} is not a positive multiple of 60 seconds")
        self.weights = {tf: float(settings.timeframe_weights.get(str(tf), 0.0)) for tf in self.timeframes}
        if sum(self.weights.values()) <= 0.0:
            raise ValueError("strategy.timeframe_weights gives every configured timeframe weight 0")
        self.bucket_weights = {b: float(settings.bucket_weights.get(b, 0.0)) for b in BUCKETS}
        if sum(self.bucket_weights.values()) <= 0.0:
            raise ValueError("strategy.bucket_weights are all 0")
        self.gamma = float(settings.mtf_conflict_gamma)
        self.saturation = float(settings.score_saturation)
        if self.saturation <= 0.0:
            raise ValueError("strategy.score_saturation must be > 0")
        self.warmup_candles = int(settings.warmup_candles)
        self.params = IndicatorParams.from_config(settings)
        self._total_weight = sum(self.weights.values())
        self._symbols: dict[str, _SymbolState] = {}

    def on_candle(self, candle: Candle, held_direction: int = 0) -> Score | None:
        """Feed one closed 1m candle; a Score once the symbol has `warmup_candles` minutes, else None."""
        if candle.timeframe != MINUTE:
            raise ValueError(f"ScoreEngine takes 1-minute candles, got timeframe {candle.timeframe}")
        state = self._symbols.get(candle.symbol)
        if state is None:
            state = self._symbols[candle.symbol] = _SymbolState(self.timeframes, self.params, self.bucket_weights)
        if state.last_ts is not None and candle.ts <= state.last_ts:
            return None
        state.last_ts = candle.ts
        state.minutes += 1
        for tf, indicator_set in state.sets.items():
            if tf == MINUTE:
                indicator_set.update(candle)
            else:
                closed = state.aggregators[tf].add(candle)
                if closed is not None:
                    indicator_set.update(closed)
        if state.minutes < self.warmup_candles:
            return None
        return self._score(state, candle, held_direction)

    def warm(self, symbol: str) -> bool:
        state = self._symbols.get(symbol)
        return state is not None and state.minutes >= self.warmup_candles

    def reset(self, symbol: str) -> None:
        self._symbols.pop(symbol, None)

    def indicator_set(self, symbol: str, timeframe: int) -> IndicatorSet | None:
        state = self._symbols.get(symbol)
        return None if state is None else state.sets.get(timeframe)

    def _score(self, state: _SymbolState, candle: Candle, held: int) -> Score | None:
        components: dict[str, float] = {}
        scored: list[tuple[float, float]] = []
        momentum_sum = momentum_weight = warmth = 0.0
        for tf, indicator_set in state.sets.items():
            weight = self.weights[tf]
            components.update(indicator_set.components)
            warmth += weight * indicator_set.readiness
            if indicator_set.score is not None:
                scored.append((weight, indicator_set.score))
            if indicator_set.momentum is not None:
                momentum_sum += weight * indicator_set.momentum
                momentum_weight += weight
        if not scored:
            return None
        weighted, agreement, final = combine_timeframes(scored, self.gamma)
        warmth /= self._total_weight
        momentum = momentum_sum / momentum_weight if momentum_weight > 0.0 else 0.0
        strength = min(1.0, abs(final) / self.saturation)
        entry_confidence = warmth * agreement
        exit_confidence = warmth * (1.0 + agreement) / 2.0
        components.update(weighted=weighted, agreement=agreement, final=final, warmth=warmth,
                          momentum=momentum, strength=strength, saturation=self.saturation)
        return Score(
            score_0_100=100.0 * abs(final),
            direction=1 if final > 0.0 else -1 if final < 0.0 else 0,
            entry_score=strength * entry_confidence,
            exit_score=exit_score(held, final, momentum, self.saturation, exit_confidence),
            entry_confidence=entry_confidence,
            exit_confidence=exit_confidence,
            components=components,
            symbol=candle.symbol,
            ts=candle.ts,
            held=held,
        )
