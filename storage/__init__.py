"""Storage: repositories over PostgreSQL or SQLite (chosen by URL), and the Redis or in-process bus.

    storage = open_storage(settings.storage.url, settings.storage.connect_timeout_seconds)
    storage.migrate()
    bus = open_bus(settings.storage.redis_url, settings.storage.redis_prefix)

Errors: StorageUnavailable / BusUnavailable (retry later), StorageConflict, StorageError (operator).
"""

from storage.bus import Bus, InProcessBus, RedisBus, Subscription, open_bus
from storage.errors import BusUnavailable, StorageConflict, StorageError, StorageUnavailable
from storage.records import (
    TERMINAL_TRADE_STATES,
    OptionChainRecord,
    OrderRecord,
    TradeEventRecord,
    TradeRecord,
)
from storage.repositories import (
    BotStateRepository,
    CandleRepository,
    OptionChainRepository,
    Storage,
    TradeRepository,
    open_storage,
)

__all__ = [
    "TERMINAL_TRADE_STATES",
    "BotStateRepository",
    "Bus",
    "BusUnavailable",
    "CandleRepository",
    "InProcessBus",
    "OptionChainRecord",
    "OptionChainRepository",
    "OrderRecord",
    "RedisBus",
    "Storage",
    "StorageConflict",
    "StorageError",
    "StorageUnavailable",
    "Subscription",
    "TradeEventRecord",
    "TradeRecord",
    "TradeRepository",
    "open_bus",
    "open_storage",
]
