"""CandlePersister: batched, idempotent candle upserts that survive a database outage.

Closed and revised candles queue here (bounded; depth in /v1/status). A flush writes them in batches;
a failure is retried a few times at once with tenacity (short, bounded), then the candles stay queued and
a later flush is scheduled — the mailbox never blocks for long. Nothing is dropped unless the bound is
hit, and that is logged and counted (it means the outage outlasted `storage.candle_buffer_max`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from actors.clock import Clock
from actors.market_data.messages import FlushCandles, PersistCandles
from core.market import Candle
from storage.errors import StorageError, StorageUnavailable
from storage.repositories import Storage
from supervision.actor import SupervisedActor, tell_quietly
from supervision.scheduler import Scheduler, Timer
from supervision.supervisor import ChildLink

__all__ = ["CandlePersister", "PersisterState"]

BATCH = 1000


@dataclass
class PersisterState:
    """The persister's crash-only store (owned by the assembly): a crash of the actor loses no queued candle.
    Written by the persister alone; `snapshot()` is what other threads read."""

    pending: OrderedDict[tuple[str, int], Candle] = field(default_factory=OrderedDict)
    written: int = 0
    failures: int = 0
    dropped: int = 0
    outages: int = 0
    down_since: float | None = None

    def snapshot(self) -> dict[str, Any]:
        return {"buffered": len(self.pending), "written": self.written, "failures": self.failures,
                "dropped": self.dropped, "outages": self.outages, "database_down_since": self.down_since}


class CandlePersister(SupervisedActor):
    def __init__(self, link: ChildLink | None, storage: Storage, scheduler: Scheduler, clock: Clock,
                 buffer_max: int = 200_000, flush_interval: float = 0.25, retry_interval: float = 1.0,
                 state: PersisterState | None = None) -> None:
        super().__init__(link)
        self.storage = storage
        self.scheduler = scheduler
        self.clock = clock
        self.buffer_max = buffer_max
        self.flush_interval = flush_interval
        self.retry_interval = retry_interval
        self.state = state if state is not None else PersisterState()
        self.pending = self.state.pending
        self._timer: Timer | None = None

    def started(self) -> None:
        if self.pending:
            self._schedule(0.0)

    def receive(self, message: Any) -> Any:
        if isinstance(message, PersistCandles):
            self._enqueue(message.candles)
            if len(self.pending) >= BATCH:
                self._flush()
            else:
                self._schedule(self.flush_interval)
        elif isinstance(message, FlushCandles):
            self._timer = None
            self._flush()
        else:
            return super().receive(message)
        return None

    def stopping(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.pending:
            self._flush(final=True)

    def _enqueue(self, candles: tuple[Candle, ...]) -> None:
        for candle in candles:
            key = (candle.symbol, candle.ts)
            current = self.pending.get(key)
            if current is None or candle.revision >= current.revision:
                self.pending[key] = candle
        overflow = len(self.pending) - self.buffer_max
        if overflow > 0:
            for _ in range(overflow):
                self.pending.popitem(last=False)
            self.state.dropped += overflow
            self.log.event("CANDLE_BUFFER_OVERFLOW", f"dropped the {overflow} oldest unpersisted candles",
                           level=40, dropped_total=self.state.dropped, buffer_max=self.buffer_max)

    def _schedule(self, delay: float) -> None:
        if self._timer is None:
            # If this instance is gone by then, its successor reschedules from the shared buffer.
            self._timer = self.scheduler.call_later(delay, tell_quietly, self.actor_ref, FlushCandles())

    def _flush(self, final: bool = False) -> None:
        while self.pending:
            batch = list(self.pending.values())[:BATCH]
            try:
                for attempt in Retrying(stop=stop_after_attempt(1 if final else 3),
                                        wait=wait_exponential(multiplier=0.05, max=0.2),
                                        retry=retry_if_exception_type(StorageUnavailable), reraise=True):
                    with attempt:
                        self.storage.candles.upsert_many(batch)
            except StorageError as exc:
                self.state.failures += 1
                if self.state.down_since is None:
                    self.state.down_since = self.clock.now()
                    self.state.outages += 1
                    self.log.event("CANDLE_PERSIST_DEFERRED", f"database unavailable ({exc}); "
                                   f"{len(self.pending)} candles held for retry", level=30,
                                   buffered=len(self.pending))
                if not final:
                    self._schedule(self.retry_interval)
                return
            for candle in batch:
                key = (candle.symbol, candle.ts)
                if self.pending.get(key) is candle:
                    del self.pending[key]
            self.state.written += len(batch)
            if self.state.down_since is not None:
                self.log.event("CANDLE_PERSIST_RESUMED", f"database back; flushed {len(batch)} held candles",
                               flushed=len(batch), buffered=len(self.pending))
                self.state.down_since = None
