"""TimeoutMonitor: the trading side's clock. It nudges trades that wait too long, and sweeps at square-off.

Trade actors report each state change (`WatchTrade`). On a timer (a fraction of
execution.order_timeout_seconds, never a sleep) the monitor looks at what has waited at least that long:
- a working order (ORDER_PLACED, EXIT_ORDER_PLACED, partial fills) -> CheckTimeout: the trade applies
  ORDER_TIMEOUT through the core, which asks for a best-effort cancel. A fill that arrives after the
  timeout still reaches the trade (the router keeps its order ids) and the core's table opens the position.
- a submit with no answer (ENTRY_PENDING, EXIT_PENDING), a cancel with no answer (*_CANCEL_PENDING) or a
  signal with no decision -> RefreshFromBroker: the trade resolves it by correlationId / order id.
A nudge is repeated every timeout period while the state does not change.

Every execution.square_off_check_seconds it also sweeps: when the risk guard says every position must go
(the square-off time, a flatten), each exitable trade of the book is told `RequestExit`.

Crash-only: what it watches is rebuilt from the trade book when it starts; only its counters outlive it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from actors.clock import Clock
from actors.trading.book import TradeBook
from actors.trading.messages import (
    CancelEntry,
    CheckTimeout,
    RefreshFromBroker,
    RequestExit,
    TradeAddresses,
    WatchTrade,
)
from actors.trading.risk_guard import RiskGuard
from core.trade import ACTIVE_ORDER_STATES, CANCEL_PENDING, ENTRY_WORKING, EXITABLE, TradeState
from supervision.actor import SupervisedActor, tell_quietly
from supervision.scheduler import Scheduler, Timer
from supervision.store import Store
from supervision.supervisor import ChildLink

__all__ = ["MonitorCounters", "TimeoutMonitor"]

_ACTIVE = frozenset(state.value for state in ACTIVE_ORDER_STATES)


@dataclass(frozen=True)
class _Scan:
    pass


@dataclass(frozen=True)
class _Sweep:
    pass


@dataclass
class _Watched:
    state: str
    since: float
    next_due: float


@dataclass(frozen=True)
class MonitorCounters:
    watched: int = 0
    timeouts: int = 0
    refreshes: int = 0
    sweeps: int = 0


class TimeoutMonitor(SupervisedActor):
    def __init__(self, link: ChildLink | None, trades: TradeAddresses, book: TradeBook, risk: RiskGuard,
                 clock: Clock, scheduler: Scheduler, timeout_seconds: float, sweep_seconds: float,
                 counters: Store[MonitorCounters]) -> None:
        super().__init__(link)
        self.trades = trades
        self.book = book
        self.risk = risk
        self.clock = clock
        self.scheduler = scheduler
        self.timeout = timeout_seconds
        self.sweep_seconds = sweep_seconds
        self.counters = counters
        self.watched: dict[str, _Watched] = {}
        self.sweep_announced = ""  # the reason last announced by a sweep (logged once)
        self.flatten_done = ""  # the flatten whose end was announced (FLATTEN_DONE, once)
        self.timers: list[Timer] = []

    def started(self) -> None:
        for context in self.book.live():  # trades report only on change: take what they are now
            if context.state is not TradeState.POSITION_OPEN:
                since = context.entry_placed_at or context.exit_placed_at or context.updated_at
                self._watch(WatchTrade(context.pos_id, context.state.value, since))
        ref = self.actor_ref
        interval = max(0.02, min(1.0, self.timeout / 5))
        self.timers = [self.scheduler.call_every(interval, lambda: tell_quietly(ref, _Scan())),
                       self.scheduler.call_every(self.sweep_seconds, lambda: tell_quietly(ref, _Sweep()))]

    def release(self) -> None:
        for timer in self.timers:
            timer.cancel()

    def receive(self, message: Any) -> Any:
        if isinstance(message, WatchTrade):
            self._watch(message)
        elif isinstance(message, _Scan):
            self._scan()
        elif isinstance(message, _Sweep):
            self._sweep()
        else:
            return super().receive(message)
        return None

    def _watch(self, message: WatchTrade) -> None:
        if message.done:
            self.watched.pop(message.pos_id, None)
        else:
            self.watched[message.pos_id] = _Watched(message.state, message.since, message.since + self.timeout)
        if self.counters.get().watched != len(self.watched):
            count = len(self.watched)
            self.counters.update(lambda c: MonitorCounters(count, c.timeouts, c.refreshes, c.sweeps))

    def _scan(self) -> None:
        now = self.clock.now()
        for pos_id, watched in list(self.watched.items()):
            if now < watched.next_due:
                continue
            watched.next_due = now + self.timeout
            if watched.state in _ACTIVE:
                self.counters.bump("timeouts")
                delivered = self.trades.deliver(pos_id, CheckTimeout())
            else:
                self.counters.bump("refreshes")
                self.log.event("TRADE_STUCK", f"{pos_id}: {watched.state} for {now - watched.since:.1f} s; "
                               "resolving with the broker", level=30, pos_id=pos_id, state=watched.state)
                delivered = self.trades.deliver(pos_id, RefreshFromBroker())
            if not delivered:
                self.watched.pop(pos_id, None)  # the trade is gone

    def _sweep(self) -> None:
        """Square-off time or a flatten (this process's, another's, or a daily loss breach's): every exitable
        trade is told to exit (each decides if it applies)."""
        risk = self.risk.refresh()
        if risk.kill_switch_engaged:  # entries stop, also those already working at the broker
            for context in self.book.live():
                if context.state in ENTRY_WORKING - CANCEL_PENDING:
                    self.trades.deliver(context.pos_id, CancelEntry(risk.kill_switch_reason))
        reason = self.risk.exit_all_reason(self.clock.now())
        if not reason:
            self.sweep_announced = self.flatten_done = ""
            return
        source = "flatten" if reason.startswith("FLATTEN") else "square_off"
        live = self.book.live()
        exitable = [c.pos_id for c in live if c.state in EXITABLE and not c.exit_reason]
        if reason != self.sweep_announced or exitable:
            self.counters.bump("sweeps")
            self.log.event("SQUARE_OFF" if source == "square_off" else "FLATTEN",
                           f"exiting {len(exitable)} positions: {reason}", reason=reason, positions=exitable)
            self.sweep_announced = reason
        if source == "flatten" and not live and self.flatten_done != reason:
            self.flatten_done = reason  # once per flatten: the operator is told the book is empty
            self.log.event("FLATTEN_DONE", f"flatten complete: no open position ({reason})", reason=reason)
        for pos_id in exitable:
            self.trades.deliver(pos_id, RequestExit(reason, source))
