"""TimeoutMonitor: watches every trade that is waiting on the broker, and nudges the ones waiting too long.

Trade actors report each state change (WatchTrade). On a timer (a fraction of
execution.order_timeout_seconds, never a sleep) the monitor looks at what has waited at least that long:
- a working order (ORDER_PLACED, EXIT_ORDER_PLACED, partial fills) -> CheckTimeout: the trade applies
  ORDER_TIMEOUT through the core, which asks for a best-effort cancel. A fill that arrives after the
  timeout still reaches the trade (the router keeps its order ids) and the core's table opens the position.
- a submit with no answer (ENTRY_PENDING, EXIT_PENDING), a cancel with no answer (*_CANCEL_PENDING) or a
  signal with no decision -> RefreshFromBroker: the trade resolves it by correlationId / order id.
A nudge is repeated every timeout period while the state does not change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from actors.clock import Clock
from actors.trading.trade_actor import CheckTimeout, OrderRouter, RefreshFromBroker, WatchTrade
from core.trade import ACTIVE_ORDER_STATES
from supervision.actor import SupervisedActor, tell_quietly
from supervision.scheduler import Scheduler, Timer
from supervision.supervisor import ChildLink

__all__ = ["MonitorState", "TimeoutMonitor"]

_ACTIVE = frozenset(state.value for state in ACTIVE_ORDER_STATES)


@dataclass(frozen=True)
class _Scan:
    pass


@dataclass
class _Watched:
    state: str
    since: float
    next_due: float


@dataclass
class MonitorState:
    """Outlives monitor restarts (trades report only on change, so a restart must not forget them)."""

    watched: dict[str, _Watched] = field(default_factory=dict)
    timeouts: int = 0
    refreshes: int = 0


class TimeoutMonitor(SupervisedActor):
    def __init__(self, link: ChildLink | None, router: OrderRouter, clock: Clock, scheduler: Scheduler,
                 timeout_seconds: float, state: MonitorState) -> None:
        super().__init__(link)
        self.router = router
        self.clock = clock
        self.scheduler = scheduler
        self.timeout = timeout_seconds
        self.state = state
        self.timer: Timer | None = None

    def started(self) -> None:
        ref = self.actor_ref
        interval = max(0.02, min(1.0, self.timeout / 5))
        self.timer = self.scheduler.call_every(interval, lambda: tell_quietly(ref, _Scan()))

    def release(self) -> None:
        if self.timer is not None:
            self.timer.cancel()

    def receive(self, message: Any) -> Any:
        if isinstance(message, WatchTrade):
            if message.done:
                self.state.watched.pop(message.pos_id, None)
            else:
                self.state.watched[message.pos_id] = _Watched(message.state, message.since,
                                                              message.since + self.timeout)
        elif isinstance(message, _Scan):
            self._scan()
        else:
            return super().receive(message)
        return None

    def _scan(self) -> None:
        now = self.clock.now()
        for pos_id, watched in list(self.state.watched.items()):
            if now < watched.next_due:
                continue
            watched.next_due = now + self.timeout
            if watched.state in _ACTIVE:
                self.state.timeouts += 1
                delivered = self.router.deliver(pos_id, CheckTimeout())
            else:
                self.state.refreshes += 1
                self.log.event("TRADE_STUCK", f"{pos_id}: {watched.state} for {now - watched.since:.1f} s; "
                               "resolving with the broker", level=30, pos_id=pos_id, state=watched.state)
                delivered = self.router.deliver(pos_id, RefreshFromBroker())
            if not delivered:
                self.state.watched.pop(pos_id, None)  # the trade is gone

