"""The MDS read model: what the HTTP API and in-process consumers read, kept in memory.

Written by the actors that own the facts (the feed writes quotes, each candle builder its symbol's
candles, the poller option chains); read by HTTP threads. Each writer owns its keys, so a per-symbol
lock is enough and readers never wait on I/O. Candles older than memory holds are read from storage.

Option chains are kept per (underlying, expiry). A chain is over at 15:30 IST on its expiry day
(`core.instruments.expiry_close_epoch`): from then on no reader gets it and the next write or purge drops
it. Without an expiry, a reader gets the nearest live one; `chain_by_rule` picks the expiry the strategy
trades (`strategy.expiry`: nearest, next, monthly). Chains stored before a restart are read back at start.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from actors.clock import Clock
from core.aggregate import last_n
from core.chains import parse_chain
from core.instruments import InstrumentError, NoExpiry, choose_expiry, expiry_close_epoch
from core.market import Candle
from storage.errors import StorageError
from storage.records import OptionChainRecord
from storage.repositories import Storage

__all__ = ["MarketCache"]

MEMORY_MINUTES = 3000  # about eight sessions of 1-minute candles per symbol


@dataclass
class _SymbolCandles:
    lock: threading.Lock
    closed: deque[Candle]
    forming: Candle | None = None
    version: int = 0  # bumped on every closed or revised candle: readers cache what they derive from it


class MarketCache:
    def __init__(self, symbols: Iterable[str], clock: Clock, storage: Storage | None = None,
                 memory_minutes: int = MEMORY_MINUTES, underlyings: Iterable[str] = ()) -> None:
        self.symbols = frozenset(symbols)
        self.underlyings = tuple(underlyings)  # whose stored chains are read back at start
        self.clock = clock
        self.storage = storage
        self.memory_minutes = memory_minutes
        self._candles = {s: _SymbolCandles(threading.Lock(), deque(maxlen=memory_minutes)) for s in self.symbols}
        self._quotes: dict[str, tuple[float, float]] = {}
        self._chains: dict[tuple[str, str], OptionChainRecord] = {}
        self._chain_prices: dict[tuple[str, str], dict[str, float]] = {}  # SEC_<id> -> last price, per chain
        self._listed: dict[str, tuple[str, ...]] = {}  # underlying -> the expiries Dhan lists (the poller's)
        self._chains_lock = threading.Lock()

    # -- writers ------------------------------------------------------------------------------------------
    def set_quotes(self, quotes: dict[str, tuple[float, float]]) -> None:
        self._quotes.update(quotes)

    def add_candles(self, symbol: str, candles: Iterable[Candle]) -> None:
        """Closed or revised 1-minute candles; a revision replaces its minute, a gap-filling one is inserted."""
        book = self._candles[symbol]
        with book.lock:
            book.version += 1
            closed = book.closed
            for candle in candles:
                if not closed or candle.ts > closed[-1].ts:
                    closed.append(candle)  # the hot path: the next minute
                    continue
                for i in range(len(closed) - 1, -1, -1):
                    if closed[i].ts == candle.ts:
                        if candle.revision >= closed[i].revision:
                            closed[i] = candle
                        break
                    if closed[i].ts < candle.ts:
                        self._insert_at(book, i + 1, candle)
                        break
                else:
                    if len(closed) < (closed.maxlen or 0):
                        closed.appendleft(candle)

    @staticmethod
    def _insert_at(book: _SymbolCandles, index: int, candle: Candle) -> None:
        """Rare (a late tick filling a gap): rebuild rather than insert into a full deque."""
        items = list(book.closed)
        items.insert(index, candle)
        book.closed = deque(items[-(book.closed.maxlen or len(items)):], maxlen=book.closed.maxlen)

    def set_forming(self, symbol: str, candle: Candle | None) -> None:
        self._candles[symbol].forming = candle

    def set_option_chain(self, record: OptionChainRecord) -> None:
        try:
            prices = parse_chain(record.payload).prices()
        except (TypeError, ValueError, AttributeError):
            prices = {}
        with self._chains_lock:
            key = (record.idx, record.expiry)
            current = self._chains.get(key)
            if current is not None and current.updated_at > record.updated_at:
                return  # an older copy (read back from storage after a fresher poll)
            self._chains[key] = record
            self._chain_prices[key] = prices
        self.drop_expired_chains()

    def set_listed_expiries(self, symbol: str, expiries: Iterable[str]) -> None:
        """Every expiry Dhan lists for the underlying (not only those with a chain here): what an expiry
        rule chooses among."""
        self._listed = {**self._listed, symbol: tuple(sorted(expiries))}

    def drop_expired_chains(self) -> list[tuple[str, str]]:
        """Forget every chain whose expiry is over (15:30 IST on its day); the (underlying, expiry) dropped."""
        now = self.clock.now()
        with self._chains_lock:
            gone = [key for key in self._chains if not _live(key[1], now)]
            for key in gone:
                del self._chains[key]
                self._chain_prices.pop(key, None)
        return gone

    def warm_from_storage(self) -> int:
        """Load recent candles and chains at start; the database may be down (then memory fills as we go)."""
        if self.storage is None:
            return 0
        loaded = 0
        try:
            for symbol in self.symbols:
                candles = self.storage.candles.latest(symbol, self.memory_minutes)
                self.add_candles(symbol, candles)
                loaded += len(candles)
            self.restore_chains()
        except StorageError:
            return loaded
        return loaded

    def restore_chains(self) -> int:
        """The stored chains of live expiries back into memory (a restart keeps what the poller had)."""
        if self.storage is None:
            return 0
        now = self.clock.now()
        restored = 0
        for underlying in self.underlyings:
            for expiry in self.storage.option_chains.expiries(underlying):
                if not _live(expiry, now):
                    continue
                record = self.storage.option_chains.latest(underlying, expiry)
                if record is not None:
                    self.set_option_chain(record)
                    restored += 1
        return restored

    # -- readers (any thread) -----------------------------------------------------------------------------
    def known_symbol(self, symbol: str) -> bool:
        return symbol in self.symbols

    def served_symbol(self, symbol: str) -> bool:
        """A symbol /v1/quote answers for: a configured one, or a contract with a tick or a chain price."""
        return symbol in self.symbols or symbol in self._quotes or self.chain_quote(symbol) is not None

    def now(self) -> float:
        return self.clock.now()

    def quote(self, symbol: str) -> tuple[float, float] | None:
        return self._quotes.get(symbol)

    def quotes(self) -> dict[str, tuple[float, float]]:
        return dict(self._quotes)

    def chain_quote(self, symbol: str) -> tuple[float, float] | None:
        """(last price, the chain's updated_at) of an option contract (SEC_<id>) in a live chain."""
        if not symbol.startswith("SEC_"):
            return None
        now = self.clock.now()
        with self._chains_lock:
            for key, prices in self._chain_prices.items():
                price = prices.get(symbol)
                if price is not None and _live(key[1], now):
                    return price, self._chains[key].updated_at
        return None

    def contract_price(self, symbol: str) -> tuple[float, float] | None:
        """(price, epoch seconds) of a contract: its last tick, else its price in a live option chain."""
        return self._quotes.get(symbol) or self.chain_quote(symbol)

    def version(self, symbol: str) -> int:
        return self._candles[symbol].version

    def last_closed(self, symbol: str) -> Candle | None:
        book = self._candles.get(symbol)
        if book is None:
            return None
        with book.lock:
            return book.closed[-1] if book.closed else None

    def closed_candles(self, symbol: str, minutes: int) -> list[Candle]:
        book = self._candles[symbol]
        with book.lock:
            if minutes >= len(book.closed):
                return list(book.closed)
            return [book.closed[i] for i in range(len(book.closed) - minutes, len(book.closed))]

    def candles(self, symbol: str, timeframe: int, limit: int, include_partial: bool) -> list[Candle]:
        needed = (timeframe // 60) * limit
        book = self._candles[symbol]
        with book.lock:
            held = len(book.closed)
        minutes = self.closed_candles(symbol, needed + timeframe // 60)
        if held >= book.closed.maxlen and needed > held and self.storage is not None:  # type: ignore[operator]
            minutes = self._with_older_from_storage(symbol, minutes, needed)
        partial = book.forming if include_partial else None
        if timeframe == 60:  # the stored minutes are the answer: no aggregation to do
            if partial is not None and (not minutes or partial.ts > minutes[-1].ts):
                minutes = [*minutes, partial]
            return minutes[-limit:]
        return last_n(minutes, timeframe, limit, partial)

    def _with_older_from_storage(self, symbol: str, minutes: list[Candle], needed: int) -> list[Candle]:
        assert self.storage is not None
        try:
            older = self.storage.candles.latest(symbol, needed + 1440)
        except StorageError:
            return minutes
        first = minutes[0].ts if minutes else None
        return [c for c in older if first is None or c.ts < first] + minutes

    def option_chain(self, symbol: str, expiry: str | None) -> OptionChainRecord | None:
        """The chain of that expiry, or without one the nearest live expiry's; never an expired chain."""
        now = self.clock.now()
        with self._chains_lock:
            if expiry is not None:
                record = self._chains.get((symbol, expiry))
                return record if record is not None and _live(expiry, now) else None
            candidates = [r for (idx, exp), r in self._chains.items() if idx == symbol and _live(exp, now)]
        if not candidates:
            return None
        return min(candidates, key=lambda r: r.expiry)

    def chain_by_rule(self, symbol: str, rule: str, monthly: set[str] | None = None) -> OptionChainRecord | None:
        """The chain of the expiry `rule` picks (core.instruments.choose_expiry) among the live cached
        ones; `monthly` names the monthly expiries (the instrument master's flags). None when the expiry
        the rule asks for has no chain here (e.g. `next` while only the nearest was polled)."""
        expiries = self._listed.get(symbol) or self.chain_expiries(symbol)
        try:
            expiry = choose_expiry(expiries, self.clock.now(), rule, monthly=monthly or None)
        except (NoExpiry, InstrumentError):
            return None
        return self.option_chain(symbol, expiry)

    def chain_expiries(self, symbol: str) -> list[str]:
        """Expiries with a live chain, ascending."""
        now = self.clock.now()
        with self._chains_lock:
            return sorted(exp for (idx, exp) in self._chains if idx == symbol and _live(exp, now))

    def status(self) -> dict[str, Any]:
        return {"symbols": len(self.symbols), "quotes": len(self._quotes),
                "option_chains": len(self._chains)}


def _live(expiry: str, now: float) -> bool:
    try:
        return expiry_close_epoch(expiry) > now
    except InstrumentError:
        return False  # not a date: never served
