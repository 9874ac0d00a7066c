"""How a trade actor writes down what happened: one journal step with its projections, and one log line
per event in the seed's words.

A step is every event one message produced, applied in order. It is appended to `trade_events` with the
`trades` row (and the `orders` row when a broker order is what moved the trade) in one statement, expecting
the journal to hold exactly what the actor has applied: a second writer (another process opening the same
pos_id, or running the same trade) gets JournalConflict, never a fork. The step is durable (the commit
waits for the disk) when something is sent to the broker after it; a step that only records what the
broker already did may be lost by a database crash, and the trade's recovery observes it again.

The database may be unreachable. A new trade is then refused (nothing is sent). A live trade goes on —
an exit must never wait for the database, and the broker is the truth: its steps wait here, in order, and
are written as one step when the database answers again (JOURNAL_DEFERRED ... JOURNAL_CAUGHT_UP). They wait
in a store of the process, so a restart of the trade actor meanwhile goes on from them (JOURNAL_TAIL_RESUMED).
A step whose commit happened but whose answer was lost is found in the journal when the tail is written, and
not written twice (JOURNAL_ANSWER_LOST). Should the process die meanwhile, recovery rebuilds from what was
written and observes the rest at the broker.
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.clock import Clock
from actors.trading.book import trade_record
from core.orders import BrokerOrder, Leg
from core.trade import (
    CancelOrder,
    Command,
    Event,
    ExitRequested,
    ModifyOrder,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    PlaceOrder,
    StopCancelRequested,
    StopMoved,
    StopRequested,
    TradeContext,
    correlation_of,
    leg_of_order,
)
from storage.errors import JournalConflict, StorageError, StorageUnavailable
from storage.records import JournalEntry, OrderRecord, TradeEventRecord
from storage.repositories import Storage
from supervision.store import Store
from telemetry import metrics
from telemetry.logs import EventLogger

__all__ = ["JournalTail", "JournalTails", "Step", "TradeJournal", "journal_tails"]

_WARNINGS = frozenset({"ORDER_TIMEOUT", "ORDER_SLIPPAGE", "ORDER_REJECTED", "ENTRY_DENIED"})


@dataclass(frozen=True)
class Step:
    event: Event
    before: TradeContext
    after: TradeContext
    commands: list[Command]


@dataclass(frozen=True)
class JournalTail:
    """A trade's steps applied but not written yet (the database was unreachable), in order."""

    steps: tuple[Step, ...]
    order: BrokerOrder | None
    since: float


# pos_id -> its tail; outlives the trade actor's restarts (and its supervisor's): a restart while the database
# is down must not forget an exit the broker carried out meanwhile. Replaced whole on every change.
JournalTails = Store[dict[str, JournalTail]]


def journal_tails() -> JournalTails:
    return Store("trades.journal_tails", {})


