"""Read views over the running system that never ask an actor: the dashboard and the metrics scrape use
them, so a page left open (or a Prometheus scraping every few seconds) adds no message to any mailbox.

`tree(root)` walks the supervision tree through its stable handles (each child's slot is read as it is
now, the way the health check reads it); `/v1/status` answers the same from the supervisors themselves,
with an ask per supervisor.
"""

from __future__ import annotations

import time
from typing import Any

from actors.trading.assembly import TradingHandles
from config.reference import load_calendar
from core.calendar import CalendarError, MarketCalendar
from core.pnl import PnlSummary, daily_pnl
from supervision.supervisor import ChildHandle, SupervisorHandle

__all__ = ["actors", "market_clock", "tree", "trading_pnl"]


def tree(root: SupervisorHandle | None) -> dict[str, Any] | None:
    """{"id", "children": [child status + "children" for a supervisor]}, read without asking anyone."""
    if root is None:
        return None
    return {"id": root.name, "children": [_child(handle) for handle in root.children()]}


def _child(handle: ChildHandle) -> dict[str, Any]:
    status = handle.status()
    nested = handle.supervises
    if nested is not None:
        status["children"] = [_child(child) for child in nested.children()]
    return status


def actors(root: SupervisorHandle | None) -> list[dict[str, Any]]:
    """Every actor of the tree, depth first, with `parent` and `depth` (supervisors included)."""
    found: list[dict[str, Any]] = []

    def walk(node: dict[str, Any], parent: str, depth: int) -> None:
        for child in node.get("children", []):
            found.append({**{k: v for k, v in child.items() if k != "children"}, "parent": parent,
                          "depth": depth, "supervisor": "children" in child})
            walk(child, child["id"], depth + 1)

    shape = tree(root)
    if shape is not None:
        walk(shape, shape["id"], 0)
    return found


def trading_pnl(trading: TradingHandles) -> PnlSummary:
    """The live trades of this process marked to the latest quotes (no database read)."""
    contexts = trading.book.live()
    quotes = {c.symbol: q for c in contexts if (q := trading.quotes(c.symbol))}
    return daily_pnl(contexts, quotes)


class MarketClock:
    """Whether NSE is open now (the holidays file's calendar), cached per minute: the dashboard asks often."""

    def __init__(self, calendar: MarketCalendar) -> None:
        self.calendar = calendar
        self._cached: tuple[int, dict[str, Any]] | None = None

    def status(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        minute = int(now // 60)
        cached = self._cached
        if cached is not None and cached[0] == minute:
            return cached[1]
        status = self.calendar.market_status(now)
        answer = {"state": status.state, "reason": status.reason, "next_open": status.next_open}
        self._cached = (minute, answer)
        return answer


def market_clock(holidays_file: str) -> MarketClock | None:
    try:
        return MarketClock(load_calendar(holidays_file))
    except CalendarError:  # the settings check refuses a bad file at start; a view must not stop the app
        return None
