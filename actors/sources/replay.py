"""Replay a recorded tick file (CSV `ts,symbol,ltp,volume`) as a tick source.

The file: a header line, then one tick per row, `ts` ISO-8601 with an offset
(`2026-11-20T09:15:00.031+05:30`; a naive time is taken as IST), volume may be 0. Rows are delivered in
file order, late (out-of-order) rows included: that is what the live feed delivered.

speed 0 replays as fast as possible in batches of up to `BATCH_MAX` ticks; speed > 0 paces the ticks at
speed x real time, one batch per ~10 ms slice of (scaled) event time. Before each batch is delivered the
VirtualClock is advanced to the latest tick ts so far, so the actors downstream see event time.

A bad row (wrong field count, bad time, price not a positive number, volume not a non-negative integer)
is skipped and counted; status().detail["bad_rows"] is the count and detail["bad_row_lines"] the first
few line numbers (1-based, the header is line 1). A file that can't be read is a `ReplayFileUnreadable`
given to on_error (it needs an operator; retrying won't help).

Parsing runs at ~650k rows/s on these machines (~500k ticks/s end to end at speed 0): for the form the
recorder writes (`...T09:15:00.031+05:30`) the date-to-second part of a timestamp is parsed once per
distinct second (cached) and the milliseconds are added in integer microseconds, which gives exactly the
float `datetime.fromisoformat(ts).timestamp()` gives; any other ISO form takes the general path. Bytes that
are not UTF-8 make their row bad, not the file.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from actors.clock import VirtualClock
from actors.sources.base import SourceCallbacks, SourceStatus
from core.market import IST, Tick
from telemetry.logs import get_logger

__all__ = ["BATCH_MAX", "BadRows", "ReplayFileUnreadable", "ReplaySource", "TickParser", "read_ticks"]

BATCH_MAX = 5_000  # ticks per on_ticks call at speed 0
SLICE_SECONDS = 0.010  # paced replay: ticks due within one such slice of real time go together
BAD_LINES_KEPT = 10
_READ_HINT = 1 << 20  # bytes per readlines() chunk
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_FRACTION_SCALE = (0, 100_000, 10_000, 1_000, 100, 10, 1)  # by the number of fraction digits
_INF = math.inf
_new_tuple = tuple.__new__

log = get_logger("mybot.sources.replay")


class ReplayFileUnreadable(Exception):
    """The replay file is missing or unreadable: needs an operator (not retried to any benefit)."""


@dataclass
class BadRows:
    count: int = 0
    lines: list[int] = field(default_factory=list)

    def add(self, line_no: int) -> None:
        self.count += 1
        if len(self.lines) < BAD_LINES_KEPT:
            self.lines.append(line_no)


class TickParser:
    """Turns CSV lines into Ticks, counting bad rows; keeps the per-second timestamp cache."""

    def __init__(self) -> None:
        self.bad = BadRows()
        self.rows = 0  # data rows seen, good or bad
        self.line_no = 0  # last line number consumed (the header counts)
        # "YYYY-MM-DDTHH:MM:SS" -> epoch microseconds of that second at offset `_offset` (one offset
        # at a time: a file switching offsets back and forth is merely slower).
        self._seconds: dict[str, int] = {}
        self._offset = ""

    def is_header(self, line: str) -> bool:
        return line.strip().lower().startswith("ts,")

    def parse(self, lines: list[str]) -> list[Tick]:
        """Parse consecutive data lines (the header already consumed); bad rows are counted and skipped."""
        out: list[Tick] = []
        append = out.append
        seconds = self._seconds
        offset = self._offset
        inf = _INF
        line_no = self.line_no
        for line in lines:
            line_no += 1
            try:
                stamp, symbol, ltp, vol = line.split(",")
                # Fast path: "YYYY-MM-DDTHH:MM:SS.fff+HH:MM" (what the recorder writes) with a cached
                # second; every other form goes the general way (and fills the cache).
                base = seconds.get(stamp[:19])
                millis = stamp[20:23]
                if (base is not None and len(stamp) == 29 and stamp[19] == "." and millis.isdigit()
                        and stamp.endswith(offset)):
                    ts = (base + int(millis) * 1000) / 1_000_000
                else:
                    ts = self._slow_ts(stamp)
                    offset = self._offset
                price = float(ltp)
                volume = int(vol)
            except (ValueError, IndexError):
                if line.strip():  # a blank line (a trailing newline) is not a bad row
                    self.bad.add(line_no)
                continue
            if not (0.0 < price < inf) or volume < 0 or not symbol:
                self.bad.add(line_no)
                continue
            append(_new_tuple(Tick, (symbol, ts, price, volume)))
        self.rows += line_no - self.line_no
        self.line_no = line_no
        if len(seconds) > 200_000:  # a multi-week file: keep the cache bounded
            seconds.clear()
        return out

    def _slow_ts(self, stamp: str) -> float:
        """Any ISO-8601 form (naive = IST); caches the second of the common form for the fast path."""
        parsed = datetime.fromisoformat(stamp)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=IST)
        micros = (parsed - _EPOCH) // _MICROSECOND
        if len(stamp) == 29 and stamp[10] == "T" and stamp[19] == "." and stamp[-6] in "+-":
            offset = stamp[-6:]
            if offset != self._offset:
                self._seconds.clear()
                self._offset = offset
            self._seconds[stamp[:19]] = micros - parsed.microsecond
        return micros / 1_000_000


def _read_chunks(handle: IO[str], parser: TickParser) -> Iterator[list[Tick]]:
    first = True
    while True:
        lines = handle.readlines(_READ_HINT)
        if not lines:
            return
        if first:
            first = False
            if parser.is_header(lines[0]):
                parser.line_no += 1
                lines = lines[1:]
        yield parser.parse(lines)


def read_ticks(path: str | Path, parser: TickParser | None = None) -> Iterator[Tick]:
    """Every good tick of a replay file, in file order; pass a TickParser to see the bad-row count.

    Raises ReplayFileUnreadable (on the first next()) if the file can't be opened.
    """
    parser = parser or TickParser()
    try:
        handle = open(path, encoding="utf-8-sig", errors="replace")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise ReplayFileUnreadable(f"cannot open replay file {path}: {exc.strerror or exc}") from exc
    with handle:
        for chunk in _read_chunks(handle, parser):
            yield from chunk


class ReplaySource:
    name = "replay"

    def __init__(self, path: str | Path, speed: float = 0.0, clock: VirtualClock | None = None,
                 max_wait_seconds: float = 5.0) -> None:
        """`max_wait_seconds` caps one paced wait, so a night between two sessions doesn't stall a replay."""
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self.path = Path(path)
        self.speed = float(speed)
        self.clock = clock
        self.max_wait_seconds = max_wait_seconds
        self._parser = TickParser()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._ticks = 0
        self._running = False
        self._finished = False
        self._max_ts = -_INF
        self._callbacks: SourceCallbacks | None = None

    # ---------------------------------------------------------------------------------------- interface
    def start(self, callbacks: SourceCallbacks) -> None:
        if self._thread is not None:
            raise RuntimeError("a ReplaySource starts once; make a new one to replay again")
        self._callbacks = callbacks
        self._running = True
        self._thread = threading.Thread(target=self._run, name=f"replay:{self.path.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def status(self) -> SourceStatus:
        with self._lock:
            bad = self._parser.bad
            return SourceStatus(
                name=self.name, connected=self._running, finished=self._finished, ticks=self._ticks,
                detail={"path": str(self.path), "speed": self.speed, "rows": self._parser.rows,
                        "bad_rows": bad.count, "bad_row_lines": list(bad.lines),
                        "event_time": None if self._max_ts == -_INF else self._max_ts})

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the replay thread to end; True if it has (tests and the CLI's one-shot replay)."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ---------------------------------------------------------------------------------------- the thread
    def _run(self) -> None:
        callbacks = self._callbacks
        assert callbacks is not None
        try:
            try:
                handle = open(self.path, encoding="utf-8-sig", errors="replace")  # noqa: SIM115 - closed by the with below
            except OSError as exc:
                raise ReplayFileUnreadable(
                    f"cannot open replay file {self.path}: {exc.strerror or exc}") from exc
            with handle:
                log.event("FEED_REPLAY_STARTED", "replaying", path=str(self.path), speed=self.speed)
                completed = self._replay(handle, callbacks)
        except Exception as exc:  # the feed actor decides; a source thread must not die silently
            self._running = False
            log.event("FEED_REPLAY_FAILED", str(exc), path=str(self.path), level=logging.ERROR)
            callbacks.on_error(exc)
            return
        self._running = False
        bad = self._parser.bad
        if bad.count:
            log.event("FEED_REPLAY_BAD_ROWS", "bad rows skipped", path=str(self.path), bad_rows=bad.count,
                      first_lines=list(bad.lines), level=logging.WARNING)
        if completed:
            with self._lock:
                self._finished = True
            log.event("FEED_REPLAY_FINISHED", "end of replay file", path=str(self.path), ticks=self._ticks,
                      bad_rows=bad.count)
            callbacks.on_finished()

    def _replay(self, handle: IO[str], callbacks: SourceCallbacks) -> bool:
        """Deliver the whole file; False if stopped before its end."""
        if self.speed == 0:
            return self._replay_fast(handle, callbacks)
        return self._replay_paced(handle, callbacks)

    def _deliver(self, batch: list[Tick], max_ts: float, callbacks: SourceCallbacks) -> None:
        with self._lock:
            self._max_ts = max_ts
            self._ticks += len(batch)
        if self.clock is not None:
            self.clock.advance(max_ts)
        callbacks.on_ticks(batch)

    def _replay_fast(self, handle: IO[str], callbacks: SourceCallbacks) -> bool:
        max_ts = -_INF
        for chunk in _read_chunks(handle, self._parser):
            for offset in range(0, len(chunk), BATCH_MAX):
                if self._stop.is_set():
                    return False
                batch = chunk[offset:offset + BATCH_MAX]
                batch_max = max(tick[1] for tick in batch)
                if batch_max > max_ts:
                    max_ts = batch_max
                self._deliver(batch, max_ts, callbacks)
        return not self._stop.is_set()

    def _replay_paced(self, handle: IO[str], callbacks: SourceCallbacks) -> bool:
        # Tick due time (real) = start + (running max event ts - first ts) / speed; a late row is due
        # at once (its ts is below the running max), so file order is kept.
        scale = 1.0 / (self.speed * SLICE_SECONDS)
        first_ts: float | None = None
        real_start = 0.0
        max_ts = batch_max = -_INF
        batch: list[Tick] = []
        batch_slice = 0
        for chunk in _read_chunks(handle, self._parser):
            for tick in chunk:
                ts = tick[1]
                if first_ts is None:
                    first_ts, real_start = ts, time.monotonic()
                if ts > max_ts:
                    max_ts = ts
                slot = int((max_ts - first_ts) * scale)
                if batch and (slot != batch_slice or len(batch) >= BATCH_MAX):
                    shifted = self._wait_for(real_start, batch_slice)
                    if shifted is None:
                        return False
                    real_start = shifted
                    self._deliver(batch, batch_max, callbacks)
                    batch = []
                if not batch:
                    batch_slice = slot
                batch.append(tick)
                batch_max = max_ts
        if batch:
            if self._wait_for(real_start, batch_slice) is None:
                return False
            self._deliver(batch, batch_max, callbacks)
        return not self._stop.is_set()

    def _wait_for(self, real_start: float, slice_index: int) -> float | None:
        """Wait until the slice is due; returns the (maybe shifted) real start, or None if stopped."""
        delay = real_start + slice_index * SLICE_SECONDS - time.monotonic()
        if delay > self.max_wait_seconds:
            real_start -= delay - self.max_wait_seconds  # compress a long pause (a night, a halt)
            delay = self.max_wait_seconds
        if delay > 0 and self._stop.wait(delay):
            return None
        if self._stop.is_set():
            return None
        return real_start

