"""Reconciler: start-up adoption of open trades, then broker vs book every reconcile.interval_seconds.

Start-up (before any entry is allowed): load the risk state, re-create a trade actor for every open
pos_id in `trades` (each rebuilds from its journal and reconciles its own orders with the broker), wait
until they have, then run the first pass. The executor refuses entries until that pass has completed.

A pass:
1. Missed fills: every broker order owned by a live trade whose state the trade has not seen yet (more
   filled, or ended while the trade thinks it works) is handed to that trade as `Observe` -- the trade
   applies it through the core, as events. Nothing is ever invented: only broker snapshots are observed.
2. Positions, from the broker's side: per instrument, its net quantity against the open quantity of the
   live trades (every process's, from the trades table; this process's book is fresher). Historical fills
   explain nothing: units beyond the live trades are orphans (a duplicate order, a late fill on a rejected
   or cancelled entry, a trade whose journal became unreadable) -- an incident that holds entries.
3. The book, from our side: each live trade's open quantity against the net fills of its own orders at
   the broker -- more in the book is a trade the broker does not know; less is fills the trade has not
   taken. Either difference must persist (max(0.5 s, one interval, up to 2 s), and for a trade without
   it moving on) before it is an incident: fills in flight settle first.
4. An incident: RECONCILE_INCIDENT logged once, and a reconciliation hold (entries halted, exits
   allowed) until an operator acknowledges (POST /v1/control/reconcile/ack). Acknowledging accepts the
   differences as they are now: the same difference does not raise again, a new one does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from actors.brokers.base import Broker, BrokerError
from actors.clock import Clock
from actors.trading.book import OrderRouter, TradeBook
from actors.trading.leases import TradeLeases
from actors.trading.messages import AdoptPosition, LeaseLost, Observe
from actors.trading.reconcile_state import RECONCILE_STATE_KEY, ReconcileState
from actors.trading.risk_guard import RiskGuard
from core.orders import BrokerOrder, BrokerPosition, Side, correlation_id_matches
from core.risk import ist_day
from core.trade import ENDED_WITHOUT_POSITION, TradeState, order_news
from storage.errors import StorageError
from storage.repositories import Storage
from supervision.actor import SupervisedActor, tell_quietly
from supervision.scheduler import Scheduler, Timer
from supervision.supervisor import ChildLink, SupervisorHandle
from telemetry.logs import incident_id

__all__ = ["ReconcileDeps", "Reconciler", "UnroutedUpdate"]

CONFIRM_MIN_SECONDS = 0.5  # a difference must persist this long (or one interval, up to 2 s) to count
RECOVERY_WAIT_SECONDS = 15.0  # longest the first pass waits for adopted trades to finish recovering
S = TradeState
_NO_POSITION = frozenset(state.value for state in ENDED_WITHOUT_POSITION)


@dataclass(frozen=True)
class ReconcileDeps:
    storage: Storage
    broker: Broker
    clock: Clock
    risk: RiskGuard
    book: TradeBook
    router: OrderRouter
    trades: SupervisorHandle  # adoption creates trade actors
    ready: threading.Event  # set by the first passed reconciliation
    storage_ready: threading.Event
    adopt: Callable[[AdoptPosition], bool]  # the desk: orphaned units become a trade to exit
    flatten_orphans: bool
    leases: TradeLeases
    lease_renew_seconds: float


@dataclass(frozen=True)
class _Heartbeat:
    """Timer: renew this process's trade leases (and adopt what expired elsewhere)."""


@dataclass(frozen=True)
class UnroutedUpdate:
    """An order update no live trade claimed (from the router): the reconciler judges it."""

    order: BrokerOrder


@dataclass(frozen=True)
class _Startup:
    pass


@dataclass(frozen=True)
class _Pass:
    confirm: bool = False


