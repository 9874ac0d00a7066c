"""aggregate / last_n / IncrementalAggregator: 1-minute candles -> 09:15-anchored timeframe candles."""

from __future__ import annotations

import random
from datetime import datetime

import pytest

from core.aggregate import IncrementalAggregator, aggregate, check_timeframe, last_n
from core.market import IST, Candle

OPEN = int(datetime(2026, 11, 20, 9, 15, tzinfo=IST).timestamp())


def minute(offset_minutes: int, open_: float, high: float, low: float, close: float,
           volume: int = 10, ticks: int = 2, revision: int = 0) -> Candle:
    ts = OPEN + 60 * offset_minutes
    return Candle("NIFTY", ts, open_, high, low, close, volume, ticks, revision, ts + 1.0, ts + 59.0)


def flat(offset_minutes: int, price: float, volume: int = 10) -> Candle:
    return minute(offset_minutes, price, price + 1, price - 1, price + 0.5, volume)


def hhmm(ts: int) -> str:
    return datetime.fromtimestamp(ts, IST).strftime("%H:%M")


def session_minutes(seed: int, gaps: int = 25) -> list[Candle]:
    """09:15-15:29 one-minute candles with random prices and a few missing minutes."""
    rng = random.Random(seed)
    missing = set(rng.sample(range(375), gaps))
    out = []
    price = 24_000.0
    for m in range(375):
        if m in missing:
            continue
        o = price
        c = round(o + rng.uniform(-20, 20), 2)
        out.append(minute(m, o, max(o, c) + rng.uniform(0, 5), min(o, c) - rng.uniform(0, 5), c,
                          rng.randint(0, 5000), rng.randint(1, 300), rng.choice((0, 0, 0, 1))))
        price = c
    return out


def test_hourly_buckets_are_anchored_at_0915() -> None:
    candles = aggregate([flat(m, 100 + m) for m in range(375)], 3600)
    assert [hhmm(c.ts) for c in candles] == ["09:15", "10:15", "11:15", "12:15", "13:15", "14:15", "15:15"]
    assert all(c.timeframe == 3600 for c in candles)
    assert candles[-1].ticks == 15 * 2  # 15:15-15:29: the session ends inside the last hour


def test_a_bucket_takes_first_open_last_close_extremes_and_sums() -> None:
    minutes = [minute(0, 100, 104, 99, 103, 5, 3), minute(1, 103, 108, 101, 102, 7, 4, revision=2),
               minute(3, 102, 103, 95, 97, 11, 5), minute(5, 97, 98, 96, 98, 13, 6)]
    first, second = aggregate(minutes, 300)
    assert (first.ts, first.open, first.high, first.low, first.close) == (OPEN, 100, 108, 95, 97)
    assert (first.volume, first.ticks, first.revision) == (23, 12, 2)
    assert (first.first_tick_ts, first.last_tick_ts) == (OPEN + 1.0, OPEN + 180 + 59.0)
    assert (second.ts, second.open, second.close, second.volume, second.timeframe) == (OPEN + 300, 97, 98, 13, 300)


def test_sixty_seconds_gives_back_the_minutes() -> None:
    minutes = session_minutes(seed=1)
    assert aggregate(minutes, 60) == minutes


def test_daily_timeframe_is_one_bucket_per_session() -> None:
    day_two = [Candle(c.symbol, c.ts + 86_400, c.open, c.high, c.low, c.close, c.volume, c.ticks)
               for c in session_minutes(seed=2)]
    candles = aggregate(session_minutes(seed=1) + day_two, 86_400)
    assert [c.ts for c in candles] == [OPEN, OPEN + 86_400]


def test_unsorted_input_is_put_in_time_order() -> None:
    minutes = session_minutes(seed=3)
    shuffled = minutes[:]
    random.Random(0).shuffle(shuffled)
    assert aggregate(shuffled, 900) == aggregate(minutes, 900)


