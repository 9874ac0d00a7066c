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

import time
from dataclasses import dataclass
from typing import Any

from actors.trading.journal import Step, TradeJournal
from actors.trading.messages import (
    AdoptPosition,
    Cancel,
    CancelEntry,
    CheckTimeout,
    EntryDecision,
    EntryRefusal,
    GetTrade,
    LeaseLost,
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
from actors.trading.quotes import exit_pricing
from actors.trading.trade_deps import TradeDeps, TradeOrigin
from core.orders import BrokerOrder, Leg, OrderRequest
from core.risk import Denied, EntryIntent
from core.trade import (
    ACTIVE_ORDER_STATES,
    CANCEL_PENDING,
    ENTRY_WORKING,
    EXIT_WORKING,
    EXITABLE,
    AlertOperator,
    CancelOrder,
    Command,
    EntryCancelRequested,
    EntryDenied,
    EntryRequested,
    Event,
    EventDecodeError,
    ExitRequested,
    IllegalTransition,
    OrderCancelled,
    OrderRejected,
    PlaceOrder,
    PositionAdopted,
    RaiseExitSignal,
    RecordClosedTrade,
    TradeContext,
    TradeState,
    apply,
    can_apply,
    correlation_of,
    entry_repricing,
    event_from_payload,
    observe,
    opening_events,
    order_id_of,
    rebuild,
    request_for,
    slippage_guard,
    timeout_due,
)
from storage.errors import StorageConflict, StorageError, StorageUnavailable
from storage.records import TradeEventRecord
from supervision.actor import SupervisedActor
from supervision.supervisor import ChildLink
from telemetry import metrics
from telemetry.logs import incident_id

__all__ = ["TradeActor"]

S = TradeState


@dataclass(frozen=True)
class _ReadJournal:
    """Timer: try again to read the journal (the database was unreachable when the actor started)."""


@dataclass(frozen=True)
class _FlushJournal:
    """Timer: write the journal steps that waited for the database."""


@dataclass(frozen=True)
class _RetryPlacement:
    """Timer: ask the executor again for a placement it could not send (429, local rate limit), or to look
    up again an ambiguous submit that is settling (`settling`: nothing will be sent, no risk check needed)."""

    request: OrderRequest
    attempt: int
    settling: bool = False


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
        self.exit_retry_due: float | None = None  # when the retry of an unfilled exit is due (its own timer)
        self.flush_due = False  # a retry of the deferred journal steps is scheduled
        self.waiting_for_journal = False  # restarted while the database was unreachable
        self.kept: list[Any] = []  # messages that came while waiting for the journal
        self.flush_attempts = 0
        self.placement_attempts: dict[str, int] = {}  # correlation id -> sends asked (this life)
        self.signal_sent_at = 0.0  # perf_counter when the desk sent OpenTrade (0: recovered, or measured)
        self.log = self.log.bind(pos_id=pos_id)
        self.journal = TradeJournal(pos_id, deps.storage, deps.clock, self.log)

    # -- lifecycle ----------------------------------------------------------------------------------------

    def started(self) -> None:
        if self.origin.opening and not self.origin.journaled:
            # Created for an OpenTrade: nothing to read. Its first append expects an empty journal, so a
            # pos_id journaled before (here or in another process) is found then, as a duplicate.
            self.recovering = False
            return
        self._restore()

    def _restore(self) -> None:
        """Rebuild from the journal, then reconcile with the broker. With the database unreachable, wait for
        it (messages are kept meanwhile, in order): a restart during an outage must not crash-loop."""
        try:
            records = self.deps.storage.trades.events(self.pos_id)
        except StorageUnavailable as exc:
            if not self.waiting_for_journal:
                self.log.event("TRADE_RECOVERY_DEFERRED", f"{self.pos_id}: journal unreadable now ({exc}); "
                               "waiting for the database", level=30)
            self.waiting_for_journal = True
            self.flush_attempts += 1
            delay = min(5.0, 0.25 * 2 ** min(self.flush_attempts - 1, 5))
            self.deps.scheduler.call_later(delay, self.deps.router.deliver, self.pos_id, _ReadJournal())
            return
        self.waiting_for_journal, self.flush_attempts = False, 0
        if not records:
            self.recovering = False
        else:
            self._rebuild(records)
        kept, self.kept = self.kept, []
        for message in kept:
            self.receive(message)

    def _rebuild(self, records: list[TradeEventRecord]) -> None:
        try:
            self.context = rebuild(event_from_payload(r.event, r.payload) for r in records)
        except (EventDecodeError, IllegalTransition) as exc:
            # A journal we cannot replay is an operator's problem: hold entries, keep the trade out of play.
            self.log.event("TRADE_JOURNAL_UNREADABLE", f"{self.pos_id}: {exc}", level=50)
            self.deps.risk.set_reconciliation_hold(True, f"trade {self.pos_id}: journal unreadable ({exc})")
            self._finish()
            return
        if self.context.is_terminal:
            self.journal.heal(self.context)
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
        if isinstance(message, _ReadJournal):
            self._restore()
            return None
        if self.waiting_for_journal:
            self.kept.append(message)  # handled, in order, once the journal is read
            return None
        if isinstance(message, OpenTrade):
            self._open(message)
        elif isinstance(message, AdoptPosition):
            self._adopt(message)
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
        elif isinstance(message, CancelEntry):
            pass  # _after_step cancels a working entry while the kill switch is engaged
        elif isinstance(message, LeaseLost):
            self.log.event("LEASE_LOST", f"{self.pos_id}: managed by {message.owner or 'another process'} now; "
                           "this process lets it go", level=50, state=self.context.state.value, owner=message.owner)
            self._finish()
            return None
        elif isinstance(message, CheckTimeout):
            event = timeout_due(self.context, self.deps.clock.now(), self.deps.execution.order_timeout_seconds)
            if event is not None:
                self._apply(event)
        elif isinstance(message, RefreshFromBroker):
            self._recover()
        elif isinstance(message, _RetryPlacement):
            self._retry_placement(message)
        elif isinstance(message, _FlushJournal):
            self.flush_due = False
            if self.journal.record([], None, False):
                self.flush_attempts = 0
            else:
                self._flush_journal_later()
        else:
            return super().receive(message)
        self._after_step()
        return None

    # -- the entry ------------------------------------------------------------------------------------------

    def _open(self, message: OpenTrade) -> None:
        order, deps = message.order, self.deps
        deps.entries.bump("entries")
        self.signal_sent_at = message.sent_at
        if self.context.state is not S.NEW:
            self._answer(message, EntryRefusal.DUPLICATE, "duplicate pos_id: pos_id is already known")
            return
        if not deps.ready.is_set():
            self._answer(message, EntryRefusal.NOT_READY,
                         "entries are refused until the start-up reconciliation has passed")
            self._finish()
            return
        now = deps.clock.now()
        quote = deps.quotes(order.symbol)
        intent = EntryIntent(symbol=order.symbol, qty=order.qty, price=order.price, quote=quote,
                             band_pct=deps.protection_band_pct, manual=order.source == "operator")
        try:
            # Decided and journaled inside the database's entry gate, from what every process holds: two
            # entries (here or in another process) never both take the last slot. Sent after it commits.
            with deps.risk.entry(now, intent, deps.leases.claim_of(self.pos_id)) as decision:
                events = opening_events(
                    at=now, pos_id=order.pos_id, symbol=order.symbol, instrument=order.instrument, side=order.side,
                    qty=order.qty, price=order.price, quote=quote, allowed=decision.allowed,
                    denial=f"{decision.code}: {decision.reason}" if isinstance(decision, Denied) else "",
                    band_pct=deps.protection_band_pct, reason=f"{order.source}: {order.reason}",
                    tick=deps.tick_size(order.symbol))
                staged = self._stage(events)
                self._record(staged, fresh=True)  # with its lease (claimed by the gate): ours from here on
        except StorageError as exc:
            if isinstance(exc, StorageConflict):  # another process journaled this pos_id first
                self._answer(message, EntryRefusal.DUPLICATE, f"duplicate pos_id: {exc}")
            else:
                self._answer(message, EntryRefusal.STORAGE, f"storage unavailable: {exc}")
            self._finish()
            return
        self.origin.journaled = True  # from here on, a restart recovers this trade as its owner
        self._commit(staged, source=order.source)
        accepted = isinstance(events[-1], EntryRequested)
        deps.entries.bump("accepted" if accepted else "denied")
        if message.reply is not None and not message.reply.done():
            denied = events[-1]
            code, _, reason = denied.reason.partition(": ") if isinstance(denied, EntryDenied) else ("", "", "")
            message.reply.set_result(EntryDecision(order.pos_id, accepted, code, reason))

    def _adopt(self, message: AdoptPosition) -> None:
        if self.context.state is not S.NEW:
            return  # adopted (or opened) already
        event = PositionAdopted(at=self.deps.clock.now(), pos_id=self.pos_id, symbol=message.symbol,
                                instrument=message.symbol, side=message.side, qty=message.qty,
                                avg_price=message.avg_price, reason=message.reason)
        try:
            with self.deps.storage.transaction():  # the journal's first step and the lease, together
                staged = self._stage([event])
                self._record(staged, fresh=True)
                self.deps.leases.claim(self.pos_id)
            self.origin.journaled = True
            self._commit(staged, source="reconciler")
        except StorageError as exc:  # adopted already (another pass, another process), or no database now
            self.log.event("POSITION_ADOPTION_FAILED", f"{self.pos_id}: {exc}", level=30, symbol=message.symbol)
            self._finish()

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
        elif context.state is S.POSITION_OPEN and context.exit_reason and self.exit_retry_due is None:
            # An exit was wanted and no exit order is working (its retry timer died with an earlier life,
            # or the strategy's exit came while the entry settled): ask again, never forget it.
            self._raise_exit(RaiseExitSignal(self.pos_id, context.exit_reason, max(1, context.exit_attempt + 1),
                                             "recovered with an exit wanted and none working"))

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
            events = observe(self.context, order, self.deps.clock.now(), self.deps.charges)
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
            if request.leg is Leg.ENTRY and self.signal_sent_at:
                metrics.signal_to_order(time.perf_counter() - self.signal_sent_at)
                self.signal_sent_at = 0.0
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
        elif result.outcome is Outcome.SETTLING:
            # Look again soon (nothing is sent meanwhile): the executor answers PLACED once the broker knows
            # the order, or NOT_SENT once the settle window passed without it.
            self.log.event("ORDER_SUBMIT_SETTLING", f"{self.pos_id}: {result.reason}", level=30,
                           correlation_id=request.correlation_id, leg=request.leg.value)
            self.deps.scheduler.call_later(result.retry_after, self.deps.router.deliver, self.pos_id,
                                           _RetryPlacement(request, self.placement_attempts.get(
                                               request.correlation_id, 1), settling=True))
        else:
            self.log.event("ORDER_OUTCOME_UNKNOWN", f"{self.pos_id}: {result.reason}; resolved later by "
                           "correlationId", level=30, correlation_id=request.correlation_id, leg=request.leg.value)

    def _schedule_retry(self, request: OrderRequest, result: PlacementResult) -> None:
        execution = self.deps.execution
        attempt = self.placement_attempts.get(request.correlation_id, 1)
        if attempt >= execution.submit_attempts:
            self.log.event("ORDER_SUBMIT_FAILED", f"{self.pos_id}: {result.reason}; gave up after {attempt} "
                           "attempts", level=40, correlation_id=request.correlation_id, leg=request.leg.value, attempt=attempt)
            if request.leg is Leg.ENTRY:
                self._apply(OrderRejected(at=self.deps.clock.now(), leg=Leg.ENTRY,
                                          reason=f"not placed after {attempt} attempts: {result.reason}"))
            return  # an exit must still happen: the timeout monitor asks again (RefreshFromBroker)
        delay = max(result.retry_after, execution.submit_retry_seconds * 2 ** (attempt - 1))
        self.log.event("ORDER_SUBMIT_DEFERRED", f"{self.pos_id}: {result.reason}; retry {attempt + 1} in "
                       f"{delay:.2f} s", level=30, correlation_id=request.correlation_id, leg=request.leg.value,
                       attempt=attempt)
        self.deps.scheduler.call_later(delay, self.deps.router.deliver, self.pos_id,
                                       _RetryPlacement(request, attempt + 1))

    def _retry_placement(self, message: _RetryPlacement) -> None:
        request = request_for(self.context)
        if request is None or request.correlation_id != message.request.correlation_id:
            return  # settled meanwhile
        if request.leg is Leg.ENTRY and not message.settling:
            # The world changed while the entry waited: every rule again, from a fresh quote, or it is not sent.
            deps, context = self.deps, self.context
            now, quote = deps.clock.now(), deps.quotes(context.symbol)
            refusal = deps.risk.recheck_entry(now, EntryIntent(
                symbol=context.symbol, qty=context.qty, price=context.expected_entry_price, quote=quote,
                band_pct=deps.protection_band_pct))
            if refusal is not None:
                self._apply(OrderRejected(at=now, leg=Leg.ENTRY,
                                          reason=f"resend refused: {refusal.code}: {refusal.reason}"))
                return
            repriced = entry_repricing(context, quote, deps.protection_band_pct, deps.tick_size(context.symbol), now)
            if repriced is not None:
                self._apply(repriced)
                request = request_for(self.context) or request
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
        if self.exit_retry_due is not None and message.source in ("square_off", "flatten", "strategy"):
            return  # an exit is already being retried on its own schedule: a sweep must not hammer the broker
        # Each exit order that ended unfilled widens the band (the market moved away, or the quote lags);
        # exit_pricing widens it further when no fresh quote is to be had.
        execution = self.deps.execution
        band = min(self.deps.protection_band_pct + (context.exit_attempt + 1) * execution.exit_band_step_pct,
                   max(execution.exit_band_max_pct, self.deps.protection_band_pct))
        priced = exit_pricing(self.deps.quotes, context.symbol, context.exit_side, band_pct=band,
                              fallback=context.avg_entry_price or context.expected_entry_price,
                              tick=self.deps.tick_size(context.symbol))
        if priced.widened:
            self.log.event("QUOTE_MISSING" if priced.quote is None else "QUOTE_STALE",
                           f"{context.symbol}: no fresh quote; exit priced from {priced.expected} with a "
                           f"{priced.band_pct:g}% band", level=30, symbol=context.symbol,
                           quote_ts=priced.quote.ts if priced.quote else None)
        self.exit_retry_due = None
        self._apply(ExitRequested(at=self.deps.clock.now(), reason=message.reason, limit_price=priced.limit,
                                  expected_price=priced.expected))

    # -- the one way a state changes ---------------------------------------------------------------------

    def _apply(self, event: Event) -> bool:
        return self._apply_all([event])

    def _apply_all(self, events: list[Event], *, fresh: bool = False, order_row: BrokerOrder | None = None,
                   source: str = "") -> bool:
        """Apply events in order, journal them as one step (TradeJournal), then publish, log and carry out
        their commands. An illegal event is refused and logged; the events before it are still applied.
        `fresh`: a new trade, whose journal must be empty (JournalConflict otherwise)."""
        staged = self._stage(events)
        if not staged:
            return False
        self._record(staged, order_row, fresh)
        if fresh:
            self.origin.journaled = True  # from here on, a restart recovers this trade as its owner
        self._commit(staged, source)
        return True

    def _stage(self, events: list[Event]) -> list[Step]:
        """The steps `events` make from the current context (nothing changes yet)."""
        steps: list[Step] = []
        context = self.context
        for event in events:
            try:
                after, commands = apply(context, event)
            except IllegalTransition as exc:
                self.log.event("TRANSITION_REFUSED", f"{self.pos_id}: {exc}", level=30, state=context.state.value,
                               event_type=event.name)
                break
            steps.append(Step(event, context, after, commands))
            context = after
        return steps

    def _record(self, steps: list[Step], order_row: BrokerOrder | None = None, fresh: bool = False) -> None:
        """The journal first: a conflict raises (a crash) before anything happens outside; an unreachable
        database keeps the steps in memory (a new trade's first step excepted: it raises) and the trade goes on."""
        if self.journal.record(steps, order_row, fresh):
            self.flush_attempts = 0
        elif not self.flush_due:
            self._flush_journal_later()

    def _commit(self, steps: list[Step], source: str = "") -> None:
        """The recorded steps take effect: the context, the log lines, the book, then the commands. A close is
        counted by the risk guard before the book shows it: whoever waits for the close (a replay's gate, the
        strategy) then sees the halt it may cause."""
        self.context = steps[-1].after
        commands = [command for step in steps for command in step.commands]
        for step in steps:
            self.journal.log_step(step, step.after.seq, source)
        for command in commands:
            if isinstance(command, RecordClosedTrade):
                self._count_closed(command)
        self._publish()
        for command in commands:
            if not isinstance(command, RecordClosedTrade):
                self._carry_out(command)

    def _carry_out(self, command: Command) -> None:
        deps = self.deps
        if isinstance(command, PlaceOrder):
            deps.router.register(self.pos_id, [command.request.correlation_id])
            self.placement_attempts[command.request.correlation_id] = 1
            deps.executor.tell(Place(command.request, PlaceMode.FIRST))
        elif isinstance(command, CancelOrder):
            deps.executor.tell(Cancel(command.pos_id, command.order_id, command.leg))
        elif isinstance(command, RaiseExitSignal):
            self._raise_exit(command)
        elif isinstance(command, AlertOperator):
            self.log.event("OPERATOR_ALERT", command.message, level=50,
                           incident_id=incident_id("OPERATOR_ALERT", self.pos_id, deps.clock.now()))

    def _count_closed(self, command: RecordClosedTrade) -> None:
        self.log.event("TRADE_CLOSED", f"{self.pos_id}: {command.qty} {command.symbol} "
                       f"{command.avg_entry_price:.2f} -> {command.avg_exit_price:.2f}, "
                       f"P&L {command.realized_pnl:+.2f}, charges {command.fees:.2f}, net "
                       f"{command.net_pnl:+.2f} ({command.exit_reason})",
                       symbol=command.symbol, instrument=command.instrument, side=command.side.value,
                       qty=command.qty, avg_entry_price=command.avg_entry_price,
                       avg_exit_price=command.avg_exit_price, opened_at=command.opened_at,
                       closed_at=command.closed_at, realized_pnl=round(command.realized_pnl, 2),
                       fees=round(command.fees, 2), net_pnl=round(command.net_pnl, 2),
                       exit_reason=command.exit_reason)
        self.deps.risk.trade_closed(command.net_pnl, self.pos_id)

    def _flush_journal_later(self) -> None:
        self.flush_due = True
        self.flush_attempts += 1
        delay = min(5.0, 0.25 * 2 ** min(self.flush_attempts - 1, 5))
        self.deps.scheduler.call_later(delay, self.deps.router.deliver, self.pos_id, _FlushJournal())

    def _raise_exit(self, command: RaiseExitSignal) -> None:
        """Exit again: at once the first time, after a growing pause when an exit order ended unfilled."""
        if not command.failed_attempts:
            self.actor_ref.tell(RequestExit(command.reason, source="trade"))
            return
        execution = self.deps.execution
        delay = min(execution.exit_retry_max_seconds,
                    execution.exit_retry_initial_seconds * 2 ** (command.failed_attempts - 1))
        self.exit_retry_due = self.deps.clock.now() + delay
        self.log.event("EXIT_RETRY_SCHEDULED", f"{self.pos_id}: {command.detail}; exit order "
                       f"{command.failed_attempts + 1} in {delay:.2f} s", level=30, attempt=command.failed_attempts + 1,
                       delay_seconds=round(delay, 3), reason=command.reason)
        # Through the router (the trade's stable handle): a restart of this actor meanwhile does not lose it.
        self.deps.scheduler.call_later(delay, self.deps.router.deliver, self.pos_id,
                                       RequestExit(command.reason, source="retry"))

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
        if self.context.state in (S.ORDER_PLACED, S.ENTRY_PARTIALLY_FILLED):
            risk = self.deps.risk.snapshot()
            if risk.kill_switch_engaged:  # no new exposure: the entry order stops; its fills stay a position
                self._apply(EntryCancelRequested(at=now, reason=f"KILL_SWITCH: {risk.kill_switch_reason}"))
        if self.context.state in EXITABLE and not self.context.exit_reason:
            reason = self.deps.risk.exit_all_reason(now)
            if reason:
                self._on_request_exit(RequestExit(reason, source="flatten" if reason.startswith("FLATTEN")
                                                  else "square_off"))
        if self.context.is_terminal and not self.journal.tail:  # ends once everything is written down
            self._finish()

    def _finish(self) -> None:
        self.finished = True
        deps = self.deps
        if self.context.is_terminal and self.origin.journaled:
            deps.leases.release(self.pos_id)
        deps.book.remove(self.pos_id)
        deps.router.forget(self.pos_id)
        if deps.contracts is not None and self.context.symbol:
            deps.contracts.unwatch(self.context.symbol, self.pos_id)  # off the live feed once nothing is held
        deps.monitor.tell(WatchTrade(self.pos_id, self.context.state.value, self.context.updated_at, done=True))
        self.stop()

    def _publish(self) -> None:
        context, deps = self.context, self.deps
        deps.book.update(context, recovered=not self.recovering)
        deps.router.register(self.pos_id, [context.entry_correlation_id, context.exit_correlation_id,
                                           context.entry_order_id, context.exit_order_id])
        if context.is_terminal:
            return
        if deps.contracts is not None:
            deps.contracts.watch(context.symbol, self.pos_id)  # its ticks price the exits, marks and fills
        if context.state in ACTIVE_ORDER_STATES:
            leg_entry = context.state in (S.ORDER_PLACED, S.ENTRY_PARTIALLY_FILLED)
            since = context.entry_placed_at if leg_entry else context.exit_placed_at
        else:
            since = context.updated_at
        deps.monitor.tell(WatchTrade(self.pos_id, context.state.value, since, done=context.state is S.POSITION_OPEN))