class Reconciler(SupervisedActor):
    def __init__(self, link: ChildLink | None, deps: ReconcileDeps, scheduler: Scheduler, interval_seconds: float,
                 state: ReconcileState) -> None:
        super().__init__(link)
        self.deps = deps
        self.ready = deps.ready
        self.storage_ready = deps.storage_ready
        self.scheduler = scheduler
        self.interval = interval_seconds
        self.state = state
        self.timer: Timer | None = None
        self.heartbeat: Timer | None = None
        self.confirm_after = max(CONFIRM_MIN_SECONDS, min(2.0, interval_seconds))
        self.positions: dict[str, BrokerPosition] = {}

    def started(self) -> None:
        ref = self.actor_ref
        self.timer = self.scheduler.call_every(self.interval, lambda: tell_quietly(ref, _Pass()))
        self.heartbeat = self.scheduler.call_every(self.deps.lease_renew_seconds,
                                                   lambda: tell_quietly(ref, _Heartbeat()))
        ref.tell(_Startup())

    def release(self) -> None:
        for timer in (self.timer, self.heartbeat):
            if timer is not None:
                timer.cancel()

    def receive(self, message: Any) -> Any:
        if isinstance(message, _Startup):
            self._startup()
        elif isinstance(message, _Pass):
            self._pass(message.confirm)
        elif isinstance(message, UnroutedUpdate):
            self._unrouted(message.order)
        elif isinstance(message, _Heartbeat):
            self._heartbeat()
        else:
            return super().receive(message)
        return None

    # -- start-up ----------------------------------------------------------------------------------------

    def _later(self, delay: float, message: Any) -> None:
        ref = self.actor_ref
        self.scheduler.call_later(delay, lambda: tell_quietly(ref, message))

    def _startup(self) -> None:
        if self.state.started_up:
            self.actor_ref.tell(_Pass())
            return
        if not self.storage_ready.is_set():
            self._later(0.1, _Startup())
            return
        deps = self.deps
        try:
            if not deps.risk.loaded:
                deps.risk.load()
            stored = deps.storage.bot_state.get(RECONCILE_STATE_KEY) or {}
            denied = {t.pos_id for t in deps.storage.trades.list_trades(state=S.DENIED.value)}
            # Only the trades nobody else manages (no lease, an expired one, or ours: a restart under the same
            # owner takes its own back at once); another live process's trades stay its own.
            adoptable = [p for p in deps.leases.adoptable() if p not in denied]
            elsewhere = [p for p in deps.storage.trades.open_pos_ids() if p not in denied and p not in adoptable]
            pos_ids = [p for p in adoptable if deps.leases.claim(p)]
        except StorageError as exc:
            self.log.event("RECONCILE_STARTUP_DEFERRED", f"storage unavailable: {exc}", level=30)
            self._later(0.5, _Startup())
            return
        with self.state.lock:
            self.state.accepted = {str(k): int(v) for k, v in (stored.get("accepted") or {}).items()}
            self.state.adopted = pos_ids
            self.state.adopted_at = deps.clock.monotonic()
            self.state.started_up = True
        deps.book.await_recovery(pos_ids)
        for pos_id in pos_ids:
            deps.trades.ensure_child(pos_id)
        self.log.event("RECONCILE_STARTUP", f"adopting {len(pos_ids)} open trades before the first pass"
                       f"{f'; {len(elsewhere)} managed by other processes' if elsewhere else ''}",
                       adopted=pos_ids, managed_elsewhere=elsewhere, owner=deps.leases.owner)
        self.actor_ref.tell(_Pass())

    # -- leases ---------------------------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        """Renew our leases; let go of a trade another process took over; adopt the trades of a process that
        stopped renewing (killed, cut off) once their leases have expired."""
        deps = self.deps
        if not self.state.started_up:
            return
        try:
            mine = deps.leases.renew()
            running = {context.pos_id for context in deps.book.contexts() if not context.is_terminal}
            for pos_id in sorted(running - mine):
                owner = deps.leases.owner_of(pos_id)
                if owner is None or owner == deps.leases.owner:
                    deps.leases.claim(pos_id)  # a trade from before leases, or one whose lease went: ours again
                else:
                    deps.router.deliver(pos_id, LeaseLost(owner))
            orphaned = [p for p in deps.leases.adoptable() if p not in running and p not in mine]
            taken = [p for p in orphaned if deps.leases.claim(p)]
        except StorageError as exc:
            self.log.event("LEASE_RENEWAL_FAILED", f"leases not renewed: {exc}", level=30, owner=deps.leases.owner)
            return
        if taken:
            self.log.event("TRADES_ADOPTED", f"adopting {len(taken)} trades whose owner stopped renewing their "
                           "leases", level=40, adopted=taken, owner=deps.leases.owner)
            deps.book.await_recovery(taken)
            for pos_id in taken:
                deps.trades.ensure_child(pos_id)

    # -- passes ---------------------------------------------------------------------------------------------

    def _pass(self, confirm: bool) -> None:
        state = self.state
        deps = self.deps
        if not state.started_up:
            return
        if not self.ready.is_set() and not confirm:
            waited = deps.clock.monotonic() - state.adopted_at
            if not deps.book.all_recovered() and waited < RECOVERY_WAIT_SECONDS:
                self._later(0.05, _Pass())
                return
        try:
            differences = self._compare()
        except (BrokerError, StorageError) as exc:
            with state.lock:
                state.failures += 1
                state.last_error = f"{type(exc).__name__}: {exc}"
            self.log.event("RECONCILE_FAILED", f"pass failed: {exc}", level=30, first=not self.ready.is_set())
            if not self.ready.is_set():
                self._later(min(1.0, self.interval), _Pass())
            return
        now = deps.clock.now()
        with state.lock:
            state.passes += 1
            state.last_pass_at = now
            state.last_error = ""
            # A difference is confirmed when it is still there `confirm_after` seconds after first seen
            # (a regular pass right after the first sighting does not count: fills may be in flight).
            moment = deps.clock.monotonic()
            seen = {k: state.first_seen.get(k, moment) for k in differences}
            confirmed = {k: d for k, d in differences.items() if moment - seen[k] >= self.confirm_after}
            fresh = {k: d for k, d in differences.items() if k not in confirmed}
            state.first_seen = seen
            new_incidents = {k: {**d, "incident_id": incident_id("RECONCILE_INCIDENT", k, now)}
                             for k, d in confirmed.items() if k not in state.incidents}
            state.incidents.update(new_incidents)
        for incident in new_incidents.values():
            self.log.event("RECONCILE_INCIDENT", incident["detail"], level=40, **incident)
        if new_incidents:
            kinds = sorted({d["kind"] for d in new_incidents.values()})
            deps.risk.set_reconciliation_hold(True, f"reconciliation: {', '.join(kinds)} (acknowledge with POST "
                                                    "/v1/control/reconcile/ack)")
        if deps.flatten_orphans and confirmed:
            self._flatten_orphans(confirmed, now)
        if fresh:
            wait = max(0.01, self.confirm_after - min(moment - seen[k] for k in fresh))
            self._later(wait, _Pass(confirm=True))  # confirm (or clear) the suspicion soon
            return
        if not self.ready.is_set():
            self.ready.set()
            self.log.event("RECONCILE_STARTUP_PASSED", "first reconciliation passed: entries allowed (risk "
                           "guard permitting)", incidents=len(state.incidents), adopted=len(state.adopted))
        deps.risk.flush()

    def _flatten_orphans(self, confirmed: dict[str, dict[str, Any]], now: float) -> None:
        """At square-off (or a flatten), units the broker holds beyond the live trades are taken on by a new
        trade each and exited through the normal path. Before then they only hold entries: an operator may
        want to look first."""
        reason = self.deps.risk.exit_all_reason(now)
        if not reason:
            return
        for difference in confirmed.values():
            symbol, units = difference.get("symbol"), int(difference.get("difference", 0))
            if not symbol or not units:
                continue
            position = self.positions.get(symbol)
            price = (position.buy_avg if units > 0 else position.sell_avg) if position is not None else 0.0
            pos_id = f"ORPHAN-{symbol}-{ist_day(now).replace('-', '')}-{abs(units)}"
            self.log.event("RECONCILE_ORPHAN_ADOPTED", f"{symbol}: {units:+d} units no live trade explains are "
                           f"taken on as {pos_id} and exited ({reason})", level=30, symbol=symbol, units=units,
                           pos_id=pos_id, reason=reason)
            self.deps.adopt(AdoptPosition(pos_id, symbol, Side.BUY if units > 0 else Side.SELL, abs(units),
                                          price or 0.0, f"orphan: {difference.get('detail', '')}"))

    def _compare(self) -> dict[str, dict[str, Any]]:
        """Differences keyed by what they are about (the same difference, the same key)."""
        deps = self.deps
        positions = deps.broker.positions()
        self.positions = {p.symbol: p for p in positions}
        orders = deps.broker.orders()
        self._apply_missed(orders)
        broker_net: dict[str, int] = {}
        for position in positions:
            broker_net[position.symbol] = broker_net.get(position.symbol, 0) + position.net_qty
        # What our live trades hold, by instrument (every process's, from the trades table; this process's
        # own book is fresher). A closed, rejected or cancelled trade explains nothing: units the broker
        # holds beyond the live trades are orphans (a duplicate order, a late fill, an unreadable journal).
        explained: dict[str, int] = {}
        for symbol, signed in self._live_positions():
            explained[symbol] = explained.get(symbol, 0) + signed
        # Each live trade's own orders at the broker: what they filled, for the per-trade check below.
        per_trade: dict[str, int] = {}
        states = self._trade_states()
        for order in orders:
            if not order.filled_qty:
                continue
            pos_id = self._owner(order)
            if pos_id is None or self._state_of(pos_id, states) in _NO_POSITION:
                continue
            signed = order.filled_qty if order.side is Side.BUY else -order.filled_qty
            per_trade[pos_id] = per_trade.get(pos_id, 0) + signed
        differences: dict[str, dict[str, Any]] = {}
        with self.state.lock:
            accepted = self.state.accepted
            for symbol in sorted(set(broker_net) | set(explained)):
                held, booked = broker_net.get(symbol, 0), explained.get(symbol, 0)
                difference = held - booked
                if difference == 0:
                    accepted.pop(symbol, None)  # settled: an accepted difference no longer applies
                    continue
                if accepted.get(symbol) == difference:
                    continue
                if booked and held * booked >= 0 and abs(held) < abs(booked):
                    continue  # the broker holds less than the live trades: the per-trade check names them
                kind = "BROKER_POSITION_WITHOUT_TRADE" if booked == 0 else "POSITION_MISMATCH"
                differences[f"{kind}:{symbol}:{difference}"] = {
                    "kind": kind, "symbol": symbol, "broker_qty": held, "book_qty": booked,
                    "difference": difference,
                    "detail": f"{symbol}: broker holds {held}, live trades hold {booked} "
                              f"({kind.replace('_', ' ').lower()})"}
        for context in deps.book.contexts():
            if context.is_terminal:
                continue
            at_broker = per_trade.get(context.pos_id, 0)
            in_book = context.open_qty if context.side is Side.BUY else -context.open_qty
            if at_broker == in_book:
                continue
            # The trade's seq is in the key: a trade still moving (fills being applied) is not a difference.
            if abs(in_book) > abs(at_broker) or in_book * at_broker < 0:
                kind, what = "TRADE_UNKNOWN_TO_BROKER", "the broker's orders do not hold them"
            else:
                kind, what = "POSITION_MISMATCH", "the trade has not taken the broker's fills"
            differences[f"{kind}:{context.pos_id}:{context.seq}:{at_broker - in_book}"] = {
                "kind": kind, "pos_id": context.pos_id, "traded_symbol": context.symbol, "book_qty": in_book,
                "broker_qty": at_broker,
                "detail": f"{context.pos_id}: the book holds {in_book} {context.symbol}, its orders at the broker "
                          f"{at_broker}: {what}"}
        return differences

    def _live_positions(self) -> list[tuple[str, int]]:
        """(symbol, signed open qty) of every live trade: the trades table, overlaid by this process's book."""
        live = {row.pos_id: (row.symbol, _signed(row.side, int(row.detail.get("open_qty", row.filled_qty or 0))))
                for row in self.deps.storage.trades.open_trades()}
        for context in self.deps.book.contexts():
            if context.is_terminal:
                live.pop(context.pos_id, None)
            else:
                live[context.pos_id] = (context.symbol, _signed(context.side.value, context.open_qty))
        return list(live.values())

    def _trade_states(self) -> dict[str, str]:
        """pos_id -> state of today's trades (one query a pass); live contexts win (they are fresher)."""
        trades = self.deps.storage.trades
        states = {t.pos_id: t.state for t in trades.list_trades(day=ist_day(self.deps.clock.now()))}
        states.update({c.pos_id: c.state.value for c in self.deps.book.contexts()})
        return states

    def _state_of(self, pos_id: str, states: dict[str, str]) -> str | None:
        state = states.get(pos_id)
        if state is None:
            row = self.deps.storage.trades.get_trade(pos_id)  # an older trade (opened another day)
            state = row.state if row is not None else None
            if state is not None:
                states[pos_id] = state
        return state

    def _owner(self, order: BrokerOrder) -> str | None:
        """The pos_id whose order this is: live trades, then the orders table (any process), then the
        readable form of the correlation id ("<pos_id>-E", "<pos_id>-X2") checked against the trades."""
        pos_id = self.deps.router.pos_id_for(order)
        cid = order.correlation_id
        if pos_id is not None or not cid:
            return pos_id
        cache = self.state.owners
        if cid in cache:
            return cache[cid]
        trades = self.deps.storage.trades
        record = trades.order(cid)
        if record is not None:
            pos_id = record.pos_id
        else:
            stem = cid.rpartition("-")[0]
            if stem and correlation_id_matches(stem, cid) and trades.get_trade(stem) is not None:
                pos_id = stem
        if pos_id is not None:
            cache[cid] = pos_id  # an order's owner never changes
        return pos_id

    def _apply_missed(self, orders: list[BrokerOrder]) -> None:
        deps = self.deps
        for order in orders:
            pos_id = deps.router.pos_id_for(order)
            context = deps.book.get(pos_id) if pos_id is not None else None
            if pos_id is None or context is None:
                continue
            news, missed_fill = order_news(context, order)
            if not news or not deps.router.deliver(pos_id, Observe(order, "reconcile")):
                continue
            if missed_fill:
                with self.state.lock:
                    self.state.missed_fills += 1
                self.log.event("RECONCILE_MISSED_FILL", f"{pos_id}: broker order {order.order_id} is "
                               f"{order.status} {order.filled_qty}/{order.qty}; the trade had not seen it",
                               level=30, pos_id=pos_id, order_id=order.order_id,
                               correlation_id=order.correlation_id, filled_qty=order.filled_qty)


    def _unrouted(self, order: BrokerOrder) -> None:
        """A broker update no live trade here claimed: a trade of this process that is not running right now
        takes it when it starts (the router keeps it); anything else is judged by the passes."""
        try:
            pos_id = self._owner(order) if order.correlation_id else None
        except StorageError:
            pos_id = None  # the next pass reads the orders table again
        if pos_id is not None and self.deps.router.deliver(pos_id, Observe(order)):
            return
        self.log.event("ORDER_UPDATE_UNMATCHED", f"order {order.order_id} ({order.correlation_id or 'no cid'}) "
                       f"{order.status}: no live trade here; the reconciliation passes will judge it", level=10,
                       order_id=order.order_id, correlation_id=order.correlation_id, pos_id=pos_id,
                       status=order.status.value, filled_qty=order.filled_qty)


def _signed(side: str, qty: int) -> int:
    return qty if side == Side.BUY.value else -qty
