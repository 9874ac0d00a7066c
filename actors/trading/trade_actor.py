"""TradeActor: one per pos_id, the only owner of its TradeContext; plus the trade protocol it speaks.

A trade actor changes state only through `core.trade.apply`. For every event: append it to
`trade_events` FIRST, then upsert the `trades` row, publish the context (TradeBook, OrderRouter, timeout
monitor), log it in the seed's words, and only then carry out the commands (a PlaceOrder becomes a
SubmitOrder told to the executor, a CancelOrder a CancelWorkingOrder, a RaiseExitSignal a RequestExit
to itself, a RecordClosedTrade the risk guard's count). A journal write that fails crashes the actor
before any side effect; its restart recovers from the journal and the broker.

Start-up and crash recovery are one path (`started`): rebuild from the journal; then either the
executor's placement answer handed over at creation (`intro`: a fresh entry, nothing to ask the broker)
or a reconciliation with the broker (the working order looked up by id / correlationId and `observe`d;
a pending submit handed back to the executor, which resolves it by correlationId and never resends
blindly); only then does the actor take messages. An illegal transition is refused and logged, never
applied. A terminal trade stops itself (a normal exit: transient, not restarted).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from actors.brokers.base import Broker, BrokerError, OrderNotFound
from actors.clock import Clock
from actors.trading.risk_guard import RiskGuard
from config.settings import ExecutionSettings
from core.orders import BrokerOrder, Leg, OrderRequest, Side
from core.risk import ist_day
from core.trade import (
    ACTIVE_ORDER_STATES,
    MAX_EXIT_ATTEMPTS,
    AlertOperator,
    CancelOrder,
    Command,
    EntryDenied,
    Event,
    EventDecodeError,
    ExitRequested,
    IllegalTransition,
    OrderCancelled,
    OrderRejected,
    PlaceOrder,
    RaiseExitSignal,
    RecordClosedTrade,
    TradeContext,
    TradeState,
    apply,
    can_apply,
    event_from_payload,
    observe,
    rebuild,
    slippage_guard,
    timeout_due,
)
from storage.errors import StorageError
from storage.records import OrderRecord, TradeRecord
from storage.repositories import Storage
from supervision.actor import SupervisedActor
from supervision.supervisor import ChildHandle, ChildLink, SupervisorHandle

__all__ = [
    "CancelWorkingOrder",
    "CheckTimeout",
    "GetTrade",
    "Observe",
    "OrderRouter",
    "Outcome",
    "PlacementResult",
    "QuoteFn",
    "RefreshFromBroker",
    "RequestExit",
    "SubmitOrder",
    "TradeActor",
    "TradeBook",
    "TraderDeps",
    "WatchTrade",
    "marketable_limit",
    "request_for",
    "trade_record",
]

QuoteFn = Callable[[str], float | None]
S = TradeState

# States with a working order at the broker, by leg (what a refresh looks up).
_ENTRY_WORKING = frozenset({S.ORDER_PLACED, S.ENTRY_PARTIALLY_FILLED, S.ENTRY_CANCEL_PENDING,
                            S.ENTRY_PARTIAL_CANCEL_PENDING})
_EXIT_WORKING = frozenset({S.EXIT_ORDER_PLACED, S.EXIT_PARTIALLY_FILLED, S.EXIT_CANCEL_PENDING})
_CANCEL_PENDING = frozenset({S.ENTRY_CANCEL_PENDING, S.ENTRY_PARTIAL_CANCEL_PENDING, S.EXIT_CANCEL_PENDING})
_SUBMIT_PENDING = frozenset({S.ENTRY_PENDING, S.EXIT_PENDING})
# A sweep (square-off, flatten) exits trades in these states; others are exiting or have nothing to exit.
_EXITABLE = frozenset({S.POSITION_OPEN, S.ORDER_PLACED, S.ENTRY_PARTIALLY_FILLED})
_ABANDONED = frozenset({S.REJECTED, S.CANCELLED})


# ------------------------------------------------------------------------------- messages to a trade


class Outcome:
    """What the executor knows about a submit."""

    PLACED = "PLACED"  # the broker has the order (answered, or found by correlationId)
    REFUSED = "REFUSED"  # definitely not placed and not to be retried (permanent error, lost intent)
    UNKNOWN = "UNKNOWN"  # not known yet (lookup failed, retries deferred): the monitor asks again


@dataclass(frozen=True)
class PlacementResult:
    request: OrderRequest
    outcome: str
    order: BrokerOrder | None = None
    reason: str = ""


@dataclass(frozen=True)
class Observe:
    """A broker order snapshot: order-update stream, reconciler poll, cancel answer."""

    order: BrokerOrder
    source: str = "stream"


@dataclass(frozen=True)
class RequestExit:
    """EXIT_SIGNAL for this trade. `source`: strategy, operator, trade (slippage, retry), square_off, flatten."""

    reason: str
    source: str = "strategy"


@dataclass(frozen=True)
class CheckTimeout:
    pass


@dataclass(frozen=True)
class RefreshFromBroker:
    """Resolve a state that is taking too long (a pending submit, a cancel without an answer)."""


@dataclass(frozen=True)
class GetTrade:
    """Ask: the current TradeContext."""


# ------------------------------------------------------------------------- messages from a trade


@dataclass(frozen=True)
class SubmitOrder:
    """To the executor: place this order (idempotent by correlation id: resolves instead of resending)."""

    request: OrderRequest


@dataclass(frozen=True)
class CancelWorkingOrder:
    """To the executor: cancel this order, then tell the trade what the broker says about it."""

    pos_id: str
    order_id: str
    leg: Leg


@dataclass(frozen=True)
class WatchTrade:
    """To the timeout monitor: the trade's state and since when; `done` = nothing to watch any more."""

    pos_id: str
    state: str
    since: float
    done: bool = False


