"""DhanBroker: the Broker interface over the real dhanhq SDK (orders, positions, trades, order updates).

Choices, so the executor knows what to expect:
  * place: a LIMIT order at the price the trade computed (already on the instrument master's tick: the
    trade rounds it, entries in the safe direction, exits toward the market). Here it is only put on the
    grid when it is not (an instrument the master does not know: broker.tick_size), on the marketable
    side; tag = correlationId, product from broker.product_type. Never retried. A timeout
    after the request may have left, a 5xx, or an unreadable 2xx -> AmbiguousSubmitError: look the
    order up with find_by_correlation_id before any resend.
  * Order rate (place/modify/cancel): a TokenBucket(max_orders_per_second, order_burst). The broker
    blocks briefly for a slot (the executor actor is its only caller, and the wait is < 1/rate s in normal
    use); if the slot is further away than broker.max_order_wait_seconds it raises RateLimited instead.
    Pacing uses the real monotonic clock whatever clock is injected: it is about Dhan's wall time.
  * Reads (get_order, find_by_correlation_id, orders, positions, trades) are retried with tenacity on
    TemporaryBrokerError: stop_after_attempt(broker.read_attempts), wait_exponential.
  * find_by_correlation_id: Dhan answers 404 DH-906 on /orders/external while the order is unknown or
    still in TRANSIT; the order book already lists TRANSIT orders, so a 404 is followed by a scan of the
    order book before answering None.
  * Order updates: `dhanhq.OrderUpdate` with order_feed_wss = dhan.order_update_url, on its own thread
    and event loop, reconnecting with backoff. Listeners are called on that thread with BrokerOrder
    values: they must only hand over (an actor tell).
  * The access token (with a `TokenState`): REST takes each new token at once (DhanClient); the order-update
    socket logs in with the current token on every connect and reconnects when it changes. An order call
    Dhan refuses for the token (DH-901) is `AuthRefusedNotPlaced`, a temporary error: it never reached the
    exchange, so the executor may submit it again once the token is renewed (exits keep being attempted).
    Without a TokenState nothing renews the token and it stays a permanent DhanAuthError.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import websockets
from dhanhq import OrderUpdate
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from actors.brokers.base import (
    AmbiguousSubmitError,
    OrderNotFound,
    OrderUpdateListener,
    TemporaryBrokerError,
)
from actors.clock import Clock
from actors.dhan.client import DhanClient
from actors.dhan.errors import AuthRefusedNotPlaced, DhanAuthError, RateLimited
from actors.dhan.ids import InstrumentMap, segment_from_order_update
from actors.dhan.threads import cancel_until_stopped
from actors.dhan.token import TokenState
from config.settings import Settings
from core.market import from_iso
from core.orders import BrokerOrder, BrokerPosition, BrokerTrade, OrderRequest, OrderStatus, Side
from core.ratelimit import TokenBucket
from telemetry import metrics
from telemetry.logs import get_logger

__all__ = ["DhanBroker", "OrderUpdateStream", "order_from_dhan", "order_from_update"]

_log = get_logger("actors.dhan.broker")

_STATUSES: dict[str, OrderStatus] = {s.value: s for s in OrderStatus}
_STATUSES.update({"PARTIALLY_TRADED": OrderStatus.PART_TRADED, "PART_TRADE": OrderStatus.PART_TRADED,
                  "TRIGGERED": OrderStatus.PENDING, "CONFIRM": OrderStatus.PENDING,
                  "CLOSED": OrderStatus.TRADED, "CANCELED": OrderStatus.CANCELLED})


def _status(text: Any, order_id: Any = "", correlation_id: Any = "") -> OrderStatus:
    """Dhan's status in any casing ("TRADED", "Cancelled"); unknown ones stay non-terminal (PENDING)."""
    key = str(text or "").strip().upper().replace(" ", "_")
    status = _STATUSES.get(key)
    if status is None:
        _log.event("BROKER_UNKNOWN_STATUS", f"unknown Dhan order status {text!r}, treated as PENDING", level=30,
                   order_id=str(order_id or ""), correlation_id=str(correlation_id or ""))
        return OrderStatus.PENDING
    return status


def _dhan_time(text: Any) -> float:
    """'2024-10-24 10:15:03' (IST) -> epoch; Dhan's placeholders ('0001-01-01 ...', 'NA') -> 0.0."""
    value = str(text or "").strip()
    if not value or value.startswith("0001") or value.upper() == "NA":
        return 0.0
    try:
        return from_iso(value.replace(" ", "T", 1))
    except (ValueError, OverflowError):
        return 0.0