class TradeJournal:
    def __init__(self, pos_id: str, storage: Storage, clock: Clock, log: EventLogger,
                 tails: JournalTails | None = None) -> None:
        self.pos_id = pos_id
        self.storage = storage
        self.clock = clock
        self.log = log
        self.tails = tails if tails is not None else journal_tails()
        self.projection_failing = False  # the trades row is being refused (PROJECTION_WRITE_FAILED said once)

    @property
    def tail(self) -> tuple[Step, ...]:
        """Applied, not yet written (the database was unreachable)."""
        kept = self.tails.get().get(self.pos_id)
        return kept.steps if kept is not None else ()

    def record(self, steps: list[Step], order: BrokerOrder | None, fresh: bool) -> bool:
        """Write the steps after any that wait. True: written. False: the database is unreachable, they wait
        (a new trade's first step is never deferred: StorageUnavailable is raised, nothing is kept). Raises
        JournalConflict and other StorageErrors."""
        kept = self.tails.get().get(self.pos_id)
        pending = [*(kept.steps if kept else ()), *steps]
        if not pending:
            return True
        order = order or (kept.order if kept else None)
        try:
            try:
                self._write(pending, order, fresh)
            except JournalConflict:
                if kept is None:
                    raise
                # A deferred step may have committed although its answer was lost: what the journal holds
                # beyond what was known to be written must be the head of the tail, or it is a real conflict.
                pending = self._unwritten(pending)
                if pending:
                    self._write(pending, order, fresh)
        except StorageUnavailable as exc:
            if fresh:
                raise
            since = kept.since if kept is not None else self.clock.now()
            self._keep(JournalTail(tuple(pending), order, since))
            if kept is None:
                self.log.event("JOURNAL_DEFERRED", f"{self.pos_id}: database unreachable ({exc}); the trade goes "
                               "on and its steps wait in memory", level=40, waiting=len(pending))
            return False
        if kept is not None:
            self.log.event("JOURNAL_CAUGHT_UP", f"{self.pos_id}: deferred events written",
                           events=len(pending), deferred_seconds=round(self.clock.now() - kept.since, 3))
        self._keep(None)
        return True

    def resume(self, context: TradeContext) -> TradeContext:
        """After a restart rebuilt `context` from the journal: the steps still waiting (from before the
        restart) go on from it. Steps the journal already holds (an answer lost after its commit) are
        dropped; a tail that does not continue the journal is dropped as well, loudly (the trade's recovery
        observes at the broker what it said)."""
        kept = self.tails.get().get(self.pos_id)
        if kept is None:
            return context
        steps = [step for step in kept.steps if step.after.seq > context.seq]
        if steps and steps[0].before.seq != context.seq:
            self.log.event("JOURNAL_TAIL_DROPPED", f"{self.pos_id}: {len(steps)} deferred steps do not continue the "
                           f"journal (it holds {context.seq} events); the broker tells the rest", level=40)
            self._keep(None)
            return context
        if not steps:
            self._keep(None)
            return context
        self._keep(JournalTail(tuple(steps), kept.order, kept.since))
        self.log.event("JOURNAL_TAIL_RESUMED", f"{self.pos_id}: {len(steps)} deferred steps applied after the "
                       "journal; written when the database answers", level=30, steps=len(steps))
        return steps[-1].after

    def _unwritten(self, pending: list[Step]) -> list[Step]:
        """The pending steps the journal does not hold yet. Raises JournalConflict when it holds others."""
        first_seq = pending[0].before.seq
        stored = [record for record in self.storage.trades.events(self.pos_id) if record.seq > first_seq]
        written = 0
        for record in stored:
            steps_events = [step.event for step in pending]
            if written >= len(steps_events) or record.event != steps_events[written].name or \
                    abs(record.at - steps_events[written].at) > 1e-6:
                raise JournalConflict(self.pos_id, first_seq, f"the journal holds {record.event} at seq "
                                                              f"{record.seq}, not this trade's next step")
            written += 1
        if written:
            self.log.event("JOURNAL_ANSWER_LOST", f"{self.pos_id}: {written} steps were written although the "
                           "database's answer was lost", level=30, steps=written)
        return pending[written:]

    def _keep(self, tail: JournalTail | None) -> None:
        def change(tails: dict[str, JournalTail]) -> dict[str, JournalTail]:
            updated = dict(tails)
            if tail is None:
                updated.pop(self.pos_id, None)
            else:
                updated[self.pos_id] = tail
            return updated

        self.tails.update(change)

    def _write(self, steps: list[Step], order: BrokerOrder | None, fresh: bool) -> list[TradeEventRecord]:
        first, last = steps[0].before, steps[-1].after
        durable = fresh or any(isinstance(command, PlaceOrder | CancelOrder | ModifyOrder) for step in steps
                               for command in step.commands)
        entries = [JournalEntry(s.event.name, s.before.state.value, s.after.state.value, s.event.to_payload(),
                                s.event.at) for s in steps]
        try:
            records = self.storage.trades.record_step(
                self.pos_id, first.seq, entries, trade_record(last),
                self._order_row(order, last) if order is not None else None, durable=durable)
        except (StorageUnavailable, JournalConflict):
            raise
        except Exception as exc:  # the projection (trades/orders rows) was refused: the journal is the truth
            if fresh:  # a new trade: nothing is sent yet, so it is simply refused (in the entry's transaction)
                self.log.event("PROJECTION_WRITE_FAILED", f"{self.pos_id}: trades row not written "
                               f"({type(exc).__name__}: {exc}); the entry is refused", level=50,
                               error=type(exc).__name__)
                raise StorageError(f"trade row refused: {exc}") from exc
            records = self._journal_only(first.seq, entries, exc)
        else:
            if self.projection_failing:
                self.projection_failing = False
                self.log.event("PROJECTION_RECOVERED", f"{self.pos_id}: the trades row is written again")
        return records

    def _journal_only(self, expected_seq: int, entries: list[JournalEntry], cause: Exception) -> list[TradeEventRecord]:
        """Write the step without its rows, and say so once: the trade goes on (a crash loop would leave the
        position unmanaged); the trades row lags until a later step writes it."""
        records = self.storage.trades.append_events(self.pos_id, expected_seq, entries)
        if not self.projection_failing:
            self.projection_failing = True
            self.log.event("PROJECTION_WRITE_FAILED", f"{self.pos_id}: trades/orders row not written "
                           f"({type(cause).__name__}: {cause}); the journal holds every step and the trade goes on",
                           level=50, error=type(cause).__name__)
        return records

    def heal(self, context: TradeContext) -> None:
        """Ended before its row caught up (a crash between journal and row): rewrite the projection."""
        try:
            self.storage.trades.upsert_trade(trade_record(context))
        except StorageError as exc:
            self.log.event("TRADE_ROW_STALE", f"{self.pos_id}: trades row not updated ({exc})", level=30)

    def log_step(self, step: Step, seq: int, source: str) -> None:
        event, before, after = step.event, step.before, step.after
        payload = {k: v for k, v in event.to_payload().items() if k not in ("at", "pos_id")}
        leg = payload.get("leg")
        if leg:
            default = correlation_of(after, Leg(leg))
        elif isinstance(event, StopRequested | StopMoved | StopCancelRequested):
            default = after.stop_correlation_id
        else:
            default = after.exit_correlation_id if isinstance(event, ExitRequested) and after.exit_correlation_id \
                else after.entry_correlation_id
        correlation = payload.pop("correlation_id", "") or default
        if source:
            payload.setdefault("source", source)
        _count(step)
        self.log.event(event.log_name, f"{self.pos_id}: {before.state} -> {after.state} ({event.name})",
                       level=30 if event.log_name in _WARNINGS else 20, correlation_id=correlation, db_id=seq,
                       seq=seq, from_state=before.state.value, to_state=after.state.value, event_type=event.name,
                       **payload)

    def _order_row(self, order: BrokerOrder, context: TradeContext) -> OrderRecord:
        """The `orders` row as the broker last told us (the journal holds the history)."""
        leg = leg_of_order(context, order) or Leg.EXIT
        expected = {Leg.ENTRY: context.expected_entry_price, Leg.EXIT: context.expected_exit_price,
                    Leg.STOP: context.stop_trigger_price}[leg]
        now = self.clock.now()
        return OrderRecord(
            correlation_id=order.correlation_id or correlation_of(context, leg), pos_id=self.pos_id,
            leg=leg.value, broker_order_id=order.order_id or None, status=order.status.value, qty=order.qty,
            filled_qty=order.filled_qty, avg_price=order.avg_price or None,
            expected_price=expected,
            created_at=now, updated_at=now)


def _count(step: Step) -> None:
    """Orders reaching a final status, and how long a complete fill took (the metrics of a step)."""
    event = step.event
    if isinstance(event, OrderFilled):
        placed_at = step.before.entry_placed_at if event.leg is Leg.ENTRY else step.before.exit_placed_at
        metrics.order_final(event.leg.value, "FILLED")
        if placed_at:
            metrics.order_fill(event.leg.value, event.at - placed_at)
    elif isinstance(event, OrderRejected):
        metrics.order_final(event.leg.value, "REJECTED")
    elif isinstance(event, OrderCancelled):
        metrics.order_final(event.leg.value, "CANCELLED")
