"""The paper broker: the default broker, filling orders against live (or simulated) quotes.

Behaves like Dhan where it matters to the executor: orders are accepted at once (TRANSIT -> PENDING),
a correlationId identifies an order (placing it again returns the same order: never two), fills come
later (on `poll`, once the latency has passed and a quote exists), at the quote moved against us by the
slippage, never through the LIMIT price; with partial_fills the first fill is half the quantity.
Every status change is pushed to the order-update listeners, in order.

Deterministic: ids come from a counter, time from the injected clock, no randomness. Thread-safe: one
lock guards the book; listeners are called outside it (they may call back into the broker), under a
second re-entrant lock that keeps deliveries in order.
Test hooks: `fail_next_place(exc)`, `reject_next_place(reason)`, `hold_fills(True)`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from actors.brokers.base import (
    BrokerError,
    OrderNotFound,
    OrderUpdateListener,
    PermanentBrokerError,
)
from actors.clock import Clock
from core.orders import BrokerOrder, BrokerPosition, BrokerTrade, OrderRequest, OrderStatus, Side
from telemetry.logs import get_logger

__all__ = ["PaperBroker", "paper_broker_from_settings"]

QuoteFn = Callable[[str], float | None]
_WORKING = (OrderStatus.TRANSIT, OrderStatus.PENDING, OrderStatus.PART_TRADED)
_log = get_logger("mybot.broker.paper")


@dataclass(slots=True)
class _Entry:
    """The book's record of one order: the public snapshot plus what only the simulator needs."""

    order: BrokerOrder
    placed_at: float
    reject_reason: str = ""  # set by reject_next_place: the exchange refuses it on the first poll
    triggered: bool = False  # a stop-loss order the market has traded through (it works as a LIMIT now)