def _to_tick(price: float, side: Side, tick: float) -> float:
    """Round a LIMIT price onto the exchange's grid, never making it less marketable."""
    if tick <= 0:
        return round(price, 2)
    steps = price / tick
    n = math.ceil(steps - 1e-9) if side is Side.BUY else math.floor(steps + 1e-9)
    return round(n * tick, 2)


def order_from_dhan(obj: Mapping[str, Any], instruments: InstrumentMap) -> BrokerOrder:
    """An order object of GET /orders, /orders/{id} or /orders/external/{correlationId}."""
    status = _status(obj.get("orderStatus"), obj.get("orderId"), obj.get("correlationId"))
    qty = int(obj.get("quantity") or 0)
    filled = int(obj.get("filledQty") or 0)
    if not filled and status is OrderStatus.TRADED:
        filled = qty
    return BrokerOrder(
        order_id=str(obj.get("orderId", "")),
        correlation_id=str(obj.get("correlationId") or ""),
        symbol=instruments.symbol(str(obj.get("exchangeSegment") or "NSE_FNO"), obj.get("securityId") or 0),
        side=Side.SELL if str(obj.get("transactionType", "")).upper() == "SELL" else Side.BUY,
        qty=qty, status=status, filled_qty=filled,
        avg_price=float(obj.get("averageTradedPrice") or 0.0), price=float(obj.get("price") or 0.0),
        reason=str(obj.get("omsErrorDescription") or "") if status is OrderStatus.REJECTED else "",
        updated_at=_dhan_time(obj.get("updateTime")), trigger_price=float(obj.get("triggerPrice") or 0.0),
    )


def order_from_update(data: Mapping[str, Any], instruments: InstrumentMap, now: float) -> BrokerOrder:
    """The `Data` of an order-update `order_alert` message (dhan-api.md §4)."""
    status = _status(data.get("Status"), data.get("OrderNo"), data.get("CorrelationId"))
    segment = segment_from_order_update(str(data.get("Exchange") or "NSE"), str(data.get("Segment") or "D"))
    return BrokerOrder(
        order_id=str(data.get("OrderNo", "")),
        correlation_id=str(data.get("CorrelationId") or ""),
        symbol=instruments.symbol(segment, data.get("SecurityId") or 0),
        side=Side.SELL if str(data.get("TxnType", "")).upper() in ("S", "SELL") else Side.BUY,
        qty=int(data.get("Quantity") or 0), status=status, filled_qty=int(data.get("TradedQty") or 0),
        avg_price=float(data.get("AvgTradedPrice") or data.get("TradedPrice") or 0.0),
        price=float(data.get("Price") or 0.0),
        reason=str(data.get("ReasonDescription") or "") if status is OrderStatus.REJECTED else "",
        updated_at=_dhan_time(data.get("LastUpdatedTime")) or now,
    )


