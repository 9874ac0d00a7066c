"""Tick received -> candle updated, p50/p99, at a steady 5,000 ticks/s through the real MDS actors.

Run: .venv/bin/python -m bench.bench_mds_latency [--rate 5000] [--seconds 10] [--symbols 20]
A paced source hands each tick to the feed actor the moment it is due (no source-side batching, so the
number is the actors' latency, not the source's); the read model records when each symbol's forming
candle reflects the tick. Baseline, same run: a raw Pykka tell round trip (tell -> handled) at the same rate.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import pykka

from actors.market_data.market_cache import MarketCache
from actors.sources.base import SourceCallbacks, SourceStatus
from bench.common import emit, summary_ms
from config.settings import load_settings
from core.market import Candle, Tick
from daemon.runtime import Runtime
from telemetry.logs import configure_logging


class PacedSource:
    """One tick per call at `rate` ticks/s; the tick's ts is its send time (perf_counter based)."""

    name = "paced"

    def __init__(self, symbols: list[str], rate: float, seconds: float, stamps: dict[float, float]) -> None:
        self.symbols, self.rate, self.seconds, self.stamps = symbols, rate, seconds, stamps
        self._stop = threading.Event()
        self.sent = 0

    def start(self, callbacks: SourceCallbacks) -> None:
        threading.Thread(target=self._run, args=(callbacks,), daemon=True).start()

    def _run(self, callbacks: SourceCallbacks) -> None:
        interval = 1.0 / self.rate
        started = time.perf_counter()
        total = int(self.rate * self.seconds)
        for i in range(total):
            due = started + i * interval
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)  # pacing the load generator (a spin would hold the GIL from the actors)
            if self._stop.is_set():
                return
            symbol = self.symbols[i % len(self.symbols)]
            tick = Tick(symbol, time.time(), 100.0 + (i % 7), 1)  # live: event time = wall time
            self.stamps[tick.ts] = time.perf_counter()
            callbacks.on_ticks([tick])
            self.sent += 1
        callbacks.on_finished()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()

    def status(self) -> SourceStatus:
        return SourceStatus(self.name, connected=True, ticks=self.sent)


class TimingCache(MarketCache):
    """Records, per tick, the delay between its hand-over and the forming candle showing it."""

    def __init__(self, *args: Any, stamps: dict[float, float], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent_at = stamps
        self.samples: list[float] = []

    def set_forming(self, symbol: str, candle: Candle | None) -> None:
        super().set_forming(symbol, candle)
        if candle is not None:
            sent = self.sent_at.pop(candle.last_tick_ts, None)
            if sent is not None:
                self.samples.append(time.perf_counter() - sent)


def actors_latency(rate: float, seconds: float, symbols: list[str], work: Path) -> dict[str, Any]:
    settings = load_settings(env={}, overrides={
        "storage": {"url": f"sqlite:///{work / 'lat.db'}"}, "feed": {"source": "sim", "symbols": symbols},
        "option_chain": {"underlyings": []}})
    stamps: dict[float, float] = {}
    source = PacedSource(symbols, rate, seconds, stamps)
    cache_holder: dict[str, TimingCache] = {}

    import actors.market_data.assembly as mds

    original_cache, original_source = mds.MarketCache, mds.make_source

    def timing_cache(*args: Any, **kwargs: Any) -> TimingCache:
        cache_holder["cache"] = TimingCache(*args, stamps=stamps, **kwargs)
        return cache_holder["cache"]

    mds.MarketCache = timing_cache  # type: ignore[assignment,misc]
    mds.make_source = lambda ctx: (lambda: source)  # type: ignore[assignment]
    try:
        runtime = Runtime(settings, "mds", serve_http=False).start()
    finally:
        mds.MarketCache, mds.make_source = original_cache, original_source
    cache = cache_holder["cache"]
    assert runtime.market_data is not None
    feed_state = runtime.market_data.feed_state
    assert feed_state is not None
    try:
        assert feed_state.finished_event.wait(seconds * 3 + 30)
    finally:
        runtime.shutdown()
    return {"sent": source.sent, **summary_ms(cache.samples[len(cache.samples) // 10:])}


class Echo(pykka.ThreadingActor):
    def __init__(self, samples: list[float]) -> None:
        super().__init__()
        self.samples = samples

    def on_receive(self, message: Any) -> Any:
        self.samples.append(time.perf_counter() - message)


def raw_tell_latency(rate: float, seconds: float) -> dict[str, Any]:
    samples: list[float] = []
    ref = Echo.start(samples)
    interval = 1.0 / rate
    started = time.perf_counter()
    for i in range(int(rate * seconds)):
        due = started + i * interval
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        ref.tell(time.perf_counter())
    ref.stop()
    return summary_ms(samples[len(samples) // 10:])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--symbols", type=int, default=20)
    args = parser.parse_args()
    configure_logging("WARNING")
    symbols = [f"SEC_{50000 + i}" for i in range(args.symbols)]
    with TemporaryDirectory() as tmp:
        actors = actors_latency(args.rate, args.seconds, symbols, Path(tmp))
    raw = raw_tell_latency(args.rate, args.seconds)
    emit("mds_tick_to_candle_latency", {"rate": args.rate, "seconds": args.seconds, "symbols": args.symbols,
                                        "actors": actors, "raw_pykka_tell": raw,
                                        "target": "p99 < 2 ms"})


if __name__ == "__main__":
    main()
