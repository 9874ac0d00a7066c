"""What every subtree's assembly receives from the runtime, and what it gives back.

The runtime (daemon/runtime.py) is the one composition root: it opens storage and the bus, then calls
each subtree's `assemble(...)` in dependency order, passing `Infrastructure` plus the typed handles of the
subtrees built before it. Infrastructure carries the ONE market calendar of the process (the risk guard,
the strategy, the feed's candle clock and stale gating, the chain poller and health all ask it) and, when
the process talks to Dhan, the one `TokenState` every Dhan component takes its access token from. Each assembly returns its own typed handles, carrying a `Subtree`: the child
spec of its supervisor, its health checks and status sections, and its start/stop hooks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

from actors.clock import Clock
from actors.dhan.token import TokenState
from config.settings import Settings
from core.calendar import MarketCalendar
from storage.bus import Bus
from storage.repositories import Storage
from supervision.scheduler import Scheduler
from supervision.supervisor import Backoff, ChildSpec, SupervisorHandle, supervisor_spec

__all__ = ["ContractWatch", "HealthCheck", "Infrastructure", "Subtree"]


class ContractWatch(Protocol):
    """Keeps a traded contract on the live feed while an owner (a trade's pos_id) holds it: the trading
    side calls it, the market_data side implements it (MarketDataHandles.contracts); the runtime wires
    one to the other. Idempotent per (symbol, owner); thread-safe; never blocks."""

    def watch(self, symbol: str, owner: str) -> None: ...

    def unwatch(self, symbol: str, owner: str) -> None: ...


@dataclass(frozen=True)
class HealthCheck:
    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Infrastructure:
    """Settings and the shared infrastructure, nothing global."""

    settings: Settings
    role: str
    storage: Storage
    bus: Bus
    clock: Clock
    scheduler: Scheduler
    storage_ready: threading.Event
    record_path: str = ""
    # The exchange's days and hours (config: calendar.*); switched off = every day 00:00-24:00.
    calendar: MarketCalendar = field(default_factory=MarketCalendar.always_open)
    token: TokenState | None = None  # the Dhan access token (None: this process does not talk to Dhan)

    def backoff(self, maximum: float | None = None) -> Backoff:
        s = self.settings.supervision
        ceiling = s.backoff_max_seconds if maximum is None else min(maximum, s.backoff_max_seconds)
        return Backoff(initial=s.backoff_initial_seconds, maximum=ceiling)

    def supervisor(self, name: str, spec_for_key: Callable[[Hashable], ChildSpec] | None = None) -> SupervisorHandle:
        s = self.settings.supervision
        return SupervisorHandle(name, None, spec_for_key, ask_timeout=s.ask_timeout_seconds,
                                tell_buffer=s.tell_buffer)

    def supervisor_options(self, **overrides: Any) -> dict[str, Any]:
        s = self.settings.supervision
        options: dict[str, Any] = {"max_restarts": s.max_restarts, "max_seconds": s.max_seconds,
                                   "shutdown_timeout": s.shutdown_timeout_seconds, "scheduler": self.scheduler}
        options.update(overrides)
        return options

    def supervised(self, tree: SupervisorHandle, **overrides: Any) -> ChildSpec:
        """The child spec running `tree`'s supervisor with the configured intensity."""
        return supervisor_spec(tree, **self.supervisor_options(**overrides))


@dataclass
class Subtree:
    """What a subtree contributes to the runtime besides its typed handles."""

    spec: ChildSpec  # its supervisor, a child of the root
    health: dict[str, Callable[[], HealthCheck]] = field(default_factory=dict)
    status: dict[str, Callable[[], Any]] = field(default_factory=dict)
    after_start: list[Callable[[], None]] = field(default_factory=list)
    before_stop: list[Callable[[], None]] = field(default_factory=list)
