"""The trade lifecycle: one literal transition table, a pure `apply`, and journal replay.

A trade (one pos_id) moves SIGNAL_GENERATED -> ENTRY_PENDING -> ORDER_PLACED -> POSITION_OPEN ->
EXIT_PENDING -> EXIT_ORDER_PLACED -> CLOSED on the happy path. What a real broker forces is in the
table too: rejections, partial fills, timeouts followed by a cancel, fills that arrive after the timeout,
and exit orders that time out and are retried.

Choices made explicit here:
- Partial fills have their own states (ENTRY_PARTIALLY_FILLED, EXIT_PARTIALLY_FILLED) because the table
  maps (state, event type) to exactly one state: a fill event is OrderPartiallyFilled or OrderFilled
  (complete), never "whichever the quantity says". `observe` picks the right one from a broker order.
- An entry that times out is cancelled: with nothing filled it ends CANCELLED, with some qty filled it
  becomes POSITION_OPEN for the filled qty (the remainder is cancelled). A fill that beats the cancel
  still opens the position.
- An exit that times out is cancelled and the trade returns to POSITION_OPEN with the unexited qty, and
  the core asks for a fresh exit (a new correlation id: `correlation_id(pos_id, EXIT, attempt)`).
- An exit requested while the entry order is still working cancels the entry; if anything had filled,
  the position opens and the exit is asked for again at once.
- The broker-side stop (Leg.STOP) is a stop-loss order resting at the broker while the position is open
  (StopRequested, StopMoved as the trail moves). Its fills are exit fills; a complete one closes the trade.
  An exit order is never sent beside it: an exit first cancels it (StopCancelRequested ->
  STOP_CANCEL_PENDING) and is asked for again once the broker says it is cancelled.

`apply(context, event)` is the only way a state changes. Events are journaled by the shell;
`rebuild(events)` replays them into the exact same context after a restart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, ClassVar, get_type_hints

from core.instruments import InstrumentError, round_to_tick
from core.orders import BrokerOrder, Leg, OrderRequest, OrderStatus, Side, correlation_id, marketable_limit
from core.pnl import realized_pnl
from core.protection import NO_PROTECTION, ProtectionRules

__all__ = [
    "ABANDONED",
    "BROKER_STOP_REASON",
    "STOP_ATTEMPTS",
    "STOP_ENDED",
    "STOP_LIVE_STATES",
    "STOP_PENDING",
    "STOP_WORKING",
    "ModifyOrder",
    "StopCancelRequested",
    "StopMoved",
    "StopRequested",
    "leg_of_order",
    "stop_request",
    "wants_stop",
    "ACTIVE_ORDER_STATES",
    "CANCEL_PENDING",
    "ENDED_WITHOUT_POSITION",
    "ENTRY_LEG",
    "ENTRY_WORKING",
    "EXITABLE",
    "EXIT_LEG",
    "EXIT_WORKING",
    "SUBMIT_PENDING",
    "EVENT_TYPES",
    "EXIT_ALERT_EVERY",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "AlertOperator",
    "CancelOrder",
    "Command",
    "EntryDenied",
    "EntryCancelRequested",
    "EntryRepriced",
    "EntryRequested",
    "Event",
    "EventDecodeError",
    "ExitRequested",
    "IllegalTransition",
    "OrderCancelled",
    "OrderFilled",
    "OrderPartiallyFilled",
    "OrderPlaced",
    "OrderRejected",
    "OrderSlippageDetected",
    "OrderTimedOut",
    "PositionAdopted",
    "PlaceOrder",
    "RaiseExitSignal",
    "RecordClosedTrade",
    "SignalAccepted",
    "TradeContext",
    "TradeState",
    "apply",
    "can_apply",
    "correlation_of",
    "order_id_of",
    "request_for",
    "event_from_payload",
    "observe",
    "entry_repricing",
    "opening_events",
    "order_news",
    "rebuild",
    "slippage_exceeded",
    "slippage_guard",
    "slippage_pct",
    "timeout_due",
]

# An exit is never given up: every exit order that ends without closing the position is followed by
# another (the shell backs off and re-prices each time). Every this many failed exit orders, a human is
# paged as well: a broker that refuses every exit (margin, freeze, RMS block) needs someone to look.
EXIT_ALERT_EVERY = 5
# The exit reason of a position the broker-side stop closed (its fill won, whatever exit was asked before it).
BROKER_STOP_REASON = "BROKER_STOP"


class TradeState(StrEnum):
    NEW = "NEW"  # the empty context a replay starts from; SignalAccepted is always the first event
    SIGNAL_GENERATED = "SIGNAL_GENERATED"
    ENTRY_PENDING = "ENTRY_PENDING"  # risk passed, entry order being submitted
    ORDER_PLACED = "ORDER_PLACED"  # the broker acknowledged the entry order
    ENTRY_PARTIALLY_FILLED = "ENTRY_PARTIALLY_FILLED"
    ENTRY_CANCEL_PENDING = "ENTRY_CANCEL_PENDING"  # timed out (or exit asked) with nothing filled
    ENTRY_PARTIAL_CANCEL_PENDING = "ENTRY_PARTIAL_CANCEL_PENDING"  # same, with some qty already filled
    POSITION_OPEN = "POSITION_OPEN"
    EXIT_PENDING = "EXIT_PENDING"  # exit order being submitted
    EXIT_ORDER_PLACED = "EXIT_ORDER_PLACED"
    EXIT_PARTIALLY_FILLED = "EXIT_PARTIALLY_FILLED"
    EXIT_CANCEL_PENDING = "EXIT_CANCEL_PENDING"  # exit order timed out, cancel sent
    # An exit is wanted while the broker-side stop rests at the broker: the stop is cancelled first, so that
    # it and the exit order can never both sell (an over-sell into a short). The exit follows the cancel.
    STOP_CANCEL_PENDING = "STOP_CANCEL_PENDING"
    CLOSED = "CLOSED"
    REJECTED = "REJECTED"  # the entry order was rejected: no position
    CANCELLED = "CANCELLED"  # the entry order ended with nothing filled: no position
    DENIED = "DENIED"  # the risk guard refused the entry: no order was sent


S = TradeState
STOP_PENDING, STOP_WORKING, STOP_ENDED = "PENDING", "WORKING", "ENDED"  # TradeContext.stop_status
TERMINAL_STATES = frozenset({S.CLOSED, S.REJECTED, S.CANCELLED, S.DENIED})
# The named state sets: every shell asks these, none keeps its own copy.
ENTRY_LEG = frozenset({S.ENTRY_PENDING, S.ORDER_PLACED, S.ENTRY_PARTIALLY_FILLED, S.ENTRY_CANCEL_PENDING,
                       S.ENTRY_PARTIAL_CANCEL_PENDING})  # the entry is being submitted, worked or cancelled
EXIT_LEG = frozenset({S.EXIT_PENDING, S.EXIT_ORDER_PLACED, S.EXIT_PARTIALLY_FILLED, S.EXIT_CANCEL_PENDING})
SUBMIT_PENDING = frozenset({S.ENTRY_PENDING, S.EXIT_PENDING})  # the order's submit has no answer yet
ENTRY_WORKING = ENTRY_LEG - SUBMIT_PENDING  # an entry order is at the broker
EXIT_WORKING = EXIT_LEG - SUBMIT_PENDING  # an exit order is at the broker
CANCEL_PENDING = frozenset({S.ENTRY_CANCEL_PENDING, S.ENTRY_PARTIAL_CANCEL_PENDING, S.EXIT_CANCEL_PENDING,
                            S.STOP_CANCEL_PENDING})
STOP_LIVE_STATES = frozenset({S.POSITION_OPEN, S.STOP_CANCEL_PENDING})  # where a broker-side stop may rest
# States in which an order of ours is working and not being cancelled (the timeout monitor watches these).
ACTIVE_ORDER_STATES = frozenset({S.ORDER_PLACED, S.ENTRY_PARTIALLY_FILLED, S.EXIT_ORDER_PLACED,
                                 S.EXIT_PARTIALLY_FILLED})
# A sweep (square-off, flatten) exits trades in these states; others are exiting or have nothing to exit.
EXITABLE = frozenset({S.POSITION_OPEN, S.ORDER_PLACED, S.ENTRY_PARTIALLY_FILLED})
ABANDONED = frozenset({S.REJECTED, S.CANCELLED})  # an entry was sent and ended with nothing filled
ENDED_WITHOUT_POSITION = ABANDONED | {S.DENIED}  # no units were ever held


class IllegalTransition(Exception):
    """The event does not apply to the trade in its current state (or names another trade's order)."""

    def __init__(self, state: TradeState, event: Event, detail: str = "") -> None:
        text = f"{type(event).__name__} is not allowed in state {state}"
        super().__init__(f"{text}: {detail}" if detail else text)
        self.state = state
        self.event = event


class EventDecodeError(ValueError):
    """A journal row that is not a known event or does not fit its fields (bad input: quarantine it)."""


# ---------------------------------------------------------------------------------------------- events


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every trade event: past tense, carries its time (epoch seconds), serializable."""

    at: float
    log_name: ClassVar[str] = ""  # the seed's vocabulary, for the shell's log line

    def to_payload(self) -> dict[str, Any]:
        return {name: _plain(getattr(self, name)) for name in _field_names(type(self))}

    @property
    def name(self) -> str:
        return type(self).__name__


@dataclass(frozen=True, kw_only=True)
class SignalAccepted(Event):
    """The strategy's ENTRY_SIGNAL, accepted as a trade: it creates the context."""

    log_name: ClassVar[str] = "ENTRY_SIGNAL"
    pos_id: str
    symbol: str  # what is traded: SEC_<security id> for an option
    instrument: str  # what it is, for people: "NIFTY 2026-11-27 24500 CE"
    side: Side  # entry side; BUY = long
    qty: int
    expected_price: float
    reason: str = ""
    # The protective exits in force for this trade (core.protection; 0 = off), journaled with the signal so
    # that a restart protects the position as it was opened, whatever the config says by then.
    stop_loss_pct: float = 0.0
    target_pct: float = 0.0
    trailing_stop_pct: float = 0.0
    max_holding_minutes: float = 0.0


@dataclass(frozen=True, kw_only=True)
class EntryRequested(Event):
    """The risk guard allowed the entry; the executor is to place it at `limit_price`."""

    log_name: ClassVar[str] = "ENTRY_REQUESTED"
    limit_price: float
    expected_price: float


@dataclass(frozen=True, kw_only=True)
class EntryDenied(Event):
    log_name: ClassVar[str] = "ENTRY_DENIED"
    reason: str


@dataclass(frozen=True, kw_only=True)
class OrderPlaced(Event):
    log_name: ClassVar[str] = "ORDER_PLACED"
    order_id: str
    correlation_id: str
    leg: Leg
    qty: int
    price: float


@dataclass(frozen=True, kw_only=True)
class EntryRepriced(Event):
    """The entry waited unsent (a 429, a local rate limit) and is priced again from a fresh quote before it
    goes: a resend never carries a price the market has left."""

    log_name: ClassVar[str] = "ENTRY_REPRICED"
    limit_price: float
    expected_price: float


@dataclass(frozen=True, kw_only=True)
class EntryCancelRequested(Event):
    """Entries stop (the kill switch): the entry order still working at the broker is cancelled. Units it
    filled stay a position (the kill switch stops entries; it does not exit)."""

    log_name: ClassVar[str] = "ENTRY_CANCEL_REQUESTED"
    reason: str


@dataclass(frozen=True, kw_only=True)
class OrderPartiallyFilled(Event):
    """Some of the order filled; `filled_qty` and `avg_price` are cumulative for the order. `fees`: the order's charges so far (cumulative too; 0 in journals written before charges)."""

    log_name: ClassVar[str] = "ORDER_FILLED"
    order_id: str
    leg: Leg
    filled_qty: int
    avg_price: float
    fees: float = 0.0


@dataclass(frozen=True, kw_only=True)
class OrderFilled(Event):
    """The order filled completely; `filled_qty` and `avg_price` are cumulative for the order. `fees`: the order's charges so far (cumulative too; 0 in journals written before charges)."""

    log_name: ClassVar[str] = "ORDER_FILLED"
    order_id: str
    leg: Leg
    filled_qty: int
    avg_price: float
    fees: float = 0.0


@dataclass(frozen=True, kw_only=True)
class OrderTimedOut(Event):
    log_name: ClassVar[str] = "ORDER_TIMEOUT"
    order_id: str
    leg: Leg


@dataclass(frozen=True, kw_only=True)
class OrderSlippageDetected(Event):
    log_name: ClassVar[str] = "ORDER_SLIPPAGE"
    order_id: str
    expected: float
    actual: float
    pct: float  # signed, adverse positive (see slippage_pct)
    limit_pct: float


@dataclass(frozen=True, kw_only=True)
class OrderRejected(Event):
    """The broker refused the order; `order_id` is empty when the submit itself was refused."""

    log_name: ClassVar[str] = "ORDER_REJECTED"
    leg: Leg
    reason: str
    order_id: str = ""


@dataclass(frozen=True, kw_only=True)
class OrderCancelled(Event):
    """The order ended unfilled (the rest of it): cancelled by us or anyone, or expired."""

    log_name: ClassVar[str] = "ORDER_CANCELLED"
    order_id: str
    leg: Leg
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class ExitRequested(Event):
    """The EXIT_SIGNAL reached this trade (strategy, square-off, kill switch, slippage guard)."""

    log_name: ClassVar[str] = "EXIT_SIGNAL"
    reason: str
    limit_price: float = 0.0
    expected_price: float = 0.0


@dataclass(frozen=True, kw_only=True)
class PositionAdopted(Event):
    """Units the broker holds that no live trade explains (an orphan), taken on by a new trade to be exited.
    It creates the context, as SignalAccepted does; nothing is bought or sold by it."""

    log_name: ClassVar[str] = "POSITION_ADOPTED"
    pos_id: str
    symbol: str
    instrument: str
    side: Side  # the side the units were bought on: BUY = long units
    qty: int
    avg_price: float
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class StopRequested(Event):
    """A broker-side stop is to rest at the broker while the position is open: a stop-loss order for the
    open quantity that the broker triggers at `trigger_price` and works as a marketable LIMIT at
    `limit_price`. It protects the position when this process cannot (killed, cut off)."""

    log_name: ClassVar[str] = "STOP_ORDER_REQUESTED"
    trigger_price: float
    limit_price: float


@dataclass(frozen=True, kw_only=True)
class StopMoved(Event):
    """The trailing stop moved: the resting stop order is modified to the new trigger and limit."""

    log_name: ClassVar[str] = "STOP_ORDER_MOVED"
    trigger_price: float
    limit_price: float


@dataclass(frozen=True, kw_only=True)
class StopCancelRequested(Event):
    """An exit is wanted (`reason`, as ExitRequested's) while the broker-side stop rests: cancel it first;
    the exit order follows once the broker says it is cancelled (or the stop itself closes the position)."""

    log_name: ClassVar[str] = "STOP_CANCEL_REQUESTED"
    reason: str


EVENT_TYPES: dict[str, type[Event]] = {cls.__name__: cls for cls in (
    SignalAccepted, EntryRequested, EntryDenied, OrderPlaced, OrderPartiallyFilled, OrderFilled,
    OrderTimedOut, OrderSlippageDetected, OrderRejected, OrderCancelled, ExitRequested, PositionAdopted,
    EntryRepriced, EntryCancelRequested, StopRequested, StopMoved, StopCancelRequested)}


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, StrEnum) else value


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def event_from_payload(name: str, payload: dict[str, Any]) -> Event:
    """The inverse of `event.to_payload()` keyed by `event.name` (what the journal stores)."""
    cls = EVENT_TYPES.get(name)
    if cls is None:
        raise EventDecodeError(f"unknown trade event {name!r}")
    hints = _FIELD_HINTS[cls]
    try:
        values = {key: (hints[key](value) if hints.get(key) in (Side, Leg) else value)
                  for key, value in payload.items()}
        return cls(**values)
    except (TypeError, ValueError, KeyError) as exc:
        raise EventDecodeError(f"{name}: {exc}") from exc


