"""Tick sources: the seeded simulator, the replay file source and the tick recorder."""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from actors.clock import SystemClock, VirtualClock
from actors.sources.base import SourceCallbacks
from actors.sources.recorder import HEADER, TickRecorder, format_ts
from actors.sources.replay import BATCH_MAX, ReplayFileUnreadable, ReplaySource, TickParser, read_ticks
from actors.sources.sim import SimSource
from core.candles import CandleBook, CandleClosed, CandleEvent, CandleRevised
from core.market import IST, Candle, Tick, from_iso

DATA = Path(__file__).parent / "data"
OPEN = datetime(2026, 11, 20, 9, 15, tzinfo=IST).timestamp()
WAIT = 10.0  # seconds: upper bound for any wait on a source thread


class Collector:
    """Callbacks that remember everything and let a test wait for the end without sleeping."""

    def __init__(self, clock: VirtualClock | None = None) -> None:
        self.batches: list[list[Tick]] = []
        self.errors: list[BaseException] = []
        self.finished = threading.Event()
        self.failed = threading.Event()
        self.done = threading.Event()  # finished or failed
        self.enough = threading.Event()
        self.want = 0
        self.clock_behind: list[tuple[float, float]] = []
        self.clock = clock

    def on_ticks(self, batch: Sequence[Tick]) -> None:
        if self.clock is not None:
            newest = max(t.ts for t in batch)
            if self.clock.now() < newest:
                self.clock_behind.append((self.clock.now(), newest))
        self.batches.append(list(batch))
        if self.want and self.count >= self.want:
            self.enough.set()

    def on_error(self, exc: BaseException) -> None:
        self.errors.append(exc)
        self.failed.set()
        self.done.set()

    def on_finished(self) -> None:
        self.finished.set()
        self.done.set()

    @property
    def count(self) -> int:
        return sum(len(b) for b in self.batches)

    @property
    def ticks(self) -> list[Tick]:
        return [t for b in self.batches for t in b]

    def callbacks(self) -> SourceCallbacks:
        return SourceCallbacks(on_ticks=self.on_ticks, on_error=self.on_error, on_finished=self.on_finished)


def write_ticks(path: Path, ticks: Sequence[Tick]) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.write(HEADER)
        for t in ticks:
            stamp = datetime.fromtimestamp(t.ts, IST).isoformat(timespec="milliseconds")
            out.write(f"{stamp},{t.symbol},{t.ltp},{t.volume}\n")


def short_session(seed: int, seconds: float, rate: float) -> list[Tick]:
    """A few symbols over `seconds` of event time in arrival order, some ticks late; ms timestamps."""
    rng = random.Random(seed)
    ticks = []
    ts = OPEN
    prices = {"NIFTY": 24_500.0, "BANKNIFTY": 52_000.0, "SEC_49081": 120.0}
    while ts < OPEN + seconds:
        ts += rng.expovariate(rate)
        symbol = rng.choice(list(prices))
        prices[symbol] = round(prices[symbol] * (1 + rng.gauss(0, 2e-4)), 2)
        stamp = round(ts - (rng.uniform(0, 2) if rng.random() < 0.05 else 0.0), 3)  # a late print
        ticks.append(Tick(symbol, stamp, prices[symbol], rng.choice((0, 75, 150))))
    return ticks


def candles_of(ticks: Sequence[Tick] | list[list[Tick]], batched: bool = False) -> dict[tuple[str, int], Candle]:
    books: dict[str, CandleBook] = {}
    events: list[CandleEvent] = []
    batches = ticks if batched else [ticks]
    for batch in batches:
        by_symbol: dict[str, list[Tick]] = {}
        for t in batch:  # type: ignore[union-attr]
            by_symbol.setdefault(t.symbol, []).append(t)
        for symbol, part in by_symbol.items():
            events += books.setdefault(symbol, CandleBook(symbol)).apply(part)
    for book in books.values():
        events += book.close_all()
    return {(e.candle.symbol, e.candle.ts): e.candle for e in events
            if isinstance(e, (CandleClosed, CandleRevised))}


# ------------------------------------------------------------------------------ sim
class ScriptedClock:
    """A clock that returns a fixed sequence of readings (the sim's only input besides the seed)."""

    def __init__(self, readings: Sequence[float]) -> None:
        self.readings = list(readings)

    def now(self) -> float:
        return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]

    def monotonic(self) -> float:
        return 0.0


