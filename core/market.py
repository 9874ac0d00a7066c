"""Market data values shared by every layer: ticks, candles, IST session time.

Times are epoch seconds (UTC epoch, float for ticks, int for candle starts); they are rendered as IST
ISO-8601 only at the edges (HTTP, CSV, logs). Pure: no clock reads, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import NamedTuple

__all__ = [
    "IST",
    "Candle",
    "Tick",
    "bucket_start",
    "from_iso",
    "hhmm_seconds",
    "ist_day_start",
    "ist_seconds_of_day",
    "minute_start",
    "to_iso_ist",
]

IST = timezone(timedelta(hours=5, minutes=30), "IST")
IST_OFFSET = 19_800
DAY = 86_400
SESSION_OPEN_SECONDS = 9 * 3600 + 15 * 60  # 09:15 IST, where every timeframe bucket is anchored


class Tick(NamedTuple):
    """One trade print. A NamedTuple, not a dataclass: ticks are the hot path (cheap to make, immutable)."""

    symbol: str
    ts: float  # epoch seconds of the exchange time
    ltp: float
    volume: int = 0


@dataclass(frozen=True, slots=True)
class Candle:
    """A 1-minute (or aggregated) bar. `ts` is the bucket start; integrity fields tell how it was built."""

    symbol: str
    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: int = 0
    ticks: int = 0
    revision: int = 0
    first_tick_ts: float = 0.0
    last_tick_ts: float = 0.0
    timeframe: int = 60

    def as_json(self) -> dict[str, object]:
        return {"ts": _iso_minute(self.ts), "open": self.open, "high": self.high, "low": self.low,
                "close": self.close, "volume": self.volume}


def minute_start(ts: float) -> int:
    return int(ts // 60) * 60


def ist_day_start(ts: float) -> int:
    """Epoch of 00:00 IST on the IST day containing ts."""
    return int((ts + IST_OFFSET) // DAY) * DAY - IST_OFFSET


def ist_seconds_of_day(ts: float) -> float:
    return (ts + IST_OFFSET) % DAY


def hhmm_seconds(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 3600 + int(minutes) * 60


def bucket_start(ts: float, timeframe: int, anchor_seconds: int = SESSION_OPEN_SECONDS) -> int:
    """Start of the `timeframe`-second bucket holding ts, buckets aligned to 09:15 IST of ts's day.

    3600 gives 09:15, 10:15, ..., 15:15; 86400 gives one bucket per session starting 09:15.
    """
    anchor = ist_day_start(ts) + anchor_seconds
    return anchor + int((ts - anchor) // timeframe) * timeframe


def to_iso_ist(ts: float) -> str:
    return datetime.fromtimestamp(ts, IST).isoformat()


@lru_cache(maxsize=1 << 12)
def _iso_minute(ts: int) -> str:
    """Candle starts repeat across every response that shows them: format each once. 4,096 minutes are ten
    sessions (every symbol shares them) in under 1 MB; 65,536 held ~16 MB, which a fast replay fills."""
    return to_iso_ist(ts)


def from_iso(text: str) -> float:
    """ISO-8601 with an offset -> epoch seconds. A naive time is taken as IST (Dhan's exchange clock)."""
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=IST)
    return parsed.timestamp()