_FIELD_HINTS: dict[type[Event], dict[str, Any]] = {cls: get_type_hints(cls) for cls in EVENT_TYPES.values()}


# -------------------------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    request: OrderRequest


@dataclass(frozen=True, slots=True)
class CancelOrder:
    pos_id: str
    order_id: str
    leg: Leg


@dataclass(frozen=True, slots=True)
class ModifyOrder:
    """Move a working order (the broker-side stop): `qty` is the order's total quantity, as Dhan wants it."""

    pos_id: str
    order_id: str
    leg: Leg
    qty: int
    price: float
    trigger_price: float


@dataclass(frozen=True, slots=True)
class RaiseExitSignal:
    """Publish EXIT_SIGNAL for this trade (slippage guard, a pending exit, an exit to retry).

    `reason` is the exit's own reason, kept across retries; `failed_attempts` counts the exit orders that
    ended without closing the position (the shell backs off and widens the price by it); `detail` says why
    the last one failed."""

    pos_id: str
    reason: str
    failed_attempts: int = 0
    detail: str = ""


@dataclass(frozen=True, slots=True)
class AlertOperator:
    pos_id: str
    message: str


@dataclass(frozen=True, slots=True)
class RecordClosedTrade:
    """Write the closed trade (the seed's `trades` table) and feed its P&L to the risk guard."""

    pos_id: str
    symbol: str
    instrument: str
    side: Side
    qty: int
    avg_entry_price: float
    avg_exit_price: float
    realized_pnl: float  # gross
    opened_at: float
    closed_at: float
    exit_reason: str
    fees: float = 0.0  # the charges of every fill of the trade

    @property
    def net_pnl(self) -> float:
        return self.realized_pnl - self.fees


