"""What a trade actor is given, and the key and origin it is created with (actors/trading/trade_actor.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from actors.brokers.base import Broker
from actors.clock import Clock
from actors.trading.book import OrderRouter, TradeBook
from actors.trading.journal import JournalTails, journal_tails
from actors.trading.leases import TradeLeases
from actors.trading.messages import EntryCounters
from actors.trading.quotes import QuoteSource
from actors.trading.risk_guard import RiskGuard
from actors.wiring import ContractWatch
from config.settings import ExecutionSettings
from core.protection import NO_PROTECTION, ProtectionRules
from core.trade import OrderCharges
from storage.repositories import Storage
from supervision.scheduler import Scheduler
from supervision.store import Store
from supervision.supervisor import ChildHandle

__all__ = ["NewTrade", "TradeDeps", "TradeOrigin"]


@dataclass(frozen=True)
class TradeDeps:
    """What every trade actor shares; all of it exists before the tree starts (no late binding)."""

    storage: Storage
    broker: Broker
    clock: Clock
    scheduler: Scheduler
    risk: RiskGuard
    book: TradeBook
    router: OrderRouter
    quotes: QuoteSource
    execution: ExecutionSettings
    protection_band_pct: float
    executor: ChildHandle
    monitor: ChildHandle
    ready: threading.Event  # set once the start-up reconciliation has passed
    entries: Store[EntryCounters]
    leases: TradeLeases  # which process manages which trade (several trader processes on one database)
    journal_tails: JournalTails = field(default_factory=journal_tails)  # steps the database has not taken yet
    tick_size: Callable[[str], float | None] = lambda symbol: None  # the instrument master's tick of a symbol
    contracts: ContractWatch | None = None  # keeps the traded contract on the live feed (None: no feed here)
    charges: OrderCharges | None = None  # what an order's fills cost (None: no charges counted)
    exits: ProtectionRules = NO_PROTECTION  # the exits.* defaults; an entry may replace some (EntryOrder.exits)
    protection: ChildHandle | None = None  # the protection monitor (None: no protective exits run here)
    broker_stop_pct: float = 0.0  # exits.broker_stop_pct: a stop order rests at the broker (0: none)


@dataclass(frozen=True)
class NewTrade:
    """The key a trade actor is created under for an OpenTrade (a bare pos_id key adopts an existing trade)."""

    pos_id: str


@dataclass
class TradeOrigin:
    """How a trade actor came to be; its child spec holds it, so it outlives the actor's restarts.

    An actor created for an OpenTrade starts empty: its first journal append expects an empty journal, so
    a pos_id journaled before (a duplicate, or a trade another process runs) is refused as DUPLICATE and the
    actor ends without ever acting on that trade. An adopted trade (start-up reconciliation), and every
    restart after this process journaled the trade, rebuild from the journal and recover as the owner."""

    opening: bool
    journaled: bool = False
