"""The market-data source interface (sim, replay, dhan).

A source produces ticks on its own thread and hands them over in batches: batching across the actor
boundary is what lets ingest go past one-message-per-tick (~35k ticks/s through three actors here).
The feed actor owns the source; a source reports a failure through `on_error` (the feed actor then
crashes and its supervisor restarts it with backoff) and the end of a finite input through `on_finished`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from core.market import Tick

__all__ = ["ContractSubscriber", "SourceCallbacks", "SourceStatus", "TickSource"]

TickSink = Callable[[Sequence[Tick]], None]


@dataclass
class SourceCallbacks:
    on_ticks: TickSink
    on_error: Callable[[BaseException], None]
    on_finished: Callable[[], None] = lambda: None
    # Called with (symbol, connected?) style status changes: websocket up/down, fallback polling on/off.
    on_status: Callable[[str, str], None] = lambda event, detail: None


@dataclass
class SourceStatus:
    name: str
    connected: bool = False
    finished: bool = False
    ticks: int = 0
    reconnects: int = 0
    detail: dict[str, object] = field(default_factory=dict)


class TickSource(Protocol):
    name: str

    def start(self, callbacks: SourceCallbacks) -> None:
        """Begin producing on the source's own daemon thread; return at once."""

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the thread to end and wait up to timeout; idempotent."""

    def status(self) -> SourceStatus: ...


@runtime_checkable
class ContractSubscriber(Protocol):
    """A source that can add instruments while it runs (the contracts positions are held in).

    Dhan subscribes them on the running websocket; the simulator walks them from the price given (the
    contract's last known price). A source without this (a replay) plays what its file holds."""

    def watch(self, symbols: Sequence[str], prices: Mapping[str, float]) -> list[str]:
        """Start ticking these symbols; returns those accepted (a full connection refuses the rest).
        Called from the feed actor's thread; may be called before `start`."""
        ...

    def unwatch(self, symbols: Sequence[str]) -> None:
        """Stop ticking these symbols (ones it never watched are ignored)."""
        ...