Command = PlaceOrder | CancelOrder | ModifyOrder | RaiseExitSignal | AlertOperator | RecordClosedTrade


# --------------------------------------------------------------------------------------------- context


@dataclass(frozen=True, slots=True)
class TradeContext:
    """Everything known about one trade; only `apply` makes a new one from an event."""

    pos_id: str = ""
    symbol: str = ""
    instrument: str = ""
    side: Side = Side.BUY
    qty: int = 0  # requested
    state: TradeState = TradeState.NEW
    signal_reason: str = ""
    protection: ProtectionRules = NO_PROTECTION  # the protective exits (from SignalAccepted)
    # entry leg
    expected_entry_price: float = 0.0
    entry_limit_price: float = 0.0
    entry_correlation_id: str = ""
    entry_order_id: str = ""
    entry_placed_at: float = 0.0
    entry_filled_qty: int = 0
    avg_entry_price: float = 0.0
    entry_slippage_pct: float | None = None
    # exit leg: totals over every exit order, plus the current exit order's own cumulative fill
    exit_attempt: int = -1  # index of the current exit order (-1 = none yet); feeds correlation_id
    expected_exit_price: float = 0.0
    exit_limit_price: float = 0.0
    exit_correlation_id: str = ""
    exit_order_id: str = ""
    exit_placed_at: float = 0.0
    exit_order_filled_qty: int = 0
    exit_order_avg_price: float = 0.0
    exit_filled_qty: int = 0
    avg_exit_price: float = 0.0
    exit_reason: str = ""
    # the broker-side stop (Leg.STOP): a stop-loss order resting at the broker while the position is open
    stop_attempt: int = -1  # index of the current stop order (-1 = none yet); feeds correlation_id
    stop_correlation_id: str = ""
    stop_order_id: str = ""
    stop_status: str = ""  # "" none | PENDING (submitted, no answer) | WORKING (at the broker) | ENDED
    stop_qty: int = 0  # the stop order's total quantity
    stop_trigger_price: float = 0.0
    stop_limit_price: float = 0.0
    stop_moves: int = 0  # modifications of the current stop order (Dhan allows 25 per order)
    stop_placed_at: float = 0.0
    stop_order_filled_qty: int = 0  # the current stop order's cumulative fill (its units count as exited)
    stop_order_avg_price: float = 0.0
    stop_order_fees: float = 0.0
    # charges (core.charges), cumulative like the fills: the entry order's, every earlier exit order's, this one's
    entry_fees: float = 0.0
    exit_fees: float = 0.0  # every exit order's, the current one's included
    exit_order_fees: float = 0.0
    # outcome
    realized_pnl: float = 0.0  # gross: before fees
    reason: str = ""  # why it was denied / rejected / cancelled
    signal_at: float = 0.0
    opened_at: float = 0.0  # first entry fill
    closed_at: float = 0.0
    updated_at: float = 0.0
    seq: int = 0  # events applied = the journal's length

    @property
    def open_qty(self) -> int:
        return self.entry_filled_qty - self.exit_filled_qty

    @property
    def fees(self) -> float:
        return self.entry_fees + self.exit_fees

    @property
    def net_pnl(self) -> float:
        """Realized P&L after the charges paid so far (the entry's are paid before any exit)."""
        return self.realized_pnl - self.fees

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def exit_side(self) -> Side:
        return self.side.opposite

    @property
    def stop_live(self) -> bool:
        """A broker-side stop is (or may be) resting at the broker: no exit order may be sent beside it."""
        return self.stop_status in (STOP_PENDING, STOP_WORKING)

    def to_payload(self) -> dict[str, Any]:
        """Plain data for the status API and snapshots (rebuild uses the event journal, not this)."""
        out = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        out["protection"] = self.protection.as_dict()
        out["open_qty"] = self.open_qty
        out["fees"] = round(self.fees, 2)
        out["net_pnl"] = round(self.net_pnl, 2)
        return out


# ------------------------------------------------------------------------------------ the one table