@pytest.mark.parametrize("bad", [0, 30, 61, 90, 86_460, -60, 60.0, True])
def test_timeframe_must_be_a_multiple_of_60_in_60_to_86400(bad: object) -> None:
    with pytest.raises(ValueError):
        check_timeframe(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        aggregate([flat(0, 1)], bad)  # type: ignore[arg-type]


def test_last_n_returns_the_newest_buckets_oldest_first() -> None:
    minutes = session_minutes(seed=4)
    full = aggregate(minutes, 300)
    assert last_n(minutes, 300, 5) == full[-5:]
    assert last_n(minutes, 300, 10_000) == full
    assert last_n(minutes, 300, 0) == [] and last_n([], 300, 5) == []


@pytest.mark.parametrize("timeframe", [60, 180, 300, 900, 3600])
def test_last_n_on_a_tail_matches_the_full_aggregation(timeframe: int) -> None:
    minutes = session_minutes(seed=5, gaps=60)
    full = aggregate(minutes, timeframe)
    for limit in (1, 2, 3, 7, 20):
        assert last_n(minutes, timeframe, limit) == full[-limit:]


def test_last_n_merges_the_forming_minute_into_the_newest_bucket() -> None:
    minutes = [flat(m, 100 + m) for m in range(7)]  # 09:15-09:21: the 09:20 bucket holds two minutes
    partial = minute(7, 106.5, 130, 90, 111, volume=4, ticks=1)
    newest = last_n(minutes, 300, 2, partial)[-1]
    assert (newest.ts, newest.open, newest.high, newest.low, newest.close) == (OPEN + 300, 105, 130, 90, 111)
    assert newest.volume == 10 + 10 + 4


def test_last_n_appends_a_forming_minute_that_starts_a_new_bucket() -> None:
    minutes = [flat(m, 100 + m) for m in range(5)]
    partial = minute(5, 200, 201, 199, 200.5)
    result = last_n(minutes, 300, 3, partial)
    assert [c.ts for c in result] == [OPEN, OPEN + 300]
    assert result[-1].close == 200.5 and result[0] == aggregate(minutes, 300)[0]


def test_last_n_ignores_a_forming_minute_that_is_already_closed() -> None:
    minutes = [flat(m, 100 + m) for m in range(5)]
    assert last_n(minutes, 300, 3, minutes[-1]) == aggregate(minutes, 300)


def test_incremental_aggregator_gives_the_same_buckets_as_aggregate() -> None:
    minutes = session_minutes(seed=6, gaps=80)
    for timeframe in (60, 300, 900, 3600):
        agg = IncrementalAggregator(timeframe)
        produced = agg.add_all(minutes)
        tail = agg.flush()
        if tail is not None:
            produced.append(tail)
        assert produced == aggregate(minutes, timeframe), timeframe


def test_incremental_aggregator_hands_out_a_bucket_when_its_last_minute_arrives() -> None:
    agg = IncrementalAggregator(300)
    assert [agg.add(flat(m, 100)) for m in range(4)] == [None] * 4
    done = agg.add(flat(4, 100))  # 09:19 closes the 09:15 bucket: no need to wait for 09:20
    assert done is not None and done.ts == OPEN and done.ticks == 10
    assert agg.current() is None and agg.flush() is None


def test_incremental_aggregator_hands_out_a_bucket_when_a_later_bucket_starts() -> None:
    agg = IncrementalAggregator(300)
    agg.add(flat(0, 100))
    agg.add(flat(1, 101))
    done = agg.add(flat(7, 107))  # 09:17-09:21 had no candle
    assert done is not None and (done.ts, done.close) == (OPEN, 101.5)
    current = agg.current()
    assert current is not None and current.ts == OPEN + 300


def test_two_buckets_completed_by_one_minute_come_out_one_per_call() -> None:
    agg = IncrementalAggregator(300)
    agg.add(flat(0, 100))
    first = agg.add(flat(9, 109))  # starts AND ends the 09:20 bucket, after a gap
    assert first is not None and first.ts == OPEN
    second = agg.add(flat(10, 110))
    assert second is not None and second.ts == OPEN + 300 and second.open == 109


def test_incremental_aggregator_ignores_minutes_at_or_before_the_last_one() -> None:
    agg = IncrementalAggregator(300)
    agg.add(flat(0, 100))
    agg.add(flat(2, 102))
    assert agg.add(minute(1, 1, 999, 1, 1, revision=1)) is None  # a revision: does not reopen the bucket
    assert agg.add(flat(2, 102)) is None
    current = agg.current()
    assert current is not None and current.high == 103 and current.ticks == 4
