"""TradingApi: what the control API calls. Thread-safe; never blocks an actor; every wait has a deadline.

Reads come from the trade book (live trades of this process), the `trades` table and `trade_events`
journal (everything else), the risk guard and the reconciler's state. Writes go the way a strategy's
would: a manual entry is told to the executor (same risk guard, same placement fence) with a future the
executor completes as soon as it has decided; an exit is told to the trade actor; the kill switch, a
flatten and a reconciliation acknowledgement act on the risk guard at once (they must work while the
executor is busy with a slow broker).
"""

from __future__ import annotations

import dataclasses
import re
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from actors.trading.executor import EntryDecision, EntryOrder, ExecutorState, FlattenAll, ManualEntry
from actors.trading.reconciler import ReconcileState, acknowledge
from actors.trading.timeout_monitor import MonitorState
from actors.trading.trade_actor import RequestExit, TraderDeps
from core.orders import Side
from core.pnl import daily_pnl
from core.risk import ist_day
from core.trade import ExitRequested, TradeState, can_apply
from storage.records import TERMINAL_TRADE_STATES, TradeEventRecord, TradeRecord
from supervision.supervisor import ChildHandle

__all__ = [
    "ManualEntryRequest",
    "TradeConflict",
    "TradeNotFound",
    "TradingApi",
    "TradingUnavailable",
]

POS_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}"
_TERMINAL = TERMINAL_TRADE_STATES | {TradeState.DENIED.value}


class TradeNotFound(Exception):
    """No trade with this pos_id."""


class TradeConflict(Exception):
    """The trade exists but the request does not apply to it now (closed, not run by this process)."""


class TradingUnavailable(Exception):
    """The trading actors cannot answer now (starting, restarting, busy past the deadline): retry later."""


@dataclass(frozen=True)
class ManualEntryRequest:
    pos_id: str
    symbol: str
    side: Side
    qty: int
    price: float | None = None
    reason: str = "manual entry"