TRANSITIONS: dict[tuple[TradeState, type[Event]], TradeState] = {
    (S.NEW, SignalAccepted): S.SIGNAL_GENERATED,
    (S.NEW, PositionAdopted): S.POSITION_OPEN,  # an orphan at the broker, taken on to be exited
    (S.SIGNAL_GENERATED, EntryRequested): S.ENTRY_PENDING,  # -> PlaceOrder(entry)
    (S.SIGNAL_GENERATED, EntryDenied): S.DENIED,
    (S.ENTRY_PENDING, OrderPlaced): S.ORDER_PLACED,
    (S.ENTRY_PENDING, EntryRepriced): S.ENTRY_PENDING,  # not sent yet: the resend goes at the new price
    (S.ENTRY_PENDING, OrderRejected): S.REJECTED,  # the submit itself was refused
    (S.ORDER_PLACED, OrderPartiallyFilled): S.ENTRY_PARTIALLY_FILLED,
    (S.ORDER_PLACED, OrderFilled): S.POSITION_OPEN,
    (S.ORDER_PLACED, OrderRejected): S.REJECTED,  # exchange/RMS rejection after TRANSIT
    (S.ORDER_PLACED, OrderCancelled): S.CANCELLED,  # cancelled elsewhere or expired, nothing filled
    (S.ORDER_PLACED, OrderTimedOut): S.ENTRY_CANCEL_PENDING,  # -> CancelOrder
    (S.ORDER_PLACED, ExitRequested): S.ENTRY_CANCEL_PENDING,  # exit before any fill = cancel the entry
    (S.ORDER_PLACED, EntryCancelRequested): S.ENTRY_CANCEL_PENDING,  # -> CancelOrder (kill switch)
    (S.ENTRY_PARTIALLY_FILLED, OrderPartiallyFilled): S.ENTRY_PARTIALLY_FILLED,
    (S.ENTRY_PARTIALLY_FILLED, OrderFilled): S.POSITION_OPEN,
    (S.ENTRY_PARTIALLY_FILLED, OrderCancelled): S.POSITION_OPEN,  # remainder cancelled elsewhere: keep the fills
    (S.ENTRY_PARTIALLY_FILLED, OrderRejected): S.POSITION_OPEN,  # remainder rejected: the fills are ours
    (S.ENTRY_PARTIALLY_FILLED, OrderTimedOut): S.ENTRY_PARTIAL_CANCEL_PENDING,  # -> CancelOrder(remainder)
    (S.ENTRY_PARTIALLY_FILLED, ExitRequested): S.ENTRY_PARTIAL_CANCEL_PENDING,  # -> CancelOrder, exit after
    (S.ENTRY_PARTIALLY_FILLED, EntryCancelRequested): S.ENTRY_PARTIAL_CANCEL_PENDING,  # the fills stay open
    (S.ENTRY_CANCEL_PENDING, OrderCancelled): S.CANCELLED,
    # The surprising edges: a fill that arrives AFTER the timeout (the cancel lost the race at the
    # exchange). The units are ours, so the position opens; an exit asked meanwhile is raised again.
    (S.ENTRY_CANCEL_PENDING, OrderFilled): S.POSITION_OPEN,
    (S.ENTRY_CANCEL_PENDING, OrderPartiallyFilled): S.ENTRY_PARTIAL_CANCEL_PENDING,
    (S.ENTRY_CANCEL_PENDING, OrderRejected): S.REJECTED,
    (S.ENTRY_CANCEL_PENDING, ExitRequested): S.ENTRY_CANCEL_PENDING,  # cancel already sent; remember the exit
    (S.ENTRY_PARTIAL_CANCEL_PENDING, OrderPartiallyFilled): S.ENTRY_PARTIAL_CANCEL_PENDING,
    (S.ENTRY_PARTIAL_CANCEL_PENDING, OrderFilled): S.POSITION_OPEN,  # the remainder beat the cancel
    (S.ENTRY_PARTIAL_CANCEL_PENDING, OrderCancelled): S.POSITION_OPEN,  # open with the filled qty
    (S.ENTRY_PARTIAL_CANCEL_PENDING, OrderRejected): S.POSITION_OPEN,
    (S.ENTRY_PARTIAL_CANCEL_PENDING, ExitRequested): S.ENTRY_PARTIAL_CANCEL_PENDING,
    (S.POSITION_OPEN, OrderSlippageDetected): S.POSITION_OPEN,  # -> RaiseExitSignal
    (S.POSITION_OPEN, ExitRequested): S.EXIT_PENDING,  # -> PlaceOrder(exit)
    (S.EXIT_PENDING, OrderPlaced): S.EXIT_ORDER_PLACED,
    (S.EXIT_PENDING, OrderRejected): S.POSITION_OPEN,  # still holding: retry the exit (bounded)
    (S.EXIT_ORDER_PLACED, OrderPartiallyFilled): S.EXIT_PARTIALLY_FILLED,
    (S.EXIT_ORDER_PLACED, OrderFilled): S.CLOSED,  # -> RecordClosedTrade
    (S.EXIT_ORDER_PLACED, OrderRejected): S.POSITION_OPEN,
    (S.EXIT_ORDER_PLACED, OrderCancelled): S.POSITION_OPEN,
    (S.EXIT_ORDER_PLACED, OrderTimedOut): S.EXIT_CANCEL_PENDING,  # -> CancelOrder
    (S.EXIT_PARTIALLY_FILLED, OrderPartiallyFilled): S.EXIT_PARTIALLY_FILLED,
    (S.EXIT_PARTIALLY_FILLED, OrderFilled): S.CLOSED,
    (S.EXIT_PARTIALLY_FILLED, OrderCancelled): S.POSITION_OPEN,  # the unexited units stay open
    (S.EXIT_PARTIALLY_FILLED, OrderRejected): S.POSITION_OPEN,  # same, and the exit is retried
    (S.EXIT_PARTIALLY_FILLED, OrderTimedOut): S.EXIT_CANCEL_PENDING,
    (S.EXIT_CANCEL_PENDING, OrderCancelled): S.POSITION_OPEN,  # -> RaiseExitSignal (a fresh exit order)
    (S.EXIT_CANCEL_PENDING, OrderFilled): S.CLOSED,  # late exit fill after the timeout: closed after all
    (S.EXIT_CANCEL_PENDING, OrderPartiallyFilled): S.EXIT_CANCEL_PENDING,
    (S.EXIT_CANCEL_PENDING, OrderRejected): S.POSITION_OPEN,
    # The broker-side stop (Leg.STOP) rests while the position is open; its order events keep the position
    # open until a complete fill, which closes the trade (the stop did the exit).
    (S.POSITION_OPEN, StopRequested): S.POSITION_OPEN,  # -> PlaceOrder(stop)
    (S.POSITION_OPEN, OrderPlaced): S.POSITION_OPEN,  # the stop rests at the broker
    (S.POSITION_OPEN, StopMoved): S.POSITION_OPEN,  # -> ModifyOrder(stop): the trail moved
    (S.POSITION_OPEN, OrderPartiallyFilled): S.POSITION_OPEN,  # the stop triggered: fewer units open
    (S.POSITION_OPEN, OrderFilled): S.CLOSED,  # the stop sold every unit
    (S.POSITION_OPEN, OrderRejected): S.POSITION_OPEN,  # no stop at the broker: local protection only
    (S.POSITION_OPEN, OrderCancelled): S.POSITION_OPEN,  # cancelled at the broker by someone else
    (S.POSITION_OPEN, StopCancelRequested): S.STOP_CANCEL_PENDING,  # an exit is wanted -> CancelOrder(stop)
    (S.STOP_CANCEL_PENDING, OrderCancelled): S.POSITION_OPEN,  # -> RaiseExitSignal: now the exit order
    (S.STOP_CANCEL_PENDING, OrderRejected): S.POSITION_OPEN,  # the stop ended unfilled all the same
    (S.STOP_CANCEL_PENDING, OrderPartiallyFilled): S.STOP_CANCEL_PENDING,  # it triggered before the cancel
    (S.STOP_CANCEL_PENDING, OrderFilled): S.CLOSED,  # the stop won the race: closed by it
    (S.STOP_CANCEL_PENDING, ExitRequested): S.STOP_CANCEL_PENDING,  # an exit is already on its way
}


