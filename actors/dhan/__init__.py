"""Dhan adapters over the real dhanhq 2.3.0 SDK: data client, market-feed TickSource, Broker.

errors   SDK failure dicts -> typed broker errors (once)
ids      symbol <-> (exchange segment, security id)
client   DhanClient: expiry list, option chain (3 s window), LTP; the shared SDK handle
feed     DhanFeedSource: websocket v2 ticks, reconnect + resubscribe, REST LTP fallback
broker   DhanBroker: orders, positions, trades, order-update socket
The pure rate-limit arithmetic lives in core.ratelimit.
"""

from actors.dhan.broker import DhanBroker
from actors.dhan.client import DhanClient
from actors.dhan.errors import DhanAuthError, InvalidExpiry, RateLimited
from actors.dhan.feed import DhanFeedSource
from actors.dhan.ids import Instrument, InstrumentMap, UnknownSymbol

__all__ = [
    "DhanAuthError",
    "DhanBroker",
    "DhanClient",
    "DhanFeedSource",
    "Instrument",
    "InstrumentMap",
    "InvalidExpiry",
    "RateLimited",
    "UnknownSymbol",
]
