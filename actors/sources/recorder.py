"""Record every received tick to a CSV file in the replay format, so a live day can be replayed.

`ts,symbol,ltp,volume`, ts in IST ISO-8601 with milliseconds (`2026-11-20T09:15:00.031+05:30`), prices in
their shortest exact form (a replay gives back the same floats). Ticks are written in arrival order (late
ticks stay late). Writes are buffered and flushed on `close()` and whenever the buffered ticks span a
second of event time or a second has passed since the last flush (checked as ticks arrive).

Recording must never stop the feed: a write error is logged once (FEED_RECORDER_FAILED), counted, and the
recorder stops writing; the wrapped sink still receives every tick.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import IO

from actors.sources.base import TickSink
from core.market import IST, Tick
from telemetry.logs import get_logger

__all__ = ["HEADER", "TickRecorder", "format_ts"]

HEADER = "ts,symbol,ltp,volume\n"
FLUSH_SECONDS = 1.0

log = get_logger("mybot.sources.recorder")

_second_prefix: dict[int, str] = {}  # epoch second -> "YYYY-MM-DDTHH:MM:SS" in IST (bounded below)


def format_ts(ts: float) -> str:
    """Epoch seconds -> IST ISO-8601 with milliseconds, rounded to the nearest millisecond."""
    millis = round(ts * 1000)
    second, milli = divmod(millis, 1000)
    prefix = _second_prefix.get(second)
    if prefix is None:
        if len(_second_prefix) > 100_000:
            _second_prefix.clear()
        prefix = _second_prefix[second] = datetime.fromtimestamp(second, IST).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{prefix}.{milli:03d}+05:30"


class TickRecorder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        self._file: IO[str] | None = open(self.path, "a", encoding="utf-8", newline="\n")  # noqa: SIM115
        if fresh:
            self._file.write(HEADER)
            self._file.flush()
        self._lock = threading.Lock()
        self._buffer: list[str] = []
        self._buffer_first_ts: float | None = None
        self._last_flush = time.monotonic()
        self.recorded = 0
        self.errors = 0

    def record(self, ticks: Sequence[Tick]) -> None:
        if not ticks:
            return
        lines = [f"{format_ts(ts)},{symbol},{price!r},{volume}\n" for symbol, ts, price, volume in ticks]
        with self._lock:
            if self._file is None:
                return
            self._buffer.extend(lines)
            self.recorded += len(lines)
            first = self._buffer_first_ts
            if first is None:
                first = self._buffer_first_ts = ticks[0][1]
            if (max(tick[1] for tick in ticks) - first >= FLUSH_SECONDS
                    or time.monotonic() - self._last_flush >= FLUSH_SECONDS):
                self._flush_locked()

    def wrap(self, sink: TickSink) -> TickSink:
        """A sink that records each batch, then hands it to `sink`."""
        def recording_sink(ticks: Sequence[Tick]) -> None:
            self.record(ticks)
            sink(ticks)
        return recording_sink

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def close(self) -> None:
        with self._lock:
            self._flush_locked()
            if self._file is not None:
                try:
                    self._file.close()
                except OSError as exc:
                    self._failed(exc)
                self._file = None

    def _flush_locked(self) -> None:
        self._last_flush = time.monotonic()
        self._buffer_first_ts = None
        if self._file is None:
            self._buffer.clear()
            return
        try:
            if self._buffer:
                self._file.write("".join(self._buffer))
            self._file.flush()
        except OSError as exc:
            self._failed(exc)
        finally:
            self._buffer.clear()

    def _failed(self, exc: OSError) -> None:
        self.errors += 1
        log.event("FEED_RECORDER_FAILED", f"tick recording stopped: {exc}", path=str(self.path),
                  level=logging.ERROR)
        try:
            if self._file is not None:
                self._file.close()
        except OSError:
            pass
        self._file = None