def can_apply(context: TradeContext, event_type: type[Event]) -> bool:
    """Whether the table has this pair (the shell asks before sending a second EXIT_SIGNAL, say)."""
    return (context.state, event_type) in TRANSITIONS


def apply(context: TradeContext, event: Event) -> tuple[TradeContext, list[Command]]:
    """The next context and the commands the shell must carry out. Raises IllegalTransition."""
    target = TRANSITIONS.get((context.state, type(event)))
    if target is None:
        raise IllegalTransition(context.state, event)
    _check_consistent(context, event)
    changes = _UPDATES[type(event)](context, event)
    if target is S.CLOSED:
        changes["closed_at"] = event.at
    updated = replace(context, **changes, state=target, seq=context.seq + 1, updated_at=event.at)
    return updated, _commands(context, updated, event)


def rebuild(events: Iterable[Event]) -> TradeContext:
    """Replay a trade's journal (in order) into its context; commands are not re-issued."""
    context = TradeContext()
    for event in events:
        context, _ = apply(context, event)
    return context


# ------------------------------------------------------------------------------ field updates per event


def _leg_of(state: TradeState) -> Leg | None:
    if state in ENTRY_LEG:
        return Leg.ENTRY
    if state in EXIT_LEG:
        return Leg.EXIT
    if state is S.STOP_CANCEL_PENDING:
        return Leg.STOP
    return None


def _check_consistent(context: TradeContext, event: Event) -> None:
    """An order event must be about this trade's current order of the leg the state is working on (the
    broker-side stop's, while the position is open); an exit order is never sent beside a live stop."""
    event_leg = getattr(event, "leg", None)
    leg = _leg_of(context.state)
    if event_leg is Leg.STOP or isinstance(event, StopRequested | StopMoved | StopCancelRequested):
        _check_stop(context, event)
        leg = Leg.STOP
    elif event_leg is not None and event_leg is not leg:
        raise IllegalTransition(context.state, event, f"a {event_leg} event while the {leg} leg is working")
    if isinstance(event, ExitRequested) and context.state is S.POSITION_OPEN and context.stop_live:
        raise IllegalTransition(context.state, event, "the broker-side stop rests at the broker: cancel it first "
                                                      "(StopCancelRequested)")
    if isinstance(event, OrderPlaced):
        expected = correlation_of(context, leg) if leg is not None else ""
        if event.correlation_id != expected:
            raise IllegalTransition(context.state, event,
                                    f"correlation id {event.correlation_id!r} is not this trade's {expected!r}")
        if event.qty <= 0:
            raise IllegalTransition(context.state, event, f"qty {event.qty} must be positive")
        return
    order_id = getattr(event, "order_id", "")
    if isinstance(event, OrderSlippageDetected):
        if order_id != context.entry_order_id:
            raise IllegalTransition(context.state, event, f"order {order_id!r} is not the entry order")
        return
    if order_id and event_leg is not None and leg is not None:
        current = order_id_of(context, leg)
        if current and order_id != current:
            raise IllegalTransition(context.state, event, f"order {order_id!r} is not the current {leg} order")
    if isinstance(event, OrderPartiallyFilled | OrderFilled):
        before = {Leg.ENTRY: context.entry_filled_qty, Leg.EXIT: context.exit_order_filled_qty,
                  Leg.STOP: context.stop_order_filled_qty}.get(leg, 0) if leg is not None else 0
        if event.filled_qty < before or (isinstance(event, OrderPartiallyFilled) and event.filled_qty == before):
            raise IllegalTransition(context.state, event,
                                    f"cumulative filled qty {event.filled_qty} does not advance from {before}")
        if event.filled_qty <= 0 or event.avg_price <= 0:
            raise IllegalTransition(context.state, event, "a fill needs a positive qty and price")
        if leg in (Leg.EXIT, Leg.STOP):
            exited = context.exit_filled_qty - before + event.filled_qty
            if exited > context.entry_filled_qty:
                raise IllegalTransition(context.state, event, "the exit fills exceed the position")
            if leg is Leg.STOP and isinstance(event, OrderFilled) and exited != context.entry_filled_qty:
                raise IllegalTransition(context.state, event, "a complete stop fill must close the position")


def _check_stop(context: TradeContext, event: Event) -> None:
    """The broker-side stop's own rules: one at a time, only while the position is open and no exit asked."""
    if context.state not in STOP_LIVE_STATES:
        raise IllegalTransition(context.state, event, "a broker-side stop rests only while the position is open")
    if isinstance(event, StopRequested):
        if context.stop_live or context.exit_reason or context.open_qty <= 0:
            raise IllegalTransition(context.state, event, "a stop is requested once, for an open position that "
                                                          "is not being exited")
        if event.trigger_price <= 0 or event.limit_price <= 0:
            raise IllegalTransition(context.state, event, "a stop needs a positive trigger and limit price")
    elif isinstance(event, StopMoved | StopCancelRequested):
        if context.stop_status != STOP_WORKING:
            raise IllegalTransition(context.state, event, f"the stop is {context.stop_status or 'not requested'}, "
                                                          "not working at the broker")
        if isinstance(event, StopMoved) and (event.trigger_price <= 0 or event.limit_price <= 0):
            raise IllegalTransition(context.state, event, "a stop needs a positive trigger and limit price")
    elif isinstance(event, OrderPlaced):
        if context.stop_status != STOP_PENDING:
            raise IllegalTransition(context.state, event, "no stop order is being placed")
    elif context.stop_status != STOP_WORKING and not (
            isinstance(event, OrderRejected) and context.stop_status == STOP_PENDING):
        raise IllegalTransition(context.state, event, f"no stop order is working (it is "
                                                      f"{context.stop_status or 'not requested'})")


def _on_signal(c: TradeContext, e: SignalAccepted) -> dict[str, Any]:
    if e.qty <= 0 or not e.pos_id:
        raise IllegalTransition(c.state, e, "a signal needs a pos_id and a positive qty")
    return dict(pos_id=e.pos_id, symbol=e.symbol, instrument=e.instrument, side=e.side, qty=e.qty,
                expected_entry_price=e.expected_price, signal_reason=e.reason, signal_at=e.at,
                entry_correlation_id=correlation_id(e.pos_id, Leg.ENTRY),
                protection=ProtectionRules(e.stop_loss_pct, e.target_pct, e.trailing_stop_pct,
                                           e.max_holding_minutes))


def _on_adopted(c: TradeContext, e: PositionAdopted) -> dict[str, Any]:
    if e.qty <= 0 or not e.pos_id or e.avg_price < 0:
        raise IllegalTransition(c.state, e, "an adopted position needs a pos_id, a positive qty and a price")
    return dict(pos_id=e.pos_id, symbol=e.symbol, instrument=e.instrument, side=e.side, qty=e.qty,
                expected_entry_price=e.avg_price, signal_reason=e.reason, signal_at=e.at,
                entry_correlation_id=correlation_id(e.pos_id, Leg.ENTRY), entry_filled_qty=e.qty,
                avg_entry_price=e.avg_price, opened_at=e.at)


