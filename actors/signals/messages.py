"""The signals subtree's protocol: what reaches the strategy, and what it needs from the rest of the system.

In: closed candles (`CandlesClosed`, from the bus or the MDS client), feed status (`FeedStatusChanged`),
the trader's verdicts (`PositionClosed`), replays' end of input (`InputEnded`), and `Drain` (ask).
Out: EntrySignalRaised / ExitSignalRaised to a `SignalSink` (the trading subtree's desk in a trader).
What the strategy reads from elsewhere is typed here and handed in by the runtime: a `MarketView` for option
chains, a `RiskView` of the trader's risk guard, a `PositionsView` of its live trades.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from core.market import Candle
from core.risk import RiskLimits, RiskState
from core.signals import EntrySignalRaised, ExitSignalRaised, Signal

__all__ = [
    "CandlesClosed",
    "DecisionGate",
    "Drain",
    "FeedStatusChanged",
    "InputEnded",
    "MarketView",
    "PositionClosed",
    "PositionsView",
    "RecordingSink",
    "RiskView",
    "SignalSink",
]


@dataclass(frozen=True)
class CandlesClosed:
    """Closed 1-minute candles of one symbol, oldest first. history: warm-up only (scored, not traded)."""

    symbol: str
    candles: tuple[Candle, ...]
    history: bool = False


@dataclass(frozen=True)
class FeedStatusChanged:
    event: str  # FEED_STALE | FEED_RESUMED | FEED_FINISHED
    symbol: str  # "*" = every symbol
    at: float


@dataclass(frozen=True)
class PositionClosed:
    """The trader's outcome for a position the strategy opened (closed, denied, rejected)."""

    pos_id: str
    reason: str = ""


@dataclass(frozen=True)
class Drain:
    """Ask: answered once every message told before it was handled; returns the strategy's counters."""


@dataclass(frozen=True)
class InputEnded:
    """Replays: every candle has been delivered (the merge may release what it still holds)."""


class SignalSink(Protocol):
    """Where signals go: the trading desk (it takes EntrySignalRaised / ExitSignalRaised)."""

    def tell(self, signal: EntrySignalRaised | ExitSignalRaised) -> bool: ...


class DecisionGate(Protocol):
    """Replays only: hold the next candle's decision until the trader has settled the signals just sent."""

    def passed(self, signals: Sequence[Signal]) -> None: ...

    def open(self) -> bool: ...

    def take_finished(self) -> list[str]:
        """pos_ids of entries the trader settled without a position (denied, rejected): no longer held."""


class MarketView(Protocol):
    def option_chain(self, symbol: str) -> Mapping[str, Any] | None: ...


RiskView = Callable[[], tuple[RiskState, RiskLimits]]  # the trader's risk guard: its state and limits now
PositionsView = Callable[[], Mapping[str, tuple[str, int]]]  # pos_id -> (underlying, direction), live trades


class RecordingSink:
    """Stands in for the trading desk when none is assembled (tests, a strategy-only run): records signals."""

    def __init__(self) -> None:
        self.signals: list[Signal] = []
        self._cond = threading.Condition()

    def tell(self, signal: EntrySignalRaised | ExitSignalRaised) -> bool:
        with self._cond:
            self.signals.append(signal)
            self._cond.notify_all()
        return True

    def wait_for(self, predicate: Callable[[list[Signal]], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.signals), timeout)