def run_steps(seed: int, readings: Sequence[float], symbols: Sequence[str] = ("NIFTY", "SEC_49081"),
              rate: float = 50.0) -> list[Tick]:
    sim = SimSource(symbols, seed=seed, ticks_per_second=rate, clock=SystemClock())
    return [t for now in readings for t in sim.step(now)]


def test_sim_is_deterministic_given_the_seed_and_the_clock_readings() -> None:
    readings = [OPEN + 0.05 * k + random.Random(k).uniform(0, 0.02) for k in range(200)]
    first = run_steps(42, readings)
    assert first and first == run_steps(42, readings)
    assert first != run_steps(43, readings)
    # a symbol's path does not depend on the other symbols subscribed
    alone = [t for t in run_steps(42, readings, symbols=("SEC_49081",))]
    assert alone == [t for t in first if t.symbol == "SEC_49081"]


def test_sim_emits_the_configured_rate_timestamped_between_clock_readings() -> None:
    readings = [OPEN + 0.05 * k for k in range(201)]  # ten seconds
    ticks = run_steps(1, readings, symbols=("NIFTY",), rate=20.0)
    assert 199 <= len(ticks) <= 200
    stamps = [t.ts for t in ticks]
    assert stamps == sorted(stamps) and OPEN < stamps[0] and stamps[-1] <= OPEN + 10.0


def test_sim_prices_stay_in_realistic_ranges_on_the_tick_grid_with_lot_volumes() -> None:
    readings = [OPEN + 0.5 * k for k in range(2000)]
    ticks = run_steps(7, readings, symbols=("NIFTY", "BANKNIFTY", "SEC_1", "SEC_2"), rate=40.0)
    ranges = {"NIFTY": (24_000, 26_000), "BANKNIFTY": (51_000, 54_000), "SEC_1": (50, 300), "SEC_2": (50, 300)}
    lots = {"NIFTY": 75, "BANKNIFTY": 35, "SEC_1": 75, "SEC_2": 75}
    for t in ticks:
        low, high = ranges[t.symbol]
        assert low <= t.ltp <= high
        assert abs(t.ltp * 20 - round(t.ltp * 20)) < 1e-6
        assert t.volume > 0 and t.volume % lots[t.symbol] == 0
    options = [t.ltp for t in ticks if t.symbol == "SEC_1"]
    index = [t.ltp for t in ticks if t.symbol == "NIFTY"]
    def spread(xs: list[float]) -> float:
        return (max(xs) - min(xs)) / min(xs)
    assert spread(options) > 3 * spread(index)  # options move more, in percent


def test_sim_catches_up_at_most_a_few_seconds_after_a_stall() -> None:
    ticks = run_steps(3, [OPEN, OPEN + 3600.0], symbols=("NIFTY",), rate=100.0)
    assert 0 < len(ticks) <= 501 and ticks[0].ts >= OPEN + 3600 - 5


def test_sim_thread_delivers_batches_until_stopped() -> None:
    collector = Collector()
    collector.want = 50
    sim = SimSource(("NIFTY", "BANKNIFTY"), seed=5, ticks_per_second=400.0, clock=SystemClock())
    sim.start(collector.callbacks())
    try:
        assert collector.enough.wait(WAIT)
        assert sim.status().connected and sim.status().ticks >= 50
    finally:
        sim.stop()
    assert not sim.status().connected
    delivered = collector.count
    assert sim.status().ticks == delivered and not collector.errors


# ------------------------------------------------------------------------------ replay
def replay(path: Path, speed: float, **kwargs: float) -> tuple[ReplaySource, Collector]:
    clock = VirtualClock()
    collector = Collector(clock)
    source = ReplaySource(path, speed=speed, clock=clock, **kwargs)
    source.start(collector.callbacks())
    assert collector.done.wait(WAIT)
    assert source.join(WAIT)
    return source, collector


def test_replay_at_speed_0_and_at_1000x_build_identical_candles(tmp_path: Path) -> None:
    ticks = short_session(seed=9, seconds=150.0, rate=200.0)
    path = tmp_path / "day.csv"
    write_ticks(path, ticks)
    fast, fast_ticks = replay(path, speed=0)
    paced, paced_ticks = replay(path, speed=1000)
    assert fast.status().finished and paced.status().finished
    assert fast_ticks.ticks == paced_ticks.ticks == ticks  # file order, late rows included
    assert len(paced_ticks.batches) > 10  # paced: many small slices, not one big batch
    built_fast = candles_of(fast_ticks.batches, batched=True)
    built_paced = candles_of(paced_ticks.batches, batched=True)
    assert built_fast == built_paced == candles_of(ticks)
    assert len(built_fast) >= 3 * 3


