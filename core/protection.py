"""Protective exits: stop-loss, target, trailing stop and maximum holding time of one open position.

Levels are percentages of the premium (the entry's average fill price), on the side of the position:
a long (bought) position's stop lies below its entry and its target above; a short's the other way round.
The trailing stop follows the best price seen since the position opened (the highest for a long, the
lowest for a short) at `trailing_stop_pct` behind it, and only ever tightens. Whichever level a price
reaches first exits the position; the time exit fires `max_holding_minutes` after the first entry fill.

Pure: `watch` takes a `Guard` and a price and gives the next `Guard` and the exit reason, if any. The
protection monitor (actors/trading/protection.py) feeds it every tick of the traded contract; the trade
actor carries out the exit through the normal path with the reason as its exit reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from enum import StrEnum

from core.orders import Side

__all__ = [
    "NO_PROTECTION",
    "ExitReason",
    "Guard",
    "ProtectionError",
    "ProtectionRules",
    "broker_stop_trigger",
    "rule_problems",
    "time_due",
    "watch",
]


class ProtectionError(ValueError):
    """Protective exit rules that cannot be used (a negative percentage, a stop at or beyond 100%...)."""


class ExitReason(StrEnum):
    """The exit reasons of protective exits, as journaled (`ExitRequested.reason`) and in `trades.exit_reason`."""

    STOP_LOSS = "STOP_LOSS"
    TARGET = "TARGET"
    TRAILING_STOP = "TRAILING_STOP"
    TIME_EXIT = "TIME_EXIT"


@dataclass(frozen=True, slots=True)
class ProtectionRules:
    """A position's protective exits; 0 switches one off. Percentages of the premium."""

    stop_loss_pct: float = 0.0
    target_pct: float = 0.0
    trailing_stop_pct: float = 0.0
    max_holding_minutes: float = 0.0

    @property
    def enabled(self) -> bool:
        return any((self.stop_loss_pct, self.target_pct, self.trailing_stop_pct, self.max_holding_minutes))

    def merged(self, overrides: Mapping[str, float | None]) -> ProtectionRules:
        """These rules with some replaced (a signal's or a manual entry's own); None keeps the default.
        Raises ProtectionError naming every key or value that cannot be used."""
        known = {f.name for f in fields(self)}
        problems = [f"{key}: not a protective exit rule (known: {', '.join(sorted(known))})"
                    for key in overrides if key not in known]
        changes = {key: value for key, value in overrides.items() if key in known and value is not None}
        problems += rule_problems(changes)
        if problems:
            raise ProtectionError("; ".join(problems))
        return replace(self, **{key: float(value) for key, value in changes.items()})

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


NO_PROTECTION = ProtectionRules()
_SLACK = 1e-9  # relative: far below any tick (0.05 on a premium of 100 000 is 5e-7)

# A stop or trail of 100% or more would sit at or below zero for a long: it could never trigger.
_LIMITS: dict[str, tuple[float, float | None]] = {
    "stop_loss_pct": (0.0, 100.0),
    "target_pct": (0.0, None),
    "trailing_stop_pct": (0.0, 100.0),
    "max_holding_minutes": (0.0, None),
}


def rule_problems(values: Mapping[str, object]) -> list[str]:
    """What is wrong with these rule values (empty: they can be used); each problem names its key."""
    problems: list[str] = []
    for key, value in values.items():
        low, high = _LIMITS.get(key, (0.0, None))
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            problems.append(f"{key}: must be a number, got {value!r}")
        elif value < low or (high is not None and value >= high):
            bound = f">= {low:g} and < {high:g}" if high is not None else f">= {low:g}"
            problems.append(f"{key}: must be {bound} (0 = off), got {value:g}")
    return problems


@dataclass(frozen=True, slots=True)
class Guard:
    """One open position under protection: where its levels lie and the best price it has seen."""

    side: Side  # the entry side: BUY = a long position
    entry_price: float  # the average entry fill price (the premium the percentages apply to)
    opened_at: float  # epoch seconds of the first entry fill
    rules: ProtectionRules
    best: float = 0.0  # the best price seen since opening (0: none yet; the entry counts as seen)

    def __post_init__(self) -> None:
        if self.entry_price <= 0:
            raise ProtectionError(f"a guard needs the entry price, got {self.entry_price}")
        if self.best <= 0:
            object.__setattr__(self, "best", self.entry_price)

    @property
    def long(self) -> bool:
        return self.side is Side.BUY

    def _away(self, base: float, pct: float, toward_loss: bool) -> float:
        sign = -1.0 if toward_loss == self.long else 1.0
        return base * (1.0 + sign * pct / 100.0)

    @property
    def stop_level(self) -> float | None:
        pct = self.rules.stop_loss_pct
        return self._away(self.entry_price, pct, toward_loss=True) if pct else None

    @property
    def target_level(self) -> float | None:
        pct = self.rules.target_pct
        return self._away(self.entry_price, pct, toward_loss=False) if pct else None

    @property
    def trail_level(self) -> float | None:
        pct = self.rules.trailing_stop_pct
        return self._away(self.best, pct, toward_loss=True) if pct else None

    def levels(self) -> dict[str, float | None]:
        """For the log line and the status API."""
        return {"stop": _round(self.stop_level), "target": _round(self.target_level),
                "trail": _round(self.trail_level), "best": _round(self.best)}


def _round(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None


def watch(guard: Guard, price: float) -> tuple[Guard, ExitReason | None]:
    """The guard after `price` traded, and the exit it calls for (None: the position stays).

    The levels are checked against the price BEFORE the trailing stop moves: a tick that gaps far through
    the stop is a stop-loss, not a trailing exit from a level that tick itself set. When several are
    crossed at once the stop-loss wins over the trailing stop (it is the larger loss), and either over the
    target (a price cannot cross both a loss level and the target)."""
    if price <= 0:
        return guard, None
    # A price exactly at a level reaches it: 100 x 1.1 is 110.00000000000001 in floats, and a tick of 110.00
    # must not slip past a 10 % stop for it.
    def losing_through(level: float | None) -> bool:
        if level is None:
            return False
        slack = level * _SLACK
        return price <= level + slack if guard.long else price >= level - slack

    def gaining_through(level: float | None) -> bool:
        if level is None:
            return False
        slack = level * _SLACK
        return price >= level - slack if guard.long else price <= level + slack

    if losing_through(guard.stop_level):
        return guard, ExitReason.STOP_LOSS
    if losing_through(guard.trail_level):
        return guard, ExitReason.TRAILING_STOP
    if gaining_through(guard.target_level):
        return guard, ExitReason.TARGET
    improved = price > guard.best if guard.long else price < guard.best
    return (replace(guard, best=price) if improved else guard), None


def broker_stop_trigger(guard: Guard, broker_stop_pct: float) -> float | None:
    """Where the broker-side stop rests: `broker_stop_pct` beyond the local stop (the tighter of the stop-loss
    and the trailing stop), so the local stop always acts first and the broker's only when this process
    cannot. None: no stop-loss or trailing stop, or the broker-side stop is off (0)."""
    levels = [level for level in (guard.stop_level, guard.trail_level) if level is not None]
    if not levels or broker_stop_pct <= 0:
        return None
    local = max(levels) if guard.long else min(levels)
    return local * (1 - broker_stop_pct / 100.0) if guard.long else local * (1 + broker_stop_pct / 100.0)


def time_due(guard: Guard, now: float) -> bool:
    """The position has been held `max_holding_minutes` (counted from the first entry fill)."""
    minutes = guard.rules.max_holding_minutes
    return bool(minutes) and now - guard.opened_at >= minutes * 60.0
