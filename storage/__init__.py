"""Storage: repositories over PostgreSQL or SQLite (chosen by URL), and the Redis or in-process bus.

    storage = open_storage(settings.storage.url, settings.storage.connect_timeout_seconds)
    storage.migrate()
    bus = open_bus(settings.storage.redis_url, settings.storage.redis_prefix)

Errors: StorageUnavailable / BusUnavailable (retry later), StorageConflict (JournalConflict: a checked
journal append lost a race), StorageError (operator).

The SQL both backends share is in storage/sql.py; postgres.py and sqlite.py hold connections, outage
handling and the few statements that are each backend's own.
"""

from storage.bus import Bus, InProcessBus, RedisBus, Subscription, open_bus
from storage.errors import BusUnavailable, JournalConflict, StorageConflict, StorageError, StorageUnavailable
from storage.opening import open_storage, sqlite_path
from storage.records import (
    TERMINAL_TRADE_STATES,
    JournalEntry,
    OptionChainRecord,
    OrderRecord,
    TradeEventRecord,
    TradeLease,
    TradeRecord,
)
from storage.repositories import (
    BotStateRepository,
    CandleRepository,
    InstrumentRepository,
    OptionChainRepository,
    Storage,
    TradeLeaseRepository,
    TradeRepository,
)

__all__ = [
    "TERMINAL_TRADE_STATES",
    "BotStateRepository",
    "Bus",
    "BusUnavailable",
    "CandleRepository",
    "InProcessBus",
    "InstrumentRepository",
    "JournalConflict",
    "JournalEntry",
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
    "TradeLease",
    "TradeLeaseRepository",
    "TradeRecord",
    "TradeRepository",
    "open_bus",
    "open_storage",
    "sqlite_path",
]
