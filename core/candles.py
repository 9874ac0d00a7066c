"""Ticks -> 1-minute candles in event time, one `CandleBook` per symbol. Pure: no clock, no I/O, no threads.

Event time is the tick's own `ts`, so a replay builds the same candles as the live run it recorded.

Rules (the candle actor relies on every one of them):
- A candle's `ts` is its minute start; open is the price of the tick with the EARLIEST ts in the minute,
  close the price of the tick with the LATEST ts (not the last to arrive). Ties on ts: the earlier arrival
  keeps the open, the later arrival takes the close.
- The forming candle closes (`CandleClosed`) when a tick for a later minute arrives, when `advance(now)`
  is called with `now >= its minute end`, or on `close_all()`. `CandleClosed` events of one book come in
  strictly increasing `ts` order, each with revision 0: a consumer that only wants the in-order stream
  (the strategy, the multi-timeframe aggregators) reads `CandleClosed` and ignores the rest.
- A tick for a minute before the forming one is late. It revises that minute (`CandleRevised`, revision+1)
  if `watermark - minute_end <= grace_seconds` (watermark = the latest tick ts seen) and the minute is
  still held in memory (the last few closed candles); otherwise it is dropped (`LateTickDropped`).
- A late tick within grace for a minute that never had a candle (inside a gap) creates that candle as
  `CandleRevised` with revision 1 — "revision 0 was the gap". It is not a `CandleClosed`, so the in-order
  stream above stays in order; the store upserts revisions the same way it stores closes.
- Several late ticks for the same minute in one `apply()` call give one `CandleRevised` (revision + 1
  once) holding all of them: the store writes each revised minute once per batch.
- Minutes with no tick between two candles of the same IST day are recorded (`GapRecorded`, half-open
  [from_ts, to_ts)); no flat candle is made up. The night between two sessions is not a gap.
- `restored` (the last persisted candle) is held as the newest closed candle: a tick for its minute
  revises it (revision continues from the stored one) instead of making a duplicate, and minutes before
  it belong to the store, not to this book (late ticks for them are dropped).
- The caller routes ticks by symbol: `apply` does not check `tick.symbol` (the hot path stays lean).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from core.market import Candle, Tick, ist_day_start

__all__ = [
    "CandleBook",
    "CandleBookStats",
    "CandleClosed",
    "CandleEvent",
    "CandleRevised",
    "GapRecorded",
    "LateTickDropped",
]

MINUTE = 60


@dataclass(frozen=True, slots=True)
class CandleClosed:
    candle: Candle


@dataclass(frozen=True, slots=True)
class CandleRevised:
    candle: Candle


@dataclass(frozen=True, slots=True)
class LateTickDropped:
    tick: Tick
    minute_ts: int


@dataclass(frozen=True, slots=True)
class GapRecorded:
    """No tick at all in the minutes [from_ts, to_ts) between two candles of one session."""

    symbol: str
    from_ts: int
    to_ts: int

    @property
    def minutes(self) -> int:
        return (self.to_ts - self.from_ts) // MINUTE


CandleEvent = CandleClosed | CandleRevised | LateTickDropped | GapRecorded


@dataclass(frozen=True, slots=True)
class CandleBookStats:
    ticks: int = 0  # every tick given to apply(), kept or dropped
    late_revised: int = 0  # late ticks folded into a held (or gap) minute
    late_dropped: int = 0
    gaps: int = 0  # GapRecorded events
    gap_minutes: int = 0


class _FormingBar:
    """The one mutable slot of a book: updated in place by the hot loop, frozen into a Candle on close."""

    __slots__ = ("close", "end", "first_ts", "high", "last_ts", "low", "open", "ticks", "ts", "volume")

    def __init__(self, minute: int, tick: Tick) -> None:
        price = tick[2]
        self.ts = minute
        self.end = minute + MINUTE
        self.open = self.high = self.low = self.close = price
        self.volume = tick[3]
        self.ticks = 1
        self.first_ts = self.last_ts = tick[1]


class CandleBook:
    def __init__(self, symbol: str, grace_seconds: float = 5.0, restored: Candle | None = None) -> None:
        if grace_seconds < 0:
            raise ValueError("grace_seconds must be >= 0")
        self.symbol = symbol
        self.grace_seconds = float(grace_seconds)
        # Enough closed minutes to cover any minute still within grace, plus a margin.
        self._hold = max(4, math.ceil(self.grace_seconds / MINUTE) + 3)
        self._held: dict[int, Candle] = {}
        self._floor = -math.inf  # minutes before this are not held any more (evicted or the store's)
        self._forming: _FormingBar | None = None
        self._last_closed: Candle | None = None
        self._watermark = -math.inf  # latest tick ts seen, not counting the forming bar's own ticks
        self._revised_in_call: dict[int, int] = {}  # minute -> index of its CandleRevised in this call
        self._ticks = 0
        self._late_revised = 0
        self._late_dropped = 0
        self._gaps = 0
        self._gap_minutes = 0
        if restored is not None:
            if restored.timeframe != MINUTE:
                raise ValueError(f"restored candle must be a 1-minute candle, got timeframe {restored.timeframe}")
            if restored.symbol != symbol:
                raise ValueError(f"restored candle is for {restored.symbol}, not {symbol}")
            self._held[restored.ts] = restored
            self._last_closed = restored
            self._floor = restored.ts
            self._watermark = restored.last_tick_ts if restored.last_tick_ts else float(restored.ts)

    # ----------------------------------------------------------------------------------------- queries
    @property
    def stats(self) -> CandleBookStats:
        return CandleBookStats(self._ticks, self._late_revised, self._late_dropped, self._gaps,
                               self._gap_minutes)

    @property
    def watermark(self) -> float | None:
        """The latest tick ts seen (None before any)."""
        bar = self._forming
        mark = max(self._watermark, bar.last_ts) if bar is not None else self._watermark
        return None if mark == -math.inf else mark

    def forming(self) -> Candle | None:
        bar = self._forming
        if bar is None:
            return None
        return Candle(self.symbol, bar.ts, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.ticks,
                      0, bar.first_ts, bar.last_ts)

    def last_closed(self) -> Candle | None:
        return self._last_closed

    def held(self) -> list[Candle]:
        """The closed candles still open to revision, oldest first."""
        return [self._held[minute] for minute in sorted(self._held)]

    # ----------------------------------------------------------------------------------------- commands
    def apply(self, ticks: Iterable[Tick]) -> list[CandleEvent]:
        """Fold a batch of ticks (arrival order) into the book; return what happened, in order."""
        if not isinstance(ticks, (list, tuple)):
            ticks = list(ticks)
        self._ticks += len(ticks)
        if self._revised_in_call:
            self._revised_in_call.clear()
        events: list[CandleEvent] = []
        bar = self._forming
        # The hot loop works on locals and writes them back to the slot only when it leaves the fast
        # path (a tick outside the forming minute) or at the end of the batch.
        if bar is not None:
            start, end = bar.ts, bar.end
            open_, high, low, close = bar.open, bar.high, bar.low, bar.close
            volume, count, first_ts, last_ts = bar.volume, bar.ticks, bar.first_ts, bar.last_ts
        else:
            start = end = 0
            open_ = high = low = close = first_ts = last_ts = 0.0
            volume = count = 0
        for tick in ticks:
            ts = tick[1]
            if start <= ts < end:
                price = tick[2]
                if price > high:
                    high = price
                elif price < low:
                    low = price
                volume += tick[3]
                count += 1
                if ts >= last_ts:
                    close = price
                    last_ts = ts
                elif ts < first_ts:
                    open_ = price
                    first_ts = ts
                continue
            if bar is not None:
                bar.open, bar.high, bar.low, bar.close = open_, high, low, close
                bar.volume, bar.ticks, bar.first_ts, bar.last_ts = volume, count, first_ts, last_ts
            self._route(tick, events)
            bar = self._forming
            if bar is not None:
                start, end = bar.ts, bar.end
                open_, high, low, close = bar.open, bar.high, bar.low, bar.close
                volume, count, first_ts, last_ts = bar.volume, bar.ticks, bar.first_ts, bar.last_ts
            else:
                start = end = 0
        if bar is not None:
            bar.open, bar.high, bar.low, bar.close = open_, high, low, close
            bar.volume, bar.ticks, bar.first_ts, bar.last_ts = volume, count, first_ts, last_ts
        return events

    def advance(self, now: float) -> list[CandleEvent]:
        """Close the forming candle if its minute has ended by `now` (the caller's clock)."""
        bar = self._forming
        if bar is None or now < bar.end:
            return []
        events: list[CandleEvent] = []
        self._close_forming(events)
        return events

    def close_all(self) -> list[CandleEvent]:
        """Close the forming candle whatever the time (shutdown, end of a replay)."""
        events: list[CandleEvent] = []
        if self._forming is not None:
            self._close_forming(events)
        return events

    # ----------------------------------------------------------------------------------------- internals
    def _route(self, tick: Tick, events: list[CandleEvent]) -> None:
        """A tick outside the forming minute: it starts a new minute, or it is late."""
        ts = tick[1]
        minute = int(ts // MINUTE) * MINUTE
        bar = self._forming
        if bar is not None:
            is_new = minute > bar.ts
        else:
            is_new = self._last_closed is None or minute > self._last_closed.ts
        if is_new:
            if bar is not None:
                self._close_forming(events)
            previous = self._last_closed
            if previous is not None:
                self._record_gap(previous.ts + MINUTE, minute, events)
            self._forming = _FormingBar(minute, tick)
            if ts > self._watermark:
                self._watermark = ts
            return
        if bar is not None and bar.last_ts > self._watermark:
            self._watermark = bar.last_ts
        self._late(tick, minute, events)

    def _record_gap(self, from_ts: int, to_ts: int, events: list[CandleEvent]) -> None:
        if to_ts > from_ts and ist_day_start(from_ts) == ist_day_start(to_ts):
            self._gaps += 1
            self._gap_minutes += (to_ts - from_ts) // MINUTE
            events.append(GapRecorded(self.symbol, from_ts, to_ts))

    def _late(self, tick: Tick, minute: int, events: list[CandleEvent]) -> None:
        if self._watermark - (minute + MINUTE) > self.grace_seconds or minute < self._floor:
            self._late_dropped += 1
            events.append(LateTickDropped(tick, minute))
            return
        _symbol, ts, price, volume = tick
        held = self._held.get(minute)
        if held is None:
            # Not held but at or after the floor: no candle was ever closed for this minute (a gap).
            revised = Candle(self.symbol, minute, price, price, price, price, volume, 1, 1, ts, ts)
        else:
            first_ts, open_ = (ts, price) if ts < held.first_tick_ts else (held.first_tick_ts, held.open)
            last_ts, close = (ts, price) if ts >= held.last_tick_ts else (held.last_tick_ts, held.close)
            already = minute in self._revised_in_call
            revised = Candle(self.symbol, minute, open_, max(held.high, price), min(held.low, price), close,
                             held.volume + volume, held.ticks + 1,
                             held.revision if already else held.revision + 1, first_ts, last_ts)
        self._late_revised += 1
        self._held[minute] = revised
        if self._last_closed is None or minute >= self._last_closed.ts:
            self._last_closed = revised
        index = self._revised_in_call.get(minute)
        if index is None:
            self._revised_in_call[minute] = len(events)
            events.append(CandleRevised(revised))
        else:
            events[index] = CandleRevised(revised)
        self._evict()

    def _close_forming(self, events: list[CandleEvent]) -> None:
        bar = self._forming
        assert bar is not None
        candle = Candle(self.symbol, bar.ts, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.ticks,
                        0, bar.first_ts, bar.last_ts)
        self._forming = None
        if bar.last_ts > self._watermark:
            self._watermark = bar.last_ts
        self._held[bar.ts] = candle
        self._last_closed = candle
        events.append(CandleClosed(candle))
        self._evict()

    def _evict(self) -> None:
        while len(self._held) > self._hold:
            oldest = min(self._held)
            del self._held[oldest]
            self._floor = max(self._floor, oldest + MINUTE)
            # A coalesced revision index may point at an evicted minute; it stays valid in `events`.
            self._revised_in_call.pop(oldest, None)
