"""1-minute candles -> candles of any timeframe, in buckets aligned to 09:15 IST. Pure: no clock, no I/O.

A bucket's candle: open of its first minute, close of its last, max high, min low, summed volume and
ticks, first/last tick times of its first/last minute, revision = the highest revision among its minutes
(so a bucket built from a revised minute says so), `timeframe` set. Empty buckets (no minute at all) are
not made up.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from core.market import Candle, bucket_start

__all__ = ["IncrementalAggregator", "aggregate", "check_timeframe", "last_n"]

MINUTE = 60
MAX_TIMEFRAME = 86_400


def check_timeframe(timeframe: int) -> int:
    """The timeframe if it is a multiple of 60 in 60..86400; ValueError (bad input) otherwise."""
    if isinstance(timeframe, bool) or not isinstance(timeframe, int):
        raise ValueError(f"timeframe must be an integer number of seconds, got {timeframe!r}")
    if timeframe % MINUTE or not MINUTE <= timeframe <= MAX_TIMEFRAME:
        raise ValueError(f"timeframe {timeframe} is not a multiple of 60 in 60..86400")
    return timeframe


class _Bucket:
    """The mutable accumulator of one bucket; frozen into a Candle when handed out."""

    __slots__ = ("close", "first_tick_ts", "high", "last_tick_ts", "low", "open", "revision", "symbol",
                 "ticks", "ts", "volume")

    def __init__(self, bucket_ts: int, first: Candle) -> None:
        self.symbol = first.symbol
        self.ts = bucket_ts
        self.open, self.high, self.low, self.close = first.open, first.high, first.low, first.close
        self.volume, self.ticks, self.revision = first.volume, first.ticks, first.revision
        self.first_tick_ts, self.last_tick_ts = first.first_tick_ts, first.last_tick_ts

    def merge(self, minute: Candle) -> None:
        if minute.high > self.high:
            self.high = minute.high
        if minute.low < self.low:
            self.low = minute.low
        self.close = minute.close
        self.volume += minute.volume
        self.ticks += minute.ticks
        if minute.revision > self.revision:
            self.revision = minute.revision
        self.last_tick_ts = minute.last_tick_ts

    def freeze(self, timeframe: int) -> Candle:
        return Candle(self.symbol, self.ts, self.open, self.high, self.low, self.close, self.volume,
                      self.ticks, self.revision, self.first_tick_ts, self.last_tick_ts, timeframe)


def _in_order(candles: Sequence[Candle]) -> Sequence[Candle]:
    for earlier, later in zip(candles, candles[1:], strict=False):
        if later.ts < earlier.ts:
            return sorted(candles, key=lambda c: c.ts)
    return candles


def aggregate(candles: Sequence[Candle], timeframe: int) -> list[Candle]:
    """1-minute candles of one symbol (oldest first; sorted if not) -> timeframe candles, oldest first."""
    check_timeframe(timeframe)
    result: list[Candle] = []
    acc: _Bucket | None = None
    bucket_end = 0
    for minute in _in_order(candles):
        if acc is not None and minute.ts < bucket_end:
            acc.merge(minute)
            continue
        if acc is not None:
            result.append(acc.freeze(timeframe))
        start = bucket_start(minute.ts, timeframe)
        bucket_end = start + timeframe
        acc = _Bucket(start, minute)
    if acc is not None:
        result.append(acc.freeze(timeframe))
    return result


def last_n(candles_1m: Sequence[Candle], timeframe: int, limit: int,
           partial: Candle | None = None) -> list[Candle]:
    """The `limit` newest timeframe candles, oldest first, for the HTTP API.

    `partial` is the forming minute: merged into the newest bucket when it falls in it, appended as a new
    bucket when it is later, ignored when it is not newer than the last closed minute (already closed).
    Only the tail of `candles_1m` that can reach the answer is aggregated.
    """
    check_timeframe(timeframe)
    if limit <= 0:
        return []
    minutes = _in_order(candles_1m)
    if partial is not None and minutes and partial.ts <= minutes[-1].ts:
        partial = None
    if partial is not None:
        minutes = [*minutes, partial]
    # At most timeframe/60 minutes per bucket: this tail always covers `limit` buckets.
    tail = minutes[-limit * (timeframe // MINUTE):]
    if len(tail) < len(minutes):
        # The tail may start in the middle of a bucket: widen it to that bucket's first minute.
        first_bucket = bucket_start(tail[0].ts, timeframe)
        index = len(minutes) - len(tail)
        while index > 0 and minutes[index - 1].ts >= first_bucket:
            index -= 1
        tail = minutes[index:]
    return aggregate(tail, timeframe)[-limit:]


class IncrementalAggregator:
    """Closed 1-minute candles in, completed timeframe candles out, one at a time (the strategy's feed).

    `add` returns a bucket as soon as it is known complete: when the minute that ends it arrives, or else
    when a minute of a later bucket arrives. If one `add` completes two buckets (a gap across a bucket
    boundary, and the new minute also ends its own bucket), the older is returned now and the newer on
    the next `add` or `flush`. Minutes at or before the last one added are ignored (revisions do not
    reopen a bucket: feed `CandleClosed` candles only).
    """

    def __init__(self, timeframe: int) -> None:
        self.timeframe = check_timeframe(timeframe)
        self._acc: _Bucket | None = None
        self._end = 0
        self._returned = False  # the current bucket was already handed out (its last minute came)
        self._last_minute: int | None = None

    def add(self, candle_1m: Candle) -> Candle | None:
        if self._last_minute is not None and candle_1m.ts <= self._last_minute:
            return None
        self._last_minute = candle_1m.ts
        completed: Candle | None = None
        if self._acc is not None and candle_1m.ts < self._end:
            self._acc.merge(candle_1m)
        else:
            if self._acc is not None and not self._returned:
                completed = self._acc.freeze(self.timeframe)
            start = bucket_start(candle_1m.ts, self.timeframe)
            self._end = start + self.timeframe
            self._acc = _Bucket(start, candle_1m)
            self._returned = False
        if completed is None and candle_1m.ts + MINUTE >= self._end:
            self._returned = True
            return self._acc.freeze(self.timeframe)
        return completed

    def add_all(self, candles_1m: Iterable[Candle]) -> list[Candle]:
        return [bucket for candle in candles_1m if (bucket := self.add(candle)) is not None]

    def current(self) -> Candle | None:
        """The bucket being built (None if none, or if it was already returned)."""
        if self._acc is None or self._returned:
            return None
        return self._acc.freeze(self.timeframe)

    def flush(self) -> Candle | None:
        """Hand out the bucket being built, complete or not (session end), and start afresh."""
        bucket = self.current()
        self._acc = None
        self._returned = False
        return bucket
