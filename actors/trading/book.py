"""The trading side's read models: the book of live trades, and the router of broker news to them.

Both are written by the trade actors (each about its own pos_id) and read from any thread; readers get
frozen `TradeContext` values, never a live collection. The `trades` table holds the same rows for other
processes and for history.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable
from typing import Any

from actors.trading.messages import Observe
from core.orders import BrokerOrder
from core.risk import ist_day
from core.signals import position_direction
from core.trade import TradeContext, TradeState
from storage.records import TradeRecord
from supervision.supervisor import SupervisorHandle
from telemetry.logs import get_logger

__all__ = ["OrderRouter", "TradeBook", "trade_record"]

_log = get_logger("mybot.router")


class TradeBook:
    """The latest context of every live trade of this process: the position manager's in-memory view."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._trades: dict[str, TradeContext] = {}
        self._recovered: set[str] = set()
        self._awaited: set[str] = set()  # adopted at start-up, not yet through their recovery

    def update(self, context: TradeContext, recovered: bool = True) -> None:
        with self._lock:
            self._trades[context.pos_id] = context
            if recovered:
                self._recovered.add(context.pos_id)
                self._awaited.discard(context.pos_id)

    def remove(self, pos_id: str) -> None:
        with self._lock:
            self._trades.pop(pos_id, None)
            self._recovered.discard(pos_id)
            self._awaited.discard(pos_id)

    def get(self, pos_id: str) -> TradeContext | None:
        with self._lock:
            return self._trades.get(pos_id)

    def contexts(self) -> list[TradeContext]:
        with self._lock:
            return list(self._trades.values())

    def live(self) -> list[TradeContext]:
        """Trades that hold or may still get units (not terminal)."""
        with self._lock:
            return [c for c in self._trades.values() if not c.is_terminal]

    def __contains__(self, pos_id: object) -> bool:
        with self._lock:
            return pos_id in self._trades

    def await_recovery(self, pos_ids: Iterable[str]) -> None:
        """Trades being adopted at start-up: `all_recovered` is False until each recovered or ended."""
        with self._lock:
            self._awaited.update(p for p in pos_ids if p not in self._recovered)

    def all_recovered(self) -> bool:
        with self._lock:
            return not self._awaited

    def open_count(self) -> int:
        """Trades that hold or may still get units: what max_open_positions counts."""
        with self._lock:
            return sum(1 for c in self._trades.values() if not c.is_terminal)

    def positions_by_underlying(self, underlyings: Collection[str]) -> dict[str, tuple[str, int]]:
        """pos_id -> (underlying, direction) of the live trades: what the strategy's book holds."""
        return {c.pos_id: position_direction(c.symbol, c.instrument, c.side, underlyings) for c in self.live()}


class OrderRouter:
    """Delivers broker order updates (any thread) to the trade actor owning the order.

    Keys are correlation ids (registered before a submit) and broker order ids. An update for a known
    pos_id whose trade actor is not running (restarting, or just ended) is kept for that pos_id until its
    actor starts and takes it. An update no trade claims goes to the fallback (the reconciler judges it).
    """

    PENDING_LIMIT = 64  # updates kept per pos_id while its actor is not running

    def __init__(self, trades: SupervisorHandle, fallback: Callable[[BrokerOrder], object]) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[str, str] = {}
        self._keys: dict[str, set[str]] = {}
        self._pending: dict[str, list[BrokerOrder]] = {}
        self._trades = trades
        self._fallback = fallback
        self.routed = 0
        self.unrouted = 0

    def register(self, pos_id: str, keys: Iterable[str]) -> None:
        with self._lock:
            owned = self._keys.setdefault(pos_id, set())
            for key in keys:
                if key:
                    self._by_key[key] = pos_id
                    owned.add(key)

    def forget(self, pos_id: str) -> None:
        with self._lock:
            self._pending.pop(pos_id, None)
            for key in self._keys.pop(pos_id, set()):
                if self._by_key.get(key) == pos_id:
                    del self._by_key[key]

    def take_pending(self, pos_id: str) -> list[BrokerOrder]:
        """Updates that arrived while the trade actor was not running (its start takes them)."""
        with self._lock:
            return self._pending.pop(pos_id, [])

    def pos_id_for(self, order: BrokerOrder) -> str | None:
        with self._lock:
            return self._by_key.get(order.correlation_id) or self._by_key.get(order.order_id)

    def deliver(self, pos_id: str, message: object) -> bool:
        """Tell the live trade actor of pos_id (False when there is none)."""
        handle = self._trades.find_child(pos_id)
        return handle is not None and handle.tell(message)

    def on_update(self, order: BrokerOrder) -> None:
        """The broker's order-update listener: only hands over (never blocks, never raises)."""
        pos_id = self.pos_id_for(order)
        # One line per broker update, as the broker said it (the trade's journal says what it made of it).
        owner: dict[str, Any] = {"pos_id": pos_id} if pos_id is not None else {}
        _log.event("ORDER_UPDATE", f"{order.order_id} {order.status.value} {order.filled_qty}/{order.qty}",
                   correlation_id=order.correlation_id, order_id=order.order_id, status=order.status.value,
                   filled_qty=order.filled_qty, avg_price=order.avg_price, broker_at=order.updated_at, **owner)
        if pos_id is not None:
            if self.deliver(pos_id, Observe(order)):
                self.routed += 1
                return
            with self._lock:
                if pos_id in self._keys and self._trades.find_child(pos_id) is None:
                    waiting = self._pending.setdefault(pos_id, [])
                    if len(waiting) < self.PENDING_LIMIT:
                        waiting.append(order)
                        self.routed += 1
                        return
        self.unrouted += 1
        self._fallback(order)


def trade_record(context: TradeContext, created_at: float | None = None) -> TradeRecord:
    """The `trades` row of a context (the seed's table: entry/exit price+time, fees, realized P&L, state)."""
    detail = {
        "entry_correlation_id": context.entry_correlation_id, "entry_order_id": context.entry_order_id,
        "exit_correlation_id": context.exit_correlation_id, "exit_order_id": context.exit_order_id,
        "expected_entry_price": context.expected_entry_price, "entry_limit_price": context.entry_limit_price,
        "entry_slippage_pct": context.entry_slippage_pct, "exit_filled_qty": context.exit_filled_qty,
        "open_qty": context.open_qty, "exit_attempt": context.exit_attempt, "exit_reason": context.exit_reason,
        "signal_reason": context.signal_reason, "reason": context.reason, "seq": context.seq,
        "protection": context.protection.as_dict(),
    }
    return TradeRecord(
        pos_id=context.pos_id, symbol=context.symbol, instrument=context.instrument, side=context.side.value,
        qty=context.qty, filled_qty=context.entry_filled_qty,
        entry_price=context.avg_entry_price or None, entry_time=context.opened_at or None,
        exit_price=context.avg_exit_price or None,
        exit_time=(context.closed_at or None) if context.state is TradeState.CLOSED else None,
        fees=round(context.fees, 2), realized_pnl=context.realized_pnl if context.exit_filled_qty else None,
        state=context.state.value, opened_day=ist_day(context.signal_at or context.updated_at),
        detail=detail, created_at=created_at if created_at is not None else context.signal_at,
        updated_at=context.updated_at)
