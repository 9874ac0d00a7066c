"""Publisher: ticks, candles and latest values onto the bus (Redis or in-process), off the hot path.

Message format (JSON, UTF-8), channels and keys under `storage.redis_prefix`:
- `ticks:<symbol>`: one message per symbol per feed batch (conflated, not one per tick):
  `{"symbol": "NIFTY", "ticks": [[ts_epoch, ltp, volume], ...]}`.
- `candles:<symbol>`: one message per closed or revised 1-minute candle:
  `{"symbol", "ts" (IST ISO), "ts_epoch", "open", "high", "low", "close", "volume", "ticks", "revision",
  "event": "CANDLE_CLOSED" | "CANDLE_REVISED"}`.
- `feed:status`: `{"event": "FEED_STALE" | "FEED_RESUMED" | "FEED_FINISHED", "symbol", "at"}`.
- keys `quote:<symbol>` = `{"ltp", "ts_epoch"}` and `option_chain:<symbol>` = `{"expiry", "updated_at",
  "payload"}`.
A bus failure is counted and logged (once per outage) and never stops candle building.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from core.market import Candle, Tick
from storage.bus import Bus
from storage.errors import StorageError
from supervision.actor import SupervisedActor
from supervision.supervisor import ChildLink

__all__ = ["PublishCandles", "PublishFeedStatus", "PublishTicks", "Publisher", "candle_message"]


@dataclass(frozen=True)
class PublishTicks:
    by_symbol: dict[str, list[Tick]]


@dataclass(frozen=True)
class PublishCandles:
    candles: tuple[Candle, ...]
    revised: bool = False


@dataclass(frozen=True)
class PublishFeedStatus:
    event: str
    symbol: str
    at: float


@dataclass(frozen=True)
class PublishValue:
    key: str
    value: dict[str, Any]


def candle_message(candle: Candle, revised: bool = False) -> bytes:
    return orjson.dumps({
        "symbol": candle.symbol, "ts": candle.as_json()["ts"], "ts_epoch": candle.ts, "open": candle.open,
        "high": candle.high, "low": candle.low, "close": candle.close, "volume": candle.volume,
        "ticks": candle.ticks, "revision": candle.revision,
        "event": "CANDLE_REVISED" if revised else "CANDLE_CLOSED"})


def candle_from_message(data: bytes) -> tuple[Candle, str]:
    body = orjson.loads(data)
    candle = Candle(body["symbol"], int(body["ts_epoch"]), body["open"], body["high"], body["low"],
                    body["close"], body["volume"], body.get("ticks", 0), body.get("revision", 0))
    return candle, body.get("event", "CANDLE_CLOSED")


class Publisher(SupervisedActor):
    def __init__(self, link: ChildLink | None, bus: Bus, stats: dict[str, Any]) -> None:
        super().__init__(link)
        self.bus = bus
        self.stats = stats  # shared across restarts, read by /v1/status and /v1/health
        stats.setdefault("messages", 0)
        stats.setdefault("failures", 0)
        stats.setdefault("degraded", False)
        self._items: list[tuple[str, bytes]] = []
        self._values: dict[str, bytes] = {}

    def receive(self, message: Any) -> Any:
        # Accumulate; after_batch() sends one pipeline for everything drained in one go.
        if isinstance(message, PublishTicks):
            for symbol, ticks in message.by_symbol.items():
                self._items.append((f"ticks:{symbol}", orjson.dumps(
                    {"symbol": symbol, "ticks": [t[1:] for t in ticks]})))
                newest = ticks[-1]
                self._values[f"quote:{symbol}"] = orjson.dumps({"ltp": newest.ltp, "ts_epoch": newest.ts})
        elif isinstance(message, PublishCandles):
            self._items.extend((f"candles:{c.symbol}", candle_message(c, message.revised)) for c in message.candles)
        elif isinstance(message, PublishFeedStatus):
            self._items.append(("feed:status", orjson.dumps(
                {"event": message.event, "symbol": message.symbol, "at": message.at})))
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
            self.stats["failures"] += 1
            if not self.stats["degraded"]:
                self.stats["degraded"] = True
                self.log.event("BUS_DEGRADED", f"publishing failed: {exc}; candles keep building", level=30)
            return
        self.stats["messages"] += len(items)
        if self.stats["degraded"]:
            self.stats["degraded"] = False
            self.log.event("BUS_RESTORED", "publishing works again", failures=self.stats["failures"])
