"""The market_data subtree's protocol, and the bus wire format it publishes.

Between its actors: the feed tells each candle builder `CandleTicks` / `AdvanceClock` / `CloseCandles`;
builders tell the persister `PersistCandles` and the publisher `PublishCandles` (through outboxes); the
feed tells the publisher `PublishTicks` / `PublishFeedStatus`; the poller `PublishValue`.

On the bus (JSON, UTF-8; channels and keys under `storage.redis_prefix`), read by the signals subtree and
by other processes:
- `ticks:<symbol>`: one message per symbol per feed batch (conflated, not one per tick):
  `{"symbol": "NIFTY", "ticks": [[ts_epoch, ltp, volume], ...]}`.
- `candles:<symbol>`: one message per closed or revised 1-minute candle:
  `{"symbol", "ts" (IST ISO), "ts_epoch", "open", "high", "low", "close", "volume", "ticks", "revision",
  "event": "CANDLE_CLOSED" | "CANDLE_REVISED"}`.
- `feed:status`: `{"event": "FEED_STALE" | "FEED_RESUMED" | "FEED_FINISHED", "symbol", "at"}`.
- keys `quote:<symbol>` = `{"ltp", "ts_epoch"}` and `option_chain:<symbol>` = `{"expiry", "updated_at",
  "payload"}`.
`ticks_message` / `ticks_from_message`, `candle_message` / `candle_from_message` and `feed_status_message` /
`feed_status_from_message` are the only encoders and decoders of those three channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from core.market import Candle, Tick

__all__ = [
    "AdvanceClock",
    "CandleTicks",
    "CloseCandles",
    "FeedStatus",
    "FlushCandles",
    "PersistCandles",
    "PublishCandles",
    "PublishFeedStatus",
    "PublishTicks",
    "PublishValue",
    "candle_from_message",
    "candle_message",
    "feed_status_from_message",
    "feed_status_message",
    "ticks_from_message",
    "ticks_message",
]


@dataclass(frozen=True)
class CandleTicks:
    ticks: list[Tick]
    received_at: float = 0.0  # time.perf_counter() when the source handed the batch over (0: unknown)


@dataclass(frozen=True)
class AdvanceClock:
    now: float


@dataclass(frozen=True)
class CloseCandles:
    """Close the forming candle whatever the time: end of session, end of a replay."""

    reason: str


@dataclass(frozen=True)
class PersistCandles:
    candles: tuple[Candle, ...]


@dataclass(frozen=True)
class FlushCandles:
    pass


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


def ticks_message(symbol: str, ticks: list[Tick]) -> bytes:
    return orjson.dumps({"symbol": symbol, "ticks": [t[1:] for t in ticks]})


def ticks_from_message(data: bytes) -> tuple[str, list[tuple[float, float]]]:
    """(symbol, [(ts_epoch, ltp), ...]) of a `ticks:<symbol>` message."""
    body = orjson.loads(data)
    return str(body["symbol"]), [(float(t[0]), float(t[1])) for t in body["ticks"]]


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



@dataclass(frozen=True)
class FeedStatus:
    """A `feed:status` message: FEED_STALE | FEED_RESUMED | FEED_FINISHED of `symbol` ("*" = every symbol)."""

    event: str
    symbol: str
    at: float


def feed_status_message(event: str, symbol: str, at: float) -> bytes:
    return orjson.dumps({"event": event, "symbol": symbol, "at": at})


def feed_status_from_message(data: bytes) -> FeedStatus:
    body = orjson.loads(data)
    return FeedStatus(str(body.get("event", "")), str(body.get("symbol", "*")), float(body.get("at") or 0.0))
