"""A simulated market: a seeded random walk per symbol, ticks batched every ~50 ms on the source's thread.

Deterministic given the seed and the sequence of clock values: each wake-up reads the clock once and
`step(now)` emits, per symbol, the ticks due since the previous step (`ticks_per_second` per symbol),
timestamped evenly between the two clock readings. Every symbol has its own generator seeded from
(seed, symbol), so adding a symbol does not change the others' paths.

Prices: NIFTY ~ 24,000-26,000, BANKNIFTY ~ 51,000-54,000, FINNIFTY ~ 23,000-25,000, SEC_<id> (option
contracts) ~ 50-300 with larger percentage moves; the walk reflects at the range edges and prices are on
the 0.05 tick grid. Volumes are whole lots (NIFTY 75, BANKNIFTY 35, FINNIFTY 65, options 75) with a
heavy-ish tail, as trade prints are.

A contract watched while the source runs (a position's option, `watch`) walks from the price it is
given (its option-chain premium) with the option model's volatility, until it is unwatched.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from actors.clock import Clock
from actors.sources.base import SourceCallbacks, SourceStatus
from core.market import Tick
from telemetry.logs import get_logger

__all__ = ["BATCH_INTERVAL_SECONDS", "SimSource", "SymbolModel", "model_for"]

BATCH_INTERVAL_SECONDS = 0.05
MAX_CATCH_UP_SECONDS = 5.0  # after a stall (or a clock jump) emit at most this much, skip the rest
TICK_SIZE = 0.05

log = get_logger("mybot.sources.sim")


@dataclass(frozen=True)
class SymbolModel:
    low: float
    high: float
    sigma: float  # standard deviation of one tick's relative move
    lot: int


_INDEX_SIGMA = 4e-5
_MODELS = {
    "NIFTY": SymbolModel(24_000.0, 26_000.0, _INDEX_SIGMA, 75),
    "BANKNIFTY": SymbolModel(51_000.0, 54_000.0, _INDEX_SIGMA * 1.2, 35),
    "FINNIFTY": SymbolModel(23_000.0, 25_000.0, _INDEX_SIGMA, 65),
}
_OPTION = SymbolModel(50.0, 300.0, 1.2e-3, 75)


def model_for(symbol: str) -> SymbolModel:
    return _MODELS.get(symbol, _OPTION)


class _Walk:
    __slots__ = ("due_from", "model", "price", "rng", "symbol")

    def __init__(self, symbol: str, seed: int, start: float | None = None) -> None:
        self.symbol = symbol
        self.model = model_for(symbol)
        self.rng = random.Random(seed * 1_000_003 + zlib.crc32(symbol.encode()))
        if start is not None and start > 0:
            self.model = SymbolModel(max(TICK_SIZE, start / 4), start * 4, _OPTION.sigma, _OPTION.lot)
            self.price = start
        else:
            span = self.model.high - self.model.low
            self.price = self.model.low + span * (0.25 + 0.5 * self.rng.random())
        self.due_from = 0.0  # fractional tick carried over between steps

    def next_tick(self, ts: float) -> Tick:
        rng, model = self.rng, self.model
        price = self.price * math.exp(rng.gauss(0.0, model.sigma))
        if price > model.high:  # reflect at the edges of the range
            price = model.high * model.high / price
        elif price < model.low:
            price = model.low * model.low / price
        self.price = price
        quoted = round(round(price / TICK_SIZE) * TICK_SIZE, 2)
        lots = 1 + int(rng.expovariate(0.35))
        return Tick(self.symbol, ts, quoted, lots * model.lot)


class SimSource:
    name = "sim"

    def __init__(self, symbols: Sequence[str], seed: int, ticks_per_second: float, clock: Clock) -> None:
        if ticks_per_second <= 0:
            raise ValueError("ticks_per_second must be > 0")
        self.symbols = tuple(symbols)
        self.seed = seed
        self.ticks_per_second = float(ticks_per_second)
        self.clock = clock
        self._walks = [_Walk(symbol, seed) for symbol in self.symbols]
        self._last_now: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._ticks = 0
        self._skipped = 0
        self._running = False

    # ---------------------------------------------------------------------------------------- the model
    def step(self, now: float) -> list[Tick]:
        """The ticks due between the previous step's time and `now` (none on the first call)."""
        previous = self._last_now
        if previous is None or now <= previous:
            self._last_now = now if previous is None else previous
            return []
        self._last_now = now
        elapsed = now - previous
        start = previous
        if elapsed > MAX_CATCH_UP_SECONDS:
            start = now - MAX_CATCH_UP_SECONDS
        span = now - start
        out: list[Tick] = []
        skipped = 0
        for walk in self._walks:
            due = walk.due_from + elapsed * self.ticks_per_second
            count = int(due)
            walk.due_from = due - count
            emitted = min(count, int(span * self.ticks_per_second) + 1)
            skipped += count - emitted
            for k in range(emitted):
                out.append(walk.next_tick(start + span * (k + 1) / emitted))
        out.sort(key=_tick_time)
        if skipped:
            with self._lock:
                self._skipped += skipped
        return out

    # ---------------------------------------------------------------------------------------- contracts
    def watch(self, symbols: Sequence[str], prices: Mapping[str, float]) -> list[str]:
        """Walk these contracts from the given prices; one without a price is not simulated."""
        accepted = []
        with self._lock:
            present = {walk.symbol for walk in self._walks}
            added = []
            for symbol in symbols:
                if symbol in present:
                    accepted.append(symbol)
                elif prices.get(symbol, 0.0) > 0:
                    added.append(_Walk(symbol, self.seed, start=prices[symbol]))
                    accepted.append(symbol)
            if added:
                self._walks = [*self._walks, *added]  # replaced whole: step() may be iterating the old list
        return accepted

    def unwatch(self, symbols: Sequence[str]) -> None:
        gone = set(symbols) - set(self.symbols)
        with self._lock:
            self._walks = [walk for walk in self._walks if walk.symbol not in gone]

    # ---------------------------------------------------------------------------------------- interface
    def start(self, callbacks: SourceCallbacks) -> None:
        if self._thread is not None:
            raise RuntimeError("a SimSource starts once")
        self._running = True
        self._thread = threading.Thread(target=self._run, args=(callbacks,), name="sim-feed", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def status(self) -> SourceStatus:
        with self._lock:
            return SourceStatus(name=self.name, connected=self._running, ticks=self._ticks,
                                detail={"symbols": list(self.symbols), "seed": self.seed,
                                        "ticks_per_second": self.ticks_per_second,
                                        "skipped": self._skipped})

    def _run(self, callbacks: SourceCallbacks) -> None:
        log.event("FEED_SIM_STARTED", "simulated feed", symbols=list(self.symbols), seed=self.seed,
                  ticks_per_second=self.ticks_per_second)
        try:
            self.step(self.clock.now())
            # The wait paces the thread; what it emits depends only on the clock readings.
            while not self._stop.wait(BATCH_INTERVAL_SECONDS):
                batch = self.step(self.clock.now())
                if batch:
                    with self._lock:
                        self._ticks += len(batch)
                    callbacks.on_ticks(batch)
        except Exception as exc:  # the feed actor decides what a failure means
            self._running = False
            log.event("FEED_SIM_FAILED", str(exc), level=logging.ERROR)
            callbacks.on_error(exc)
            return
        self._running = False


def _tick_time(tick: Tick) -> float:
    return tick[1]