class PaperBroker:
    name = "paper"

    def __init__(self, quote: QuoteFn, clock: Clock, latency_seconds: float = 0.0, slippage_pct: float = 0.0,
                 partial_fills: bool = False, id_prefix: str = "P") -> None:
        if latency_seconds < 0 or slippage_pct < 0:
            raise ValueError("latency_seconds and slippage_pct must not be negative")
        self._quote = quote
        self._clock = clock
        self._latency = latency_seconds
        self._slippage = slippage_pct / 100.0
        self._partial_fills = partial_fills
        self._id_prefix = id_prefix
        self._lock = threading.Lock()
        self._deliver_lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}
        self._working: dict[str, _Entry] = {}  # insertion-ordered: fills are tried oldest first
        self._by_correlation: dict[str, str] = {}
        self._trades: list[BrokerTrade] = []
        self._listeners: list[OrderUpdateListener] = []
        self._next_id = 0
        self._fail_next: tuple[BrokerError, bool] | None = None
        self._reject_next: str | None = None
        self._holding = False
        self._closed = False

    # --------------------------------------------------------------------------------- test hooks

    def fail_next_place(self, exc: BrokerError, *, after_accept: bool = False) -> None:
        """The next `place` raises exc once. With after_accept the order IS booked before the error
        (a timed-out submit that went through: AmbiguousSubmitError's real case)."""
        with self._lock:
            self._fail_next = (exc, after_accept)

    def reject_next_place(self, reason: str = "RMS: insufficient margin") -> None:
        """The next order is accepted, then rejected by the 'exchange' on the first poll."""
        with self._lock:
            self._reject_next = reason

    def hold_fills(self, hold: bool) -> None:
        """While held, no order fills (so order timeouts happen)."""
        with self._lock:
            self._holding = hold

    # ------------------------------------------------------------------------------------- orders

    def place(self, request: OrderRequest) -> BrokerOrder:
        with self._deliver_lock:
            with self._lock:
                self._ensure_open()
                existing = self._by_correlation.get(request.correlation_id)
                if existing is not None:
                    return self._entries[existing].order  # idempotent: the same correlation id is one order
                failure, self._fail_next = self._fail_next, None
                if failure is not None and not failure[1]:
                    raise failure[0]
                if request.qty <= 0:
                    raise PermanentBrokerError(f"qty must be positive, got {request.qty}", code="DH-905")
                if request.price < 0:
                    raise PermanentBrokerError(f"price must not be negative, got {request.price}", code="DH-905")
                now = self._clock.now()
                self._next_id += 1
                transit = BrokerOrder(
                    order_id=f"{self._id_prefix}{self._next_id:08d}", correlation_id=request.correlation_id,
                    symbol=request.symbol, side=request.side, qty=request.qty, status=OrderStatus.TRANSIT,
                    price=request.price, updated_at=now, trigger_price=request.trigger_price)
                pending = replace(transit, status=OrderStatus.PENDING)
                entry = _Entry(pending, placed_at=now, reject_reason=self._reject_next or "")
                self._entries[transit.order_id] = self._working[transit.order_id] = entry
                self._reject_next = None
                self._by_correlation[request.correlation_id] = transit.order_id
                listeners = list(self._listeners)
            _log.event("PAPER_ORDER_ACCEPTED", "paper order accepted", order_id=transit.order_id,
                       correlation_id=request.correlation_id, pos_id=request.pos_id, leg=request.leg.value,
                       symbol=request.symbol, side=request.side.value,
                       qty=request.qty, price=request.price)
            self._deliver(listeners, [transit, pending])
            if failure is not None:
                raise failure[0]
            return pending

    def poll(self, now: float | None = None) -> list[BrokerOrder]:
        """Advance the simulation to `now` (default: the clock): fill or reject what is due.
        Returns the changed orders (also pushed to the listeners)."""
        with self._deliver_lock:
            with self._lock:
                at = self._clock.now() if now is None else now
                changed = [update for entry in list(self._working.values())
                           if (update := self._advance(entry, at)) is not None]
                for update in changed:
                    if update.status.is_terminal:
                        del self._working[update.order_id]
                listeners = list(self._listeners)
            self._deliver(listeners, changed)
            return changed

    def _advance(self, entry: _Entry, now: float) -> BrokerOrder | None:
        order = entry.order
        if order.status not in _WORKING:
            return None
        if entry.reject_reason:
            entry.order = replace(order, status=OrderStatus.REJECTED, reason=entry.reject_reason, updated_at=now)
            return entry.order
        if self._holding or now < entry.placed_at + self._latency:
            return None
        ltp = self._quote(order.symbol)
        if ltp is None or ltp <= 0:
            return None
        if order.trigger_price > 0 and not entry.triggered:
            # A stop-loss order works only once the market trades through its trigger (a SELL stop at or
            # below it, a BUY stop at or above it); then it is a LIMIT like any other.
            if (order.side is Side.SELL and ltp > order.trigger_price) or (
                    order.side is Side.BUY and ltp < order.trigger_price):
                return None
            entry.triggered = True
        # The price we actually get is the quote moved against us; a LIMIT caps it (0 = no limit).
        executable = ltp * (1 + self._slippage) if order.side is Side.BUY else ltp * (1 - self._slippage)
        if order.price > 0 and ((order.side is Side.BUY and executable > order.price)
                                or (order.side is Side.SELL and executable < order.price)):
            return None
        remaining = order.remaining_qty
        fill_qty = remaining
        if self._partial_fills and order.filled_qty == 0 and order.qty > 1:
            fill_qty = order.qty // 2
        executable = round(executable, 4)
        filled = order.filled_qty + fill_qty
        avg = (order.avg_price * order.filled_qty + executable * fill_qty) / filled
        status = OrderStatus.TRADED if filled == order.qty else OrderStatus.PART_TRADED
        entry.order = replace(order, filled_qty=filled, avg_price=avg, status=status, updated_at=now)
        self._trades.append(BrokerTrade(order_id=order.order_id, symbol=order.symbol, side=order.side,
                                        qty=fill_qty, price=executable, at=now))
        return entry.order

    def cancel(self, order_id: str) -> BrokerOrder:
        with self._deliver_lock:
            with self._lock:
                self._ensure_open()
                entry = self._entry(order_id)
                order = entry.order
                if order.status is OrderStatus.CANCELLED:
                    return order  # cancelling twice is harmless
                if order.status not in _WORKING:
                    raise PermanentBrokerError(f"order {order_id} is {order.status.value}: nothing to cancel",
                                               code="DH-906")
                entry.order = replace(order, status=OrderStatus.CANCELLED, reason="cancelled by user",
                                      updated_at=self._clock.now())
                self._working.pop(order_id, None)
                listeners = list(self._listeners)
            self._deliver(listeners, [entry.order])
            return entry.order

    def modify(self, order_id: str, qty: int, price: float, trigger_price: float = 0.0) -> BrokerOrder:
        with self._deliver_lock:
            with self._lock:
                self._ensure_open()
                entry = self._entry(order_id)
                order = entry.order
                if order.status not in _WORKING:
                    raise PermanentBrokerError(f"order {order_id} is {order.status.value}: cannot modify",
                                               code="DH-906")
                if qty <= order.filled_qty or price < 0:
                    raise PermanentBrokerError(
                        f"qty {qty} must exceed the filled {order.filled_qty} and price must not be negative",
                        code="DH-905")
                entry.order = replace(order, qty=qty, price=price, trigger_price=trigger_price,
                                      updated_at=self._clock.now())
                listeners = list(self._listeners)
            self._deliver(listeners, [entry.order])
            return entry.order

    def get_order(self, order_id: str) -> BrokerOrder:
        with self._lock:
            return self._entry(order_id).order

    def find_by_correlation_id(self, correlation_id: str) -> BrokerOrder | None:
        with self._lock:
            order_id = self._by_correlation.get(correlation_id)
            return None if order_id is None else self._entries[order_id].order

    def orders(self) -> list[BrokerOrder]:
        with self._lock:
            return [entry.order for entry in self._entries.values()]

    def trades(self) -> list[BrokerTrade]:
        with self._lock:
            return list(self._trades)

    def positions(self) -> list[BrokerPosition]:
        """Net position per symbol from the trades; realized P&L on the closed quantity (average cost)."""
        with self._lock:
            trades = list(self._trades)
        books: dict[str, dict[str, Any]] = {}
        for trade in trades:
            book = books.setdefault(trade.symbol, {"bq": 0, "bv": 0.0, "sq": 0, "sv": 0.0})
            if trade.side is Side.BUY:
                book["bq"] += trade.qty
                book["bv"] += trade.qty * trade.price
            else:
                book["sq"] += trade.qty
                book["sv"] += trade.qty * trade.price
        out = []
        for symbol, book in books.items():
            buy_avg = book["bv"] / book["bq"] if book["bq"] else 0.0
            sell_avg = book["sv"] / book["sq"] if book["sq"] else 0.0
            closed = min(book["bq"], book["sq"])
            out.append(BrokerPosition(symbol=symbol, net_qty=book["bq"] - book["sq"], buy_avg=buy_avg,
                                      sell_avg=sell_avg, realized_pnl=(sell_avg - buy_avg) * closed))
        return out

    def subscribe_order_updates(self, listener: OrderUpdateListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._listeners.clear()

    # ---------------------------------------------------------------------------------- internals

    def _entry(self, order_id: str) -> _Entry:
        entry = self._entries.get(order_id)
        if entry is None:
            raise OrderNotFound(f"no paper order {order_id}", code="DH-906")
        return entry

    def _ensure_open(self) -> None:
        if self._closed:
            raise PermanentBrokerError("the paper broker is closed")

    def _deliver(self, listeners: list[OrderUpdateListener], updates: list[BrokerOrder]) -> None:
        for update in updates:
            for listener in listeners:
                try:
                    listener(update)
                except Exception:  # a broken listener must not stop fills reaching the others
                    _log.exception("order update listener failed", extra={"event": "PAPER_LISTENER_FAILED",
                                                                           "order_id": update.order_id})


def paper_broker_from_settings(broker: Any, quote: QuoteFn, clock: Clock) -> PaperBroker:
    """Build from config.settings.BrokerSettings (paper_latency_ms, paper_slippage_pct, ...)."""
    return PaperBroker(quote, clock, latency_seconds=broker.paper_latency_ms / 1000.0,
                       slippage_pct=broker.paper_slippage_pct, partial_fills=broker.paper_partial_fills)
