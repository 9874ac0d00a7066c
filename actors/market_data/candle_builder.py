"""CandleBuilder: one per symbol (a dynamic child); folds tick batches into 1-minute candles.

Thin shell around `core.candles.CandleBook`: it restores the last closed candle (memory first,
then storage) so a restarted builder revises rather than duplicates, hands closed candles to the
persister and the publisher, and keeps the read model's view of the symbol current.
"""

from __future__ import annotations

import time
from typing import Any

from actors.market_data.market_cache import MarketCache
from actors.market_data.messages import (
    AdvanceClock,
    CandleTicks,
    CloseCandles,
    PersistCandles,
    PublishCandles,
)
from core.candles import CandleBook, CandleClosed, CandleRevised, GapRecorded, LateTickDropped
from core.market import Candle, to_iso_ist
from storage.errors import StorageError
from storage.repositories import Storage
from supervision.actor import SupervisedActor
from supervision.outbox import Outbox
from supervision.supervisor import ChildHandle, ChildLink
from telemetry import metrics

__all__ = ["CandleBuilder"]


class CandleBuilder(SupervisedActor):
    def __init__(self, link: ChildLink | None, symbol: str, grace_seconds: float, cache: MarketCache,
                 storage: Storage, persister: ChildHandle | Outbox, publisher: ChildHandle | Outbox,
                 listeners: list[Any] | None = None) -> None:
        super().__init__(link)
        self.symbol = symbol
        self.grace_seconds = grace_seconds
        self.cache = cache
        self.storage = storage
        self.persister = persister
        self.publisher = publisher
        self.listeners = listeners or []  # in-process consumers of closed candles (replay, benchmarks)
        self.book: CandleBook | None = None
        self.log = self.log.bind(symbol=symbol)

    def started(self) -> None:
        restored = self.cache.last_closed(self.symbol)
        if restored is None:
            try:
                latest = self.storage.candles.latest(self.symbol, 1)
                restored = latest[-1] if latest else None
            except StorageError as exc:
                self.log.event("CANDLE_RESTORE_SKIPPED", f"storage unavailable: {exc}", level=30)
        self.book = CandleBook(self.symbol, self.grace_seconds, restored)

    def receive(self, message: Any) -> Any:
        book = self.book
        assert book is not None
        if isinstance(message, CandleTicks):
            self._handle(book.apply(message.ticks))
            self.cache.set_forming(self.symbol, book.forming())
            if message.received_at:
                metrics.tick_to_candle(time.perf_counter() - message.received_at)
        elif isinstance(message, AdvanceClock):
            events = book.advance(message.now)
            if events:
                self._handle(events)
                self.cache.set_forming(self.symbol, book.forming())
        elif isinstance(message, CloseCandles):
            self._handle(book.close_all())
            self.cache.set_forming(self.symbol, None)
        else:
            return super().receive(message)
        return None

    def stopping(self) -> None:
        if self.book is not None:
            self._handle(self.book.close_all())
            self.cache.set_forming(self.symbol, None)

    def _handle(self, events: list[Any]) -> None:
        closed: list[Candle] = []
        revised: list[Candle] = []
        dropped = 0
        for event in events:
            if isinstance(event, CandleClosed):
                closed.append(event.candle)
            elif isinstance(event, CandleRevised):
                revised.append(event.candle)
                self.log.event("CANDLE_REVISED", f"{self.symbol} {to_iso_ist(event.candle.ts)} revision "
                               f"{event.candle.revision}", candle_ts=event.candle.ts,
                               revision=event.candle.revision)
            elif isinstance(event, LateTickDropped):
                dropped += 1
            elif isinstance(event, GapRecorded):
                self.log.event("CANDLE_GAP", f"{self.symbol}: no tick from {to_iso_ist(event.from_ts)} "
                               f"to {to_iso_ist(event.to_ts)}", from_ts=event.from_ts, to_ts=event.to_ts,
                               level=10)
        if dropped:
            metrics.late_ticks(self.symbol, dropped)
            self.log.event("LATE_TICK_DROPPED", f"{dropped} tick(s) for {self.symbol} arrived after the "
                           f"{self.grace_seconds:g} s grace window", count=dropped,
                           total=self.book.stats.late_dropped if self.book else dropped, level=30)
        if closed or revised:
            metrics.candles(self.symbol, len(closed), len(revised))
            both = tuple(closed + revised)
            self.cache.add_candles(self.symbol, both)
            self.persister.tell(PersistCandles(both))
            if closed:
                self.publisher.tell(PublishCandles(tuple(closed)))
            if revised:
                self.publisher.tell(PublishCandles(tuple(revised), revised=True))
            for listener in self.listeners:
                listener(self.symbol, closed, revised)