class DhanBroker:
    name = "dhan"

    def __init__(self, settings: Settings, clock: Clock, *, client: DhanClient | None = None,
                 instruments: InstrumentMap | None = None,
                 sleep: Callable[[float], None] = time.sleep, token: TokenState | None = None,
                 tick_size: Callable[[str], float | None] | None = None) -> None:
        """`tick_size`: the instrument master's tick of a symbol (None: broker.tick_size for all)."""
        self._settings = settings
        self._clock = clock
        self._token = token
        self._owns_client = client is None
        self._client = client or DhanClient(settings, clock=clock, instruments=instruments, token=token)
        self._instruments = instruments or self._client.instruments
        self._sdk = self._client.sdk
        broker = settings.broker
        self._product = broker.product_type
        self._tick = broker.tick_size
        self._tick_of = tick_size
        self._max_wait = broker.max_order_wait_seconds
        self._sleep = sleep
        self._bucket = TokenBucket(broker.max_orders_per_second, broker.order_burst, now=time.monotonic())
        self._bucket_lock = threading.Lock()
        metrics.rate_limits.register(self.rate_headroom)
        self._retrying = Retrying(
            stop=stop_after_attempt(broker.read_attempts),
            wait=wait_exponential(multiplier=broker.read_retry_initial_seconds,
                                  min=broker.read_retry_initial_seconds, max=2.0),
            retry=retry_if_exception(_retryable), reraise=True, before_sleep=_log_retry)
        self._listeners: list[OrderUpdateListener] = []
        self._updates: OrderUpdateStream | None = None

    # -- writes ----------------------------------------------------------------------------------------

    def place(self, request: OrderRequest) -> BrokerOrder:
        inst = self._instruments.instrument(request.symbol)
        price = _to_tick(request.price, request.side, self._tick_for(request.symbol))
        self._order_slot("place")
        try:
            body = self._client.call(
                "place_order", self._sdk.place_order, security_id=str(inst.security_id),
                exchange_segment=inst.segment, transaction_type=request.side.value, quantity=request.qty,
                order_type="STOP_LOSS" if request.trigger_price > 0 else "LIMIT", product_type=self._product,
                price=price, trigger_price=self._trigger(request.trigger_price, request.symbol),
                tag=request.correlation_id, submit=True)
        except AmbiguousSubmitError as exc:
            _log.event("BROKER_SUBMIT_AMBIGUOUS", f"place outcome unknown: {exc}", level=30,
                       pos_id=request.pos_id, correlation_id=request.correlation_id, code=exc.code)
            raise
        except DhanAuthError as exc:
            if self._token is None:  # nobody renews the token: an operator must (permanent)
                raise
            # Asked again about when the keeper has looked at the token once more (at most 5 s).
            retry = min(5.0, max(0.2, self._settings.dhan.token_check_seconds))
            raise AuthRefusedNotPlaced(f"place_order: not placed, Dhan refused the access token ({exc}); "
                                       "submitted again once the token is renewed", exc.code, retry) from exc
        if not isinstance(body, Mapping) or not body.get("orderId"):
            raise AmbiguousSubmitError(f"place_order: reply without orderId: {body!r}", "UNREADABLE")
        return BrokerOrder(order_id=str(body["orderId"]), correlation_id=request.correlation_id,
                           symbol=request.symbol, side=request.side, qty=request.qty,
                           status=_status(body.get("orderStatus") or "TRANSIT", body["orderId"],
                                          request.correlation_id), price=price,
                           updated_at=self._clock.now(), trigger_price=request.trigger_price)

    def cancel(self, order_id: str) -> BrokerOrder:
        self._order_slot("cancel")
        self._client.call("cancel_order", self._sdk.cancel_order, order_id)
        return self.get_order(order_id)

    def modify(self, order_id: str, qty: int, price: float, trigger_price: float = 0.0) -> BrokerOrder:
        """qty is the order's TOTAL quantity (Dhan v2), not what remains; a trigger keeps it a STOP_LOSS."""
        current = self.get_order(order_id)
        new_price = _to_tick(price, current.side, self._tick_for(current.symbol))
        self._order_slot("modify")
        # legName: ENTRY_LEG for a plain order, as Dhan's own bridges send it (an empty string is a DH-905).
        self._client.call("modify_order", self._sdk.modify_order, order_id,
                          "STOP_LOSS" if trigger_price > 0 else "LIMIT", "ENTRY_LEG", qty, new_price,
                          self._trigger(trigger_price, current.symbol), 0, "DAY")
        return self.get_order(order_id)

    def _trigger(self, trigger_price: float, symbol: str) -> float:
        """A stop's trigger on the instrument's tick (the nearest: a trigger is not a price we pay)."""
        if trigger_price <= 0:
            return 0
        tick = self._tick_for(symbol)
        return round(round(trigger_price / tick) * tick, 2) if tick else round(trigger_price, 2)

    def _tick_for(self, symbol: str) -> float:
        known = self._tick_of(symbol) if self._tick_of is not None else None
        return known if known else self._tick

    # -- reads (retried) --------------------------------------------------------------------------------

    def get_order(self, order_id: str) -> BrokerOrder:
        body = self._read("get_order", self._sdk.get_order_by_id, order_id)
        if isinstance(body, list):
            # Dhan answers 200 [] for an id it does not know.
            if not body:
                raise OrderNotFound(f"get_order: Dhan does not know order {order_id}")
            body = body[0]
        return order_from_dhan(body, self._instruments)

    def find_by_correlation_id(self, correlation_id: str) -> BrokerOrder | None:
        try:
            body = self._read("find_by_correlation_id", self._sdk.get_order_by_correlationID, correlation_id)
        except OrderNotFound:
            matches = [o for o in self.orders() if o.correlation_id == correlation_id]
            return matches[-1] if matches else None
        if isinstance(body, list):
            body = body[-1] if body else None
        return order_from_dhan(body, self._instruments) if isinstance(body, Mapping) else None

    def orders(self) -> list[BrokerOrder]:
        body = self._read("orders", self._sdk.get_order_list)
        return [order_from_dhan(o, self._instruments) for o in _as_list(body)]

    def positions(self) -> list[BrokerPosition]:
        body = self._read("positions", self._sdk.get_positions)
        return [BrokerPosition(
            symbol=self._instruments.symbol(str(p.get("exchangeSegment") or "NSE_FNO"), p.get("securityId") or 0),
            net_qty=int(p.get("netQty") or 0), buy_avg=float(p.get("buyAvg") or 0.0),
            sell_avg=float(p.get("sellAvg") or 0.0), realized_pnl=float(p.get("realizedProfit") or 0.0))
            for p in _as_list(body)]

    def trades(self) -> list[BrokerTrade]:
        body = self._read("trades", self._sdk.get_trade_book)
        return [BrokerTrade(
            order_id=str(t.get("orderId", "")),
            symbol=self._instruments.symbol(str(t.get("exchangeSegment") or "NSE_FNO"), t.get("securityId") or 0),
            side=Side.SELL if str(t.get("transactionType", "")).upper() == "SELL" else Side.BUY,
            qty=int(t.get("tradedQuantity") or 0), price=float(t.get("tradedPrice") or 0.0),
            at=_dhan_time(t.get("exchangeTime") or t.get("createTime")))
            for t in _as_list(body)]

    # -- order updates ------------------------------------------------------------------------------------

    def subscribe_order_updates(self, listener: OrderUpdateListener) -> None:
        self._listeners.append(listener)
        if self._updates is None:
            self._updates = OrderUpdateStream(self._settings, self._client, self._on_update, token=self._token)
            self._updates.start()

    def order_updates_connected(self) -> bool:
        return self._updates is not None and self._updates.connected

    def rate_headroom(self) -> dict[str, float]:
        """Share of the order bucket free now (mybot_dhan_rate_limit_headroom_ratio{class="orders"})."""
        with self._bucket_lock:
            return {"orders": self._bucket.available(time.monotonic()) / self._bucket.burst}

    def close(self) -> None:
        if self._updates is not None:
            self._updates.stop()
            self._updates = None
        if self._owns_client:
            self._client.close()

    def _on_update(self, message: Mapping[str, Any]) -> None:
        data = message.get("Data")
        if not isinstance(data, Mapping):
            return
        try:
            order = order_from_update(data, self._instruments, self._clock.now())
        except (TypeError, ValueError) as exc:
            _log.event("BROKER_UPDATE_UNREADABLE", f"order update not understood: {exc}", level=30,
                       order_id=str(data.get("OrderNo") or ""), correlation_id=str(data.get("CorrelationId") or ""))
            return
        for listener in list(self._listeners):
            try:
                listener(order)
            except Exception as exc:  # noqa: BLE001 - one listener's bug must not starve the others
                _log.event("BROKER_LISTENER_FAILED", f"order-update listener raised: {exc}", level=40)

    # -- helpers ------------------------------------------------------------------------------------------

    def _order_slot(self, operation: str) -> None:
        deadline = time.monotonic() + self._max_wait
        while True:
            with self._bucket_lock:
                wait = self._bucket.acquire(time.monotonic())
            if wait <= 0:
                return
            if time.monotonic() + wait > deadline:
                raise RateLimited(f"{operation}: order rate limit, next slot in {wait:.2f} s", "LOCAL", wait)
            self._sleep(wait)

    def _read(self, operation: str, method: Callable[..., Any], *args: Any) -> Any:
        return self._retrying(self._client.call, operation, method, *args)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, TemporaryBrokerError) and not isinstance(exc, AmbiguousSubmitError)


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome is not None else None
    # state.args is (client.call, operation, sdk method, *its args): name the order the read was about.
    operation = state.args[1] if len(state.args) > 1 else ""
    subject = str(state.args[3]) if len(state.args) > 3 else ""
    ids = {"order_id": subject} if operation == "get_order" else (
        {"correlation_id": subject} if operation == "find_by_correlation_id" else {})
    _log.event("BROKER_RETRY", f"{operation or 'read'} failed, retrying: {exc}", level=30,
               attempt=state.attempt_number, code=getattr(exc, "code", ""), operation=operation, **ids)