def _on_entry_requested(c: TradeContext, e: EntryRequested | EntryRepriced) -> dict[str, Any]:
    return dict(entry_limit_price=e.limit_price, expected_entry_price=e.expected_price)


def _on_denied(c: TradeContext, e: EntryDenied) -> dict[str, Any]:
    return dict(reason=e.reason)


def _on_placed(c: TradeContext, e: OrderPlaced) -> dict[str, Any]:
    if e.leg is Leg.ENTRY:
        return dict(entry_order_id=e.order_id, entry_placed_at=e.at)
    if e.leg is Leg.STOP:
        return dict(stop_order_id=e.order_id, stop_placed_at=e.at, stop_status=STOP_WORKING)
    return dict(exit_order_id=e.order_id, exit_placed_at=e.at, exit_order_filled_qty=0,
                exit_order_avg_price=0.0, exit_order_fees=0.0)


def _on_fill(c: TradeContext, e: OrderPartiallyFilled | OrderFilled) -> dict[str, Any]:
    if e.leg is Leg.ENTRY:
        return dict(entry_filled_qty=e.filled_qty, avg_entry_price=e.avg_price,
                    opened_at=c.opened_at or e.at, entry_fees=max(e.fees, c.entry_fees))
    # The event is cumulative for the current exit (or stop) order; fold the new units into the trade's
    # totals: a stop's fills are exit fills.
    stop = e.leg is Leg.STOP
    order_qty, order_avg, order_fees_before = ((c.stop_order_filled_qty, c.stop_order_avg_price, c.stop_order_fees)
                                               if stop else
                                               (c.exit_order_filled_qty, c.exit_order_avg_price, c.exit_order_fees))
    new_qty = e.filled_qty - order_qty
    if not new_qty:
        return {}
    new_value = e.avg_price * e.filled_qty - order_avg * order_qty
    exited = c.exit_filled_qty + new_qty
    avg_exit = (c.avg_exit_price * c.exit_filled_qty + new_value) / exited
    order_fees = max(e.fees, order_fees_before)
    totals = dict(exit_filled_qty=exited, avg_exit_price=avg_exit, exit_fees=c.exit_fees + order_fees - order_fees_before,
                  realized_pnl=realized_pnl(c.side, exited, c.avg_entry_price, avg_exit))
    if stop:
        ended = isinstance(e, OrderFilled)
        return dict(totals, stop_order_filled_qty=e.filled_qty, stop_order_avg_price=e.avg_price,
                    stop_order_fees=order_fees, stop_status=STOP_ENDED if ended else c.stop_status,
                    exit_reason=BROKER_STOP_REASON if ended else c.exit_reason)  # closed by the stop
    return dict(totals, exit_order_filled_qty=e.filled_qty, exit_order_avg_price=e.avg_price,
                exit_order_fees=order_fees)


def _on_cancel_requested(c: TradeContext, e: EntryCancelRequested) -> dict[str, Any]:
    return dict(reason=e.reason)


def _on_timed_out(c: TradeContext, e: OrderTimedOut) -> dict[str, Any]:
    return {}


def _on_slippage(c: TradeContext, e: OrderSlippageDetected) -> dict[str, Any]:
    return dict(entry_slippage_pct=e.pct)


def _on_rejected(c: TradeContext, e: OrderRejected) -> dict[str, Any]:
    if e.leg is Leg.STOP:  # the trade's own reason stays: the stop's is in the event and its log line
        return dict(stop_status=STOP_ENDED, stop_order_id=e.order_id or c.stop_order_id)
    return dict(reason=e.reason)


def _on_cancelled(c: TradeContext, e: OrderCancelled) -> dict[str, Any]:
    if e.leg is Leg.STOP:
        return dict(stop_status=STOP_ENDED)
    return dict(reason=e.reason or c.reason)


def _on_stop_requested(c: TradeContext, e: StopRequested) -> dict[str, Any]:
    attempt = c.stop_attempt + 1
    return dict(stop_attempt=attempt, stop_correlation_id=correlation_id(c.pos_id, Leg.STOP, attempt),
                stop_order_id="", stop_status=STOP_PENDING, stop_qty=c.open_qty, stop_trigger_price=e.trigger_price,
                stop_limit_price=e.limit_price, stop_moves=0, stop_placed_at=0.0, stop_order_filled_qty=0,
                stop_order_avg_price=0.0, stop_order_fees=0.0)


def _on_stop_moved(c: TradeContext, e: StopMoved) -> dict[str, Any]:
    return dict(stop_trigger_price=e.trigger_price, stop_limit_price=e.limit_price, stop_moves=c.stop_moves + 1)


def _on_stop_cancel_requested(c: TradeContext, e: StopCancelRequested) -> dict[str, Any]:
    return dict(exit_reason=e.reason)


def _on_exit_requested(c: TradeContext, e: ExitRequested) -> dict[str, Any]:
    if c.state is not S.POSITION_OPEN:
        return dict(exit_reason=e.reason)  # the entry is being cancelled; exit once it settles
    attempt = c.exit_attempt + 1
    return dict(exit_reason=e.reason, exit_attempt=attempt, exit_limit_price=e.limit_price,
                   expected_exit_price=e.expected_price, exit_order_id="", exit_placed_at=0.0,
                exit_order_filled_qty=0, exit_order_avg_price=0.0, exit_order_fees=0.0,
                exit_correlation_id=correlation_id(c.pos_id, Leg.EXIT, attempt))


_UPDATES: dict[type[Event], Any] = {
    SignalAccepted: _on_signal,
    EntryRequested: _on_entry_requested,
    EntryRepriced: _on_entry_requested,
    EntryCancelRequested: _on_cancel_requested,
    EntryDenied: _on_denied,
    OrderPlaced: _on_placed,
    OrderPartiallyFilled: _on_fill,
    OrderFilled: _on_fill,
    OrderTimedOut: _on_timed_out,
    OrderSlippageDetected: _on_slippage,
    OrderRejected: _on_rejected,
    OrderCancelled: _on_cancelled,
    ExitRequested: _on_exit_requested,
    PositionAdopted: _on_adopted,
    StopRequested: _on_stop_requested,
    StopMoved: _on_stop_moved,
    StopCancelRequested: _on_stop_cancel_requested,
}


# ---------------------------------------------------------------------------------- commands per step


