"""The trading subtree's protocol: what is asked of it, and what its actors tell each other.

Who talks to whom:
- the strategy and the control API -> a trade actor: `OpenTrade` (created for the pos_id on demand),
  `RequestExit`; the operator's flatten -> every trade actor (`RequestExit` with source "flatten");
- a trade actor -> the executor: `Place` (entries and exits alike), `Cancel`;
- the executor -> the trade actor: `PlacementResult`, `Observe` (what a cancel answered);
- the broker's order-update stream and the reconciler -> the trade actor: `Observe`;
- a trade actor -> the timeout monitor: `WatchTrade`; the monitor -> the trade: `CheckTimeout`,
  `RefreshFromBroker`.
Commands are imperative, events past tense; every message is a frozen dataclass.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from core.orders import BrokerOrder, Leg, OrderRequest, Side
from core.protection import NO_PROTECTION, ProtectionRules
from core.signals import EntrySignalRaised

__all__ = [
    "AdoptPosition",
    "Cancel",
    "CancelEntry",
    "EntryCounters",
    "CheckTimeout",
    "EntryDecision",
    "EntryOrder",
    "EntryRefusal",
    "GetTrade",
    "GuardPosition",
    "LeaseLost",
    "LookedUp",
    "Modify",
    "Lookup",
    "Observe",
    "OpenTrade",
    "Outcome",
    "Place",
    "PlaceMode",
    "PlacementResult",
    "RefreshFromBroker",
    "RequestExit",
    "TradeAddresses",
    "TrailMoved",
    "WatchTrade",
]


# ------------------------------------------------------------------------------------ entries and exits


@dataclass(frozen=True)
class EntryOrder:
    """An entry to make, whoever asked: the strategy (from an EntrySignalRaised) or an operator."""

    pos_id: str
    symbol: str  # what is traded (SEC_<id>, or the index itself with the paper broker)
    instrument: str  # for people
    side: Side
    qty: int
    price: float  # the expected price (0 = use the quote)
    reason: str
    at: float
    source: str = "strategy"
    # Protective exit rules of this entry that replace the exits.* defaults (core.protection.ProtectionRules
    # field names); the trade journals the merged rules with its signal.
    exits: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_signal(cls, signal: EntrySignalRaised) -> EntryOrder:
        described = signal.symbol
        if signal.option_type:
            strike = f" {signal.strike:g}" if signal.strike is not None else ""
            described = f"{signal.symbol}{strike} {signal.option_type}"
        score = getattr(signal.score, "entry_score", None)
        why = f"entry_score {score:.3f}" if isinstance(score, float) else "strategy"
        return cls(pos_id=signal.pos_id, symbol=signal.instrument, instrument=described, side=signal.side,
                   qty=signal.qty, price=signal.price, reason=f"{why}; {signal.note}".rstrip("; "),
                   at=signal.at, source="strategy", exits=dict(signal.exits))


class EntryRefusal(StrEnum):
    """Why an entry was not even journaled (a risk denial is journaled and carries the guard's DenyCode)."""

    DUPLICATE = "DUPLICATE"  # the pos_id is known here or in another process
    NOT_READY = "STARTUP_RECONCILIATION"  # the start-up reconciliation has not passed
    STORAGE = "STORAGE_UNAVAILABLE"  # the journal could not be written: nothing was sent
    INVALID_EXITS = "INVALID_EXITS"  # the entry's own protective exit rules cannot be used


@dataclass(frozen=True)
class EntryDecision:
    """What became of an entry, for whoever waits on it (the control API)."""

    pos_id: str
    accepted: bool
    code: str = ""  # "" when accepted; a DenyCode or an EntryRefusal
    reason: str = ""


@dataclass(frozen=True)
class OpenTrade:
    """To the (new) trade actor of order.pos_id: journal the signal, ask the risk guard, place the entry."""

    order: EntryOrder
    reply: Future[EntryDecision] | None = None
    sent_at: float = field(default_factory=time.perf_counter)  # mybot_signal_to_order_seconds starts here


@dataclass(frozen=True)
class AdoptPosition:
    """To the (new) trade actor of pos_id: take on units the broker holds that no live trade explains (the
    reconciler's orphans), to be exited. No risk check: it can only reduce exposure."""

    pos_id: str
    symbol: str
    side: Side  # BUY = long units
    qty: int
    avg_price: float
    reason: str


@dataclass(frozen=True)
class RequestExit:
    """EXIT_SIGNAL for this trade. `source`: strategy, operator, trade (slippage, retry), square_off, flatten,
    protection (a stop-loss, target, trailing stop or time exit)."""

    reason: str
    source: str = "strategy"
    crossed_at: float = 0.0  # protection: perf_counter when the price crossed the level (0: not a protective exit)


@dataclass(frozen=True)
class GuardPosition:
    """To the protection monitor: this open position's protective exits are in force (`done`: no longer —
    its exit began, or it ended). Told by the trade actor when that changes."""

    pos_id: str
    symbol: str = ""
    side: Side = Side.BUY
    entry_price: float = 0.0
    opened_at: float = 0.0
    rules: ProtectionRules = NO_PROTECTION
    done: bool = False


@dataclass(frozen=True)
class LeaseLost:
    """Another process holds this trade's lease now (ours expired while this one was quiet): stop managing
    it at once, sending nothing more. Its new owner recovers it from the journal and the broker."""

    owner: str | None


@dataclass(frozen=True)
class CancelEntry:
    """The kill switch is engaged (here or in another process): cancel the entry order if it still works."""

    reason: str


# --------------------------------------------------------------------------------- broker news for a trade


@dataclass(frozen=True)
class Observe:
    """A broker order snapshot: order-update stream, reconciler poll, cancel answer."""

    order: BrokerOrder
    source: str = "stream"


class Outcome(StrEnum):
    """What the executor knows about a placement."""

    PLACED = "PLACED"  # the broker has the order (answered, or found by correlationId)
    REFUSED = "REFUSED"  # definitely not placed and not to be retried (permanent error, lost intent)
    NOT_SENT = "NOT_SENT"  # definitely not placed (429, local rate limit): the trade may ask again later
    UNKNOWN = "UNKNOWN"  # not known yet (lookup failed): resolved later by correlationId
    SETTLING = "SETTLING"  # an ambiguous submit not found yet: looked up again after retry_after, never resent
    #                        before execution.ambiguous_settle_seconds have passed


@dataclass(frozen=True)
class PlacementResult:
    request: OrderRequest
    outcome: Outcome
    order: BrokerOrder | None = None
    reason: str = ""
    retry_after: float = 0.0  # NOT_SENT: seconds the broker wants us to wait


@dataclass(frozen=True)
class CheckTimeout:
    """The working order may have been open for execution.order_timeout_seconds."""


@dataclass(frozen=True)
class RefreshFromBroker:
    """Resolve a state that is taking too long (a pending submit, a cancel without an answer)."""


@dataclass(frozen=True)
class GetTrade:
    """Ask: the current TradeContext."""


# ------------------------------------------------------------------------------------- to the executor


class PlaceMode(StrEnum):
    """Why a placement is asked for; it decides whether the executor may submit or only resolve."""

    FIRST = "FIRST"  # the trade has just journaled the order's request: claim it, submit if the claim is ours
    RESEND = "RESEND"  # the executor answered NOT_SENT earlier; the trade re-checked and asks again
    RESOLVE = "RESOLVE"  # a recovery: the order may be at the broker; look it up, never submit


@dataclass(frozen=True)
class Place:
    """Place this order (entry or exit) for its trade: lock -> claim -> submit or resolve -> PlacementResult.

    Idempotent by correlation id: only a FIRST placement whose claim this call made, or a RESEND of one
    this process knows it did not send, reaches the broker; everything else is resolved by correlationId."""

    request: OrderRequest
    mode: PlaceMode = PlaceMode.FIRST


@dataclass(frozen=True)
class Lookup:
    """Ask the broker about this leg's order (by order id, else correlation id); answer `LookedUp`."""

    pos_id: str
    leg: Leg
    order_id: str
    correlation_id: str


@dataclass(frozen=True)
class LookedUp:
    """The broker's order for the leg; None with `answered` = the broker does not know it."""

    leg: Leg
    order: BrokerOrder | None
    answered: bool


@dataclass(frozen=True)
class Cancel:
    """Cancel this order, then tell the trade (`Observe`) what the broker says about it."""

    pos_id: str
    order_id: str
    leg: Leg


@dataclass(frozen=True)
class Modify:
    """Move this working order (the broker-side stop), then tell the trade (`Observe`) what the broker says."""

    pos_id: str
    order_id: str
    leg: Leg
    qty: int  # the order's total quantity
    price: float
    trigger_price: float


@dataclass(frozen=True)
class TrailMoved:
    """From the protection monitor to a trade: its trailing stop's best price is now `best` (the trade moves
    its broker-side stop when that moves the stop far enough)."""

    best: float


# ------------------------------------------------------------------------------- to the timeout monitor


@dataclass(frozen=True)
class WatchTrade:
    """The trade's state and since when; `done` = nothing to watch any more."""

    pos_id: str
    state: str
    since: float
    done: bool = False


@dataclass(frozen=True)
class EntryCounters:
    """How entries went, across every trade actor of this process (a Store; read by status)."""

    entries: int = 0  # OpenTrade received
    accepted: int = 0
    denied: int = 0  # by the risk guard, or not ready, or storage down
    duplicates: int = 0


class TradeAddresses(Protocol):
    """How the executor, the monitor and the reconciler reach a live trade actor by pos_id."""

    def deliver(self, pos_id: str, message: object) -> bool: ...
