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

The class is written in three files: this one (the mailbox, the step machinery, the lifecycle),
trade_entry.py (how a trade begins) and trade_orders.py (broker news, placements, retries, exits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from actors.trading.journal import Step, TradeJournal
from actors.trading.messages import (
    AdoptPosition,
    Cancel,
    CancelEntry,
    CheckTimeout,
    GetTrade,
    GuardPosition,
    LeaseLost,
    LookedUp,
    Modify,
    Observe,
    OpenTrade,
    Place,
    PlacementResult,
    PlaceMode,
    RefreshFromBroker,
    RequestExit,
    TrailMoved,
    WatchTrade,
)
from actors.trading.protection import guard_of
from actors.trading.trade_deps import TradeDeps, TradeOrigin
from actors.trading.trade_entry import TradeEntry
from actors.trading.trade_orders import RetryPlacement, TradeOrders
from core.orders import BrokerOrder
from core.trade import (
    ACTIVE_ORDER_STATES,
    EXITABLE,
    STOP_PENDING,
    AlertOperator,
    CancelOrder,
    Command,
    EntryCancelRequested,
    Event,
    EventDecodeError,
    ExitRequested,
    IllegalTransition,
    ModifyOrder,
    PlaceOrder,
    RaiseExitSignal,
    RecordClosedTrade,
    TradeContext,
    TradeState,
    apply,
    can_apply,
    event_from_payload,
    rebuild,
    slippage_guard,
    timeout_due,
    wants_stop,
)
from storage.errors import StorageUnavailable
from storage.records import TradeEventRecord
from supervision.actor import SupervisedActor
from supervision.supervisor import ChildLink
from telemetry.logs import incident_id

__all__ = ["TradeActor"]

S = TradeState


@dataclass(frozen=True)
class _ReadJournal:
    """Timer: try again to read the journal (the database was unreachable when the actor started)."""


@dataclass(frozen=True)
class _FlushJournal:
    """Timer: write the journal steps that waited for the database."""


class TradeActor(TradeEntry, TradeOrders, SupervisedActor):
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
        self.exit_crossed_at = 0.0  # perf_counter when a protective level was crossed (0: none, or measured)
        self.guard_told: GuardPosition | None = None  # what the protection monitor was last told
        self.trail_best = 0.0  # the trailing stop's best price, as the protection monitor last said (0: entry)
        self.entry_in_doubt = False  # the entry gate failed: whether it journaled the trade is read back
        self.log = self.log.bind(pos_id=pos_id)
        self.journal = TradeJournal(pos_id, deps.storage, deps.clock, self.log, deps.journal_tails)

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
        in_doubt, self.entry_in_doubt = self.entry_in_doubt, False
        if in_doubt:
            if not records:
                self._finish()  # the failed gate wrote nothing: nothing to do
                return
            self.origin.journaled = True  # it did commit: this process owns the trade (the gate claimed its lease)
            self.log.event("ENTRY_JOURNALED_UNANSWERED", f"{self.pos_id}: the entry gate's commit reached the "
                           f"database although its answer was lost; the trade ({len(records)} events) is "
                           "recovered and resolved at the broker", level=30, events=len(records))
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
        # Steps applied before this restart that the database has not taken yet (it was down) go on from here.
        self.context = self.journal.resume(self.context)
        if self.journal.tail and not self.flush_due:
            self._flush_journal_later()
        if self.context.is_terminal:
            if not self.journal.tail:
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
        elif isinstance(message, TrailMoved):
            self._on_trail(message)
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
        elif isinstance(message, RetryPlacement):
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
        elif isinstance(command, ModifyOrder):
            deps.executor.tell(Modify(command.pos_id, command.order_id, command.leg, command.qty, command.price,
                                      command.trigger_price))
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

    def _after_step(self) -> None:
        """Checks after every message: the slippage guard, a deferred exit, a sweep in force, the broker-side
        stop, the end."""
        if self.finished:
            return
        now = self.deps.clock.now()
        slipped = slippage_guard(self.context, self.deps.execution.max_slippage_pct, now)
        if slipped is not None:
            self._apply(slipped)
        stop_pending = self.context.state is S.POSITION_OPEN and self.context.stop_status == STOP_PENDING
        if self.deferred_exit is not None and self.context.state not in (S.SIGNAL_GENERATED, S.ENTRY_PENDING) \
                and not stop_pending:
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
        # Last: a position that is staying open (no exit asked, none on its way) gets its broker-side stop,
        # and the stop follows the trail.
        if slipped is None and self.deferred_exit is None and self.deps.broker_stop_pct > 0:
            if wants_stop(self.context):
                self._request_stop()
            self._follow_trail()
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
        self._tell_guard(GuardPosition(self.pos_id, done=True))
        self.stop()

    def _publish(self) -> None:
        context, deps = self.context, self.deps
        deps.book.update(context, recovered=not self.recovering)
        deps.router.register(self.pos_id, [context.entry_correlation_id, context.exit_correlation_id,
                                           context.stop_correlation_id, context.entry_order_id,
                                           context.exit_order_id, context.stop_order_id])
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
        self._tell_guard(guard_of(context))

    def _tell_guard(self, message: GuardPosition) -> None:
        """The protection monitor hears of a change only: armed once the position is open, done once not."""
        if self.deps.protection is None or message == self.guard_told:
            return
        if message.done and self.guard_told is None:
            return  # never armed: nothing to take back
        self.guard_told = None if message.done else message
        self.deps.protection.tell(message)