# ------------------------------------------------------------------------------ shared shell state


class TradeBook:
    """The latest context of every live trade of this process: the position manager's in-memory view.

    Written by the trade actors (and the executor for a fresh entry), read by the HTTP threads, the
    reconciler and the risk guard. The `trades` table holds the same rows for everyone else.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._trades: dict[str, TradeContext] = {}
        self._recovered: set[str] = set()
        self._awaited: set[str] = set()  # adopted at start-up, not yet through their recovery

    def update(self, context: TradeContext, recovered: bool = True) -> None:
        with self._lock:
            self._trades[context.pos_id] = context
            if recovered:
                self._recovered.add(context.pos_id)
                self._awaited.discard(context.pos_id)

    def remove(self, pos_id: str) -> None:
        with self._lock:
            self._trades.pop(pos_id, None)
            self._recovered.discard(pos_id)
            self._awaited.discard(pos_id)

    def get(self, pos_id: str) -> TradeContext | None:
        with self._lock:
            return self._trades.get(pos_id)

    def contexts(self) -> list[TradeContext]:
        with self._lock:
            return list(self._trades.values())

    def __contains__(self, pos_id: object) -> bool:
        with self._lock:
            return pos_id in self._trades

    def await_recovery(self, pos_ids: Iterable[str]) -> None:
        """Trades being adopted at start-up: `all_recovered` is False until each recovered or ended."""
        with self._lock:
            self._awaited.update(p for p in pos_ids if p not in self._recovered)

    def all_recovered(self) -> bool:
        with self._lock:
            return not self._awaited

    def open_count(self) -> int:
        """Trades that hold or may still get units: what max_open_positions counts."""
        with self._lock:
            return sum(1 for c in self._trades.values() if not c.is_terminal)

    def net_open_qty(self) -> dict[str, int]:
        """Signed units held per traded symbol (long +, short -), by the book."""
        with self._lock:
            net: dict[str, int] = {}
            for c in self._trades.values():
                if c.open_qty:
                    net[c.symbol] = net.get(c.symbol, 0) + (c.open_qty if c.side is Side.BUY else -c.open_qty)
            return net


class OrderRouter:
    """Delivers broker order updates (any thread) to the trade actor owning the order.

    Keys are correlation ids (registered before a submit) and broker order ids. An update for a known
    pos_id whose trade actor does not exist yet (it races the submit's answer: the executor creates the
    actor right after) is kept for that actor, which takes it when it starts. An update no trade claims
    goes to the fallback (the executor: a database lookup, else the reconciler's business).
    """

    PENDING_LIMIT = 64  # updates kept per pos_id while its actor is being created

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[str, str] = {}
        self._keys: dict[str, set[str]] = {}
        self._pending: dict[str, list[BrokerOrder]] = {}
        self._trades: SupervisorHandle | None = None
        self._fallback: Callable[[BrokerOrder], None] | None = None
        self.routed = 0
        self.unrouted = 0

    def bind(self, trades: SupervisorHandle, fallback: Callable[[BrokerOrder], None]) -> None:
        self._trades = trades
        self._fallback = fallback

    def register(self, pos_id: str, keys: Iterable[str]) -> None:
        with self._lock:
            owned = self._keys.setdefault(pos_id, set())
            for key in keys:
                if key:
                    self._by_key[key] = pos_id
                    owned.add(key)

    def forget(self, pos_id: str) -> None:
        with self._lock:
            self._pending.pop(pos_id, None)
            for key in self._keys.pop(pos_id, set()):
                if self._by_key.get(key) == pos_id:
                    del self._by_key[key]

    def take_pending(self, pos_id: str) -> list[BrokerOrder]:
        """Updates that arrived before the trade actor existed (its start takes them)."""
        with self._lock:
            return self._pending.pop(pos_id, [])

    def pos_id_for(self, order: BrokerOrder) -> str | None:
        with self._lock:
            return self._by_key.get(order.correlation_id) or self._by_key.get(order.order_id)

    def deliver(self, pos_id: str, message: Any) -> bool:
        """Tell the live trade actor of pos_id (False when there is none)."""
        if self._trades is None:
            return False
        handle = self._trades.find_child(pos_id)
        return handle is not None and handle.tell(message)

    def on_update(self, order: BrokerOrder) -> None:
        """The broker's order-update listener: only hands over (never blocks, never raises)."""
        pos_id = self.pos_id_for(order)
        if pos_id is not None:
            if self.deliver(pos_id, Observe(order)):
                self.routed += 1
                return
            with self._lock:
                if pos_id in self._keys and self._trades is not None and \
                        self._trades.find_child(pos_id) is None:
                    waiting = self._pending.setdefault(pos_id, [])
                    if len(waiting) < self.PENDING_LIMIT:
                        waiting.append(order)
                        self.routed += 1
                        return
        self.unrouted += 1
        if self._fallback is not None:
            self._fallback(order)


@dataclass
class TraderDeps:
    """What every trading actor shares; handles are filled in by the assembly once registered."""

    storage: Storage
    broker: Broker
    clock: Clock
    risk: RiskGuard
    book: TradeBook
    router: OrderRouter
    quotes: QuoteFn
    execution: ExecutionSettings
    protection_band_pct: float
    executor: ChildHandle | None = None
    monitor: ChildHandle | None = None
    trades: SupervisorHandle | None = None
    # The executor's answer for a trade it is creating, picked up by that trade's first start.
    intros: dict[str, PlacementResult] = field(default_factory=dict)


# ---------------------------------------------------------------------------------- pure helpers


def marketable_limit(price: float, side: Side, band_pct: float) -> float:
    """A LIMIT price that crosses the market by band_pct: above the quote to buy, below it to sell."""
    factor = 1 + band_pct / 100.0 if side is Side.BUY else 1 - band_pct / 100.0
    return round(max(price * factor, 0.0), 2)


def request_for(context: TradeContext) -> OrderRequest | None:
    """The order a pending submit is about (the same request the core's PlaceOrder carried)."""
    if context.state is S.ENTRY_PENDING:
        return OrderRequest(correlation_id=context.entry_correlation_id, pos_id=context.pos_id, leg=Leg.ENTRY,
                            symbol=context.symbol, side=context.side, qty=context.qty,
                            price=context.entry_limit_price, expected_price=context.expected_entry_price)
    if context.state is S.EXIT_PENDING:
        return OrderRequest(correlation_id=context.exit_correlation_id, pos_id=context.pos_id, leg=Leg.EXIT,
                            symbol=context.symbol, side=context.exit_side, qty=context.open_qty,
                            price=context.exit_limit_price, expected_price=context.expected_exit_price)
    return None


def trade_record(context: TradeContext, created_at: float | None = None) -> TradeRecord:
    """The `trades` row of a context (the seed's table: entry/exit price+time, fees, realized P&L, state)."""
    detail = {
        "entry_correlation_id": context.entry_correlation_id, "entry_order_id": context.entry_order_id,
        "exit_correlation_id": context.exit_correlation_id, "exit_order_id": context.exit_order_id,
        "expected_entry_price": context.expected_entry_price, "entry_limit_price": context.entry_limit_price,
        "entry_slippage_pct": context.entry_slippage_pct, "exit_filled_qty": context.exit_filled_qty,
        "open_qty": context.open_qty, "exit_attempt": context.exit_attempt, "exit_reason": context.exit_reason,
        "signal_reason": context.signal_reason, "reason": context.reason, "seq": context.seq,
    }
    return TradeRecord(
        pos_id=context.pos_id, symbol=context.symbol, instrument=context.instrument, side=context.side.value,
        qty=context.qty, filled_qty=context.entry_filled_qty,
        entry_price=context.avg_entry_price or None, entry_time=context.opened_at or None,
        exit_price=context.avg_exit_price or None,
        exit_time=(context.closed_at or None) if context.state is S.CLOSED else None,
        fees=0.0, realized_pnl=context.realized_pnl if context.exit_filled_qty else None,
        state=context.state.value, opened_day=ist_day(context.signal_at or context.updated_at),
        detail=detail, created_at=created_at if created_at is not None else context.signal_at,
        updated_at=context.updated_at)


def _order_id_of(context: TradeContext, leg: Leg) -> str:
    return context.entry_order_id if leg is Leg.ENTRY else context.exit_order_id


def _correlation_of(context: TradeContext, leg: Leg) -> str:
    return context.entry_correlation_id if leg is Leg.ENTRY else context.exit_correlation_id


# ------------------------------------------------------------------------------------ the actor


class TradeActor(SupervisedActor):
    def __init__(self, link: ChildLink | None, pos_id: str, deps: TraderDeps,
                 intro: PlacementResult | None = None) -> None:
        super().__init__(link)
        self.pos_id = pos_id
        self.deps = deps
        self.intro = intro
        self.context = TradeContext()
        self.finished = False
        self.recovering = True  # the book says "recovered" only once started() is through
        self.deferred_exit: RequestExit | None = None  # asked before the entry was placed: applied after
        self.log = self.log.bind(pos_id=pos_id)

    # -- lifecycle ----------------------------------------------------------------------------------

    def started(self) -> None:
        deps = self.deps
        records = deps.storage.trades.events(self.pos_id)
        try:
            self.context = rebuild(event_from_payload(r.event, r.payload) for r in records)
        except (EventDecodeError, IllegalTransition) as exc:
            # A journal we cannot replay is an operator's problem: hold entries, keep the trade out of play.
            self.log.event("TRADE_JOURNAL_UNREADABLE", f"{self.pos_id}: {exc}", level=50)
            deps.risk.set_reconciliation_hold(True, f"trade {self.pos_id}: journal unreadable ({exc})")
            self._finish()
            return
        if not records:
            self.log.event("TRADE_NOT_FOUND", f"{self.pos_id}: no journal", level=30)
            self._finish()
            return
        if self.context.is_terminal:
            # Ended before its row caught up (a crash between journal and row): heal the projection.
            try:
                deps.storage.trades.upsert_trade(trade_record(self.context))
            except StorageError as exc:
                self.log.event("TRADE_ROW_STALE", f"{self.pos_id}: trades row not updated ({exc})", level=30)
            self._finish()
            return
        self._publish()
        intro, self.intro = self.intro, None
        if intro is not None:
            self._on_placement(intro)
        else:
            self.log.event("TRADE_RECOVERING", f"{self.pos_id}: rebuilt {self.context.state} from "
                           f"{len(records)} events; reconciling with the broker",
                           state=self.context.state.value, events=len(records))
            self._recover()
        for order in self.deps.router.take_pending(self.pos_id):  # updates that raced the actor's creation
            self._observe(order, "stream")
        self.recovering = False
        self._after_step()
        if not self.finished:
            self._publish()

    def release(self) -> None:
        if self.finished:
            self.deps.router.forget(self.pos_id)

    def receive(self, message: Any) -> Any:
        if self.finished:
            return None
        if isinstance(message, Observe):
            self._observe(message.order, message.source)
        elif isinstance(message, PlacementResult):
            self._on_placement(message)
        elif isinstance(message, RequestExit):
            self._on_request_exit(message)
        elif isinstance(message, CheckTimeout):
            event = timeout_due(self.context, self.deps.clock.now(), self.deps.execution.order_timeout_seconds)
            if event is not None:
                self._apply(event)
        elif isinstance(message, RefreshFromBroker):
            self._recover()
        elif isinstance(message, GetTrade):
            return self.context
        else:
            return super().receive(message)
        self._after_step()
        return None

    # -- handlers ---------------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Bring the context in line with the broker (start-up, crash, or a state taking too long)."""
        context = self.context
        if context.state is S.SIGNAL_GENERATED:
            self._apply(EntryDenied(at=self.deps.clock.now(),
                                    reason="recovered without a risk decision: the entry was never sent"))
            return
        request = request_for(context)
        if request is not None and self.deps.executor is not None:
            # The executor resolves it under the placement lock: found by correlationId -> placed; intent
            # claimed but no order -> refused; never a blind resend.
            self.deps.executor.tell(SubmitOrder(request))
            return
        leg = Leg.ENTRY if context.state in _ENTRY_WORKING else Leg.EXIT if context.state in _EXIT_WORKING else None
        if leg is None:
            return
        order, answered = self._lookup(leg)
        if order is not None:
            self._observe(order, "refresh")
        if self.context.state not in _CANCEL_PENDING:
            return
        order_id = _order_id_of(self.context, leg)
        if answered and order is None:
            # We are cancelling an order the broker says does not exist (a restarted paper broker, an
            # order lost before it reached the exchange): it will not fill. Fills it never had are not
            # invented; should it ever appear with fills, the reconciler raises an incident.
            self._apply(OrderCancelled(at=self.deps.clock.now(), order_id=order_id, leg=leg,
                                       reason="the broker does not know the order"))
        elif (order is None or not order.status.is_terminal) and order_id and self.deps.executor is not None:
            self.deps.executor.tell(CancelWorkingOrder(self.pos_id, order_id, leg))

    def _lookup(self, leg: Leg) -> tuple[BrokerOrder | None, bool]:
        """(the broker's order, whether the broker answered): (None, True) = it does not know the order."""
        broker = self.deps.broker
        order_id = _order_id_of(self.context, leg)
        try:
            if order_id:
                try:
                    return broker.get_order(order_id), True
                except OrderNotFound:
                    pass
            return broker.find_by_correlation_id(_correlation_of(self.context, leg)), True
        except OrderNotFound:
            return None, True
        except BrokerError as exc:
            self.log.event("TRADE_REFRESH_FAILED", f"{self.pos_id}: broker lookup failed ({exc}); "
                           "the timeout monitor will ask again", level=30, leg=leg.value,
                           order_id=order_id, code=exc.code)
            return None, False

    def _observe(self, order: BrokerOrder, source: str) -> None:
        try:
            events = observe(self.context, order, self.deps.clock.now())
        except IllegalTransition as exc:
            # Units the broker says we hold that the trade cannot take: never drop them silently.
            self.log.event("TRANSITION_REFUSED", f"{self.pos_id}: {exc}", level=40, source=source,
                           state=self.context.state.value, order_id=order.order_id,
                           correlation_id=order.correlation_id, filled_qty=order.filled_qty)
            self.deps.risk.set_reconciliation_hold(
                True, f"trade {self.pos_id}: broker order {order.order_id} reports fills the trade cannot take")
            return
        for event in events:
            self._apply(event)
        if events:
            self._record_order_status(order)

    def _record_order_status(self, order: BrokerOrder) -> None:
        """Keep the `orders` row as the broker last told us (the journal holds the history)."""
        context = self.context
        is_entry = order.correlation_id == context.entry_correlation_id or order.order_id == context.entry_order_id
        now = self.deps.clock.now()
        try:
            self.deps.storage.trades.record_order(OrderRecord(
                correlation_id=order.correlation_id or _correlation_of(context, Leg.ENTRY if is_entry else Leg.EXIT),
                pos_id=self.pos_id, leg=(Leg.ENTRY if is_entry else Leg.EXIT).value,
                broker_order_id=order.order_id or None, status=order.status.value, qty=order.qty,
                filled_qty=order.filled_qty, avg_price=order.avg_price or None,
                expected_price=context.expected_entry_price if is_entry else context.expected_exit_price,
                created_at=now, updated_at=now))
        except StorageError as exc:  # the journal already has the fill; the row catches up on the next update
            self.log.event("ORDER_ROW_STALE", f"{self.pos_id}: orders row not updated: {exc}", level=30,
                           order_id=order.order_id)

    def _on_placement(self, result: PlacementResult) -> None:
        context = self.context
        request = result.request
        if result.outcome == Outcome.PLACED and result.order is not None:
            self._observe(result.order, "placement")
            return
        pending = request_for(context)
        current = pending is not None and pending.correlation_id == request.correlation_id
        if result.outcome == Outcome.REFUSED and current:
            self._apply(OrderRejected(at=self.deps.clock.now(), leg=request.leg, reason=result.reason))
        elif result.outcome == Outcome.UNKNOWN:
            self.log.event("ORDER_OUTCOME_UNKNOWN", f"{self.pos_id}: {result.reason}; resolved later by "
                           "correlationId", level=30, correlation_id=request.correlation_id, leg=request.leg.value)

    def _on_request_exit(self, message: RequestExit) -> None:
        context = self.context
        if context.state in (S.SIGNAL_GENERATED, S.ENTRY_PENDING):
            # The entry order is not at the broker yet: nothing to cancel or sell. Keep the wish (in
            # memory: if the actor dies first, recovery settles the entry and the signal comes again).
            self.deferred_exit = message
            self.log.event("EXIT_SIGNAL_DEFERRED", f"{self.pos_id}: exit ({message.reason}) waits for the entry "
                           "order to be placed", state=context.state.value, source=message.source)
            return
        if not can_apply(context, ExitRequested):
            self.log.event("EXIT_SIGNAL_IGNORED", f"{self.pos_id}: exit ({message.reason}) does not apply in "
                           f"{context.state}", level=10, state=context.state.value, source=message.source)
            return
        if message.source in ("square_off", "flatten") and context.exit_attempt + 1 >= MAX_EXIT_ATTEMPTS:
            return  # the operator was alerted when the exits ran out; a sweep must not hammer the broker
        now = self.deps.clock.now()
        quote = self.deps.quotes(context.symbol)
        expected = quote if quote and quote > 0 else (context.avg_entry_price or context.expected_entry_price)
        if not quote:
            self.log.event("QUOTE_MISSING", f"{context.symbol}: no quote; exit priced from {expected}", level=30,
                           symbol=context.symbol)
        limit = marketable_limit(expected, context.exit_side, self.deps.protection_band_pct)
        self._apply(ExitRequested(at=now, reason=message.reason, limit_price=limit, expected_price=expected))

    # -- the one way a state changes ---------------------------------------------------------------------

    def _apply(self, event: Event) -> bool:
        before = self.context
        try:
            after, commands = apply(before, event)
        except IllegalTransition as exc:
            self.log.event("TRANSITION_REFUSED", f"{self.pos_id}: {exc}", level=30, state=before.state.value,
                           event_type=event.name)
            return False
        storage = self.deps.storage
        # The journal first: a failure here raises (a crash) before anything happens outside.
        record = storage.trades.append_event(self.pos_id, event.name, before.state.value, after.state.value,
                                             event.to_payload(), event.at)
        self.context = after
        try:
            storage.trades.upsert_trade(trade_record(after))
        except StorageError as exc:  # the row is a projection of the journal; the next transition rewrites it
            self.log.event("TRADE_ROW_STALE", f"{self.pos_id}: trades row not updated ({exc})", level=30)
        self._publish()
        self._log_event(event, before, after, record.seq)
        for command in commands:
            self._carry_out(command)
        if after.state in _ABANDONED and not before.is_terminal:
            self.deps.risk.entry_abandoned()
        return True

    def _carry_out(self, command: Command) -> None:
        deps = self.deps
        if isinstance(command, PlaceOrder):
            deps.router.register(self.pos_id, [command.request.correlation_id])
            if deps.executor is not None:
                deps.executor.tell(SubmitOrder(command.request))
        elif isinstance(command, CancelOrder):
            if deps.executor is not None:
                deps.executor.tell(CancelWorkingOrder(command.pos_id, command.order_id, command.leg))
        elif isinstance(command, RaiseExitSignal):
            self.actor_ref.tell(RequestExit(command.reason, source="trade"))
        elif isinstance(command, AlertOperator):
            self.log.event("OPERATOR_ALERT", command.message, level=50, pos_id=command.pos_id)
        elif isinstance(command, RecordClosedTrade):
            self.log.event("TRADE_CLOSED", f"{self.pos_id}: {command.qty} {command.symbol} "
                           f"{command.avg_entry_price:.2f} -> {command.avg_exit_price:.2f}, "
                           f"P&L {command.realized_pnl:+.2f} ({command.exit_reason})",
                           symbol=command.symbol, qty=command.qty, realized_pnl=round(command.realized_pnl, 2),
                           exit_reason=command.exit_reason)
            deps.risk.trade_closed(command.realized_pnl, self.pos_id)

    def _after_step(self) -> None:
        """Checks after every message: the slippage guard, a sweep in force, a terminal state."""
        if self.finished:
            return
        now = self.deps.clock.now()
        slipped = slippage_guard(self.context, self.deps.execution.max_slippage_pct, now)
        if slipped is not None:
            self._apply(slipped)
        context = self.context
        if self.deferred_exit is not None and context.state not in (S.SIGNAL_GENERATED, S.ENTRY_PENDING):
            deferred, self.deferred_exit = self.deferred_exit, None
            if can_apply(context, ExitRequested):
                self._on_request_exit(deferred)
        context = self.context
        if context.state in _EXITABLE and not context.exit_reason:
            reason = self.deps.risk.exit_all_reason(now)
            if reason:
                self._on_request_exit(RequestExit(reason, source="flatten" if reason.startswith("FLATTEN")
                                                  else "square_off"))
        if self.context.is_terminal:
            self._finish()

    def _finish(self) -> None:
        self.finished = True
        deps = self.deps
        deps.book.remove(self.pos_id)
        deps.router.forget(self.pos_id)
        if deps.monitor is not None:
            deps.monitor.tell(WatchTrade(self.pos_id, self.context.state.value, self.context.updated_at, done=True))
        self.stop()

    def _publish(self) -> None:
        context = self.context
        deps = self.deps
        deps.book.update(context, recovered=not self.recovering)
        deps.router.register(self.pos_id, [context.entry_correlation_id, context.exit_correlation_id,
                                           context.entry_order_id, context.exit_order_id])
        if deps.monitor is not None and not context.is_terminal:
            if context.state in ACTIVE_ORDER_STATES:
                leg_entry = context.state in (S.ORDER_PLACED, S.ENTRY_PARTIALLY_FILLED)
                since = context.entry_placed_at if leg_entry else context.exit_placed_at
            else:
                since = context.updated_at
            deps.monitor.tell(WatchTrade(self.pos_id, context.state.value, since,
                                         done=context.state is S.POSITION_OPEN))

    def _log_event(self, event: Event, before: TradeContext, after: TradeContext, seq: int) -> None:
        payload = {k: v for k, v in event.to_payload().items() if k not in ("at", "pos_id")}
        leg = payload.get("leg")
        if leg:
            default = _correlation_of(after, Leg(leg))
        else:
            default = after.exit_correlation_id if isinstance(event, ExitRequested) and after.exit_correlation_id \
                else after.entry_correlation_id
        correlation = payload.pop("correlation_id", "") or default
        level = 30 if event.log_name in ("ORDER_TIMEOUT", "ORDER_SLIPPAGE", "ORDER_REJECTED", "ENTRY_DENIED") else 20
        self.log.event(event.log_name, f"{self.pos_id}: {before.state} -> {after.state} ({event.name})",
                       level=level, correlation_id=correlation, db_id=seq, seq=seq,
                       from_state=before.state.value, to_state=after.state.value, event_type=event.name,
                       **payload)