def _commands(before: TradeContext, after: TradeContext, event: Event) -> list[Command]:
    if isinstance(event, EntryRequested):
        return [PlaceOrder(OrderRequest(
            correlation_id=after.entry_correlation_id, pos_id=after.pos_id, leg=Leg.ENTRY,
            symbol=after.symbol, side=after.side, qty=after.qty, price=after.entry_limit_price,
            expected_price=after.expected_entry_price))]
    if isinstance(event, ExitRequested):
        if after.state is S.EXIT_PENDING:
            return [PlaceOrder(OrderRequest(
                correlation_id=after.exit_correlation_id, pos_id=after.pos_id, leg=Leg.EXIT,
                symbol=after.symbol, side=after.exit_side, qty=after.open_qty, price=after.exit_limit_price,
                expected_price=after.expected_exit_price))]
        if before.state in (S.ORDER_PLACED, S.ENTRY_PARTIALLY_FILLED):
            return [CancelOrder(after.pos_id, after.entry_order_id, Leg.ENTRY)]
        return []  # a cancel is already on its way
    if isinstance(event, StopRequested):
        return [PlaceOrder(stop_request(after))]
    if isinstance(event, StopMoved):
        return [ModifyOrder(after.pos_id, after.stop_order_id, Leg.STOP, after.stop_qty, after.stop_limit_price,
                            after.stop_trigger_price)]
    if isinstance(event, StopCancelRequested):
        return [CancelOrder(after.pos_id, after.stop_order_id, Leg.STOP)]
    if isinstance(event, OrderTimedOut):
        return [CancelOrder(after.pos_id, event.order_id, event.leg)]
    if isinstance(event, EntryCancelRequested):
        return [CancelOrder(after.pos_id, after.entry_order_id, Leg.ENTRY)]
    if isinstance(event, OrderSlippageDetected):
        return [RaiseExitSignal(after.pos_id, f"ORDER_SLIPPAGE: entry filled at {event.actual} vs expected "
                                              f"{event.expected} ({event.pct:+.2f}% > {event.limit_pct}%)")]
    if after.state is S.CLOSED:
        return [RecordClosedTrade(
            pos_id=after.pos_id, symbol=after.symbol, instrument=after.instrument, side=after.side,
            qty=after.entry_filled_qty, avg_entry_price=after.avg_entry_price,
            avg_exit_price=after.avg_exit_price, realized_pnl=after.realized_pnl,
            opened_at=after.opened_at, closed_at=after.closed_at, exit_reason=after.exit_reason,
            fees=after.fees)]
    if getattr(event, "leg", None) is Leg.STOP and after.state is S.POSITION_OPEN:
        if before.state is S.STOP_CANCEL_PENDING:  # the stop is gone: now the exit order
            return [RaiseExitSignal(after.pos_id, after.exit_reason)]
        if isinstance(event, OrderRejected | OrderCancelled):
            why = event.reason or "no reason given"
            return [AlertOperator(after.pos_id, f"the broker-side stop of {after.open_qty} {after.symbol} ended "
                                                f"unfilled ({why}): the position is protected by this process only")]
        return []
    if after.state is S.POSITION_OPEN and before.state is not S.POSITION_OPEN:
        if before.state in ENTRY_LEG:
            # Opened while an exit was already wanted (asked during the entry cancel): ask again now.
            return [RaiseExitSignal(after.pos_id, after.exit_reason)] if after.exit_reason else []
        # Back from an exit that did not complete: another exit order, always (the shell backs off).
        failed = after.exit_attempt + 1
        why = f"exit order {before.exit_order_id or '(unplaced)'} ended unfilled: {after.reason or event.name}"
        commands: list[Command] = [RaiseExitSignal(after.pos_id, after.exit_reason, failed, why)]
        if failed % EXIT_ALERT_EVERY == 0:
            commands.append(AlertOperator(after.pos_id, f"{why}; {failed} exit orders failed, {after.open_qty} "
                                                        "units still open; still retrying: check the broker"))
        return commands
    return []


# ------------------------------------------------------------------------------ pure helpers for shells


def opening_events(*, at: float, pos_id: str, symbol: str, instrument: str, side: Side, qty: int,
                   price: float, quote: float | None, allowed: bool, denial: str, band_pct: float,
                   reason: str, tick: float | None = None,
                   protection: ProtectionRules = NO_PROTECTION) -> list[Event]:
    """The first step of a trade: SignalAccepted, then EntryRequested (the risk guard allowed it and a price
    is known: the signal's, else the quote) at a marketable limit, or EntryDenied with `denial` (or
    NO_PRICE when nothing says what the instrument costs).

    With the instrument's `tick` the limit is put on the tick grid in the SAFE direction for an entry
    (core.instruments.round_to_tick: BUY down, SELL up): never a worse price than the band allows. It stays
    marketable: a quote on the grid (every exchange price is) is never crossed back, since the band moves
    the limit away from it before the rounding moves it by less than one tick toward it."""
    expected = price if price > 0 else (quote or 0.0)
    events: list[Event] = [SignalAccepted(at=at, pos_id=pos_id, symbol=symbol, instrument=instrument, side=side,
                                          qty=qty, expected_price=expected, reason=reason,
                                          **protection.as_dict())]
    if allowed and expected > 0:
        limit = marketable_limit(quote or expected, side, band_pct)
        if tick:
            try:
                limit = round_to_tick(limit, tick, side)
            except InstrumentError:
                pass  # below one tick: the broker refuses it, with its reason
        events.append(EntryRequested(at=at, limit_price=limit, expected_price=expected))
    else:
        events.append(EntryDenied(at=at, reason=denial if not allowed else
                                  f"NO_PRICE: no price given and no quote for {symbol}"))
    return events


def entry_repricing(context: TradeContext, quote: float | None, band_pct: float, tick: float | None,
                    at: float) -> EntryRepriced | None:
    """The new price of an entry about to be sent again, from a fresh quote (None: no quote, or the price
    stands), on the tick the safe way like the first one (`opening_events`)."""
    if context.state is not S.ENTRY_PENDING or quote is None or quote <= 0:
        return None
    limit = marketable_limit(quote, context.side, band_pct)
    if tick:
        try:
            limit = round_to_tick(limit, tick, context.side)
        except InstrumentError:
            pass
    if limit == context.entry_limit_price and quote == context.expected_entry_price:
        return None
    return EntryRepriced(at=at, limit_price=limit, expected_price=quote)


def stop_request(context: TradeContext) -> OrderRequest:
    """The broker-side stop order of the trade (what StopRequested's PlaceOrder carries)."""
    return OrderRequest(correlation_id=context.stop_correlation_id, pos_id=context.pos_id, leg=Leg.STOP,
                        symbol=context.symbol, side=context.exit_side, qty=context.stop_qty,
                        price=context.stop_limit_price, expected_price=context.stop_trigger_price,
                        trigger_price=context.stop_trigger_price)


def wants_stop(context: TradeContext) -> bool:
    """Should a broker-side stop be requested now: an open position with a stop-loss or trailing stop, no exit
    asked, and no stop resting (a stop that never reached the broker is asked for again, twice at most; one
    the broker held and then ended is not: someone cancelled it there, or it was rejected)."""
    rules = context.protection
    return (context.state is S.POSITION_OPEN and not context.exit_reason and context.open_qty > 0
            and bool(rules.stop_loss_pct or rules.trailing_stop_pct)
            and (context.stop_status == "" or (context.stop_status == STOP_ENDED and not context.stop_order_id
                                                and context.stop_attempt < STOP_ATTEMPTS - 1)))


STOP_ATTEMPTS = 3  # stop orders asked for a position when none reaches the broker


def request_for(context: TradeContext) -> OrderRequest | None:
    """The order a pending submit is about (the same request the PlaceOrder command carried)."""
    if context.state is S.ENTRY_PENDING:
        return OrderRequest(correlation_id=context.entry_correlation_id, pos_id=context.pos_id, leg=Leg.ENTRY,
                            symbol=context.symbol, side=context.side, qty=context.qty,
                            price=context.entry_limit_price, expected_price=context.expected_entry_price)
    if context.state is S.EXIT_PENDING:
        return OrderRequest(correlation_id=context.exit_correlation_id, pos_id=context.pos_id, leg=Leg.EXIT,
                            symbol=context.symbol, side=context.exit_side, qty=context.open_qty,
                            price=context.exit_limit_price, expected_price=context.expected_exit_price)
    if context.state is S.POSITION_OPEN and context.stop_status == STOP_PENDING:
        return stop_request(context)
    return None


