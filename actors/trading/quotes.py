"""Latest prices for the trading side: what marketable limits, exits, paper fills and marks are priced from.

A `QuoteBook` asks its sources in order: explicit pins (tests, an operator's override), then the sources
the runtime hands it at assembly — the in-process MDS read model (role all: ticks of the feed, which
carries every contract a position holds, then the option chains' prices), the MDS client (role trader
with market_data.provider = mds), the bus keys the MDS publisher writes (`quote:<symbol>`), and the
latest option chains. No source is looked up late: the runtime builds the book with every source it
will ever use.

Ages. A timed source says when its price was true (a tick's time, a chain's poll time). A price older
than `max_age_seconds` (execution.max_quote_age_seconds) is not fresh: the book then fetches a REST LTP
(`fetch`: Dhan's marketfeed/ltp, within the 1 request/s quote budget; it never waits for the budget),
and falls back to the stale price only when that gives nothing. `quote(symbol)` says which it was (and
how old); `exit_pricing` widens an exit's band when only a stale price, or none, is known — an exit limit
is never priced as if an old quote were the market.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import orjson

from core.chains import parse_chain
from core.instruments import InstrumentError, round_marketable_to_tick
from core.orders import Side, marketable_limit
from storage.bus import Bus
from storage.errors import StorageError

__all__ = [
    "CHAIN_CACHE_SECONDS",
    "STALE_BAND_FACTOR",
    "ExitPricing",
    "LtpFetch",
    "Quote",
    "QuoteBook",
    "QuoteSource",
    "TimedQuoteSource",
    "bus_quotes",
    "chain_quotes",
    "exit_pricing",
]

QuoteSource = Callable[[str], float | None]
ChainPayloads = Callable[[str], Sequence[tuple[object, float]]]  # underlying -> (payload, updated_at) pairs

CHAIN_CACHE_SECONDS = 0.5
STALE_BAND_FACTOR = 3.0  # an exit priced without a fresh quote crosses the market by 3x the usual band


@dataclass(frozen=True, slots=True)
class Quote:
    price: float
    ts: float  # epoch seconds when the price was true (a pin or an untimed source: when it was asked)
    source: str  # pin | tick | chain | bus | mds | rest | ...
    fresh: bool


TimedQuoteSource = Callable[[str], "tuple[float, float] | None"]  # symbol -> (price, epoch seconds)
LtpFetch = Callable[[str], float | None]  # a REST LTP within the quote budget; None: over budget or failed


@dataclass(frozen=True)
class _Timed:
    name: str
    source: TimedQuoteSource


class QuoteBook:
    def __init__(self, sources: Iterable[QuoteSource] = (), *,
                 timed: Iterable[tuple[str, TimedQuoteSource]] = (), fetch: LtpFetch | None = None,
                 now: Callable[[], float] = time.time, max_age_seconds: float = 2.0) -> None:
        """`timed` sources (name, fn) are asked first, in order; plain `sources` (no age known: counted
        fresh) after them. `fetch` is the REST LTP asked when nothing fresh is known."""
        self._timed = tuple(_Timed(name, fn) for name, fn in timed)
        self._sources = tuple(sources)
        self._fetch = fetch
        self._now = now
        self.max_age = max_age_seconds
        self._pins: dict[str, float] = {}
        self._fetched: dict[str, tuple[float, float]] = {}  # symbol -> (price, fetched at)
        self._lock = threading.Lock()
        self.fetches = 0

    def set(self, symbol: str, price: float | None) -> None:
        """Pin a price (tests, a manual override); None removes it."""
        with self._lock:
            if price is None:
                self._pins.pop(symbol, None)
            else:
                self._pins[symbol] = float(price)

    def __call__(self, symbol: str) -> float | None:
        """The best price known (fresh, else a REST LTP, else stale); None when nothing knows the symbol."""
        quote = self.quote(symbol)
        return quote.price if quote is not None else None

    def known(self, symbol: str) -> float | None:
        """The best price known without asking the network (fresh or stale): for callers on shared threads
        that must never block on a REST call (the paper broker's fills run on the scheduler's thread)."""
        quote = self.quote(symbol, fetch=False)
        return quote.price if quote is not None else None

    def quote(self, symbol: str, *, fetch: bool = True) -> Quote | None:
        """The best quote: a pin, a fresh timed price, a recently fetched LTP, an untimed source, a REST
        LTP fetched now (unless `fetch` is False), else the freshest stale price; None if none knows it."""
        now = self._now()
        pinned = self._pins.get(symbol)
        if pinned is not None:
            return Quote(pinned, now, "pin", True)
        stale: Quote | None = None
        for timed in self._timed:
            found = timed.source(symbol)
            if found is None or not found[0] or found[0] <= 0:
                continue
            price, ts = float(found[0]), float(found[1])
            if now - ts <= self.max_age:
                return Quote(price, ts, timed.name, True)
            if stale is None or ts > stale.ts:
                stale = Quote(price, ts, timed.name, False)
        fetched = self._fetched.get(symbol)
        if fetched is not None and now - fetched[1] <= self.max_age:
            return Quote(fetched[0], fetched[1], "rest", True)
        for source in self._sources:
            plain = source(symbol)
            if plain is not None and plain > 0:
                return Quote(float(plain), now, "source", True)
        if fetch and self._fetch is not None:
            fetched_price = self._fetch(symbol)
            if fetched_price is not None and fetched_price > 0:
                at = self._now()
                with self._lock:
                    self._fetched[symbol] = (float(fetched_price), at)
                    self.fetches += 1
                return Quote(float(fetched_price), at, "rest", True)
        return stale


@dataclass(frozen=True)
class ExitPricing:
    expected: float  # the price the exit is expected at (slippage is measured against it)
    limit: float  # the marketable LIMIT, on the tick when the tick is known
    quote: Quote | None  # what it was priced from (None: no quote at all, priced from `fallback`)
    band_pct: float  # the band used (widened without a fresh quote)

    @property
    def widened(self) -> bool:
        return self.quote is None or not self.quote.fresh


def exit_pricing(quotes: QuoteSource, symbol: str, side: Side, *, fallback: float, band_pct: float,
                 tick: float | None = None) -> ExitPricing:
    """The exit's expected price and marketable limit.

    A fresh quote (or a REST LTP) prices it with the usual band; a stale quote or none at all (then
    `fallback`, e.g. the entry price) with STALE_BAND_FACTOR x the band: the market may have moved and an
    exit must fill. The limit is rounded to the tick TOWARD the market (BUY up, SELL down,
    core.instruments.round_marketable_to_tick): at most one tick beyond the band, never less marketable.
    """
    quote = quotes.quote(symbol) if isinstance(quotes, QuoteBook) else _plain(quotes, symbol)
    expected = quote.price if quote is not None else fallback
    band = band_pct if quote is not None and quote.fresh else band_pct * STALE_BAND_FACTOR
    limit = marketable_limit(expected, side, band)
    if tick and limit > 0:
        try:
            limit = round_marketable_to_tick(limit, tick, side)
        except InstrumentError:
            pass  # a limit below one tick: leave it to the broker to refuse
    return ExitPricing(expected, limit, quote, band)


def _plain(quotes: QuoteSource, symbol: str) -> Quote | None:
    price = quotes(symbol)
    return Quote(float(price), time.time(), "source", True) if price is not None and price > 0 else None


def bus_quotes(bus: Bus) -> TimedQuoteSource:
    """`quote:<symbol>` as the MDS publisher writes it ({"ltp", "ts_epoch"})."""

    def quote(symbol: str) -> tuple[float, float] | None:
        try:
            raw = bus.get(f"quote:{symbol}")
        except StorageError:
            return None
        if raw is None:
            return None
        try:
            body = orjson.loads(raw)
            return float(body["ltp"]), float(body.get("ts_epoch") or 0.0)
        except (ValueError, KeyError, TypeError):
            return None

    return quote


def chain_quotes(underlyings: Sequence[str], payloads: ChainPayloads) -> TimedQuoteSource:
    """SEC_<id> -> (last price, the chain's updated_at) of that contract in the latest option chains
    (indexed at most every 0.5 s). `payloads(underlying)` gives (payload, updated_at) pairs."""
    lock = threading.Lock()
    indexed: dict[str, tuple[float, float]] = {}
    indexed_at = [-1e9]

    def quote(symbol: str) -> tuple[float, float] | None:
        if not symbol.startswith("SEC_"):
            return None
        now = time.monotonic()
        with lock:
            if now - indexed_at[0] >= CHAIN_CACHE_SECONDS:
                prices: dict[str, tuple[float, float]] = {}
                for underlying in underlyings:
                    for payload, updated_at in payloads(underlying):
                        prices.update((s, (p, updated_at)) for s, p in parse_chain(payload).prices().items())
                indexed.clear()
                indexed.update(prices)
                indexed_at[0] = now
            return indexed.get(symbol)

    return quote
