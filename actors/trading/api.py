"""The trading subtree's front: the desk (entries and exits, whoever asks) and the control API's facade.

`TradeDesk` is how anything outside the subtree opens or exits a trade: the strategy tells it its
EntrySignalRaised / ExitSignalRaised, the control API calls it for manual entries and exits. An entry
creates the trade actor of its pos_id (the only owner of that trade from then on) and tells it `OpenTrade`;
an exit is told to the live trade actor. Thread-safe and non-blocking.

`TradingApi` is what the control API calls. Thread-safe; never blocks an actor; every wait has a deadline.
Reads come from the trade book (live trades of this process), the `trades` table and `trade_events`
journal (everything else), the risk guard and the reconciler's state. The kill switch, a flatten and a
reconciliation acknowledgement act on the risk guard at once (they must work while the executor is busy
with a slow broker).
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from actors.brokers.base import Broker
from actors.clock import Clock
from actors.instruments import InstrumentBook
from actors.trading.book import OrderRouter, TradeBook
from actors.trading.executor import ExecutorCounters
from actors.trading.messages import (
    AdoptPosition,
    CancelEntry,
    EntryCounters,
    EntryDecision,
    EntryOrder,
    EntryRefusal,
    OpenTrade,
    RequestExit,
)
from actors.trading.protection import ProtectionView
from actors.trading.quotes import QuoteSource
from actors.trading.reconcile_state import ReconcileState, acknowledge
from actors.trading.risk_guard import RiskGuard
from actors.trading.timeout_monitor import MonitorCounters
from actors.trading.trade_deps import NewTrade
from core.orders import Side
from core.pnl import daily_pnl
from core.risk import ist_day
from core.signals import EntrySignalRaised, ExitSignalRaised
from core.trade import (
    CANCEL_PENDING,
    ENTRY_WORKING,
    EVENT_TYPES,
    TERMINAL_STATES,
    ExitRequested,
    TradeState,
    can_apply,
)
from storage.records import TradeEventRecord, TradeRecord
from storage.repositories import Storage
from supervision.store import Store
from supervision.supervisor import SupervisorHandle
from telemetry.logs import get_logger

__all__ = [
    "POS_ID_PATTERN",
    "EntryDecision",
    "EntryRefusal",
    "ManualEntryRequest",
    "TradeConflict",
    "TradeDesk",
    "TradeNotFound",
    "TradingApi",
    "TradingUnavailable",
]

POS_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}"
_TERMINAL = frozenset(state.value for state in TERMINAL_STATES)

log = get_logger("mybot.trading")


class TradeNotFound(Exception):
    """No trade with this pos_id."""


class TradeConflict(Exception):
    """The trade exists but the request does not apply to it now (closed, not run by this process)."""


class TradingUnavailable(Exception):
    """The trading actors cannot answer now (starting, restarting, busy past the deadline): retry later."""


class TradeDesk:
    """Entries and exits into the trading subtree (see the module docstring)."""

    def __init__(self, trades: SupervisorHandle, router: OrderRouter) -> None:
        self.trades = trades
        self.router = router

    def open(self, order: EntryOrder, reply: Future[EntryDecision] | None = None) -> bool:
        """Create the trade actor of order.pos_id (or find the live one) and tell it OpenTrade."""
        return self.trades.ensure_child(NewTrade(order.pos_id)).tell(OpenTrade(order, reply))

    def adopt(self, message: AdoptPosition) -> bool:
        """Create the trade actor of message.pos_id to take on orphaned units (the reconciler)."""
        return self.trades.ensure_child(NewTrade(message.pos_id)).tell(message)

    def exit(self, pos_id: str, reason: str, source: str) -> bool:
        """Tell the live trade actor of pos_id to exit; False when this process runs no such trade."""
        if self.router.deliver(pos_id, RequestExit(reason, source)):
            return True
        log.event("EXIT_SIGNAL_UNMATCHED", f"{pos_id}: no live trade in this process", level=30, pos_id=pos_id,
                  reason=reason, source=source)
        return False

    def tell(self, signal: EntrySignalRaised | ExitSignalRaised) -> bool:
        """The strategy's signals (the signals subtree's SignalSink)."""
        if isinstance(signal, EntrySignalRaised):
            return self.open(EntryOrder.from_signal(signal))
        return self.exit(signal.pos_id, signal.reason, "strategy")


@dataclass(frozen=True)
class ManualEntryRequest:
    pos_id: str
    symbol: str
    side: Side
    qty: int
    price: float | None = None
    reason: str = "manual entry"
    instrument: str = ""  # for people (default: the symbol)
    exits: Mapping[str, float] = field(default_factory=dict)  # protective exits replacing the exits.* defaults


@dataclass(frozen=True)
class TradingViews:
    """What the facade reads: the live book, the stores, the guard; all thread-safe."""

    storage: Storage
    broker: Broker
    clock: Clock
    book: TradeBook
    router: OrderRouter
    quotes: QuoteSource
    risk: RiskGuard
    ready: threading.Event
    reconcile: ReconcileState
    entry_counters: Store[EntryCounters]
    executor_counters: Store[ExecutorCounters]
    monitor_counters: Store[MonitorCounters]
    protection: Store[ProtectionView]


class TradingApi:
    def __init__(self, desk: TradeDesk, views: TradingViews, lot_sizes: dict[str, int], instruments: InstrumentBook,
                 answer_timeout: float) -> None:
        self.desk = desk
        self.views = views
        self.lot_sizes = dict(lot_sizes)
        self.instruments = instruments  # the master's lot size wins over execution.lot_sizes
        self.answer_timeout = answer_timeout

    # -- reads ---------------------------------------------------------------------------------------------

    def positions(self) -> dict[str, Any]:
        """Open positions (and entries still working) of this process, marked to the latest quotes."""
        contexts = self.views.book.live()
        quotes = {c.symbol: q for c in contexts if (q := self.views.quotes(c.symbol))}
        summary = daily_pnl(contexts, quotes)
        guarded = self.views.protection.get().levels  # the protective levels where they stand now
        rows = []
        for c in sorted(contexts, key=lambda c: c.signal_at):
            mark = quotes.get(c.symbol)
            levels = guarded.get(c.pos_id, {})
            direction = 1 if c.side is Side.BUY else -1
            rows.append({
                "pos_id": c.pos_id, "symbol": c.symbol, "instrument": c.instrument, "side": c.side.value,
                "state": c.state.value, "qty": c.qty, "open_qty": c.open_qty, "avg_entry_price": c.avg_entry_price,
                "mark": mark, "unrealized_pnl": None if mark is None or not c.open_qty else
                round(direction * (mark - c.avg_entry_price) * c.open_qty, 2),
                "realized_pnl": round(c.realized_pnl, 2), "opened_at": c.opened_at or None,
                "exit_reason": c.exit_reason or None, "stop_price": levels.get("stop"),
                "target_price": levels.get("target"), "trailing_stop": levels.get("trail"),
                "broker_stop_price": c.stop_trigger_price if c.stop_live else None})
        return {"positions": rows, "summary": summary.as_dict(), "realized_today": self.realized_today()}

    def realized_today(self) -> float:
        """Realized P&L of the IST day: trades closed today (any process) + partial exits of open trades."""
        today = ist_day(self.views.clock.now())
        closed = self.views.storage.trades.list_trades(state=TradeState.CLOSED.value, day=today)
        partial = sum(c.realized_pnl for c in self.views.book.live())
        return round(sum(t.realized_pnl or 0.0 for t in closed) + partial, 2)

    def trades(self, state: str | None = None, day: str | None = None) -> list[dict[str, Any]]:
        return [_trade_json(t) for t in self.views.storage.trades.list_trades(state=state, day=day)]

    def trade(self, pos_id: str) -> dict[str, Any]:
        """The trade row, its live context when this process runs it, and the full event timeline."""
        storage = self.views.storage
        record = storage.trades.get_trade(pos_id)
        events = storage.trades.events(pos_id)
        if record is None and not events:
            raise TradeNotFound(pos_id)
        live = self.views.book.get(pos_id)
        return {
            "pos_id": pos_id,
            "trade": _trade_json(record) if record is not None else None,
            "live": live.to_payload() if live is not None else None,
            "orders": [vars_of(o) for o in storage.trades.orders(pos_id)],
            "timeline": [_event_json(e) for e in events],
        }

    def risk(self) -> dict[str, Any]:
        self.views.risk.refresh()  # every process's trades and switches as they are now (or the last known)
        contexts = self.views.book.live()
        quotes = {c.symbol: q for c in contexts if (q := self.views.quotes(c.symbol))}
        summary = daily_pnl(contexts, quotes)
        try:
            realized: float | None = self.realized_today()
        except Exception:  # the status page must render with the database down
            realized = None
        out = self.views.risk.status(realized_today=realized, unrealized=summary.unrealized)
        out["open_exposure"] = round(summary.open_exposure, 2)
        out["startup_reconciliation_passed"] = self.views.ready.is_set()
        if not self.views.ready.is_set():
            out["trading_enabled"] = False
            out["why"] = "start-up reconciliation has not passed yet"
        return out

    def status(self) -> dict[str, Any]:
        views = self.views
        return {
            "ready": views.ready.is_set(),
            "broker": views.broker.name,
            "live_trades": len(views.book.contexts()),
            "entries": dataclasses.asdict(views.entry_counters.get()),
            "executor": dataclasses.asdict(views.executor_counters.get()),
            "timeouts": dataclasses.asdict(views.monitor_counters.get()),
            "router": {"routed": views.router.routed, "unrouted": views.router.unrouted},
            "protection": views.protection.get().snapshot(),
            "reconciliation": views.reconcile.snapshot(),
        }

    # -- writes --------------------------------------------------------------------------------------------

    @property
    def max_price(self) -> float:
        """The highest price an entry may name (risk.max_price)."""
        return self.views.risk.limits.max_price

    def lot_size(self, symbol: str) -> int | None:
        lot = self.instruments.lot_size(symbol)
        return lot if lot is not None else self.lot_sizes.get(symbol)

    def enter(self, request: ManualEntryRequest) -> EntryDecision:
        """Through the trade's own actor (risk guard, placement fence); answers once it has decided."""
        if not re.fullmatch(POS_ID_PATTERN, request.pos_id):
            raise ValueError(f"pos_id {request.pos_id!r} is not valid")
        order = EntryOrder(pos_id=request.pos_id, symbol=request.symbol, instrument=request.instrument or request.symbol,
                           side=request.side, qty=request.qty, price=request.price or 0.0,
                           reason=request.reason, at=self.views.clock.now(), source="operator",
                           exits=dict(request.exits))
        reply: Future[EntryDecision] = Future()
        if not self.desk.open(order, reply):
            raise TradingUnavailable("the trades supervisor is stopped")
        try:
            return reply.result(timeout=self.answer_timeout)
        except FutureTimeout:
            raise TradingUnavailable(f"the entry was not decided within {self.answer_timeout:.1f} s; it may "
                                     f"still be processed: see GET /v1/trades/{request.pos_id}") from None

    def exit(self, pos_id: str, reason: str = "manual exit") -> dict[str, Any]:
        live = self.views.book.get(pos_id)
        if live is None:
            record = self.views.storage.trades.get_trade(pos_id)
            if record is None:
                raise TradeNotFound(pos_id)
            if record.state in _TERMINAL:
                raise TradeConflict(f"{pos_id} is {record.state}: nothing to exit")
            raise TradeConflict(f"{pos_id} ({record.state}) is not run by this process")
        if not can_apply(live, ExitRequested) and live.state not in (TradeState.SIGNAL_GENERATED,
                                                                     TradeState.ENTRY_PENDING):
            raise TradeConflict(f"{pos_id} is {live.state.value}: an exit does not apply now")
        if not self.desk.exit(pos_id, f"OPERATOR: {reason}", "operator"):
            raise TradingUnavailable(f"the trade actor of {pos_id} is not running")
        return {"pos_id": pos_id, "state": live.state.value, "exit_requested": True}

    def kill_switch(self, engaged: bool, reason: str = "") -> dict[str, Any]:
        risk = self.views.risk
        if engaged:
            state = risk.engage_kill_switch(f"operator: {reason}" if reason else "operator")
            for context in self.views.book.live():  # entries working at the broker are cancelled now
                if context.state in ENTRY_WORKING - CANCEL_PENDING:
                    self.desk.router.deliver(context.pos_id, CancelEntry(state.kill_switch_reason))
        else:
            risk.release_kill_switch(f"operator: {reason}" if reason else "operator")
        return self.risk()

    def flatten(self, reason: str = "") -> dict[str, Any]:
        """Exit every position of this process, then stay halted (the kill switch stays engaged)."""
        why = f"operator: {reason}" if reason else "operator"
        self.views.risk.flatten(why)
        # Every live trade of this process is being exited: told now, or already on its way out (the flatten
        # reached it first, or its exit was asked before); an entry not yet at the broker exits once placed.
        exiting = sorted(c.pos_id for c in self.views.book.contexts() if not c.is_terminal)
        for context in self.views.book.contexts():
            if can_apply(context, ExitRequested) and not context.exit_reason:
                self.desk.exit(context.pos_id, f"FLATTEN: {why}", "flatten")
        return {"exiting": exiting, "kill_switch_engaged": True, "risk": self.risk()}

    def reconcile_ack(self, who: str = "operator") -> dict[str, Any]:
        views = self.views
        return acknowledge(views.reconcile, views.storage, views.risk, views.clock, who)


def vars_of(record: Any) -> dict[str, Any]:
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}


def _trade_json(record: TradeRecord) -> dict[str, Any]:
    return vars_of(record)


def _event_json(record: TradeEventRecord) -> dict[str, Any]:
    """`log_name` is the seed's word the log lines use (ORDER_TIMEOUT); `event` the journal's class name."""
    kind = EVENT_TYPES.get(record.event)
    return {"seq": record.seq, "log_name": kind.log_name if kind is not None else record.event,
            "event": record.event, "from_state": record.from_state,
            "to_state": record.to_state, "at": record.at, "payload": record.payload}