class TradingApi:
    def __init__(self, deps: TraderDeps, executor: ChildHandle, ready: threading.Event,
                 reconcile: ReconcileState, executor_state: ExecutorState, monitor_state: MonitorState,
                 lot_sizes: dict[str, int], answer_timeout: float) -> None:
        self.deps = deps
        self.executor = executor
        self.ready = ready
        self.reconcile = reconcile
        self.executor_state = executor_state
        self.monitor_state = monitor_state
        self.lot_sizes = dict(lot_sizes)
        self.answer_timeout = answer_timeout

    # -- reads ---------------------------------------------------------------------------------------------

    def positions(self) -> dict[str, Any]:
        """Open positions (and entries still working) of this process, marked to the latest quotes."""
        contexts = [c for c in self.deps.book.contexts() if not c.is_terminal]
        quotes: dict[str, float] = {}
        for context in contexts:
            quote = self.deps.quotes(context.symbol)
            if quote:
                quotes[context.symbol] = quote
        summary = daily_pnl(contexts, quotes)
        rows = []
        for c in sorted(contexts, key=lambda c: c.signal_at):
            mark = quotes.get(c.symbol)
            direction = 1 if c.side is Side.BUY else -1
            rows.append({
                "pos_id": c.pos_id, "symbol": c.symbol, "instrument": c.instrument, "side": c.side.value,
                "state": c.state.value, "qty": c.qty, "open_qty": c.open_qty, "avg_entry_price": c.avg_entry_price,
                "mark": mark, "unrealized_pnl": None if mark is None or not c.open_qty else
                round(direction * (mark - c.avg_entry_price) * c.open_qty, 2),
                "realized_pnl": round(c.realized_pnl, 2), "opened_at": c.opened_at or None,
                "exit_reason": c.exit_reason or None})
        return {"positions": rows, "summary": summary.as_dict(), "realized_today": self.realized_today()}

    def realized_today(self) -> float:
        """Realized P&L of the IST day: trades closed today (any process) + partial exits of open trades."""
        today = ist_day(self.deps.clock.now())
        closed = self.deps.storage.trades.list_trades(state=TradeState.CLOSED.value, day=today)
        partial = sum(c.realized_pnl for c in self.deps.book.contexts() if not c.is_terminal)
        return round(sum(t.realized_pnl or 0.0 for t in closed) + partial, 2)

    def trades(self, state: str | None = None, day: str | None = None) -> list[dict[str, Any]]:
        return [_trade_json(t) for t in self.deps.storage.trades.list_trades(state=state, day=day)]

    def trade(self, pos_id: str) -> dict[str, Any]:
        """The trade row, its live context when this process runs it, and the full event timeline."""
        storage = self.deps.storage
        record = storage.trades.get_trade(pos_id)
        events = storage.trades.events(pos_id)
        if record is None and not events:
            raise TradeNotFound(pos_id)
        live = self.deps.book.get(pos_id)
        return {
            "pos_id": pos_id,
            "trade": _trade_json(record) if record is not None else None,
            "live": live.to_payload() if live is not None else None,
            "orders": [vars_of(o) for o in storage.trades.orders(pos_id)],
            "timeline": [_event_json(e) for e in events],
        }

    def risk(self) -> dict[str, Any]:
        contexts = [c for c in self.deps.book.contexts() if not c.is_terminal]
        quotes = {c.symbol: q for c in contexts if (q := self.deps.quotes(c.symbol))}
        summary = daily_pnl(contexts, quotes)
        try:
            realized = self.realized_today()
        except Exception:  # the status page must render with the database down
            realized = None
        out = self.deps.risk.status(realized_today=realized, unrealized=summary.unrealized)
        out["open_exposure"] = round(summary.open_exposure, 2)
        out["startup_reconciliation_passed"] = self.ready.is_set()
        if not self.ready.is_set():
            out["trading_enabled"] = False
            out["why"] = "start-up reconciliation has not passed yet"
        return out

    def status(self) -> dict[str, Any]:
        executor = self.executor_state
        return {
            "ready": self.ready.is_set(),
            "broker": getattr(self.deps.broker, "name", type(self.deps.broker).__name__),
            "live_trades": len(self.deps.book.contexts()),
            "executor": {"entries": executor.entries, "denied": executor.denied,
                         "duplicates": executor.duplicates, "submits": executor.submits,
                         "deferred": executor.deferred, "ambiguous": executor.ambiguous,
                         "refused": executor.refused, "cancels": executor.cancels,
                         "in_flight": sorted(executor.in_flight)},
            "timeouts": {"watched": len(self.monitor_state.watched), "timeouts": self.monitor_state.timeouts,
                         "refreshes": self.monitor_state.refreshes},
            "router": {"routed": self.deps.router.routed, "unrouted": self.deps.router.unrouted},
            "reconciliation": self.reconcile.snapshot(),
        }

    # -- writes --------------------------------------------------------------------------------------------

    def lot_size(self, symbol: str) -> int | None:
        return self.lot_sizes.get(symbol)

    def enter(self, request: ManualEntryRequest) -> EntryDecision:
        """Through the executor (risk guard, placement fence); answers once the executor has decided."""
        if not re.fullmatch(POS_ID_PATTERN, request.pos_id):
            raise ValueError(f"pos_id {request.pos_id!r} is not valid")
        order = EntryOrder(pos_id=request.pos_id, symbol=request.symbol, instrument=request.symbol,
                           side=request.side, qty=request.qty, price=request.price or 0.0,
                           reason=request.reason, at=self.deps.clock.now(), source="operator")
        reply: Future[EntryDecision] = Future()
        if not self.executor.tell(ManualEntry(order, reply)):
            raise TradingUnavailable("the executor is stopped")
        try:
            return reply.result(timeout=self.answer_timeout)
        except FutureTimeout:
            raise TradingUnavailable(f"the executor did not decide within {self.answer_timeout:.1f} s; the entry "
                                     f"may still be processed: see GET /v1/trades/{request.pos_id}") from None

    def exit(self, pos_id: str, reason: str = "manual exit") -> dict[str, Any]:
        live = self.deps.book.get(pos_id)
        if live is None:
            record = self.deps.storage.trades.get_trade(pos_id)
            if record is None:
                raise TradeNotFound(pos_id)
            if record.state in _TERMINAL:
                raise TradeConflict(f"{pos_id} is {record.state}: nothing to exit")
            raise TradeConflict(f"{pos_id} ({record.state}) is not run by this process")
        if not can_apply(live, ExitRequested) and live.state not in (TradeState.SIGNAL_GENERATED,
                                                                     TradeState.ENTRY_PENDING):
            raise TradeConflict(f"{pos_id} is {live.state.value}: an exit does not apply now")
        if not self.deps.router.deliver(pos_id, RequestExit(f"OPERATOR: {reason}", source="operator")):
            raise TradingUnavailable(f"the trade actor of {pos_id} is not running")
        return {"pos_id": pos_id, "state": live.state.value, "exit_requested": True}

    def kill_switch(self, engaged: bool, reason: str = "") -> dict[str, Any]:
        risk = self.deps.risk
        if engaged:
            risk.engage_kill_switch(f"operator: {reason}" if reason else "operator")
        else:
            risk.release_kill_switch(f"operator: {reason}" if reason else "operator")
        return self.risk()

    def flatten(self, reason: str = "") -> dict[str, Any]:
        """Exit every position of this process, then stay halted (the kill switch stays engaged)."""
        why = f"operator: {reason}" if reason else "operator"
        self.deps.risk.flatten(why)
        exiting = [c.pos_id for c in self.deps.book.contexts() if can_apply(c, ExitRequested)]
        self.executor.tell(FlattenAll(why))
        return {"exiting": exiting, "kill_switch_engaged": True, "risk": self.risk()}

    def reconcile_ack(self, who: str = "operator") -> dict[str, Any]:
        return acknowledge(self.reconcile, self.deps, who)


def vars_of(record: Any) -> dict[str, Any]:
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}


def _trade_json(record: TradeRecord) -> dict[str, Any]:
    return vars_of(record)


def _event_json(record: TradeEventRecord) -> dict[str, Any]:
    return {"seq": record.seq, "event": record.event, "from_state": record.from_state,
            "to_state": record.to_state, "at": record.at, "payload": record.payload}