def _as_list(body: Any) -> list[Mapping[str, Any]]:
    if isinstance(body, list):
        return [b for b in body if isinstance(b, Mapping)]
    if isinstance(body, Mapping):
        return [body]
    return []


class _QuietOrderUpdate(OrderUpdate):
    """dhanhq's OrderUpdate with one change: its connect_order_update() prints the login frame -- access
    token included -- to stdout, where our JSON logs go. Same protocol (login frame, then order_alert
    messages to handle_order_update -> on_update), without the print and with bounded timeouts."""

    on_connected: Callable[[], None] = staticmethod(lambda: None)  # type: ignore[assignment]
    open_timeout: float = 5.0
    websocket: Any = None  # the open connection (closed from outside when the token changes)

    async def connect_order_update(self) -> None:
        async with websockets.connect(self.order_feed_wss, open_timeout=self.open_timeout,
                                      close_timeout=1.0) as websocket:
            self.websocket = websocket
            login = {"LoginReq": {"MsgCode": 42, "ClientId": str(self.client_id),
                                  "Token": str(self.access_token)}, "UserType": "SELF"}
            await websocket.send(json.dumps(login))
            self.on_connected()
            async for message in websocket:
                data = json.loads(message)
                if isinstance(data, dict) and data.get("Type") == "order_alert":
                    self.handle_order_update(data)  # -> on_update(data)


