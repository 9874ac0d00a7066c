"""TradeActor: one per pos_id, from the accepted signal to the end: the only owner of its TradeContext.

It changes state only through `core.trade.apply`. For every step (one or more events): append the events
to the `trade_events` journal, and upsert the `trades` row, in ONE transaction and FIRST; then publish the
context (TradeBook, OrderRouter, timeout monitor), log each event in the seed's words, and only then carry
out the commands (a PlaceOrder becomes `Place` told to the executor, a CancelOrder a `Cancel`, a
RaiseExitSignal a RequestExit to itself, a RecordClosedTrade the risk guard's count). A journal write that
fails crashes the actor before any side effect; its restart recovers from the journal and the broker.

Life of a trade:
- created for an `OpenTrade` (the strategy's signal or an operator's entry): an empty journal; the risk
  guard decides; SignalAccepted + EntryRequested (or EntryDenied) are journaled together, the caller is
  answered, and the entry is placed through the executor;
- re-created after a crash, an operator restart or a process restart (adoption): the journal is replayed,
  then the trade reconciles with the broker through the executor (a pending submit is resolved by
  correlationId, a working order looked up) before it acts on anything else;
- ends: a terminal state stops the actor (a normal exit: transient, not restarted).
The actor never talks to the broker itself: the executor places, cancels and looks up for it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from actors.brokers.base import Broker
from actors.clock import Clock
from actors.trading.book import OrderRouter, TradeBook, trade_record
from actors.trading.messages import (
    Cancel,
    CheckTimeout,
    EntryCounters,
    EntryDecision,
    EntryRefusal,
    GetTrade,
    LookedUp,
    Lookup,
    Observe,
    OpenTrade,
    Outcome,
    Place,
    PlacementResult,
    PlaceMode,
    RefreshFromBroker,
    RequestExit,
    WatchTrade,
)
from actors.trading.quotes import QuoteSource
from actors.trading.risk_guard import RiskGuard
from config.settings import ExecutionSettings
from core.orders import BrokerOrder, Leg, OrderRequest, marketable_limit
from core.risk import Allowed, Denied
from core.trade import (
    ABANDONED,
    ACTIVE_ORDER_STATES,
    CANCEL_PENDING,
    ENTRY_WORKING,
    EXIT_WORKING,
    EXITABLE,
    MAX_EXIT_ATTEMPTS,
    AlertOperator,
    CancelOrder,
    Command,
    EntryDenied,
    EntryRequested,
    Event,
    EventDecodeError,
    ExitRequested,
    IllegalTransition,
    OrderCancelled,
    OrderRejected,
    PlaceOrder,
    RaiseExitSignal,
    RecordClosedTrade,
    SignalAccepted,
    TradeContext,
    TradeState,
    apply,
    can_apply,
    correlation_of,
    event_from_payload,
    observe,
    order_id_of,
    rebuild,
    request_for,
    slippage_guard,
    timeout_due,
)
from storage.errors import StorageConflict, StorageError
from storage.records import JournalEntry, OrderRecord
from storage.repositories import Storage
from supervision.actor import SupervisedActor, tell_quietly
from supervision.scheduler import Scheduler
from supervision.store import Store
from supervision.supervisor import ChildHandle, ChildLink

__all__ = ["NewTrade", "TradeActor", "TradeDeps", "TradeOrigin"]

S = TradeState


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


@dataclass(frozen=True)
class _RetryPlacement:
    """Timer: ask the executor again for a placement it could not send (429, local rate limit)."""

    request: OrderRequest
    attempt: int


class TradeActor(SupervisedActor):
    def __init__(self, link: ChildLink | None, pos_id: str, deps: TradeDeps, origin: TradeOrigin) -> None:
        super().__init__(link)
        self.pos_id = pos_id
        self.deps = deps
        self.origin = origin
        self.context = TradeContext()
        self.finished = False
        self.recovering = True  # the book says "recovered" only once started() is through
        self.deferred_exit: RequestExit | None = None  # asked before the entry was placed: applied after
        self.placement_attempts: dict[str, int] = {}  # correlation id -> sends asked (this life)
        self.log = self.log.bind(pos_id=pos_id)

    # -- lifecycle ----------------------------------------------------------------------------------------

    def started(self) -> None:
        if self.origin.opening and not self.origin.journaled:
            # Created for an OpenTrade: nothing to read. Its first append expects an empty journal, so a
            # pos_id journaled before (here or in another process) is found then, as a duplicate.
            self.recovering = False
            return
        records = self.deps.storage.trades.events(self.pos_id)
        if not records:
            self.recovering = False
            return
        try:
            self.context = rebuild(event_from_payload(r.event, r.payload) for r in records)
        except (EventDecodeError, IllegalTransition) as exc:
            # A journal we cannot replay is an operator's problem: hold entries, keep the trade out of play.
            self.log.event("TRADE_JOURNAL_UNREADABLE", f"{self.pos_id}: {exc}", level=50)
            self.deps.risk.set_reconciliation_hold(True, f"trade {self.pos_id}: journal unreadable ({exc})")
            self._finish()
            return
        if self.context.is_terminal:
            self._heal_row()
            self._finish()
            return
        self.log.event("TRADE_RECOVERING", f"{self.pos_id}: rebuilt {self.context.state} from {len(records)} "
                       "events; reconciling with the broker", state=self.context.state.value, events=len(records))
        self._publish()
        self._recover()
        for order in self.deps.router.take_pending(self.pos_id):  # updates that came while it was down
            self._observe(order, "stream")
        self.recovering = False
        self._after_step()
        if not self.finished:
            self._publish()

    def release(self) -> None:
        if self.finished:
            self.deps.router.forget(self.pos_id)

    def receive(self, message: Any) -> Any:
        if isinstance(message, GetTrade):
            return self.context
        if isinstance(message, OpenTrade):
            self._open(message)
        elif self.finished or self.context.state is S.NEW:
            return None  # nothing to act on (ended, or never opened)
        elif isinstance(message, Observe):
            self._observe(message.order, message.source)
        elif isinstance(message, PlacementResult):
            self._on_placement(message)
        elif isinstance(message, LookedUp):
            self._on_looked_up(message)
        elif isinstance(message, RequestExit):
            self._on_request_exit(message)
        elif isinstance(message, CheckTimeout):
            event = timeout_due(self.context, self.deps.clock.now(), self.deps.execution.order_timeout_seconds)
            if event is not None:
                self._apply(event)
        elif isinstance(message, RefreshFromBroker):
            self._recover()
        elif isinstance(message, _RetryPlacement):
            self._retry_placement(message)
        else:
            return super().receive(message)
        self._after_step()
        return None

    # -- the entry ------------------------------------------------------------------------------------------

    def _open(self, message: OpenTrade) -> None:
        order, deps = message.order, self.deps
        deps.entries.bump("entries")
        if self.context.state is not S.NEW:
            self._answer(message, EntryRefusal.DUPLICATE, "duplicate pos_id: pos_id is already known")
            return
        if not deps.ready.is_set():
            self._answer(message, EntryRefusal.NOT_READY,
                         "entries are refused until the start-up reconciliation has passed")
            self._finish()
            return
        now = deps.clock.now()
        decision = deps.risk.try_enter(now)
        quote = deps.quotes(order.symbol)
        expected = order.price if order.price > 0 else (quote or 0.0)
        if isinstance(decision, Allowed) and expected <= 0:
            deps.risk.entry_abandoned()
            decision = Denied("NO_PRICE", f"no price given and no quote for {order.symbol}")
        limit = marketable_limit(quote or expected, order.side, deps.protection_band_pct)
        events: list[Event] = [SignalAccepted(
            at=now, pos_id=order.pos_id, symbol=order.symbol, instrument=order.instrument, side=order.side,
            qty=order.qty, expected_price=expected, reason=f"{order.source}: {order.reason}")]
        if isinstance(decision, Allowed):
            events.append(EntryRequested(at=now, limit_price=limit, expected_price=expected))
        else:
            events.append(EntryDenied(at=now, reason=f"{decision.code}: {decision.reason}"))
        try:
            self._apply_all(events, fresh=True, source=order.source)
        except StorageError as exc:
            if decision.allowed:
                deps.risk.entry_abandoned()
            if isinstance(exc, StorageConflict):  # another process journaled this pos_id first
                self._answer(message, EntryRefusal.DUPLICATE, f"duplicate pos_id: {exc}")
            else:
                self._answer(message, EntryRefusal.STORAGE, f"storage unavailable: {exc}")
            self._finish()
            return
        deps.entries.bump("accepted" if decision.allowed else "denied")
        if message.reply is not None and not message.reply.done():
            code = "" if isinstance(decision, Allowed) else decision.code
            reason = "" if isinstance(decision, Allowed) else decision.reason
            message.reply.set_result(EntryDecision(order.pos_id, decision.allowed, code, reason))

    def _answer(self, message: OpenTrade, code: EntryRefusal, reason: str) -> None:
        self.deps.entries.bump("duplicates" if code is EntryRefusal.DUPLICATE else "denied")
        self.log.event("ENTRY_DUPLICATE" if code is EntryRefusal.DUPLICATE else "ENTRY_DENIED",
                       f"{self.pos_id}: {reason}; nothing sent", level=30, code=code.value,
                       source=message.order.source)
        if message.reply is not None and not message.reply.done():
            message.reply.set_result(EntryDecision(self.pos_id, False, code.value, reason))

    # -- broker news ------------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Bring the context in line with the broker (start-up, crash, or a state taking too long)."""
        context = self.context
        if context.state is S.SIGNAL_GENERATED:
            self._apply(EntryDenied(at=self.deps.clock.now(),
                                    reason="recovered without a risk decision: the entry was never sent"))
            return
        request = request_for(context)
        if request is not None:
            # The executor resolves it under the placement lock: found by correlationId -> placed; not at the
            # broker -> refused; never a blind resend. An exit this process knows it did not send is sent
            # again (a position must be closed); an entry is not sent late.
            self.deps.executor.tell(Place(request, PlaceMode.RESEND if request.leg is Leg.EXIT else PlaceMode.RESOLVE))
            return
        leg = Leg.ENTRY if context.state in ENTRY_WORKING else Leg.EXIT if context.state in EXIT_WORKING else None
        if leg is not None:
            self.deps.executor.tell(Lookup(self.pos_id, leg, order_id_of(context, leg), correlation_of(context, leg)))

    def _on_looked_up(self, answer: LookedUp) -> None:
        if answer.order is not None:
            self._observe(answer.order, "refresh")
        if self.context.state not in CANCEL_PENDING:
            return
        order_id = order_id_of(self.context, answer.leg)
        if answer.answered and answer.order is None:
            # We are cancelling an order the broker says does not exist (a restarted paper broker, an order
            # lost before it reached the exchange): it will not fill. Fills it never had are not invented;
            # should it ever appear with fills, the reconciler raises an incident.
            self._apply(OrderCancelled(at=self.deps.clock.now(), order_id=order_id, leg=answer.leg,
                                       reason="the broker does not know the order"))
        elif (answer.order is None or not answer.order.status.is_terminal) and order_id:
            self.deps.executor.tell(Cancel(self.pos_id, order_id, answer.leg))

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
        if events:
            self._apply_all(events, order_row=order)

    def _on_placement(self, result: PlacementResult) -> None:
        request = result.request
        if result.outcome is Outcome.PLACED and result.order is not None:
            self._observe(result.order, "placement")
            return
        pending = request_for(self.context)
        current = pending is not None and pending.correlation_id == request.correlation_id
        if not current:
            return  # an answer for a placement the trade has moved past
        if result.outcome is Outcome.REFUSED:
            self._apply(OrderRejected(at=self.deps.clock.now(), leg=request.leg, reason=result.reason))
        elif result.outcome is Outcome.NOT_SENT:
            self._schedule_retry(request, result)
        else:
            self.log.event("ORDER_OUTCOME_UNKNOWN", f"{self.pos_id}: {result.reason}; resolved later by "
                           "correlationId", level=30, correlation_id=request.correlation_id, leg=request.leg.value)

    def _schedule_retry(self, request: OrderRequest, result: PlacementResult) -> None:
        execution = self.deps.execution
        attempt = self.placement_attempts.get(request.correlation_id, 1)
        if attempt >= execution.submit_attempts:
            self.log.event("ORDER_SUBMIT_FAILED", f"{self.pos_id}: {result.reason}; gave up after {attempt} "
                           "attempts", level=40, correlation_id=request.correlation_id, attempt=attempt)
            if request.leg is Leg.ENTRY:
                self._apply(OrderRejected(at=self.deps.clock.now(), leg=Leg.ENTRY,
                                          reason=f"not placed after {attempt} attempts: {result.reason}"))
            return  # an exit must still happen: the timeout monitor asks again (RefreshFromBroker)
        delay = max(result.retry_after, execution.submit_retry_seconds * 2 ** (attempt - 1))
        self.log.event("ORDER_SUBMIT_DEFERRED", f"{self.pos_id}: {result.reason}; retry {attempt + 1} in "
                       f"{delay:.2f} s", level=30, correlation_id=request.correlation_id, attempt=attempt)
        ref = self.actor_ref
        self.deps.scheduler.call_later(delay, lambda: tell_quietly(ref, _RetryPlacement(request, attempt + 1)))

    def _retry_placement(self, message: _RetryPlacement) -> None:
        request = request_for(self.context)
        if request is None or request.correlation_id != message.request.correlation_id:
            return  # settled meanwhile
        if request.leg is Leg.ENTRY:
            refusal = self.deps.risk.recheck_entry(self.deps.clock.now())
            if refusal is not None:  # the world changed while the entry waited: it is not sent late
                self._apply(OrderRejected(at=self.deps.clock.now(), leg=Leg.ENTRY,
                                          reason=f"resend refused: {refusal.code}: {refusal.reason}"))
                return
        self.placement_attempts[request.correlation_id] = message.attempt
        self.deps.executor.tell(Place(request, PlaceMode.RESEND))

    def _on_request_exit(self, message: RequestExit) -> None:
        context = self.context
        if context.state in (S.SIGNAL_GENERATED, S.ENTRY_PENDING):
            # The entry order is not at the broker yet: nothing to cancel or sell. Keep the wish (in memory:
            # if the actor dies first, recovery settles the entry and the signal comes again).
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
        quote = self.deps.quotes(context.symbol)
        expected = quote if quote and quote > 0 else (context.avg_entry_price or context.expected_entry_price)
        if not quote:
            self.log.event("QUOTE_MISSING", f"{context.symbol}: no quote; exit priced from {expected}", level=30,
                           symbol=context.symbol)
        limit = marketable_limit(expected, context.exit_side, self.deps.protection_band_pct)
        self._apply(ExitRequested(at=self.deps.clock.now(), reason=message.reason, limit_price=limit,
                                  expected_price=expected))

    # -- the one way a state changes ---------------------------------------------------------------------

    def _apply(self, event: Event) -> bool:
        return self._apply_all([event])

    def _apply_all(self, events: list[Event], *, fresh: bool = False, order_row: BrokerOrder | None = None,
                   source: str = "") -> bool:
        """Apply events in order, journal them with the trades row (and the orders row) in one transaction,
        then publish, log and carry out their commands. An illegal event is refused and logged; the events
        before it are still applied. `fresh`: the journal must be empty (a new trade; raises StorageConflict
        when another process journaled the pos_id first: JournalConflict)."""
        before = self.context
        steps: list[tuple[Event, TradeContext, TradeContext, list[Command]]] = []
        context = before
        for event in events:
            try:
                after, commands = apply(context, event)
            except IllegalTransition as exc:
                self.log.event("TRANSITION_REFUSED", f"{self.pos_id}: {exc}", level=30, state=context.state.value,
                               event_type=event.name)
                break
            steps.append((event, context, after, commands))
            context = after
        if not steps:
            return False
        trades = self.deps.storage.trades
        # The journal first, in one transaction: a failure raises (a crash) before anything happens outside.
        # The append expects the journal to hold exactly what this actor has applied: a second writer (another
        # process opening the same pos_id, or running the same trade) gets JournalConflict, never a fork.
        # Durable (the commit waits for the disk) when something is sent to the broker after it; a step
        # that only records what the broker already did is observed again by recovery if a database
        # crash loses it.
        durable = fresh or any(isinstance(command, PlaceOrder | CancelOrder) for *_, commands in steps
                               for command in commands)
        records = trades.record_step(
            self.pos_id, before.seq,
            [JournalEntry(event.name, b.state.value, a.state.value, event.to_payload(), event.at)
             for event, b, a, _ in steps],
            trade_record(context), self._order_record(order_row, context) if order_row is not None else None,
            durable=durable)
        if fresh:
            self.origin.journaled = True  # from here on, a restart recovers this trade as its owner
        self.context = context
        self._publish()
        for (event, b, a, _), record in zip(steps, records, strict=True):
            self._log_event(event, b, a, record.seq, source)
        for _, _, _, commands in steps:
            for command in commands:
                self._carry_out(command)
        if context.state in ABANDONED and not before.is_terminal:
            self.deps.risk.entry_abandoned()
        return True

    def _order_record(self, order: BrokerOrder, context: TradeContext) -> OrderRecord:
        """The `orders` row as the broker last told us (the journal holds the history)."""
        is_entry = order.correlation_id == context.entry_correlation_id or order.order_id == context.entry_order_id
        leg = Leg.ENTRY if is_entry else Leg.EXIT
        now = self.deps.clock.now()
        return OrderRecord(
            correlation_id=order.correlation_id or correlation_of(context, leg), pos_id=self.pos_id,
            leg=leg.value, broker_order_id=order.order_id or None, status=order.status.value, qty=order.qty,
            filled_qty=order.filled_qty, avg_price=order.avg_price or None,
            expected_price=context.expected_entry_price if is_entry else context.expected_exit_price,
            created_at=now, updated_at=now)

    def _carry_out(self, command: Command) -> None:
        deps = self.deps
        if isinstance(command, PlaceOrder):
            deps.router.register(self.pos_id, [command.request.correlation_id])
            self.placement_attempts[command.request.correlation_id] = 1
            deps.executor.tell(Place(command.request, PlaceMode.FIRST))
        elif isinstance(command, CancelOrder):
            deps.executor.tell(Cancel(command.pos_id, command.order_id, command.leg))
        elif isinstance(command, RaiseExitSignal):
            self.actor_ref.tell(RequestExit(command.reason, source="trade"))
        elif isinstance(command, AlertOperator):
            self.log.event("OPERATOR_ALERT", command.message, level=50)
        elif isinstance(command, RecordClosedTrade):
            self.log.event("TRADE_CLOSED", f"{self.pos_id}: {command.qty} {command.symbol} "
                           f"{command.avg_entry_price:.2f} -> {command.avg_exit_price:.2f}, "
                           f"P&L {command.realized_pnl:+.2f} ({command.exit_reason})",
                           symbol=command.symbol, qty=command.qty, realized_pnl=round(command.realized_pnl, 2),
                           exit_reason=command.exit_reason)
            deps.risk.trade_closed(command.realized_pnl, self.pos_id)

    def _after_step(self) -> None:
        """Checks after every message: the slippage guard, a deferred exit, a sweep in force, the end."""
        if self.finished:
            return
        now = self.deps.clock.now()
        slipped = slippage_guard(self.context, self.deps.execution.max_slippage_pct, now)
        if slipped is not None:
            self._apply(slipped)
        if self.deferred_exit is not None and self.context.state not in (S.SIGNAL_GENERATED, S.ENTRY_PENDING):
            deferred, self.deferred_exit = self.deferred_exit, None
            if can_apply(self.context, ExitRequested):
                self._on_request_exit(deferred)
        if self.context.state in EXITABLE and not self.context.exit_reason:
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
        deps.monitor.tell(WatchTrade(self.pos_id, self.context.state.value, self.context.updated_at, done=True))
        self.stop()

    def _heal_row(self) -> None:
        """Ended before its row caught up (a crash between journal and row): rewrite the projection."""
        try:
            self.deps.storage.trades.upsert_trade(trade_record(self.context))
        except StorageError as exc:
            self.log.event("TRADE_ROW_STALE", f"{self.pos_id}: trades row not updated ({exc})", level=30)

    def _publish(self) -> None:
        context, deps = self.context, self.deps
        deps.book.update(context, recovered=not self.recovering)
        deps.router.register(self.pos_id, [context.entry_correlation_id, context.exit_correlation_id,
                                           context.entry_order_id, context.exit_order_id])
        if context.is_terminal:
            return
        if context.state in ACTIVE_ORDER_STATES:
            leg_entry = context.state in (S.ORDER_PLACED, S.ENTRY_PARTIALLY_FILLED)
            since = context.entry_placed_at if leg_entry else context.exit_placed_at
        else:
            since = context.updated_at
        deps.monitor.tell(WatchTrade(self.pos_id, context.state.value, since, done=context.state is S.POSITION_OPEN))

    def _log_event(self, event: Event, before: TradeContext, after: TradeContext, seq: int, source: str) -> None:
        payload = {k: v for k, v in event.to_payload().items() if k not in ("at", "pos_id")}
        leg = payload.get("leg")
        if leg:
            default = correlation_of(after, Leg(leg))
        else:
            default = after.exit_correlation_id if isinstance(event, ExitRequested) and after.exit_correlation_id \
                else after.entry_correlation_id
        correlation = payload.pop("correlation_id", "") or default
        if source:
            payload.setdefault("source", source)
        level = 30 if event.log_name in ("ORDER_TIMEOUT", "ORDER_SLIPPAGE", "ORDER_REJECTED", "ENTRY_DENIED") else 20
        self.log.event(event.log_name, f"{self.pos_id}: {before.state} -> {after.state} ({event.name})",
                       level=level, correlation_id=correlation, db_id=seq, seq=seq,
                       from_state=before.state.value, to_state=after.state.value, event_type=event.name,
                       **payload)
