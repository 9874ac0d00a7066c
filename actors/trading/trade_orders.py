"""The trade actor's dealings with its orders (a part of TradeActor, kept apart to keep each file short; the
actor's state lives in actors/trading/trade_actor.py): bringing the trade in line with the broker after a
restart, turning broker news and placement answers into events, retrying what could not be sent (an entry
is checked and priced again first), and asking for exits (priced from a fresh quote, the band widening with
each exit order that ended unfilled, retried after a growing pause)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from actors.trading.messages import (
    Cancel,
    LookedUp,
    Lookup,
    Outcome,
    Place,
    PlacementResult,
    PlaceMode,
    RefreshFromBroker,
    RequestExit,
    TrailMoved,
)
from actors.trading.quotes import exit_pricing
from actors.trading.trade_deps import TradeDeps
from core.instruments import InstrumentError, round_marketable_to_tick
from core.orders import BrokerOrder, Leg, OrderRequest, Side, marketable_limit
from core.protection import Guard, broker_stop_trigger
from core.risk import EntryIntent
from core.trade import (
    CANCEL_PENDING,
    ENTRY_WORKING,
    EXIT_WORKING,
    STOP_PENDING,
    STOP_WORKING,
    EntryDenied,
    Event,
    ExitRequested,
    IllegalTransition,
    OrderCancelled,
    OrderRejected,
    RaiseExitSignal,
    StopCancelRequested,
    StopMoved,
    StopRequested,
    TradeContext,
    TradeState,
    can_apply,
    correlation_of,
    entry_repricing,
    observe,
    order_id_of,
    request_for,
)
from telemetry import metrics
from telemetry.logs import EventLogger

__all__ = ["STOP_MOVES_MAX", "STOP_MOVE_MIN_PCT", "RetryPlacement", "TradeOrders"]

S = TradeState
STOP_MOVE_MIN_PCT = 0.5  # the broker-side stop follows the trail in steps of at least this (% of the trigger)
STOP_MOVES_MAX = 20  # modifications per stop order (Dhan allows 25; a few are left for an operator)


@dataclass(frozen=True)
class RetryPlacement:
    """Timer: ask the executor again for a placement it could not send (429, local rate limit), or to look
    up again an ambiguous submit that is settling (`settling`: nothing will be sent, no risk check needed)."""

    request: OrderRequest
    attempt: int
    settling: bool = False



class TradeOrders:
    """Mixed into TradeActor (which defines the state and the step machinery declared here)."""

    pos_id: str
    deps: TradeDeps
    context: TradeContext
    log: EventLogger
    placement_attempts: dict[str, int]
    signal_sent_at: float
    exit_crossed_at: float
    trail_best: float
    exit_retry_due: float | None
    deferred_exit: RequestExit | None
    actor_ref: Any

    if TYPE_CHECKING:
        def _apply(self, event: Event) -> bool: ...

        def _apply_all(self, events: list[Event], *, fresh: bool = False, order_row: BrokerOrder | None = None,
                       source: str = "") -> bool: ...

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
            # A stop's placement is resolved the same way: an ambiguous submit still settling is waited for (a
            # late-processed stop must never rest beside an exit), a known unsent one is sent again.
            resend = request.leg in (Leg.EXIT, Leg.STOP)
            self.deps.executor.tell(Place(request, PlaceMode.RESEND if resend else PlaceMode.RESOLVE))
            return
        leg = Leg.ENTRY if context.state in ENTRY_WORKING else Leg.EXIT if context.state in EXIT_WORKING else None
        if context.state is S.STOP_CANCEL_PENDING or (context.state is S.POSITION_OPEN
                                                      and context.stop_status == STOP_WORKING):
            leg = Leg.STOP  # the resting stop may have filled (or ended) while this actor was not there
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
            elif request.leg is Leg.EXIT and self.exit_crossed_at:
                metrics.protective_stop_reaction(time.perf_counter() - self.exit_crossed_at)
                self.exit_crossed_at = 0.0
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
                                           RetryPlacement(request, self.placement_attempts.get(
                                               request.correlation_id, 1), settling=True))
        else:
            self.log.event("ORDER_OUTCOME_UNKNOWN", f"{self.pos_id}: {result.reason}; resolved later by "
                           "correlationId", level=30, correlation_id=request.correlation_id, leg=request.leg.value)
            if request.leg is Leg.STOP:  # no monitor watches an open position's stop: look again ourselves
                self._check_stop_later()

    def _schedule_retry(self, request: OrderRequest, result: PlacementResult) -> None:
        execution = self.deps.execution
        attempt = self.placement_attempts.get(request.correlation_id, 1)
        if attempt >= execution.submit_attempts:
            self.log.event("ORDER_SUBMIT_FAILED", f"{self.pos_id}: {result.reason}; gave up after {attempt} "
                           "attempts", level=40, correlation_id=request.correlation_id, leg=request.leg.value, attempt=attempt)
            if request.leg in (Leg.ENTRY, Leg.STOP):  # (the position stays protected by this process)
                self._apply(OrderRejected(at=self.deps.clock.now(), leg=request.leg,
                                          reason=f"not placed after {attempt} attempts: {result.reason}"))
            return  # an exit must still happen: the timeout monitor asks again (RefreshFromBroker)
        delay = max(result.retry_after, execution.submit_retry_seconds * 2 ** (attempt - 1))
        self.log.event("ORDER_SUBMIT_DEFERRED", f"{self.pos_id}: {result.reason}; retry {attempt + 1} in "
                       f"{delay:.2f} s", level=30, correlation_id=request.correlation_id, leg=request.leg.value,
                       attempt=attempt)
        self.deps.scheduler.call_later(delay, self.deps.router.deliver, self.pos_id,
                                       RetryPlacement(request, attempt + 1))

    def _retry_placement(self, message: RetryPlacement) -> None:
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
        if context.state is S.POSITION_OPEN and context.stop_live and can_apply(context, StopCancelRequested):
            self._exit_beside_stop(message)
            return
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
        if message.crossed_at:  # (the exit that follows a stop's cancel keeps the crossing's time)
            self.exit_crossed_at = message.crossed_at
        self._apply(ExitRequested(at=self.deps.clock.now(), reason=message.reason, limit_price=priced.limit,
                                  expected_price=priced.expected))

    def _exit_beside_stop(self, message: RequestExit) -> None:
        """An exit while the broker-side stop rests: cancel the stop first (both must never sell). One being
        placed is waited for (its answer says what to cancel); the exit then goes as soon as it can."""
        if self.context.stop_status == STOP_PENDING:
            self.deferred_exit = message
            self.log.event("EXIT_SIGNAL_DEFERRED", f"{self.pos_id}: exit ({message.reason}) waits for the broker-side "
                           "stop's placement to be known", state=self.context.state.value, source=message.source)
            return
        self.exit_crossed_at = message.crossed_at
        self._apply(StopCancelRequested(at=self.deps.clock.now(), reason=message.reason))

    def _check_stop_later(self) -> None:
        """Resolve the stop's placement again later: no timeout monitor watches an open position."""
        delay = max(1.0, self.deps.execution.submit_retry_seconds * 4)
        self.deps.scheduler.call_later(delay, self.deps.router.deliver, self.pos_id, RefreshFromBroker())

    # -- the broker-side stop ---------------------------------------------------------------------------

    def _request_stop(self) -> None:
        """Rest a stop at the broker, `exits.broker_stop_pct` beyond the local stop (core.protection)."""
        context = self.context
        trigger = broker_stop_trigger(self._guard(), self.deps.broker_stop_pct)
        if trigger is None:
            return
        trigger, limit = self._stop_prices(trigger)
        if trigger > 0 and limit > 0:
            self._apply(StopRequested(at=self.deps.clock.now(), trigger_price=trigger, limit_price=limit))
        if self.context.stop_status == STOP_PENDING and context.stop_status != STOP_PENDING:
            self._check_stop_later()  # a placement answer lost with the executor must not leave it pending

    def _on_trail(self, message: TrailMoved) -> None:
        """The trailing stop's best price moved (the resting stop follows it in `_follow_trail`, after the step:
        also when the stop reaches the broker after the trail moved)."""
        long = self.context.side is Side.BUY
        if not self.trail_best or (message.best > self.trail_best if long else message.best < self.trail_best):
            self.trail_best = message.best

    def _follow_trail(self) -> None:
        """Move the resting stop when the trail takes it far enough (each move is a modification; Dhan allows
        25 per order)."""
        context = self.context
        if not self.trail_best or context.state is not S.POSITION_OPEN or context.stop_status != STOP_WORKING \
                or context.exit_reason or context.stop_moves >= STOP_MOVES_MAX:
            return
        trigger = broker_stop_trigger(self._guard(), self.deps.broker_stop_pct)
        if trigger is None:
            return
        trigger, limit = self._stop_prices(trigger)
        current = context.stop_trigger_price
        tighter = trigger > current if context.side is Side.BUY else trigger < current
        if tighter and abs(trigger - current) >= current * STOP_MOVE_MIN_PCT / 100.0:
            self._apply(StopMoved(at=self.deps.clock.now(), trigger_price=trigger, limit_price=limit))

    def _guard(self) -> Guard:
        context = self.context
        return Guard(context.side, context.avg_entry_price, context.opened_at, context.protection,
                     best=self.trail_best)

    def _stop_prices(self, trigger: float) -> tuple[float, float]:
        """The trigger on the tick (nearest) and the limit the stop works at once triggered: crossing the
        market by the widest exit band (execution.exit_band_max_pct), on the tick toward the market."""
        context, deps = self.context, self.deps
        tick = deps.tick_size(context.symbol)
        if tick:
            trigger = round(round(trigger / tick) * tick, 2)
        band = max(deps.protection_band_pct, deps.execution.exit_band_max_pct)
        limit = marketable_limit(trigger, context.exit_side, band)
        if tick and limit > 0:
            try:
                limit = round_marketable_to_tick(limit, tick, context.exit_side)
            except InstrumentError:
                pass
        return round(trigger, 2), limit

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
