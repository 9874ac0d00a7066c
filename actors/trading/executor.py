"""Executor: the placement service. Every order of every trade goes out here, entries and exits alike.

One protocol for every placement (`Place`, from the trade actor that owns it):
  1. lock: `storage.placement_lock(pos_id)`, a process lock + PostgreSQL advisory lock on MD5(pos_id);
  2. claim (a FIRST placement): the order intent with its SUBMITTING `orders` row, under the lock. Not
     claimed (an earlier life, another process, a repeat) -> resolve;
  3. submit (a FIRST placement this call claimed, or a RESEND of one this process knows it did not send)
     or resolve (look the order up by correlationId: found -> placed; not found -> refused, never resent);
  4. result: `PlacementResult` to the trade actor, which journals what it means.
A FIRST placement is only ever asked for right after the trade journaled the order's request; a recovery
asks RESOLVE. So a claim lost to a database crash costs nothing: the order is resolved at the broker.

Submits: a permanent error refuses the order; a temporary one (nothing was sent: 429, a local rate limit, a
refused connection) answers NOT_SENT and the trade decides when to ask again; an ambiguous one (timeout,
5xx, unreadable answer: it may have gone through) is looked up by correlationId at once -- found: placed;
not found: NOT_SENT, the correlation id stays claimed and marked unsent here. The executor never journals,
never retries on its own and never decides what a trade does next.

It also cancels (`Cancel`), moves (`Modify`: the broker-side stop) and looks orders up (`Lookup`) for the
trades: trade actors never call the broker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from actors.brokers.base import (
    AmbiguousSubmitError,
    Broker,
    BrokerError,
    OrderNotFound,
    PermanentBrokerError,
    TemporaryBrokerError,
)
from actors.clock import Clock
from actors.trading.messages import (
    Cancel,
    LookedUp,
    Lookup,
    Modify,
    Observe,
    Outcome,
    Place,
    PlacementResult,
    PlaceMode,
    TradeAddresses,
)
from config.settings import ExecutionSettings
from core.orders import BrokerOrder, Leg, OrderRequest
from storage.errors import StorageError, StorageUnavailable
from storage.records import OrderRecord
from storage.repositories import Storage
from supervision.actor import SupervisedActor
from supervision.store import Store
from supervision.supervisor import ChildLink

__all__ = ["Executor", "ExecutorCounters", "PlacementLedger"]


@dataclass(frozen=True)
class ExecutorCounters:
    placements: int = 0
    submits: int = 0
    not_sent: int = 0
    ambiguous: int = 0
    refused: int = 0
    resolved: int = 0
    cancels: int = 0
    lookups: int = 0
    modifies: int = 0


@dataclass(frozen=True)
class PlacementLedger:
    """What this process knows about placements it made, beyond the database: correlation ids known NOT to
    have reached the broker (safe to send again), and ambiguous submits still settling (id -> when the first
    ambiguous answer came: never resent until execution.ambiguous_settle_seconds have passed without the
    broker knowing them). Outlives executor restarts (a Store); lost with the process, after which only a
    lookup decides (a recovery never sends)."""

    unsent: frozenset[str] = frozenset()
    settling: Mapping[str, float] = field(default_factory=dict)

    def with_unsent(self, correlation_id: str, unsent: bool) -> PlacementLedger:
        settling = {k: v for k, v in self.settling.items() if k != correlation_id}
        unsent_ids = self.unsent | {correlation_id} if unsent else self.unsent - {correlation_id}
        return PlacementLedger(unsent_ids, settling)

    def with_settling(self, correlation_id: str, since: float) -> PlacementLedger:
        return PlacementLedger(self.unsent - {correlation_id}, {**self.settling, correlation_id: since})


class Executor(SupervisedActor):
    def __init__(self, link: ChildLink | None, storage: Storage, broker: Broker, clock: Clock,
                 execution: ExecutionSettings, trades: TradeAddresses, ledger: Store[PlacementLedger],
                 counters: Store[ExecutorCounters]) -> None:
        super().__init__(link)
        self.storage = storage
        self.broker = broker
        self.clock = clock
        self.execution = execution
        self.trades = trades
        self.ledger = ledger
        self.counters = counters

    def receive(self, message: Any) -> Any:
        if isinstance(message, Place):
            self._reply(message.request.pos_id, self._place(message.request, message.mode))
        elif isinstance(message, Cancel):
            self._cancel(message)
        elif isinstance(message, Lookup):
            self._lookup_for(message)
        elif isinstance(message, Modify):
            self._modify(message)
        else:
            return super().receive(message)
        return None

    # -- placements -----------------------------------------------------------------------------------------

    def _place(self, request: OrderRequest, mode: PlaceMode) -> PlacementResult:
        self.counters.bump("placements")
        claim = self._order_row(request, "SUBMITTING") if mode is PlaceMode.FIRST else None
        try:
            with self.storage.placement_lock(request.pos_id, self.execution.lock_timeout_seconds, claim) as claimed:
                ledger = self.ledger.get()
                submit = (mode is PlaceMode.FIRST and claimed) or (
                    mode is PlaceMode.RESEND and request.correlation_id in ledger.unsent)
                if submit:
                    result = self._submit(request)
                elif mode is PlaceMode.RESEND and request.correlation_id in ledger.settling:
                    result = self._settle(request, ledger.settling[request.correlation_id])
                else:
                    result = self._resolve(request)
        except StorageUnavailable as exc:
            if request.leg in (Leg.EXIT, Leg.STOP) and (mode is PlaceMode.FIRST or (
                    mode is PlaceMode.RESEND and request.correlation_id in self.ledger.get().unsent)):
                # An exit (or the broker-side stop, which an exit waits for) does not wait for the database:
                # this process owns the trade, and the order's correlation id is its own. The claim is not
                # written; a recovery resolves it at the broker.
                self.log.event("PLACEMENT_WITHOUT_DATABASE", f"{request.pos_id}: database unreachable ({exc}); "
                               f"the {request.leg.value.lower()} order is placed anyway", level=40, pos_id=request.pos_id,
                               correlation_id=request.correlation_id)
                return self._submit(request)
            return PlacementResult(request, Outcome.UNKNOWN, reason=f"storage unavailable: {exc}")
        except StorageError as exc:
            return PlacementResult(request, Outcome.UNKNOWN, reason=f"storage unavailable: {exc}")
        if result.outcome is Outcome.REFUSED:
            # Written once the lock's transaction committed: until then it holds the claim's orders row.
            self._record(request, "REFUSED" if submit else "NOT_PLACED")
        return result

    def _submit(self, request: OrderRequest) -> PlacementResult:
        self.counters.bump("submits")
        cid = request.correlation_id
        try:
            order = self.broker.place(request)
        except AmbiguousSubmitError as exc:
            self.counters.bump("ambiguous")
            self._mark_unsent(cid, False)  # it may have been sent: only a lookup decides
            self.log.event("ORDER_SUBMIT_AMBIGUOUS", f"{request.pos_id}: {exc}; looking it up by correlationId",
                           level=30, pos_id=request.pos_id, correlation_id=cid, leg=request.leg.value,
                           code=exc.code)
            found = self._find(request)
            if isinstance(found, BrokerOrder):
                return self._placed(request, found, "found by correlationId after an ambiguous submit")
            # Not at the broker YET: a gateway may process the request late. Never resend before the
            # settle window has passed; meanwhile the order-update stream or the next lookup may find it.
            now = self.clock.now()
            self.ledger.update(lambda ledger: ledger.with_settling(cid, now))
            return self._settling(request, now, f"ambiguous submit ({exc})")
        except PermanentBrokerError as exc:
            self.counters.bump("refused")
            self._mark_unsent(cid, False)
            self.log.event("ORDER_REFUSED", f"{request.pos_id}: broker refused the order: {exc}", level=40,
                           pos_id=request.pos_id, correlation_id=cid, leg=request.leg.value, code=exc.code)
            return PlacementResult(request, Outcome.REFUSED, reason=f"broker refused: {exc}")
        except TemporaryBrokerError as exc:
            self.counters.bump("not_sent")
            self._mark_unsent(cid, True)  # definitely not placed: ours to submit again
            return PlacementResult(request, Outcome.NOT_SENT, reason=f"{type(exc).__name__}: {exc}",
                                   retry_after=float(getattr(exc, "retry_after", 0.0) or 0.0))
        return self._placed(request, order, "accepted")

    def _settle(self, request: OrderRequest, since: float) -> PlacementResult:
        """An ambiguous submit settling: look it up; once the settle window has passed without the broker
        knowing it, it is known unsent (the trade then decides whether to send it again)."""
        found = self._find(request)
        if isinstance(found, BrokerOrder):
            return self._placed(request, found, "found by correlationId while an ambiguous submit settled")
        now = self.clock.now()
        if found is None and now - since >= self.execution.ambiguous_settle_seconds:
            self._mark_unsent(request.correlation_id, True)
            self.counters.bump("not_sent")
            self.log.event("ORDER_SUBMIT_SETTLED", f"{request.pos_id}: not at the broker {now - since:.1f} s after "
                           "an ambiguous submit: known unsent", level=30, pos_id=request.pos_id,
                           correlation_id=request.correlation_id, leg=request.leg.value)
            return PlacementResult(request, Outcome.NOT_SENT, reason="ambiguous submit never reached the broker")
        return self._settling(request, since, "still settling" if found is None else f"lookup failed: {found}")

    def _settling(self, request: OrderRequest, since: float, why: str) -> PlacementResult:
        remaining = max(0.0, self.execution.ambiguous_settle_seconds - (self.clock.now() - since))
        return PlacementResult(request, Outcome.SETTLING, reason=f"{why}; not resent before the settle window ends",
                               retry_after=min(remaining, self.execution.ambiguous_recheck_seconds))

    def _resolve(self, request: OrderRequest) -> PlacementResult:
        """The intent is claimed (earlier life, another process, a repeat): ask the broker, never resend."""
        self.counters.bump("resolved")
        found = self._find(request)
        if isinstance(found, BrokerOrder):
            return self._placed(request, found, "resolved by correlationId")
        if found is None:
            self.log.event("ORDER_NOT_AT_BROKER", f"{request.pos_id}: intent {request.correlation_id} was claimed "
                           "but the broker has no such order; not resent", level=30, pos_id=request.pos_id,
                           correlation_id=request.correlation_id)
            return PlacementResult(request, Outcome.REFUSED,
                                   reason="claimed intent with no order at the broker (not resent)")
        return PlacementResult(request, Outcome.UNKNOWN, reason=f"lookup failed: {found}")

    def _placed(self, request: OrderRequest, order: BrokerOrder, how: str) -> PlacementResult:
        # The trade writes the orders row as it takes the answer (with the journal): nothing to write here.
        self._mark_unsent(request.correlation_id, False)
        self.log.event("ORDER_SUBMITTED", f"{request.pos_id}: {request.leg} {request.side} {request.qty} "
                       f"{request.symbol} @ {request.price} {how}", pos_id=request.pos_id,
                       order_id=order.order_id, correlation_id=request.correlation_id, leg=request.leg.value,
                       status=order.status.value, limit_price=request.price)
        return PlacementResult(request, Outcome.PLACED, order=order)

    def _find(self, request: OrderRequest) -> BrokerOrder | str | None:
        """The broker's order for the correlation id, None if it has none, or the error text."""
        try:
            return self.broker.find_by_correlation_id(request.correlation_id)
        except OrderNotFound:
            return None
        except BrokerError as exc:
            self.log.event("ORDER_LOOKUP_FAILED", f"{request.pos_id}: {exc}", level=30, pos_id=request.pos_id,
                           correlation_id=request.correlation_id, code=exc.code)
            return f"{type(exc).__name__}: {exc}"

    def _mark_unsent(self, correlation_id: str, unsent: bool) -> None:
        ledger = self.ledger.get()
        if unsent != (correlation_id in ledger.unsent) or correlation_id in ledger.settling:
            self.ledger.update(lambda ledger: ledger.with_unsent(correlation_id, unsent))

    def _order_row(self, request: OrderRequest, status: str) -> OrderRecord:
        now = self.clock.now()
        return OrderRecord(correlation_id=request.correlation_id, pos_id=request.pos_id, leg=request.leg.value,
                           broker_order_id=None, status=status, qty=request.qty, filled_qty=0, avg_price=None,
                           expected_price=request.expected_price, created_at=now, updated_at=now)

    def _record(self, request: OrderRequest, status: str) -> None:
        """An orders row for a placement that ended here without an order (refused, not at the broker)."""
        try:
            self.storage.trades.record_order(self._order_row(request, status))
        except StorageError as exc:  # bookkeeping: the trade's journal is the truth
            self.log.event("ORDER_RECORD_FAILED", f"{request.pos_id}: {exc}", level=30, pos_id=request.pos_id)

    def _reply(self, pos_id: str, message: object) -> None:
        if not self.trades.deliver(pos_id, message):
            self.log.event("PLACEMENT_UNDELIVERED", f"{pos_id}: no live trade for the answer; it recovers from "
                           "the broker", level=30, pos_id=pos_id, message_type=type(message).__name__)

    # -- cancels and lookups ---------------------------------------------------------------------------------

    def _cancel(self, message: Cancel) -> None:
        self.counters.bump("cancels")
        try:
            order = self.broker.cancel(message.order_id)
            self.log.event("ORDER_CANCEL_SENT", f"{message.pos_id}: cancel {message.order_id} -> {order.status}",
                           pos_id=message.pos_id, order_id=message.order_id, leg=message.leg.value,
                           status=order.status.value)
        except (PermanentBrokerError, OrderNotFound) as exc:
            # Nothing to cancel (filled, rejected, gone): what the order IS decides what happens next.
            found = self._read_refused("ORDER_CANCEL_REFUSED", message.pos_id, message.order_id, exc)
            if found is None:
                return
            order = found
        except BrokerError as exc:
            self.log.event("ORDER_CANCEL_FAILED", f"{message.pos_id}: {exc}; the timeout monitor asks again",
                           level=30, pos_id=message.pos_id, order_id=message.order_id, code=exc.code)
            return
        self._reply(message.pos_id, Observe(order, "cancel"))

    def _modify(self, message: Modify) -> None:
        """Move the order; a refusal (filled, cancelled, over Dhan's 25 modifications) is no error: what the
        order IS then goes to the trade. A temporary failure leaves it where it was (the next move asks again)."""
        self.counters.bump("modifies")
        try:
            order = self.broker.modify(message.order_id, message.qty, message.price, message.trigger_price)
            self.log.event("ORDER_MODIFIED", f"{message.pos_id}: {message.leg} {message.order_id} -> trigger "
                           f"{message.trigger_price:g}, limit {message.price:g}", pos_id=message.pos_id,
                           order_id=message.order_id, leg=message.leg.value, trigger_price=message.trigger_price,
                           limit_price=message.price)
        except (PermanentBrokerError, OrderNotFound) as exc:
            found = self._read_refused("ORDER_MODIFY_REFUSED", message.pos_id, message.order_id, exc)
            if found is None:
                return
            order = found
        except BrokerError as exc:
            self.log.event("ORDER_MODIFY_FAILED", f"{message.pos_id}: {exc}; the stop stays where it was", level=30,
                           pos_id=message.pos_id, order_id=message.order_id, code=exc.code)
            return
        self._reply(message.pos_id, Observe(order, "modify"))

    def _read_refused(self, event: str, pos_id: str, order_id: str, exc: BrokerError) -> BrokerOrder | None:
        """The broker refused a cancel or a modify (the order filled, ended, or is gone): read what the order
        is, for the trade; None when that read fails too (logged)."""
        self.log.event(event, f"{pos_id}: {exc}; reading the order", level=30, pos_id=pos_id, order_id=order_id,
                       code=exc.code)
        try:
            return self.broker.get_order(order_id)
        except BrokerError as again:
            self.log.event("ORDER_LOOKUP_FAILED", f"{pos_id}: {again}", level=30, pos_id=pos_id)
            return None

    def _lookup_for(self, message: Lookup) -> None:
        """(the broker's order, whether the broker answered): None + answered = it does not know the order."""
        self.counters.bump("lookups")
        try:
            if message.order_id:
                try:
                    order: BrokerOrder | None = self.broker.get_order(message.order_id)
                except OrderNotFound:
                    order = self.broker.find_by_correlation_id(message.correlation_id)
            else:
                order = self.broker.find_by_correlation_id(message.correlation_id)
            answer = LookedUp(message.leg, order, True)
        except OrderNotFound:
            answer = LookedUp(message.leg, None, True)
        except BrokerError as exc:
            self.log.event("TRADE_REFRESH_FAILED", f"{message.pos_id}: broker lookup failed ({exc}); the timeout "
                           "monitor will ask again", level=30, pos_id=message.pos_id, leg=message.leg.value,
                           order_id=message.order_id, code=exc.code)
            answer = LookedUp(message.leg, None, False)
        self._reply(message.pos_id, answer)