def test_replay_advances_the_virtual_clock_before_each_batch(tmp_path: Path) -> None:
    ticks = short_session(seed=10, seconds=30.0, rate=300.0)
    path = tmp_path / "day.csv"
    write_ticks(path, ticks)
    for speed in (0, 500):
        source, collector = replay(path, speed=speed)
        assert collector.clock_behind == []
        assert source.clock is not None and source.clock.now() == max(t.ts for t in ticks)


def test_replay_at_speed_0_delivers_batches_of_at_most_5000(tmp_path: Path) -> None:
    ticks = [Tick("NIFTY", OPEN + k * 0.001, 24_000.0 + (k % 7), 0) for k in range(12_345)]
    path = tmp_path / "many.csv"
    write_ticks(path, ticks)
    source, collector = replay(path, speed=0)
    assert [len(b) for b in collector.batches] == [BATCH_MAX, BATCH_MAX, 2_345]
    assert source.status().ticks == 12_345


def test_replay_skips_and_counts_bad_rows(tmp_path: Path) -> None:
    source, collector = replay(DATA / "replay_bad_rows.csv", speed=0)
    status = source.status()
    assert status.finished and not collector.errors
    assert status.detail["bad_rows"] == 9
    assert status.detail["bad_row_lines"] == [4, 5, 6, 7, 8, 9, 10, 12, 14]
    assert status.detail["rows"] == 15  # the trailing blank line is neither a row nor a bad one
    got = collector.ticks
    assert [(t.symbol, t.ltp, t.volume) for t in got] == [
        ("NIFTY", 24012.35, 0), ("BANKNIFTY", 52110.5, 35), ("NIFTY", 24012.2, 75),
        ("SEC_49081", 101.25, 150), ("NIFTY", 24013.0, 75)]
    assert got[2].ts == from_iso("2026-11-20T09:15:00.900+05:30")  # the late row stays in file order
    assert status.ticks == 5


def test_replay_of_a_missing_file_reports_an_operator_error(tmp_path: Path) -> None:
    source, collector = replay(tmp_path / "nope.csv", speed=0)
    assert collector.failed.is_set() and isinstance(collector.errors[0], ReplayFileUnreadable)
    assert not collector.finished.is_set() and not source.status().finished
    with pytest.raises(ReplayFileUnreadable):
        list(read_ticks(tmp_path / "nope.csv"))


def test_paced_replay_compresses_long_pauses(tmp_path: Path) -> None:
    ticks = [Tick("NIFTY", OPEN + 1, 24_000.0, 0), Tick("NIFTY", OPEN + 3 * 3600, 24_100.0, 0)]
    path = tmp_path / "pause.csv"
    write_ticks(path, ticks)
    clock = VirtualClock()
    collector = Collector(clock)
    source = ReplaySource(path, speed=1.0, clock=clock, max_wait_seconds=0.05)
    source.start(collector.callbacks())
    assert collector.finished.wait(WAIT)  # three hours at 1x, capped to one 50 ms wait
    assert collector.ticks == ticks and clock.now() == OPEN + 3 * 3600


def test_stopping_a_paced_replay_midway_does_not_finish_it(tmp_path: Path) -> None:
    ticks = [Tick("NIFTY", OPEN + k, 24_000.0, 0) for k in range(600)]
    path = tmp_path / "slow.csv"
    write_ticks(path, ticks)
    collector = Collector()
    collector.want = 1
    source = ReplaySource(path, speed=1.0, clock=VirtualClock())
    source.start(collector.callbacks())
    assert collector.enough.wait(WAIT)
    source.stop()
    assert source.join(WAIT)
    assert not source.status().finished and not collector.finished.is_set()
    assert collector.count < 600


