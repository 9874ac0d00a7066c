"""Publisher: ticks, candles and latest values onto the bus (Redis or in-process), off the hot path.

The wire format is in actors/market_data/messages.py (its only encoders and decoders).
A bus failure is counted and logged (once per outage) and never stops candle building.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from actors.market_data.messages import (
    PublishCandles,
    PublishFeedStatus,
    PublishTicks,
    PublishValue,
    candle_message,
    feed_status_message,
    ticks_message,
)
from storage.bus import Bus
from storage.errors import StorageError
from supervision.actor import SupervisedActor
from supervision.supervisor import ChildLink

__all__ = ["Publisher", "PublisherStats"]




@dataclass
class PublisherStats:
    """The publisher's crash-only store: outlives its restarts; read by /v1/status and /v1/health."""

    messages: int = 0
    failures: int = 0
    degraded: bool = False

    def snapshot(self) -> dict[str, Any]:
        return {"messages": self.messages, "failures": self.failures, "degraded": self.degraded}


class Publisher(SupervisedActor):
    def __init__(self, link: ChildLink | None, bus: Bus, stats: PublisherStats) -> None:
        super().__init__(link)
        self.bus = bus
        self.stats = stats
        self._items: list[tuple[str, bytes]] = []
        self._values: dict[str, bytes] = {}

    def receive(self, message: Any) -> Any:
        # Accumulate; after_batch() sends one pipeline for everything drained in one go.
        if isinstance(message, PublishTicks):
            for symbol, ticks in message.by_symbol.items():
                self._items.append((f"ticks:{symbol}", ticks_message(symbol, ticks)))
                newest = ticks[-1]
                self._values[f"quote:{symbol}"] = orjson.dumps({"ltp": newest.ltp, "ts_epoch": newest.ts})
        elif isinstance(message, PublishCandles):
            self._items.extend((f"candles:{c.symbol}", candle_message(c, message.revised)) for c in message.candles)
        elif isinstance(message, PublishFeedStatus):
            self._items.append(("feed:status", feed_status_message(message.event, message.symbol, message.at)))
        elif isinstance(message, PublishValue):
            self._values[message.key] = orjson.dumps(message.value)
        else:
            return super().receive(message)
        return None

    def after_batch(self) -> None:
        items, values = self._items, self._values
        if not items and not values:
            return
        self._items, self._values = [], {}
        try:
            if items:
                self.bus.publish_many(items)
            if values:
                self.bus.set_many(list(values.items()))
        except StorageError as exc:
            self.stats.failures += 1
            if not self.stats.degraded:
                self.stats.degraded = True
                self.log.event("BUS_DEGRADED", f"publishing failed: {exc}; candles keep building", level=30)
            return
        self.stats.messages += len(items)
        if self.stats.degraded:
            self.stats.degraded = False
            self.log.event("BUS_RESTORED", "publishing works again", failures=self.stats.failures)
