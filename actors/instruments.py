"""The instrument master the running system trades by, and the adapter that downloads Dhan's.

`InstrumentBook` is a thin thread-safe view over one `core.instruments.InstrumentIndex`: the refresher
(actors/market_data/instrument_master.py) builds a new index off to the side and swaps it in whole, so a
reader sees the old master or the new one, never a mix. Everything that needs lots, ticks, expiries or
the contract behind a name asks the book: manual entry (whole lots, trading symbols), the strategy (the
lot of the ATM contract it picks, the expiry rule), the trade actors (the tick of a limit price), the
Dhan broker, the MDS API (`/v1/quote?symbol=NIFTY-Dec2026-24000-CE`).

Which master serves: with the sim feed and the paper broker, or a replay, the snapshot shipped in
config/data (no network; made-up security ids); when the feed or the broker is Dhan, Dhan's compact CSV
from `dhan.scrip_master_url`, stored in the `instruments` table and reloaded each trading day
(`live_master`).

`fetch_scrip_master(url)` streams the CSV (requests `stream=True` + `iter_lines`) straight into the
core parser: the ~200k-row file is never held in memory, only the rows kept (indices, index options and
futures). A `file://` URL reads a local copy (an operator's download, tests).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import requests

from config.reference import load_instrument_snapshot
from config.settings import Settings
from core.instruments import (
    Instrument,
    InstrumentError,
    InstrumentIndex,
    ParseReport,
    ScripMasterError,
    UnknownInstrument,
    parse_scrip_master,
)

__all__ = [
    "InstrumentBook",
    "MasterUnavailable",
    "fetch_scrip_master",
    "live_master",
    "snapshot_book",
]

CHUNK_BYTES = 1 << 16


class MasterUnavailable(Exception):
    """The scrip master could not be loaded (network, HTTP status, not the compact CSV, no rows)."""


@dataclass(frozen=True)
class _Loaded:
    index: InstrumentIndex
    source: str  # "snapshot" | "dhan" | "storage" | "" (nothing loaded yet)
    loaded_at: float  # epoch seconds when this master was downloaded (0.0: never)


class InstrumentBook:
    """The current instrument master (see the module docstring). Reads never block; `replace` swaps."""

    def __init__(self, index: InstrumentIndex | None = None, *, source: str = "", loaded_at: float = 0.0) -> None:
        self._current = _Loaded(index if index is not None else InstrumentIndex(()), source, loaded_at)

    # -- the swap ----------------------------------------------------------------------------------------
    def replace(self, index: InstrumentIndex, *, source: str, loaded_at: float) -> None:
        self._current = _Loaded(index, source, loaded_at)  # one reference assignment: atomic for readers

    @property
    def index(self) -> InstrumentIndex:
        """The master now; hold on to it for several lookups that must agree with each other."""
        return self._current.index

    @property
    def source(self) -> str:
        return self._current.source

    @property
    def loaded_at(self) -> float:
        return self._current.loaded_at

    def __len__(self) -> int:
        return len(self._current.index)

    # -- lookups -----------------------------------------------------------------------------------------
    def resolve(self, symbol: str) -> Instrument:
        """The instrument a name denotes (SEC_<id>, SEGMENT:<id>, an index, a trading or dated symbol);
        InstrumentError (UnknownInstrument, AmbiguousInstrument) saying why not."""
        return self._current.index.resolve(symbol)

    def find(self, symbol: str) -> Instrument | None:
        """Like `resolve`, None for an unknown name or an empty master (an ambiguous name still raises)."""
        try:
            return self._current.index.resolve(symbol)
        except UnknownInstrument:
            return None

    def canonical(self, symbol: str) -> str:
        """The name the rest of the system trades and quotes by: the index name or SEC_<security id>.

        `NIFTY-Dec2026-24000-CE` -> `SEC_40012`. A name the master does not know is returned as given when
        it already has the system's form (an empty master, an instrument listed after the last refresh);
        otherwise InstrumentError.
        """
        text = symbol.strip()
        try:
            return self._current.index.resolve(text).symbol
        except UnknownInstrument:
            upper = text.upper()
            if upper.startswith("SEC_") and upper[4:].isdigit():
                return f"SEC_{upper[4:]}"
            if upper in _INDEX_NAMES:
                return upper
            raise

    def lot_size(self, symbol: str) -> int | None:
        """Units per lot of the instrument (None: the master does not know it)."""
        try:
            found = self.find(symbol)
        except InstrumentError:
            return None
        return found.lot_size if found is not None else None

    def tick_size(self, symbol: str) -> float | None:
        """Its tick in rupees (None: unknown; an index has no tradable tick)."""
        try:
            found = self.find(symbol)
        except InstrumentError:
            return None
        if found is None or found.instrument == "INDEX" or found.tick_size <= 0:
            return None
        return found.tick_size

    def monthly_expiries(self, underlying: str) -> set[str]:
        return self._current.index.monthly_expiries(underlying)

    def status(self) -> dict[str, Any]:
        current = self._current
        return {"source": current.source or None, "instruments": len(current.index),
                "loaded_at": current.loaded_at or None,
                "underlyings": current.index.underlyings()}


_INDEX_NAMES = frozenset({"NIFTY", "BANKNIFTY", "FINNIFTY"})


def live_master(settings: Settings) -> bool:
    """True when Dhan's own master must serve: the feed or the broker talks to Dhan (its security ids are
    real). Otherwise (sim feed + paper broker, a replay) the shipped snapshot does."""
    return settings.feed.source == "dhan" or settings.broker.kind == "dhan"


def snapshot_book(now: float | None = None) -> InstrumentBook:
    """The book over the shipped snapshot (config/data/instruments_snapshot.csv)."""
    return InstrumentBook(load_instrument_snapshot(), source="snapshot",
                          loaded_at=time.time() if now is None else now)


def _lines(url: str, timeout: float) -> Iterator[str]:
    parts = urlsplit(url)
    if parts.scheme == "file":
        try:
            with open(Path(unquote(parts.path)), encoding="utf-8", newline="") as fh:
                yield from fh
        except OSError as exc:
            raise MasterUnavailable(f"{url}: unreadable ({exc.strerror or exc})") from None
        return
    try:
        with requests.get(url, stream=True, timeout=(min(timeout, 5.0), timeout)) as response:
            if response.status_code != 200:
                raise MasterUnavailable(f"{url}: HTTP {response.status_code}")
            response.encoding = "utf-8"  # text/csv without a charset would otherwise decode as Latin-1
            for line in response.iter_lines(chunk_size=CHUNK_BYTES, decode_unicode=True):
                yield line if isinstance(line, str) else line.decode("utf-8")
    except requests.RequestException as exc:
        raise MasterUnavailable(f"{url}: {type(exc).__name__}: {exc}") from None


def fetch_scrip_master(url: str, *, timeout: float = 30.0) -> tuple[list[Instrument], ParseReport]:
    """Download and parse Dhan's compact scrip master, streaming; the kept instruments and the parse report.

    MasterUnavailable when the download fails, the file is not the compact CSV, or it yields no
    instrument at all (an empty master must never replace a good one)."""
    report = ParseReport()
    try:
        instruments = list(parse_scrip_master(_lines(url, timeout), report=report))
    except ScripMasterError as exc:
        raise MasterUnavailable(f"{url}: {exc}") from None
    if not instruments:
        raise MasterUnavailable(f"{url}: no index, index option or index future in {report.rows} rows")
    return instruments, report
