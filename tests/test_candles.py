"""CandleBook: ticks -> 1-minute candles in event time, checked against an independent pandas computation."""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from actors.sources.replay import TickParser, read_ticks
from core.aggregate import aggregate
from core.candles import (
    CandleBook,
    CandleClosed,
    CandleEvent,
    CandleRevised,
    GapRecorded,
    LateTickDropped,
)
from core.market import IST, Candle, Tick

SESSION_OPEN = datetime(2026, 11, 20, 9, 15, tzinfo=IST).timestamp()  # 09:15 IST
T0 = SESSION_OPEN + 600  # 09:25 IST, a minute start
GRACE = 5.0
MAX_DELAY = 3.0  # every late tick in the generated file is within grace


def tick(ts: float, price: float, volume: int = 1) -> Tick:
    return Tick("NIFTY", ts, price, volume)


def closed(events: list[CandleEvent]) -> list[Candle]:
    return [e.candle for e in events if isinstance(e, CandleClosed)]


def revised(events: list[CandleEvent]) -> list[Candle]:
    return [e.candle for e in events if isinstance(e, CandleRevised)]


# ------------------------------------------------------------------------------ the generated tick file
def generate_session(seed: int) -> tuple[list[Tick], set[int]]:
    """Ticks in ARRIVAL order from 09:12 to ~12:40 IST, with delayed (late) ticks, exact-ts ties and gaps.

    Returns the ticks and the minute starts deliberately left empty. Each minute's first three ticks are
    never delayed, so a minute that has ticks is never mistaken for a gap.
    """
    rng = random.Random(seed)
    start = SESSION_OPEN - 180
    minutes = 208
    empty = {int(start) + 60 * m for m in rng.sample(range(5, minutes - 5), 9)}
    empty.add(int(start) + 60 * 100)
    empty.add(int(start) + 60 * 101)  # a two-minute gap
    timed: list[tuple[float, Tick]] = []  # (arrival time, tick)
    price = 24_500.0
    for m in range(minutes):
        minute = int(start) + 60 * m
        if minute in empty:
            continue
        count = rng.randint(3, 200)
        offsets = sorted(rng.randrange(0, 60_000) for _ in range(count))
        for i, offset_ms in enumerate(offsets):
            ts = minute + offset_ms / 1000
            price = round(max(100.0, price + rng.choice((-0.05, 0.05)) * rng.randint(1, 20)), 2)
            volume = rng.choice((0, 0, 75, 150, 75 * rng.randint(1, 40)))
            # ticks near the end of their minute are often delayed past the next minute's first tick
            chance = 0.6 if offset_ms > 57_000 else 0.08
            delay = rng.uniform(0.0, MAX_DELAY) if i >= 3 and rng.random() < chance else 0.0
            timed.append((ts + delay, tick(ts, price, volume)))
            if rng.random() < 0.02:  # an exact tie on ts with a different price
                timed.append((ts + delay + 0.0005, tick(ts, round(price + 0.35, 2), 75)))
    timed.sort(key=lambda pair: pair[0])  # stable: equal arrival keeps generation order
    return [t for _, t in timed], empty


def write_replay_csv(path: Path, ticks: list[Tick]) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.write("ts,symbol,ltp,volume\n")
        for t in ticks:
            out.write(f"{datetime.fromtimestamp(t.ts, IST).isoformat(timespec='milliseconds')},"
                      f"{t.symbol},{t.ltp},{t.volume}\n")


def build(ticks: list[Tick], seed: int) -> tuple[dict[int, Candle], list[CandleEvent], CandleBook]:
    """Feed ticks in random-sized batches; the final state of every minute (closes, then revisions)."""
    rng = random.Random(seed)
    book = CandleBook("NIFTY", grace_seconds=GRACE)
    events: list[CandleEvent] = []
    i = 0
    while i < len(ticks):
        size = rng.choice((1, 7, 50, 500, 3000))
        events += book.apply(ticks[i:i + size])
        i += size
    events += book.close_all()
    final: dict[int, Candle] = {}
    for event in events:
        if isinstance(event, (CandleClosed, CandleRevised)):
            final[event.candle.ts] = event.candle
    return final, events, book


def pandas_frame(ticks: list[Tick]) -> pd.DataFrame:
    df = pd.DataFrame(ticks, columns=["symbol", "ts", "ltp", "volume"])
    df["arrival"] = range(len(df))
    # open = first by ts, close = last by ts; on equal ts the arrival order decides (stable sort)
    df = df.sort_values(["ts", "arrival"], kind="mergesort").reset_index(drop=True)
    df["ms"] = (df["ts"] * 1000).round().astype("int64")
    df["dt"] = pd.to_datetime(df["ms"], unit="ms", utc=True).dt.tz_convert("Asia/Kolkata")
    return df


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    arrival, empty = generate_session(seed=7)
    path = tmp_path_factory.mktemp("ticks") / "session.csv"
    write_replay_csv(path, arrival)
    parser = TickParser()
    ticks = list(read_ticks(path, parser))
    assert parser.bad.count == 0 and ticks == arrival  # the file holds exactly the generated ticks
    final, events, book = build(ticks, seed=11)
    return {"ticks": ticks, "empty": empty, "final": final, "events": events, "book": book,
            "df": pandas_frame(ticks)}


