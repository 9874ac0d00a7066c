"""Executor: the single execution entry point. Entries pass the risk guard here; every order goes out here.

An entry (a strategy's EntrySignalRaised, or a manual one from the control API) is, in order:
  1. refused until the start-up reconciliation has passed; a pos_id already known is a duplicate;
  2. checked by the risk guard (check_entry, counted as open when allowed: atomic);
  3. inside `storage.placement_lock(pos_id)` (process lock + PostgreSQL advisory lock on MD5(pos_id)):
     `claim_intent(pos_id, ENTRY, correlationId)` -- False means another process (or an earlier life of
     this one) owns the entry: a duplicate, nothing is written or sent;
  4. journaled (SignalAccepted, then EntryRequested or EntryDenied) and the `trades` row written, before
     any side effect;
  5. placed: a marketable LIMIT at quote +- broker.protection_band_pct, correlationId from
     `correlation_id(pos_id, ENTRY)`;
  6. handed to a new trade actor with the broker's answer (the trade journals ORDER_PLACED and on).

Submits (`_submit`): a permanent error refuses the order; a temporary one (nothing was sent: 429, a
local rate limit, a refused connection) is retried later on a timer, at most execution.submit_attempts
times; an ambiguous one (timeout, 5xx, unreadable answer: it may have gone through) is looked up by
correlationId BEFORE anything else -- found: placed; not found: a deferred retry that looks again first.
Nothing sleeps: a deferred retry is a timer telling this actor. Exits arrive as SubmitOrder from trade
actors (already journaled by them) and go through the same lock + claim; a SubmitOrder whose intent is
already claimed (a recovery, a monitor asking again) is resolved by correlationId, never resent blindly.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from actors.brokers.base import (
    AmbiguousSubmitError,
    BrokerError,
    OrderNotFound,
    PermanentBrokerError,
    TemporaryBrokerError,
)
from actors.trading.trade_actor import (
    CancelWorkingOrder,
    Observe,
    Outcome,
    PlacementResult,
    RequestExit,
    SubmitOrder,
    TraderDeps,
    marketable_limit,
    trade_record,
)
from core.orders import BrokerOrder, Leg, OrderRequest, Side, correlation_id
from core.risk import Allowed, Denied
from core.signals import EntrySignalRaised, ExitSignalRaised
from core.trade import EntryDenied, EntryRequested, Event, SignalAccepted, TradeContext, apply
from storage.errors import StorageConflict, StorageError
from storage.records import OrderRecord
from supervision.actor import SupervisedActor, tell_quietly
from supervision.scheduler import Scheduler, Timer
from supervision.supervisor import ChildLink

__all__ = [
    "EntryDecision",
    "EntryOrder",
    "Executor",
    "ExecutorState",
    "ExitTrade",
    "FlattenAll",
    "ManualEntry",
    "NOT_READY",
    "UnroutedUpdate",
]

NOT_READY = "STARTUP_RECONCILIATION"  # the deny code while the first reconciliation has not passed
DUPLICATE = "DUPLICATE"
STORAGE = "STORAGE_UNAVAILABLE"


# ------------------------------------------------------------------------------------------ messages


@dataclass(frozen=True)
class EntryOrder:
    """An entry to make, whoever asked: the strategy (from EntrySignalRaised) or an operator."""

    pos_id: str
    symbol: str  # what is traded (SEC_<id>, or the index itself with the paper broker)
    instrument: str  # for people
    side: Side
    qty: int
    price: float  # the expected price (0 = use the quote)
    reason: str
    at: float
    source: str = "strategy"

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
                   at=signal.at, source="strategy")


@dataclass(frozen=True)
class EntryDecision:
    """What became of an entry, for whoever waits on it (the control API)."""

    pos_id: str
    accepted: bool
    code: str = ""  # "" when accepted; a DenyCode, DUPLICATE, STARTUP_RECONCILIATION, STORAGE_UNAVAILABLE
    reason: str = ""


@dataclass(frozen=True)
class ManualEntry:
    order: EntryOrder
    reply: Future[EntryDecision]


@dataclass(frozen=True)
class ExitTrade:
    pos_id: str
    reason: str
    source: str = "operator"


@dataclass(frozen=True)
class FlattenAll:
    reason: str


@dataclass(frozen=True)
class UnroutedUpdate:
    """An order update no live trade claimed (from the router)."""

    order: BrokerOrder


@dataclass(frozen=True)
class _RetrySubmit:
    request: OrderRequest
    attempt: int


@dataclass(frozen=True)
class _Sweep:
    """Timer: enforce the square-off time and a flatten on every live trade."""


@dataclass
class ExecutorState:
    """Outlives executor restarts (the supervisor gives a new instance the same object)."""

    in_flight: dict[str, OrderRequest] = field(default_factory=dict)  # entries between journal and trade actor
    unsent: set[str] = field(default_factory=set)  # claimed correlation ids known not to have been sent
    entries: int = 0
    denied: int = 0
    duplicates: int = 0
    submits: int = 0
    deferred: int = 0
    ambiguous: int = 0
    refused: int = 0
    cancels: int = 0
    sweep_announced: str = ""  # the reason last announced by a sweep (logged once)


# --------------------------------------------------------------------------------------------- actor


class Executor(SupervisedActor):
    def __init__(self, link: ChildLink | None, deps: TraderDeps, state: ExecutorState, scheduler: Scheduler,
                 ready: Any) -> None:
        super().__init__(link)
        self.deps = deps
        self.state = state
        self.scheduler = scheduler
        self.ready = ready  # threading.Event: set once the start-up reconciliation has passed
        self.timer: Timer | None = None

    def started(self) -> None:
        # Entries this executor's previous life had journaled but not handed to a trade actor: the trade
        # actor recovers them (its pending submit comes back here and is resolved by correlationId).
        for pos_id in list(self.state.in_flight):
            self.log.event("EXECUTOR_RECOVERING_ENTRY", f"{pos_id}: entry was in flight when the executor "
                           "stopped; recovering from the journal and the broker", pos_id=pos_id)
            self.state.in_flight.pop(pos_id, None)
            self._ensure_trade(pos_id)
        ref = self.actor_ref
        self.timer = self.scheduler.call_every(self.deps.execution.square_off_check_seconds,
                                               lambda: tell_quietly(ref, _Sweep()))

    def release(self) -> None:
        if self.timer is not None:
            self.timer.cancel()

    def receive(self, message: Any) -> Any:
        if isinstance(message, EntrySignalRaised):
            self._enter(EntryOrder.from_signal(message), None)
        elif isinstance(message, ManualEntry):
            self._enter(message.order, message.reply)
        elif isinstance(message, ExitSignalRaised):
            self._exit(message.pos_id, message.reason, "strategy")
        elif isinstance(message, ExitTrade):
            self._exit(message.pos_id, message.reason, message.source)
        elif isinstance(message, SubmitOrder):
            self._submit_for_trade(message.request, attempt=1)
        elif isinstance(message, _RetrySubmit):
            self._submit_for_trade(message.request, attempt=message.attempt, retry=True)
        elif isinstance(message, CancelWorkingOrder):
            self._cancel(message)
        elif isinstance(message, UnroutedUpdate):
            self._unrouted(message.order)
        elif isinstance(message, FlattenAll):
            self._sweep_all(f"FLATTEN: {message.reason}", "flatten")
        elif isinstance(message, _Sweep):
            # The open-position count follows the book; here, between entries, no entry is half-way.
            if self.ready.is_set():
                self.deps.risk.sync_open_positions(self.deps.book.open_count())
            reason = self.deps.risk.exit_all_reason(self.deps.clock.now())
            if reason:
                self._sweep_all(reason, "flatten" if reason.startswith("FLATTEN") else "square_off")
            elif self.state.sweep_announced:
                self.state.sweep_announced = ""
        else:
            return super().receive(message)
        return None

    # -- entries -------------------------------------------------------------------------------------------

    def _enter(self, order: EntryOrder, reply: Future[EntryDecision] | None) -> None:
        deps = self.deps
        now = deps.clock.now()
        self.state.entries += 1
        log = self.log.bind(pos_id=order.pos_id)
        if not self.ready.is_set():
            self._answer(reply, EntryDecision(order.pos_id, False, NOT_READY,
                                              "entries are refused until the start-up reconciliation has passed"))
            log.event("ENTRY_DENIED", f"{order.pos_id}: start-up reconciliation has not passed", level=30,
                      code=NOT_READY, source=order.source)
            self.state.denied += 1
            return
        if order.pos_id in deps.book:  # known here; known anywhere else is caught by the claim below
            self._duplicate(order, reply, "pos_id is already known")
            return
        decision = deps.risk.try_enter(now)
        cid = correlation_id(order.pos_id, Leg.ENTRY)
        quote = deps.quotes(order.symbol)
        expected = order.price if order.price > 0 else (quote or 0.0)
        if isinstance(decision, Allowed) and expected <= 0:
            deps.risk.entry_abandoned()
            decision = Denied("NO_PRICE", f"no price given and no quote for {order.symbol}")
        request = OrderRequest(correlation_id=cid, pos_id=order.pos_id, leg=Leg.ENTRY, symbol=order.symbol,
                               side=order.side, qty=order.qty,
                               price=marketable_limit(quote or expected, order.side, deps.protection_band_pct),
                               expected_price=expected)
        result: PlacementResult | None = None
        try:
            with deps.storage.placement_lock(order.pos_id, timeout=deps.execution.lock_timeout_seconds):
                # The claim, the journal, the trade row and the SUBMITTING order row commit together
                # (one durable write) and before the broker hears of the order.
                with deps.storage.transaction():
                    claimed = deps.storage.trades.claim_intent(order.pos_id, Leg.ENTRY.value, cid, now)
                    if claimed:
                        context = self._journal_entry(order, decision, request, now)
                        if isinstance(decision, Allowed):
                            self._record_submitting(request, now)
                if not claimed:
                    if decision.allowed:
                        deps.risk.entry_abandoned()
                    self._duplicate(order, reply, "the entry intent is claimed by another executor")
                    return
                self._answer(reply, EntryDecision(order.pos_id, decision.allowed,
                                                  getattr(decision, "code", ""), getattr(decision, "reason", "")))
                if not isinstance(decision, Allowed):
                    self.state.denied += 1
                    return
                self.state.in_flight[order.pos_id] = request
                deps.book.update(context, recovered=True)
                result = self._submit(request, attempt=1, recorded=True)
        except StorageError as exc:
            if order.pos_id not in self.state.in_flight:
                if decision.allowed:
                    deps.risk.entry_abandoned()
                if isinstance(exc, StorageConflict):
                    self._duplicate(order, reply, f"placement lock busy: {exc}")
                else:
                    self._storage_refusal(order, reply, exc)
                return
            # Journaled, but the submit could not be recorded: the trade actor resolves it later.
            result = PlacementResult(request, Outcome.UNKNOWN, reason=f"storage failed mid-entry: {exc}")
        deps.intros[order.pos_id] = result or PlacementResult(request, Outcome.UNKNOWN,
                                                               reason="submit deferred: retrying on a timer")
        self._ensure_trade(order.pos_id)
        self.state.in_flight.pop(order.pos_id, None)

    def _journal_entry(self, order: EntryOrder, decision: Allowed | Denied, request: OrderRequest,
                       now: float) -> TradeContext:
        """SignalAccepted + EntryRequested/EntryDenied through the core, journaled before anything is sent."""
        events: list[Event] = [SignalAccepted(
            at=now, pos_id=order.pos_id, symbol=order.symbol, instrument=order.instrument, side=order.side,
            qty=order.qty, expected_price=request.expected_price, reason=f"{order.source}: {order.reason}")]
        if isinstance(decision, Allowed):
            events.append(EntryRequested(at=now, limit_price=request.price, expected_price=request.expected_price))
        else:
            events.append(EntryDenied(at=now, reason=f"{decision.code}: {decision.reason}"))
        context = TradeContext()
        trades = self.deps.storage.trades
        for event in events:
            before = context
            context, _ = apply(before, event)
            record = trades.append_event(order.pos_id, event.name, before.state.value, context.state.value,
                                         event.to_payload(), event.at)
            level = 30 if isinstance(event, EntryDenied) else 20
            extra = {"code": decision.code, "reason": decision.reason} if isinstance(decision, Denied) else {
                "limit_price": request.price}
            self.log.event(event.log_name, f"{order.pos_id}: {before.state} -> {context.state}", level=level,
                           pos_id=order.pos_id, correlation_id=request.correlation_id, db_id=record.seq,
                           seq=record.seq, symbol=order.symbol, side=order.side.value, qty=order.qty,
                           expected_price=request.expected_price, source=order.source,
                           to_state=context.state.value, **(extra if event is events[-1] else {}))
        trades.upsert_trade(trade_record(context))
        return context

    def _duplicate(self, order: EntryOrder, reply: Future[EntryDecision] | None, why: str) -> None:
        self.state.duplicates += 1
        self._answer(reply, EntryDecision(order.pos_id, False, DUPLICATE, f"duplicate pos_id: {why}"))
        self.log.event("ENTRY_DUPLICATE", f"{order.pos_id}: {why}; nothing sent", level=30, pos_id=order.pos_id,
                       source=order.source)

    def _storage_refusal(self, order: EntryOrder, reply: Future[EntryDecision] | None, exc: Exception) -> None:
        self.state.denied += 1
        self._answer(reply, EntryDecision(order.pos_id, False, STORAGE, f"storage unavailable: {exc}"))
        self.log.event("ENTRY_DENIED", f"{order.pos_id}: storage unavailable, nothing sent ({exc})", level=40,
                       pos_id=order.pos_id, code=STORAGE, source=order.source)

    @staticmethod
    def _answer(reply: Future[EntryDecision] | None, decision: EntryDecision) -> None:
        if reply is not None and not reply.done():
            reply.set_result(decision)

    # -- exits ------------------------------------------------------------------------------------------------

    def _exit(self, pos_id: str, reason: str, source: str) -> None:
        if not self.deps.router.deliver(pos_id, RequestExit(reason, source)):
            self.log.event("EXIT_SIGNAL_UNMATCHED", f"{pos_id}: no live trade in this process", level=30,
                           pos_id=pos_id, reason=reason, source=source)

    def _sweep_all(self, reason: str, source: str) -> None:
        exitable = [c.pos_id for c in self.deps.book.contexts()
                    if c.state.value in ("POSITION_OPEN", "ORDER_PLACED", "ENTRY_PARTIALLY_FILLED")
                    and not c.exit_reason]
        if reason != self.state.sweep_announced or exitable:
            self.log.event("SQUARE_OFF" if source == "square_off" else "FLATTEN",
                           f"exiting {len(exitable)} positions: {reason}", reason=reason, positions=exitable)
            self.state.sweep_announced = reason
        for pos_id in exitable:
            self.deps.router.deliver(pos_id, RequestExit(reason, source))

    # -- submits ----------------------------------------------------------------------------------------------

    def _submit_for_trade(self, request: OrderRequest, attempt: int, retry: bool = False) -> None:
        """A trade's SubmitOrder (or a deferred retry): lock + claim, then submit or resolve.

        A claimed intent known not to have been sent (`unsent`) is submitted again by a deferred retry,
        or for an exit; an entry asked for again later is not sent late (its price is stale)."""
        deps = self.deps
        cid = request.correlation_id
        try:
            with deps.storage.placement_lock(request.pos_id, timeout=deps.execution.lock_timeout_seconds):
                claimed = deps.storage.trades.claim_intent(request.pos_id, request.leg.value, cid,
                                                           deps.clock.now())
                result: PlacementResult | None
                if claimed or (cid in self.state.unsent and (retry or request.leg is Leg.EXIT)):
                    result = self._submit(request, attempt)
                elif cid in self.state.unsent:
                    self.state.unsent.discard(cid)
                    self._record(request, None, "NOT_PLACED")
                    self.log.event("ORDER_NOT_SENT", f"{request.pos_id}: the entry was never sent; not sent late",
                                   level=30, pos_id=request.pos_id, correlation_id=cid)
                    result = PlacementResult(request, Outcome.REFUSED, reason="entry never sent; not sent late")
                else:
                    result = self._resolve(request)
        except StorageError as exc:
            result = PlacementResult(request, Outcome.UNKNOWN, reason=f"storage unavailable: {exc}")
        if result is not None:
            self._reply(request.pos_id, result)

    def _record_submitting(self, request: OrderRequest, now: float) -> None:
        """Before the broker can know the order, the orders table does (any process can tell whose it is)."""
        self.deps.storage.trades.record_order(OrderRecord(
            correlation_id=request.correlation_id, pos_id=request.pos_id, leg=request.leg.value,
            broker_order_id=None, status="SUBMITTING", qty=request.qty, filled_qty=0, avg_price=None,
            expected_price=request.expected_price, created_at=now, updated_at=now))

    def _submit(self, request: OrderRequest, attempt: int, recorded: bool = False) -> PlacementResult | None:
        """Place (the claim is ours). None = deferred: a timer retries; the trade keeps waiting."""
        deps = self.deps
        if not recorded:
            self._record_submitting(request, deps.clock.now())
        # The router knows the order first too: an update racing the submit's answer still finds its trade.
        deps.router.register(request.pos_id, [request.correlation_id])
        self.state.submits += 1
        try:
            order = deps.broker.place(request)
        except AmbiguousSubmitError as exc:
            self.state.ambiguous += 1
            self.state.unsent.discard(request.correlation_id)  # it may have been sent: only a lookup decides
            self.log.event("ORDER_SUBMIT_AMBIGUOUS", f"{request.pos_id}: {exc}; looking it up by correlationId",
                           level=30, pos_id=request.pos_id, correlation_id=request.correlation_id,
                           code=exc.code, attempt=attempt)
            found = self._lookup(request)
            if isinstance(found, BrokerOrder):
                return self._placed(request, found, "found by correlationId after an ambiguous submit")
            if found is None:  # the broker does not have it: a retry is safe, after another look
                self.state.unsent.add(request.correlation_id)
                return self._defer(request, attempt, f"ambiguous submit not found at the broker ({exc})")
            return PlacementResult(request, Outcome.UNKNOWN, reason=f"ambiguous submit, lookup failed: {found}")
        except PermanentBrokerError as exc:
            self.state.refused += 1
            self.state.unsent.discard(request.correlation_id)
            self._record(request, None, "REFUSED")
            self.log.event("ORDER_REFUSED", f"{request.pos_id}: broker refused the order: {exc}", level=40,
                           pos_id=request.pos_id, correlation_id=request.correlation_id, code=exc.code)
            return PlacementResult(request, Outcome.REFUSED, reason=f"broker refused: {exc}")
        except TemporaryBrokerError as exc:
            self.state.unsent.add(request.correlation_id)  # definitely not placed: ours to submit again
            return self._defer(request, attempt, f"{type(exc).__name__}: {exc}")
        return self._placed(request, order, "accepted")

    def _placed(self, request: OrderRequest, order: BrokerOrder, how: str) -> PlacementResult:
        self.state.unsent.discard(request.correlation_id)
        self.deps.router.register(request.pos_id, [order.order_id])
        self._record(request, order, order.status.value)
        self.log.event("ORDER_SUBMITTED", f"{request.pos_id}: {request.leg} {request.side} {request.qty} "
                       f"{request.symbol} @ {request.price} {how}", pos_id=request.pos_id,
                       order_id=order.order_id, correlation_id=request.correlation_id, leg=request.leg.value,
                       status=order.status.value, limit_price=request.price)
        return PlacementResult(request, Outcome.PLACED, order=order)

    def _defer(self, request: OrderRequest, attempt: int, why: str) -> PlacementResult | None:
        execution = self.deps.execution
        if attempt >= execution.submit_attempts:
            self.log.event("ORDER_SUBMIT_FAILED", f"{request.pos_id}: {why}; gave up after {attempt} attempts",
                           level=40, pos_id=request.pos_id, correlation_id=request.correlation_id, attempt=attempt)
            if request.leg is Leg.ENTRY:
                self.state.unsent.discard(request.correlation_id)
                self._record(request, None, "REFUSED")
                return PlacementResult(request, Outcome.REFUSED, reason=f"not placed after {attempt} attempts: {why}")
            # An exit must still happen: the claim stays ours (unsent) and the monitor asks again.
            return PlacementResult(request, Outcome.UNKNOWN, reason=f"not placed after {attempt} attempts: {why}")
        self.state.deferred += 1
        delay = execution.submit_retry_seconds * 2 ** (attempt - 1)
        self.log.event("ORDER_SUBMIT_DEFERRED", f"{request.pos_id}: {why}; retry {attempt + 1} in {delay:.2f} s",
                       level=30, pos_id=request.pos_id, correlation_id=request.correlation_id, attempt=attempt)
        ref = self.actor_ref
        self.scheduler.call_later(delay, lambda: tell_quietly(ref, _RetrySubmit(request, attempt + 1)))
        return None

    def _resolve(self, request: OrderRequest) -> PlacementResult:
        """The intent is claimed (earlier life, another process, a repeat): ask the broker, never resend."""
        found = self._lookup(request)
        if isinstance(found, BrokerOrder):
            return self._placed(request, found, "resolved by correlationId")
        if found is None:
            self.log.event("ORDER_NOT_AT_BROKER", f"{request.pos_id}: intent {request.correlation_id} was claimed "
                           "but the broker has no such order; not resent", level=30, pos_id=request.pos_id,
                           correlation_id=request.correlation_id)
            self._record(request, None, "NOT_PLACED")
            return PlacementResult(request, Outcome.REFUSED,
                                   reason="claimed intent with no order at the broker (not resent)")
        return PlacementResult(request, Outcome.UNKNOWN, reason=f"lookup failed: {found}")

    def _lookup(self, request: OrderRequest) -> BrokerOrder | str | None:
        """The broker's order for the correlation id, None if it has none, or the error text."""
        try:
            return self.deps.broker.find_by_correlation_id(request.correlation_id)
        except OrderNotFound:
            return None
        except BrokerError as exc:
            self.log.event("ORDER_LOOKUP_FAILED", f"{request.pos_id}: {exc}", level=30, pos_id=request.pos_id,
                           correlation_id=request.correlation_id, code=exc.code)
            return f"{type(exc).__name__}: {exc}"

    def _record(self, request: OrderRequest, order: BrokerOrder | None, status: str) -> None:
        now = self.deps.clock.now()
        try:
            self.deps.storage.trades.record_order(OrderRecord(
                correlation_id=request.correlation_id, pos_id=request.pos_id, leg=request.leg.value,
                broker_order_id=order.order_id if order else None, status=status, qty=request.qty,
                filled_qty=order.filled_qty if order else 0, avg_price=(order.avg_price or None) if order else None,
                expected_price=request.expected_price, created_at=now, updated_at=now))
        except StorageError as exc:  # the orders table is bookkeeping; the journal is the truth
            self.log.event("ORDER_RECORD_FAILED", f"{request.pos_id}: {exc}", level=30, pos_id=request.pos_id)

    def _reply(self, pos_id: str, result: PlacementResult) -> None:
        if not self.deps.router.deliver(pos_id, result):
            self.log.event("PLACEMENT_UNDELIVERED", f"{pos_id}: no live trade for the placement answer; "
                           "it recovers from the broker", level=30, pos_id=pos_id, outcome=result.outcome)

    # -- cancels and stray updates ----------------------------------------------------------------------------

    def _cancel(self, message: CancelWorkingOrder) -> None:
        broker = self.deps.broker
        self.state.cancels += 1
        try:
            order = broker.cancel(message.order_id)
            self.log.event("ORDER_CANCEL_SENT", f"{message.pos_id}: cancel {message.order_id} -> {order.status}",
                           pos_id=message.pos_id, order_id=message.order_id, leg=message.leg.value,
                           status=order.status.value)
        except (PermanentBrokerError, OrderNotFound) as exc:
            # Nothing to cancel (filled, rejected, gone): what the order IS decides what happens next.
            self.log.event("ORDER_CANCEL_REFUSED", f"{message.pos_id}: {exc}; reading the order", level=30,
                           pos_id=message.pos_id, order_id=message.order_id, code=exc.code)
            try:
                order = broker.get_order(message.order_id)
            except BrokerError as again:
                self.log.event("ORDER_LOOKUP_FAILED", f"{message.pos_id}: {again}", level=30, pos_id=message.pos_id)
                return
        except BrokerError as exc:
            self.log.event("ORDER_CANCEL_FAILED", f"{message.pos_id}: {exc}; the timeout monitor asks again",
                           level=30, pos_id=message.pos_id, order_id=message.order_id, code=exc.code)
            return
        self.deps.router.deliver(message.pos_id, Observe(order, "cancel"))

    def _unrouted(self, order: BrokerOrder) -> None:
        pos_id = self.deps.router.pos_id_for(order)
        if pos_id is None and order.correlation_id:
            try:
                record = self.deps.storage.trades.order(order.correlation_id)
            except StorageError:
                record = None
            pos_id = record.pos_id if record is not None else None
        if pos_id is not None and self.deps.router.deliver(pos_id, Observe(order)):
            return
        self.log.event("ORDER_UPDATE_UNMATCHED", f"order {order.order_id} ({order.correlation_id or 'no cid'}) "
                       f"{order.status}: no live trade here; the reconciler will judge", level=10,
                       order_id=order.order_id, correlation_id=order.correlation_id, pos_id=pos_id,
                       status=order.status.value, filled_qty=order.filled_qty)

    # -- helpers ------------------------------------------------------------------------------------------------

    def _ensure_trade(self, pos_id: str) -> None:
        if self.deps.trades is not None:
            self.deps.trades.ensure_child(pos_id)