def test_parser_reads_every_iso_form_exactly_like_fromisoformat(tmp_path: Path) -> None:
    stamps = [
        "2026-11-20T09:15:00.031+05:30", "2026-11-20T09:15:00.031+05:30", "2026-11-20T09:15:00+05:30",
        "2026-11-20T09:15:00.031234+05:30", "2026-11-20T09:15:00.5+05:30", "2026-11-20T03:45:00.031Z",
        "2026-11-20T03:45:00.031+00:00", "2026-11-20T09:15:00.999", "2026-11-20 09:15:00.100+05:30",
        "2026-11-20T09:15:00.031+05:30", "2026-11-20T09:15:59.999+05:30", "2026-11-20T09:16:00.000+05:30",
    ]
    lines = [f"{s},NIFTY,100.5,1\n" for s in stamps]
    parser = TickParser()
    got = parser.parse(lines)
    assert parser.bad.count == 0
    assert [t.ts for t in got] == [from_iso(s) for s in stamps]


def test_parser_matches_fromisoformat_on_random_millisecond_stamps() -> None:
    rng = random.Random(4)
    offsets = [timezone(timedelta(hours=5, minutes=30)), UTC, timezone(timedelta(hours=-4))]
    stamps = []
    for _ in range(3000):
        ts = OPEN + rng.uniform(-86_400 * 30, 86_400 * 30)
        tz = offsets[0] if rng.random() < 0.9 else rng.choice(offsets)
        stamps.append(datetime.fromtimestamp(round(ts, 3), tz).isoformat(timespec="milliseconds"))
    parser = TickParser()
    got = parser.parse([f"{s},NIFTY,1.0,0\n" for s in stamps])
    assert [t.ts for t in got] == [from_iso(s) for s in stamps]


# ------------------------------------------------------------------------------ recorder
def test_a_recorded_file_replays_to_the_same_ticks(tmp_path: Path) -> None:
    ticks = short_session(seed=12, seconds=90.0, rate=100.0)
    ticks.append(Tick("SEC_49081", OPEN + 100.9996, 101.05, 75))  # rounds up into the next second
    path = tmp_path / "rec" / "ticks.csv"
    recorder = TickRecorder(path)
    received: list[Tick] = []
    sink = recorder.wrap(received.extend)
    for k in range(0, len(ticks), 37):
        sink(ticks[k:k + 37])
    recorder.close()
    assert received == ticks
    back = list(read_ticks(path))
    assert back[:-1] == ticks[:-1]  # millisecond timestamps and prices come back exactly
    assert back[-1].ts == OPEN + 101.0
    first = ticks[0]
    assert path.read_text().splitlines()[1] == (
        f"{datetime.fromtimestamp(first.ts, IST).isoformat(timespec='milliseconds')},"
        f"{first.symbol},{first.ltp},{first.volume}")


def test_recorder_flushes_once_a_second_of_ticks_is_buffered(tmp_path: Path) -> None:
    path = tmp_path / "ticks.csv"
    recorder = TickRecorder(path)
    recorder.record([Tick("NIFTY", OPEN + 0.1, 24_000.0, 0)])
    assert path.read_text() == HEADER  # buffered
    recorder.record([Tick("NIFTY", OPEN + 1.2, 24_001.0, 0)])
    assert len(path.read_text().splitlines()) == 3  # a second of event time: written out
    recorder.close()


def test_recorder_appends_to_an_existing_file_without_a_second_header(tmp_path: Path) -> None:
    path = tmp_path / "ticks.csv"
    for price in (1.5, 2.5):
        recorder = TickRecorder(path)
        recorder.record([Tick("NIFTY", OPEN + price, price, 0)])
        recorder.close()
    assert path.read_text().count("ts,symbol") == 1
    assert [t.ltp for t in read_ticks(path)] == [1.5, 2.5]


def test_format_ts_writes_ist_with_milliseconds() -> None:
    assert format_ts(from_iso("2026-11-20T09:15:00.031+05:30")) == "2026-11-20T09:15:00.031+05:30"
    assert format_ts(from_iso("2026-11-20T03:46:00.000Z")) == "2026-11-20T09:16:00.000+05:30"


def test_a_row_with_bytes_that_are_not_utf8_is_a_bad_row_not_a_failed_file(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_bytes(HEADER.encode() + b"2026-11-20T09:15:00.031+05:30,NIFTY,1\xff2.5,0\n"
                     + b"2026-11-20T09:15:00.032+05:30,NIFTY,12.5,0\n")
    parser = TickParser()
    assert [t.ltp for t in read_ticks(path, parser)] == [12.5]
    assert (parser.bad.count, parser.bad.lines) == (1, [2])