def order_id_of(context: TradeContext, leg: Leg) -> str:
    return {Leg.ENTRY: context.entry_order_id, Leg.EXIT: context.exit_order_id, Leg.STOP: context.stop_order_id}[leg]


def correlation_of(context: TradeContext, leg: Leg) -> str:
    return {Leg.ENTRY: context.entry_correlation_id, Leg.EXIT: context.exit_correlation_id,
            Leg.STOP: context.stop_correlation_id}[leg]


def leg_of_order(context: TradeContext, order: BrokerOrder) -> Leg | None:
    """Which of the trade's orders a broker order is (by correlation id, then order id), or None."""
    for leg in (Leg.ENTRY, Leg.EXIT, Leg.STOP):
        cid = correlation_of(context, leg)
        if order.correlation_id and order.correlation_id == cid:
            return leg
    for leg in (Leg.ENTRY, Leg.EXIT, Leg.STOP):
        known = order_id_of(context, leg)
        if order.order_id and order.order_id == known:
            return leg
    return None



def slippage_pct(expected: float, actual: float, side: Side) -> float:
    """Fill deviation from the expected price in percent, signed so that adverse is positive
    (paying more on a BUY, receiving less on a SELL)."""
    if expected <= 0:
        return 0.0
    deviation = (actual - expected) / expected * 100.0
    return deviation if side is Side.BUY else -deviation


def slippage_exceeded(pct: float, max_slippage_pct: float) -> bool:
    """The seed's rule: a fill deviating by more than max_slippage_pct (either way) triggers an exit;
    a large favourable deviation means the decision was made on a stale or wrong price."""
    return abs(pct) > max_slippage_pct


def slippage_guard(context: TradeContext, max_slippage_pct: float, at: float) -> OrderSlippageDetected | None:
    """After the entry has filled: the slippage event to apply, or None (not open, already checked, fine)."""
    if context.state is not S.POSITION_OPEN or context.entry_slippage_pct is not None:
        return None
    if context.exit_attempt >= 0 or context.exit_reason:
        return None  # already on its way out
    pct = slippage_pct(context.expected_entry_price, context.avg_entry_price, context.side)
    if not slippage_exceeded(pct, max_slippage_pct):
        return None
    return OrderSlippageDetected(at=at, order_id=context.entry_order_id, expected=context.expected_entry_price,
                                 actual=context.avg_entry_price, pct=round(pct, 4), limit_pct=max_slippage_pct)


def timeout_due(context: TradeContext, now: float, timeout_seconds: float) -> OrderTimedOut | None:
    """The ORDER_TIMEOUT to apply if the working order has been open for timeout_seconds, else None."""
    if context.state not in ACTIVE_ORDER_STATES:
        return None
    leg = _leg_of(context.state)
    placed_at, order_id = ((context.entry_placed_at, context.entry_order_id) if leg is Leg.ENTRY
                           else (context.exit_placed_at, context.exit_order_id))
    if now - placed_at < timeout_seconds:
        return None
    assert leg is not None
    return OrderTimedOut(at=now, order_id=order_id, leg=leg)


OrderCharges = Callable[[Side, int, float, float], float]  # (side, cumulative qty, avg price, at) -> ₹


def observe(context: TradeContext, order: BrokerOrder, at: float,
            charges: OrderCharges | None = None) -> list[Event]:
    """The events a broker order snapshot implies for this trade, given what the trade already knows.

    The broker is the truth; every source of order news (the place() answer, the order-update stream,
    a reconciliation poll) goes through here, so duplicates and stale snapshots produce no events and
    a fill that beat its own acknowledgement produces OrderPlaced first. Orders of other trades (or an
    old exit attempt) produce nothing. A new fill the trade cannot accept raises IllegalTransition: units
    the broker says we hold must never be dropped silently (the reconciler quarantines the trade).
    `charges` prices a fill (the order's cumulative charges); the fill events carry them, so the journal
    keeps the fees paid under the rates of that day.
    """
    leg = leg_of_order(context, order)
    if leg is None:
        return []
    events: list[Event] = []
    scratch = context

    def offer(event: Event) -> bool:
        nonlocal scratch
        if (scratch.state, type(event)) not in TRANSITIONS:
            return False
        try:
            scratch, _ = apply(scratch, event)
        except IllegalTransition:
            return False  # the state takes this event type, but not for this leg or order
        events.append(event)
        return True

    known_order = order_id_of(context, leg)
    if known_order and order.order_id != known_order:
        return []  # a different order carrying our correlation id: the reconciler's business
    if order.status is OrderStatus.REJECTED and not known_order:
        offer(OrderRejected(at=at, leg=leg, reason=order.reason or "rejected", order_id=order.order_id))
        return events
    placing = _leg_of(context.state) is leg or (leg is Leg.STOP and context.stop_status == STOP_PENDING)
    if not known_order and placing:
        offer(OrderPlaced(at=at, order_id=order.order_id, correlation_id=order.correlation_id, leg=leg,
                          qty=order.qty, price=order.price))
    known_fill = {Leg.ENTRY: context.entry_filled_qty, Leg.EXIT: context.exit_order_filled_qty,
                  Leg.STOP: context.stop_order_filled_qty}[leg]
    if order.filled_qty > known_fill:
        complete = order.status is OrderStatus.TRADED or order.filled_qty >= order.qty
        fill_type = OrderFilled if complete else OrderPartiallyFilled
        side = context.side if leg is Leg.ENTRY else context.exit_side
        fees = charges(side, order.filled_qty, order.avg_price, at) if charges is not None else 0.0
        fill = fill_type(at=at, order_id=order.order_id, leg=leg, filled_qty=order.filled_qty,
                         avg_price=order.avg_price, fees=fees)
        if not offer(fill):
            raise IllegalTransition(scratch.state, fill, "the broker reports fills this trade cannot take")
    if order.status is OrderStatus.REJECTED:
        offer(OrderRejected(at=at, leg=leg, reason=order.reason or "rejected", order_id=order.order_id))
    elif order.status in (OrderStatus.CANCELLED, OrderStatus.EXPIRED) and order.filled_qty < order.qty:
        offer(OrderCancelled(at=at, order_id=order.order_id, leg=leg,
                             reason=order.reason or order.status.value.lower()))
    return events


# Every event type has an update rule, and every table entry names known types (checked at import).
assert set(_UPDATES) == set(EVENT_TYPES.values())
assert all(event_type in _UPDATES for _, event_type in TRANSITIONS)


def order_news(context: TradeContext, order: BrokerOrder) -> tuple[bool, bool]:
    """(does this broker order tell the trade something it has not applied, is that a fill it missed): what the
    reconciler asks of each broker order a live trade owns."""
    leg = leg_of_order(context, order)
    if leg is None:
        return False, False
    known_fill = {Leg.ENTRY: context.entry_filled_qty, Leg.EXIT: context.exit_order_filled_qty,
                  Leg.STOP: context.stop_order_filled_qty}[leg]
    missed = order.filled_qty > known_fill
    working = {Leg.ENTRY: context.state in ENTRY_LEG, Leg.EXIT: context.state in EXIT_LEG,
               Leg.STOP: context.stop_live}[leg]
    ended = order.status.is_terminal and working
    return missed or ended or not order_id_of(context, leg), missed