class OrderUpdateStream:
    """The order-update socket on its own thread + event loop; reconnects with backoff and jitter."""

    def __init__(self, settings: Settings, client: DhanClient,
                 on_update: Callable[[Mapping[str, Any]], None], rng: random.Random | None = None,
                 token: TokenState | None = None) -> None:
        self._settings = settings
        self._client = client
        self._token = token
        self._unsubscribe_token: Callable[[], None] | None = None
        self._sdk: _QuietOrderUpdate | None = None
        self._on_update = on_update
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self.connected = False
        self.connections = 0

    def start(self) -> None:
        if self._token is not None:
            self._unsubscribe_token = self._token.subscribe(self._token_swapped)
        self._thread = threading.Thread(target=self._run, name="dhan-order-updates", daemon=True)
        self._thread.start()

    def _token_swapped(self, token: str) -> None:
        """A new token: drop the connection logged in with the old one; the loop logs in again with it."""
        with self._lock:
            loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._close_for_new_token)
        except RuntimeError:  # the loop closed meanwhile
            pass

    def _close_for_new_token(self) -> None:
        sdk = self._sdk
        websocket = sdk.websocket if sdk is not None else None
        if websocket is not None:
            _log.event("ORDER_UPDATES_TOKEN_SWAPPED", "new access token: logging the order-update socket in again")
            asyncio.ensure_future(websocket.close())

    def _loop_and_task(self) -> tuple[asyncio.AbstractEventLoop | None, asyncio.Task[None] | None]:
        with self._lock:
            return self._loop, self._task

    def stop(self, timeout: float = 2.0) -> None:
        if self._unsubscribe_token is not None:
            self._unsubscribe_token()
        with self._lock:
            self._stop.set()
        if not cancel_until_stopped(self._thread, self._loop_and_task, timeout):
            _log.event("ORDER_UPDATES_STOP_TIMEOUT", "order-update thread did not end in time", level=30)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            with self._lock:
                self._loop = loop
                self._task = loop.create_task(self._main())
                if self._stop.is_set():
                    self._task.cancel()
            loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        finally:
            self.connected = False
            loop.close()

    async def _main(self) -> None:
        sdk = _QuietOrderUpdate(self._client.context)
        self._sdk = sdk
        sdk.order_feed_wss = self._settings.dhan.order_update_url  # an instance attribute set in __init__
        sdk.on_update = self._on_update  # type: ignore[method-assign]
        sdk.on_connected = self._on_connected  # type: ignore[method-assign]
        sdk.open_timeout = self._settings.dhan.request_timeout_seconds
        initial = max(0.01, self._settings.supervision.backoff_initial_seconds)
        cap = max(initial, self._settings.supervision.backoff_max_seconds)
        backoff = initial
        while not self._stop.is_set():
            error = "closed by the server"
            if self._token is not None:
                sdk.access_token = self._token.current()  # the login frame carries it
            try:
                await sdk.connect_order_update()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any socket failure means: reconnect
                error = f"{type(exc).__name__}: {exc}"
            if self.connected:
                backoff = initial
            self.connected = False
            delay = backoff * (0.5 + self._rng.random() / 2)
            backoff = min(backoff * 2, cap)
            _log.event("ORDER_UPDATES_DISCONNECTED", f"order-update socket down: {error}", level=30,
                       retry_in=round(delay, 3))
            await asyncio.sleep(delay)

    def _on_connected(self) -> None:
        self.connected = True
        self.connections += 1
        _log.event("ORDER_UPDATES_CONNECTED", "order-update socket logged in", connections=self.connections)
