"""Recorded option chains: written by `mybot run --record FILE`, read back by `mybot replay --chains`.

Where: next to the tick file, `chains_path_for(FILE)`: `day.csv` -> `day.chains.jsonl`. One JSON line per
chain the option-chain poller fetched, in fetch order:

    {"at": 1795688105.0, "symbol": "NIFTY", "expiry": "2026-12-01", "payload": {"last_price": ..., "oc": {...}}}

`at` is the clock's time of the fetch (epoch seconds), `payload` the chain as Dhan sent it. Recording wraps
the poller's ChainSource (`ChainRecorder.wrap`), so nothing in the poller changes; like the tick recorder,
a write error is logged once (CHAIN_RECORDER_FAILED) and recording stops, never the poller.

`RecordedChains` answers, at the replay clock's time (the close of the candle being decided), what the
live cache would have held then: for `option_chain(symbol)` the latest snapshot of the nearest expiry not
yet past, and for `quote("SEC_<id>")` that contract's last price in the latest snapshot listing it. A bad
line is counted (`bad_lines`) and skipped.
"""

from __future__ import annotations

import bisect
import logging
import re
import threading
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from actors.clock import Clock
from core.market import IST
from telemetry.logs import get_logger

__all__ = ["ChainRecorder", "RecordedChains", "chains_path_for"]

log = get_logger("mybot.sources.chains")

_SECURITY = re.compile(r"^SEC_(\d+)$")


def chains_path_for(ticks_path: str | Path) -> Path:
    """The chains file recorded beside a tick file: `day.csv` -> `day.chains.jsonl`."""
    return Path(ticks_path).with_suffix(".chains.jsonl")


class _ChainSource(Protocol):
    def expiry_list(self, symbol: str) -> list[str]: ...

    def option_chain(self, symbol: str, expiry: str) -> dict[str, Any]: ...


class ChainRecorder:
    def __init__(self, path: str | Path, clock: Clock) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self._file: IO[bytes] | None = open(self.path, "ab")  # noqa: SIM115 - closed by close()
        self._lock = threading.Lock()
        self.recorded = 0
        self.errors = 0

    def record(self, symbol: str, expiry: str, payload: Mapping[str, Any]) -> None:
        line = orjson.dumps({"at": self.clock.now(), "symbol": symbol, "expiry": expiry, "payload": payload}) + b"\n"
        with self._lock:
            if self._file is None:
                return
            try:
                self._file.write(line)
                self._file.flush()  # a chain every few seconds: cheap, and a crash loses none
            except OSError as exc:
                self._failed(exc)
                return
            self.recorded += 1

    def wrap(self, source: _ChainSource) -> _ChainSource:
        return _RecordingSource(source, self)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                try:
                    self._file.close()
                except OSError as exc:
                    self._failed(exc)
                self._file = None

    def _failed(self, exc: OSError) -> None:
        self.errors += 1
        log.event("CHAIN_RECORDER_FAILED", f"option-chain recording stopped: {exc}", path=str(self.path),
                  level=logging.ERROR)
        try:
            if self._file is not None:
                self._file.close()
        except OSError:
            pass
        self._file = None


class _RecordingSource:
    """The poller's ChainSource, recording every chain it hands back."""

    def __init__(self, source: _ChainSource, recorder: ChainRecorder) -> None:
        self.source = source
        self.recorder = recorder

    def expiry_list(self, symbol: str) -> list[str]:
        return self.source.expiry_list(symbol)

    def option_chain(self, symbol: str, expiry: str) -> dict[str, Any]:
        payload = self.source.option_chain(symbol, expiry)
        self.recorder.record(symbol, expiry, payload)
        return payload

    def __getattr__(self, name: str) -> Any:  # the client's other calls (e.g. option_chain_wait) pass through
        return getattr(self.source, name)


class _Series:
    """One (underlying, expiry): snapshots in time order, each with its contracts' prices by security id."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.payloads: list[Mapping[str, Any]] = []
        self._prices: dict[int, dict[str, float]] = {}

    def add(self, at: float, payload: Mapping[str, Any]) -> None:
        index = bisect.bisect_right(self.times, at)  # a file is in fetch order; keep it sorted anyway
        self.times.insert(index, at)
        self.payloads.insert(index, payload)
        self._prices.clear()

    def latest(self, now: float) -> int | None:
        index = bisect.bisect_right(self.times, now) - 1
        return index if index >= 0 else None

    def prices(self, index: int) -> dict[str, float]:
        found = self._prices.get(index)
        if found is None:
            found = self._prices[index] = _contract_prices(self.payloads[index])
        return found


def _contract_prices(payload: Mapping[str, Any]) -> dict[str, float]:
    prices: dict[str, float] = {}
    chain = payload.get("oc")
    if not isinstance(chain, Mapping):
        return prices
    for legs in chain.values():
        if not isinstance(legs, Mapping):
            continue
        for key in ("ce", "pe"):
            leg = legs.get(key)
            if isinstance(leg, Mapping) and leg.get("security_id") is not None:
                price = leg.get("last_price")
                if isinstance(price, int | float) and price > 0:
                    prices[f"SEC_{int(leg['security_id'])}"] = float(price)
    return prices


class RecordedChains:
    """The chains of a recording, as the live cache held them at the clock's time (module docstring)."""

    def __init__(self, path: str | Path, clock: Clock) -> None:
        self.path = Path(path)
        self.clock = clock
        self.series: dict[str, dict[str, _Series]] = {}
        self.snapshots = 0
        self.bad_lines = 0
        with open(self.path, "rb") as handle:
            for raw in handle:
                if not raw.strip():
                    continue
                try:
                    row = orjson.loads(raw)
                    at, symbol, expiry = float(row["at"]), str(row["symbol"]), str(row["expiry"])
                    payload = row["payload"]
                    if not isinstance(payload, Mapping):
                        raise ValueError("payload is not an object")
                except (ValueError, KeyError, TypeError):
                    self.bad_lines += 1
                    continue
                self.series.setdefault(symbol, {}).setdefault(expiry, _Series()).add(at, payload)
                self.snapshots += 1

    @property
    def underlyings(self) -> tuple[str, ...]:
        return tuple(sorted(self.series))

    def option_chain(self, symbol: str) -> Mapping[str, Any] | None:
        """The latest snapshot, at the clock's time, of the nearest expiry not yet past (IST date)."""
        now = self.clock.now()
        today = datetime.fromtimestamp(now, IST).date().isoformat()
        for expiry, series in sorted(self.series.get(symbol, {}).items()):
            if expiry < today:
                continue
            index = series.latest(now)
            if index is not None:
                return series.payloads[index]
        return None

    def quote(self, symbol: str) -> float | None:
        """A contract's last price (`SEC_<id>`) in the latest snapshot, at the clock's time, that lists it."""
        if not _SECURITY.match(symbol):
            return None
        now = self.clock.now()
        best: tuple[float, float] | None = None  # (snapshot time, price)
        for by_expiry in self.series.values():
            for series in by_expiry.values():
                index = series.latest(now)
                if index is None:
                    continue
                price = series.prices(index).get(symbol)
                if price is not None and (best is None or series.times[index] > best[0]):
                    best = (series.times[index], price)
        return best[1] if best is not None else None
