"""Latest prices for the trading side: what marketable limits, exits, paper fills and marks are priced from.

A `QuoteBook` asks its sources in order and takes the first positive price: explicit pins (tests, an
operator's override), then the sources the runtime hands it at assembly — the in-process MDS read model
(role all), the MDS client (role trader with market_data.provider = mds), the bus keys the MDS publisher
writes (`quote:<symbol>`), and for SEC_<id> option contracts the latest option chains. No source is looked
up late: the runtime builds the book with every source it will ever use.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence

import orjson

from core.chains import parse_chain
from storage.bus import Bus
from storage.errors import StorageError

__all__ = ["CHAIN_CACHE_SECONDS", "QuoteBook", "QuoteSource", "bus_quotes", "chain_quotes"]

QuoteSource = Callable[[str], float | None]
ChainPayloads = Callable[[str], Sequence[object]]  # underlying -> its latest option-chain payloads

CHAIN_CACHE_SECONDS = 0.5


class QuoteBook:
    def __init__(self, sources: Iterable[QuoteSource] = ()) -> None:
        self._sources = tuple(sources)
        self._pins: dict[str, float] = {}
        self._lock = threading.Lock()

    def set(self, symbol: str, price: float | None) -> None:
        """Pin a price (tests, a manual override); None removes it."""
        with self._lock:
            if price is None:
                self._pins.pop(symbol, None)
            else:
                self._pins[symbol] = float(price)

    def __call__(self, symbol: str) -> float | None:
        pinned = self._pins.get(symbol)
        if pinned is not None:
            return pinned
        for source in self._sources:
            price = source(symbol)
            if price is not None and price > 0:
                return float(price)
        return None


def bus_quotes(bus: Bus) -> QuoteSource:
    """`quote:<symbol>` as the MDS publisher writes it ({"ltp", "ts_epoch"})."""

    def quote(symbol: str) -> float | None:
        try:
            raw = bus.get(f"quote:{symbol}")
        except StorageError:
            return None
        if raw is None:
            return None
        try:
            return float(orjson.loads(raw)["ltp"])
        except (ValueError, KeyError, TypeError):
            return None

    return quote


def chain_quotes(underlyings: Sequence[str], payloads: ChainPayloads) -> QuoteSource:
    """SEC_<id> -> the last price of that contract in the latest option chains (indexed at most every 0.5 s)."""
    lock = threading.Lock()
    indexed: dict[str, float] = {}
    indexed_at = [-1e9]

    def quote(symbol: str) -> float | None:
        if not symbol.startswith("SEC_"):
            return None
        now = time.monotonic()
        with lock:
            if now - indexed_at[0] >= CHAIN_CACHE_SECONDS:
                prices: dict[str, float] = {}
                for underlying in underlyings:
                    for payload in payloads(underlying):
                        prices.update(parse_chain(payload).prices())
                indexed.clear()
                indexed.update(prices)
                indexed_at[0] = now
            return indexed.get(symbol)

    return quote