# ------------------------------------------------------------------------------ against pandas
def test_candles_match_an_independent_pandas_computation_with_late_and_out_of_order_ticks(
        session: dict[str, object]) -> None:
    df: pd.DataFrame = session["df"]  # type: ignore[assignment]
    final: dict[int, Candle] = session["final"]  # type: ignore[assignment]
    df["minute"] = (df["ms"] // 60_000) * 60
    expected = df.groupby("minute").agg(
        open=("ltp", "first"), high=("ltp", "max"), low=("ltp", "min"), close=("ltp", "last"),
        volume=("volume", "sum"), ticks=("ltp", "size"), first_ts=("ts", "min"), last_ts=("ts", "max"))
    assert sorted(final) == [int(m) for m in expected.index]
    for minute, row in expected.iterrows():
        candle = final[int(minute)]
        assert (candle.open, candle.high, candle.low, candle.close) == (row.open, row.high, row.low, row.close)
        assert (candle.volume, candle.ticks) == (row.volume, row.ticks)
        assert (candle.first_tick_ts, candle.last_tick_ts) == (row.first_ts, row.last_ts)
        assert candle.timeframe == 60 and candle.symbol == "NIFTY"


def test_every_late_tick_within_grace_revises_its_minute_and_none_is_dropped(
        session: dict[str, object]) -> None:
    ticks: list[Tick] = session["ticks"]  # type: ignore[assignment]
    final: dict[int, Candle] = session["final"]  # type: ignore[assignment]
    book: CandleBook = session["book"]  # type: ignore[assignment]
    late_minutes: set[int] = set()
    late = 0
    newest = -1
    for t in ticks:  # late = a tick for a minute before the newest minute seen so far
        minute = int(t.ts // 60) * 60
        if minute < newest:
            late += 1
            late_minutes.add(minute)
        newest = max(newest, minute)
    assert late > 100  # the generated file really exercises the late path
    assert book.stats.late_revised == late
    assert book.stats.late_dropped == 0
    assert book.stats.ticks == len(ticks)
    assert {m for m, c in final.items() if c.revision > 0} == late_minutes


def test_closed_candles_come_once_each_in_time_order(session: dict[str, object]) -> None:
    events: list[CandleEvent] = session["events"]  # type: ignore[assignment]
    stamps = [c.ts for c in closed(events)]
    assert stamps == sorted(set(stamps))
    assert all(c.revision == 0 for c in closed(events))


def test_gaps_in_the_generated_session_are_recorded_and_get_no_candle(session: dict[str, object]) -> None:
    events: list[CandleEvent] = session["events"]  # type: ignore[assignment]
    empty: set[int] = session["empty"]  # type: ignore[assignment]
    final: dict[int, Candle] = session["final"]  # type: ignore[assignment]
    recorded = {m for e in events if isinstance(e, GapRecorded) for m in range(e.from_ts, e.to_ts, 60)}
    assert recorded == empty
    assert not empty & set(final)
    assert session["book"].stats.gap_minutes == len(empty)  # type: ignore[attr-defined]


@pytest.mark.parametrize("timeframe", [60, 300, 3600])
def test_aggregated_candles_match_pandas_resampling_anchored_at_0915(
        session: dict[str, object], timeframe: int) -> None:
    df: pd.DataFrame = session["df"]  # type: ignore[assignment]
    final: dict[int, Candle] = session["final"]  # type: ignore[assignment]
    origin = pd.Timestamp("2026-11-20 09:15", tz="Asia/Kolkata")
    resampled = df.resample(f"{timeframe}s", on="dt", origin=origin).agg(
        {"ltp": ["first", "max", "min", "last", "size"], "volume": "sum"})
    resampled.columns = ["open", "high", "low", "close", "ticks", "volume"]
    resampled = resampled[resampled["ticks"] > 0]
    built = aggregate([final[m] for m in sorted(final)], timeframe)
    assert [c.ts for c in built] == [int(ix.timestamp()) for ix in resampled.index]
    for candle, (_ix, row) in zip(built, resampled.iterrows(), strict=True):
        assert (candle.open, candle.high, candle.low, candle.close) == (row.open, row.high, row.low, row.close)
        assert (candle.volume, candle.ticks) == (row.volume, row.ticks)
        assert candle.timeframe == timeframe
    if timeframe == 3600:  # 09:15-anchored hours (the pre-open ticks fall in the 08:15 bucket)
        hours = [datetime.fromtimestamp(c.ts, IST).strftime("%H:%M") for c in built]
        assert hours == ["08:15", "09:15", "10:15", "11:15", "12:15"]


# ------------------------------------------------------------------------------ the rules, one by one
def test_open_and_close_follow_tick_time_not_arrival_and_ties_go_to_the_later_arrival() -> None:
    book = CandleBook("NIFTY")
    book.apply([tick(T0 + 10, 101), tick(T0 + 5, 100), tick(T0 + 30, 103), tick(T0 + 20, 99),
                tick(T0 + 30, 104), tick(T0 + 5, 98)])
    candle = book.forming()
    assert candle is not None
    assert (candle.open, candle.high, candle.low, candle.close) == (100, 104, 98, 104)
    assert (candle.first_tick_ts, candle.last_tick_ts, candle.ticks) == (T0 + 5, T0 + 30, 6)


def test_a_tick_for_a_later_minute_closes_the_forming_candle_first() -> None:
    book = CandleBook("NIFTY")
    assert book.apply([tick(T0 + 1, 100, 5), tick(T0 + 59.999, 102, 7)]) == []
    events = book.apply([tick(T0 + 60, 103)])
    assert [type(e) for e in events] == [CandleClosed]
    candle = closed(events)[0]
    assert (candle.ts, candle.open, candle.close, candle.volume, candle.ticks, candle.revision) == (
        int(T0), 100, 102, 12, 2, 0)
    assert book.last_closed() == candle
    assert book.forming() is not None and book.forming().ts == T0 + 60  # type: ignore[union-attr]


def test_late_tick_within_grace_revises_the_candle() -> None:
    book = CandleBook("NIFTY", grace_seconds=5)
    book.apply([tick(T0 + 10, 100), tick(T0 + 50, 101), tick(T0 + 62, 102)])
    events = book.apply([tick(T0 + 55, 110, 3), tick(T0 + 5, 90, 2)])
    (candle,) = revised(events)
    assert len(events) == 1  # two late ticks for one minute in one call: one revision
    assert (candle.ts, candle.open, candle.high, candle.low, candle.close) == (int(T0), 90, 110, 90, 110)
    assert (candle.ticks, candle.volume, candle.revision) == (4, 7, 1)
    again = revised(book.apply([tick(T0 + 59, 105)]))
    assert again[0].revision == 2 and again[0].close == 105
    assert book.stats.late_revised == 3 and book.stats.late_dropped == 0


def test_late_tick_beyond_grace_is_dropped_and_counted() -> None:
    book = CandleBook("NIFTY", grace_seconds=5)
    book.apply([tick(T0 + 10, 100), tick(T0 + 66, 102)])  # watermark 6 s past the minute's end
    late = tick(T0 + 59, 120)
    events = book.apply([late])
    assert events == [LateTickDropped(late, int(T0))]
    assert book.stats.late_dropped == 1 and book.stats.late_revised == 0
    assert book.last_closed().high == 100  # type: ignore[union-attr]


def test_grace_is_measured_from_the_latest_tick_time_seen() -> None:
    book = CandleBook("NIFTY", grace_seconds=5)
    book.apply([tick(T0 + 10, 100), tick(T0 + 65, 102)])  # exactly at the grace limit
    assert revised(book.apply([tick(T0 + 30, 101)]))
    book.apply([tick(T0 + 65.001, 102)])
    assert isinstance(book.apply([tick(T0 + 31, 101)])[0], LateTickDropped)


def test_gap_is_recorded_and_no_flat_candle_is_made() -> None:
    book = CandleBook("NIFTY")
    book.apply([tick(T0 + 10, 100)])
    events = book.apply([tick(T0 + 240 + 3, 104)])  # three minutes without a tick
    assert [type(e) for e in events] == [CandleClosed, GapRecorded]
    gap = events[1]
    assert gap == GapRecorded("NIFTY", int(T0 + 60), int(T0 + 240)) and gap.minutes == 3  # type: ignore[union-attr]
    events += book.close_all()
    assert [c.ts for c in closed(events)] == [int(T0), int(T0 + 240)]
    assert book.stats.gaps == 1 and book.stats.gap_minutes == 3


def test_the_night_between_two_sessions_is_not_a_gap() -> None:
    book = CandleBook("NIFTY")
    book.apply([tick(SESSION_OPEN + 6 * 3600 + 14 * 60 + 5, 100)])  # 15:29 IST
    events = book.apply([tick(SESSION_OPEN + 86_400 + 2, 101)])  # 09:15 IST the next day
    assert [type(e) for e in events] == [CandleClosed]
    assert book.stats.gaps == 0


def test_late_tick_for_a_gap_minute_within_grace_creates_it_as_revision_1() -> None:
    book = CandleBook("NIFTY", grace_seconds=5)
    book.apply([tick(T0 + 10, 100), tick(T0 + 121, 102)])  # minute T0+60 had no tick: a gap
    events = book.apply([tick(T0 + 119, 101, 75), tick(T0 + 118, 99, 75)])
    assert [type(e) for e in events] == [CandleRevised]
    candle = revised(events)[0]
    assert (candle.ts, candle.revision, candle.ticks, candle.volume) == (int(T0 + 60), 1, 2, 150)
    assert (candle.open, candle.close, candle.low, candle.high) == (99, 101, 99, 101)
    # the in-order CandleClosed stream never goes back in time; the filled minute is held for revisions
    assert [c.ts for c in book.held()] == [int(T0), int(T0 + 60)]
    assert book.last_closed() == candle
    closing = closed(book.close_all())
    assert [c.ts for c in closing] == [int(T0 + 120)]


def test_advance_closes_the_forming_candle_once_its_minute_has_ended() -> None:
    book = CandleBook("NIFTY")
    book.apply([tick(T0 + 10, 100)])
    assert book.advance(T0 + 59.999) == []
    events = book.advance(T0 + 60)
    assert [c.ts for c in closed(events)] == [int(T0)]
    assert book.forming() is None and book.advance(T0 + 600) == []
    # a tick for the minute just closed by the timer is late but within grace: a revision, not a new bar
    assert revised(book.apply([tick(T0 + 59, 101)]))[0].revision == 1
    assert book.forming() is None


def test_close_all_closes_whatever_is_forming() -> None:
    book = CandleBook("NIFTY")
    assert book.close_all() == []
    book.apply([tick(T0 + 1, 100)])
    assert [c.ts for c in closed(book.close_all())] == [int(T0)]
    assert book.close_all() == []


def test_restored_candle_is_revised_not_duplicated() -> None:
    stored = Candle("NIFTY", int(T0), 100, 105, 99, 104, volume=750, ticks=40, revision=2,
                    first_tick_ts=T0 + 0.2, last_tick_ts=T0 + 58)
    book = CandleBook("NIFTY", grace_seconds=5, restored=stored)
    assert book.last_closed() == stored and book.forming() is None
    events = book.apply([tick(T0 + 59, 106, 75), tick(T0 + 61, 107)])
    assert [type(e) for e in events] == [CandleRevised]
    candle = revised(events)[0]
    assert (candle.ts, candle.revision, candle.high, candle.close, candle.volume, candle.ticks) == (
        int(T0), 3, 106, 106, 825, 41)
    assert candle.open == 100  # the stored open stands: no tick before its first_tick_ts
    assert [c.ts for c in closed(book.close_all())] == [int(T0 + 60)]


def test_minutes_before_the_restored_candle_belong_to_the_store_and_are_dropped() -> None:
    stored = Candle("NIFTY", int(T0), 100, 100, 100, 100, ticks=1, first_tick_ts=T0 + 1, last_tick_ts=T0 + 1)
    book = CandleBook("NIFTY", grace_seconds=5, restored=stored)
    events = book.apply([tick(T0 - 1, 99)])  # within grace of the watermark, but not ours to build
    assert isinstance(events[0], LateTickDropped) and events[0].minute_ts == int(T0 - 60)


def test_restored_candle_must_match_symbol_and_timeframe() -> None:
    with pytest.raises(ValueError):
        CandleBook("NIFTY", restored=Candle("BANKNIFTY", int(T0), 1, 1, 1, 1))
    with pytest.raises(ValueError):
        CandleBook("NIFTY", restored=Candle("NIFTY", int(T0), 1, 1, 1, 1, timeframe=300))


def test_only_the_last_few_closed_candles_are_held() -> None:
    book = CandleBook("NIFTY", grace_seconds=5)
    book.apply([tick(T0 + 60 * m + 1, 100 + m) for m in range(20)])
    held = book.held()
    assert 2 <= len(held) <= 8
    assert held[-1].ts == int(T0 + 60 * 18)


def test_apply_accepts_any_iterable_of_ticks() -> None:
    book = CandleBook("NIFTY")
    book.apply(tick(T0 + s, 100 + s) for s in range(10))
    assert book.stats.ticks == 10 and book.forming().ticks == 10  # type: ignore[union-attr]


def test_watermark_is_the_latest_tick_time_seen() -> None:
    book = CandleBook("NIFTY")
    assert book.watermark is None
    book.apply([tick(T0 + 5, 1), tick(T0 + 3, 1)])
    assert book.watermark == T0 + 5
