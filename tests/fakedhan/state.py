"""The fake Dhan account: order book, trades, positions, quotes, option chains. Thread-safe.

Orders move TRANSIT -> PENDING (after `transit_seconds`) -> TRADED / PART_TRADED / CANCELLED. With
`auto_fill` (the default) an order is filled at its limit price as soon as it leaves TRANSIT; the test
can hold orders (`hold_orders()`) and fill them itself (`fill(order_id, qty, price)`). Every status
change is published to the order-update listeners as Dhan's `order_alert` message.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from core.instruments import Instrument

__all__ = ["FakeDhanState", "FakeOrder", "FakeOrderError", "dhan_time"]

IST = timezone(timedelta(hours=5, minutes=30))
TERMINAL = ("TRADED", "CANCELLED", "REJECTED", "EXPIRED")


def dhan_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, IST).strftime("%Y-%m-%d %H:%M:%S")


class FakeOrderError(Exception):
    """Becomes a Dhan trading-API error body: {"errorType", "errorCode", "errorMessage"}."""

    def __init__(self, status: int, code: str, message: str, error_type: str = "Order_Error") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.error_type = error_type

    def body(self) -> dict[str, str]:
        return {"errorType": self.error_type, "errorCode": self.code, "errorMessage": self.message}


@dataclass
class FakeOrder:
    order_id: str
    correlation_id: str
    transaction_type: str
    exchange_segment: str
    product_type: str
    order_type: str
    validity: str
    security_id: str
    quantity: int
    price: float
    trigger_price: float
    created: float
    status: str = "TRANSIT"
    filled_qty: int = 0
    traded_value: float = 0.0
    updated: float = 0.0
    reason: str = ""
    modifications: int = 0
    exchange_order_id: str = ""

    @property
    def avg_price(self) -> float:
        return round(self.traded_value / self.filled_qty, 2) if self.filled_qty else 0.0

    def as_json(self, client_id: str, instrument: Instrument | None = None) -> dict[str, Any]:
        at_exchange = self.status != "TRANSIT"
        return _with_contract({
            "dhanClientId": client_id, "orderId": self.order_id,
            "exchangeOrderId": self.exchange_order_id if at_exchange else "NA",
            "correlationId": self.correlation_id, "orderStatus": self.status,
            "transactionType": self.transaction_type, "exchangeSegment": self.exchange_segment,
            "productType": self.product_type, "orderType": self.order_type, "validity": self.validity,
            "tradingSymbol": f"SYM-{self.security_id}", "securityId": self.security_id,
            "quantity": self.quantity, "disclosedQuantity": 0, "price": self.price,
            "triggerPrice": self.trigger_price, "afterMarketOrder": False, "boProfitValue": 0.0,
            "boStopLossValue": 0.0, "legName": "NA", "createTime": dhan_time(self.created),
            "updateTime": dhan_time(self.updated or self.created),
            "exchangeTime": dhan_time(self.created) if at_exchange else "0001-01-01 00:00:00",
            "drvExpiryDate": "2024-10-31", "drvOptionType": "CALL", "drvStrikePrice": 25000.0,
            "omsErrorCode": "", "omsErrorDescription": self.reason or "CONFIRMED", "algoId": "0",
            "remainingQuantity": self.quantity - self.filled_qty,
            "averageTradedPrice": self.avg_price, "filledQty": self.filled_qty,
        }, instrument)

    def as_update(self, client_id: str, instrument: Instrument | None = None) -> dict[str, Any]:
        """The `Data` of an order_alert (dhan-api.md §4). Dhan's own sample writes "Cancelled"."""
        status = "Cancelled" if self.status == "CANCELLED" else self.status
        exchange, segment = _update_segment(self.exchange_segment)
        update = {
            "Exchange": exchange, "Segment": segment, "Source": "P", "SecurityId": self.security_id,
            "ClientId": client_id, "ExchOrderNo": self.exchange_order_id, "OrderNo": self.order_id,
            "Product": {"INTRADAY": "I", "CNC": "C", "MARGIN": "M"}.get(self.product_type, "I"),
            "TxnType": "B" if self.transaction_type == "BUY" else "S",
            "OrderType": {"LIMIT": "LMT", "MARKET": "MKT", "STOP_LOSS": "SL", "STOP_LOSS_MARKET": "SLM"}.get(
                self.order_type, "LMT"),
            "Validity": self.validity, "DiscQuantity": 0, "DiscQtyRem": 0,
            "RemainingQuantity": self.quantity - self.filled_qty, "Quantity": self.quantity,
            "TradedQty": self.filled_qty, "Price": self.price, "TriggerPrice": self.trigger_price,
            "TradedPrice": self.avg_price, "AvgTradedPrice": self.avg_price, "AlgoOrdNo": "",
            "OffMktFlag": "0", "OrderDateTime": dhan_time(self.created),
            "ExchOrderTime": dhan_time(self.created), "LastUpdatedTime": dhan_time(self.updated or self.created),
            "Remarks": "", "MktType": "NL", "ReasonDescription": self.reason or "CONFIRMED", "LegNo": 1,
            "Instrument": "OPTIDX", "Symbol": "NIFTY", "ProductName": "INTRADAY", "LotSize": 75,
            "StrikePrice": 25000.0, "ExpiryDate": "2024-10-31", "OptType": "CE",
            "DisplayName": f"SYM-{self.security_id}", "Isin": "NA", "Series": "XX", "GoodTillDaysDate": "",
            "RefLtp": self.price, "TickSize": 0.05, "AlgoId": "0", "Multiplier": 1,
            "CorrelationId": self.correlation_id, "Status": status,
        }
        if instrument is not None:  # the contract as the scrip master describes it
            update.update({"Symbol": instrument.underlying, "DisplayName": instrument.trading_symbol,
                           "LotSize": instrument.lot_size, "StrikePrice": instrument.strike,
                           "ExpiryDate": instrument.expiry, "OptType": instrument.option_type or "XX",
                           "TickSize": instrument.tick_size, "Instrument": instrument.instrument})
        return update


def _with_contract(order: dict[str, Any], instrument: Instrument | None) -> dict[str, Any]:
    if instrument is not None:
        order.update({"tradingSymbol": instrument.trading_symbol, "drvExpiryDate": instrument.expiry,
                      "drvOptionType": {"CE": "CALL", "PE": "PUT"}.get(instrument.option_type, "NA"),
                      "drvStrikePrice": instrument.strike})
    return order


def _update_segment(segment: str) -> tuple[str, str]:
    return {"NSE_FNO": ("NSE", "D"), "NSE_EQ": ("NSE", "E"), "BSE_EQ": ("BSE", "E"),
            "BSE_FNO": ("BSE", "D"), "IDX_I": ("NSE", "I")}.get(segment, ("NSE", "D"))


@dataclass
class _Position:
    exchange_segment: str
    security_id: str
    product_type: str
    buy_qty: int = 0
    sell_qty: int = 0
    buy_value: float = 0.0
    sell_value: float = 0.0

    def as_json(self, client_id: str) -> dict[str, Any]:
        net = self.buy_qty - self.sell_qty
        buy_avg = round(self.buy_value / self.buy_qty, 2) if self.buy_qty else 0.0
        sell_avg = round(self.sell_value / self.sell_qty, 2) if self.sell_qty else 0.0
        matched = min(self.buy_qty, self.sell_qty)
        return {
            "dhanClientId": client_id, "tradingSymbol": f"SYM-{self.security_id}",
            "securityId": self.security_id,
            "positionType": "LONG" if net > 0 else "SHORT" if net < 0 else "CLOSED",
            "exchangeSegment": self.exchange_segment, "productType": self.product_type,
            "buyAvg": buy_avg, "costPrice": buy_avg, "buyQty": self.buy_qty, "sellAvg": sell_avg,
            "sellQty": self.sell_qty, "netQty": net,
            "realizedProfit": round(matched * (sell_avg - buy_avg), 2), "unrealizedProfit": 0.0,
            "rbiReferenceRate": 1.0, "multiplier": 1, "carryForwardBuyQty": 0, "carryForwardSellQty": 0,
            "carryForwardBuyValue": 0.0, "carryForwardSellValue": 0.0, "dayBuyQty": self.buy_qty,
            "daySellQty": self.sell_qty, "dayBuyValue": round(self.buy_value, 2),
            "daySellValue": round(self.sell_value, 2), "drvExpiryDate": "2024-10-31",
            "drvOptionType": "CALL", "drvStrikePrice": 25000.0, "crossCurrency": False,
        }


OrderListener = Callable[[dict[str, Any]], None]


@dataclass
class FakeDhanState:
    client_id: str = "1000000001"
    auto_fill: bool = True
    transit_seconds: float = 0.0
    orders: dict[str, FakeOrder] = field(default_factory=dict)
    trades: list[dict[str, Any]] = field(default_factory=list)
    ltp: dict[tuple[str, int], float] = field(default_factory=lambda: {
        ("IDX_I", 13): 25642.8, ("IDX_I", 25): 52110.35, ("IDX_I", 27): 23990.1})
    expiries: dict[tuple[int, str], list[str]] = field(default_factory=lambda: {
        (13, "IDX_I"): ["2024-10-24", "2024-10-31", "2024-11-07"],
        (25, "IDX_I"): ["2024-10-30", "2024-11-27"],
        (27, "IDX_I"): ["2024-10-29", "2024-11-26"]})
    chains: dict[tuple[int, str, str], dict[str, Any]] = field(default_factory=dict)
    kill_switch: str = "DEACTIVATE"
    instruments: list[Instrument] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._ids = itertools.count(112111182198)
        self._trade_ids = itertools.count(15112111182045)
        self._positions: dict[tuple[str, str, str], _Position] = {}
        self._listeners: list[OrderListener] = []
        self._timers: list[threading.Timer] = []

    # -- listeners (the order-update socket) ----------------------------------------------------------

    def add_order_listener(self, listener: OrderListener) -> None:
        self._listeners.append(listener)

    def instrument(self, segment: str, security_id: str) -> Instrument | None:
        """The master's instrument for an order's contract, when a master is set."""
        for candidate in self.instruments:
            if candidate.segment == segment and candidate.security_id == security_id:
                return candidate
        return None

    def _publish(self, order: FakeOrder) -> None:
        contract = self.instrument(order.exchange_segment, order.security_id)
        message = {"Type": "order_alert", "Data": order.as_update(self.client_id, contract)}
        for listener in list(self._listeners):
            listener(message)

    # -- scripting from the test ----------------------------------------------------------------------

    def hold_orders(self, hold: bool = True) -> None:
        """Stop (or resume) filling orders automatically: they stay PENDING until `fill`."""
        self.auto_fill = not hold

    def fill(self, order_id: str, qty: int | None = None, price: float | None = None) -> FakeOrder:
        """Fill `qty` (default: all that remains) at `price` (default: the limit price)."""
        with self._lock:
            order = self.orders[order_id]
            if order.status in TERMINAL or order.status == "TRANSIT":
                raise FakeOrderError(400, "DH-906", f"Order is {order.status}, cannot fill")
            take = order.quantity - order.filled_qty if qty is None else min(qty, order.quantity - order.filled_qty)
            at = order.price if price is None else price
            order.filled_qty += take
            order.traded_value += take * at
            order.status = "TRADED" if order.filled_qty >= order.quantity else "PART_TRADED"
            order.updated = time.time()
            self._record_trade(order, take, at)
            self._book_position(order.exchange_segment, order.security_id, order.product_type,
                                order.transaction_type, take, at)
        self._publish(order)
        return order

    def add_position(self, security_id: int | str, net_qty: int, price: float = 100.0,
                     segment: str = "NSE_FNO", product: str = "INTRADAY") -> None:
        """A position the bot did not open (manual trade on the broker's app)."""
        with self._lock:
            side = "BUY" if net_qty > 0 else "SELL"
            self._book_position(segment, str(security_id), product, side, abs(net_qty), price)

    def set_ltp(self, segment: str, security_id: int, price: float) -> None:
        """The market trades at `price`: resting stop-loss orders it crosses trigger and, their limit being
        marketable, fill at it (as the exchange would; held orders or not)."""
        with self._lock:
            self.ltp[(segment, int(security_id))] = price
            crossed = [o.order_id for o in self.orders.values() if o.order_type == "STOP_LOSS"
                       and o.status in ("PENDING", "PART_TRADED") and o.exchange_segment == segment
                       and int(o.security_id) == int(security_id)
                       and (price <= o.trigger_price if o.transaction_type == "SELL" else price >= o.trigger_price)
                       and (price >= o.price if o.transaction_type == "SELL" else price <= o.price)]
        for order_id in crossed:
            self.fill(order_id, price=price)

    def set_option_chain(self, scrip: int, segment: str, expiry: str, data: dict[str, Any]) -> None:
        with self._lock:
            self.chains[(scrip, segment, expiry)] = data
            self.expiries.setdefault((scrip, segment), [])
            if expiry not in self.expiries[(scrip, segment)]:
                self.expiries[(scrip, segment)].append(expiry)

    def set_scrip_master(self, instruments: list[Instrument], *, list_expiries: bool = True) -> None:
        """Serve these instruments. Order answers and updates describe a known contract as the master
        does; a chain not set explicitly is built from the master's options of that expiry (so its
        security ids are the master's). With `list_expiries`, an index's expiry list becomes exactly its
        options' expiries in the master; without, the scripted lists stay (older tests rely on them)."""
        with self._lock:
            self.instruments = list(instruments)
            if not list_expiries:
                return
            scrips = {i.underlying: int(i.security_id) for i in instruments if i.instrument == "INDEX"}
            by_scrip: dict[int, set[str]] = {}
            for i in instruments:
                if i.is_option and i.underlying in scrips:
                    by_scrip.setdefault(scrips[i.underlying], set()).add(i.expiry)
            for scrip, expiries in by_scrip.items():
                self.expiries[(scrip, "IDX_I")] = sorted(expiries)

    def chain_from_master(self, scrip: int, expiry: str, last_price: float) -> dict[str, Any] | None:
        """The option chain of one expiry from the master's options, premiums made up around the spot."""
        with self._lock:
            names = {int(i.security_id): i.underlying for i in self.instruments if i.instrument == "INDEX"}
            underlying = names.get(scrip)
            options = [i for i in self.instruments
                       if i.is_option and i.underlying == underlying and i.expiry == expiry]
        if not options:
            return None
        oc: dict[str, Any] = {}
        for option in options:
            sign = 1 if option.option_type == "CE" else -1
            price = round(max(0.0, sign * (last_price - option.strike)) + 80.0, 2)
            leg = oc.setdefault(f"{option.strike:.6f}", {})
            leg[option.option_type.lower()] = {
                "average_price": price, "greeks": {"delta": 0.5 * sign, "theta": -15.1, "gamma": 0.0013,
                                                   "vega": 12.2},
                "implied_volatility": 10.5, "last_price": price, "oi": 100000, "previous_close_price": price + 5,
                "previous_oi": 90000, "previous_volume": 1000000, "security_id": int(option.security_id),
                "top_ask_price": round(price + 0.05, 2), "top_ask_quantity": 1365,
                "top_bid_price": round(price - 0.05, 2), "top_bid_quantity": 1625, "volume": 5000000,
            }
        return {"last_price": last_price, "oc": dict(sorted(oc.items(), key=lambda kv: float(kv[0])))}

    def orders_with_correlation_id(self, correlation_id: str) -> list[FakeOrder]:
        with self._lock:
            return [o for o in self.orders.values() if o.correlation_id == correlation_id]

    def count_orders(self, correlation_id: str) -> int:
        return len(self.orders_with_correlation_id(correlation_id))

    # -- what the REST handlers call --------------------------------------------------------------------

    def place(self, payload: dict[str, Any]) -> FakeOrder:
        required = ("transactionType", "exchangeSegment", "productType", "orderType", "validity",
                    "securityId", "quantity")
        for key in required:
            if key not in payload or payload[key] in ("", None):
                raise FakeOrderError(400, "DH-905", f"Missing required field {key}", "Input_Exception")
        correlation = str(payload.get("correlationId") or "")
        if len(correlation) > 25:
            raise FakeOrderError(400, "DH-905", "correlationId exceeds 25 characters", "Input_Exception")
        if int(payload["quantity"]) <= 0:
            raise FakeOrderError(400, "DH-905", "Quantity must be positive", "Input_Exception")
        if payload["orderType"] in ("LIMIT", "STOP_LOSS") and float(payload.get("price") or 0) <= 0:
            raise FakeOrderError(400, "DH-905", "Price is required for LIMIT orders", "Input_Exception")
        if payload["orderType"] in ("STOP_LOSS", "STOP_LOSS_MARKET") and float(payload.get("triggerPrice") or 0) <= 0:
            raise FakeOrderError(400, "DH-905", "Trigger price is required for stop-loss orders", "Input_Exception")
        if self.kill_switch == "ACTIVATE":
            raise FakeOrderError(400, "DH-906", "Kill switch is active")
        with self._lock:
            order_id = str(next(self._ids))
            order = FakeOrder(
                order_id=order_id, correlation_id=correlation,
                transaction_type=payload["transactionType"], exchange_segment=payload["exchangeSegment"],
                product_type=payload["productType"], order_type=payload["orderType"],
                validity=payload["validity"], security_id=str(payload["securityId"]),
                quantity=int(payload["quantity"]), price=float(payload.get("price") or 0.0),
                trigger_price=float(payload.get("triggerPrice") or 0.0), created=time.time(),
                exchange_order_id=f"11000000{order_id[-8:]}")
            self.orders[order_id] = order
        if self.transit_seconds > 0:
            timer = threading.Timer(self.transit_seconds, self._leave_transit, args=(order_id,))
            timer.daemon = True
            self._timers.append(timer)
            timer.start()
        else:
            self._leave_transit(order_id)
        return order

    def _leave_transit(self, order_id: str) -> None:
        with self._lock:
            order = self.orders[order_id]
            if order.status != "TRANSIT":
                return
            order.status = "PENDING"
            order.updated = time.time()
            fill_now = self.auto_fill and order.order_type not in ("STOP_LOSS", "STOP_LOSS_MARKET")  # until triggered
        self._publish(order)
        if fill_now:
            self.fill(order_id)

    def order(self, order_id: str) -> FakeOrder | None:
        with self._lock:
            return self.orders.get(order_id)

    def cancel(self, order_id: str) -> FakeOrder:
        with self._lock:
            order = self.orders.get(order_id)
            if order is None:
                raise FakeOrderError(400, "DH-906", "Incorrect request for order and cannot be processed")
            if order.status == "TRANSIT":
                raise FakeOrderError(400, "DH-906", "Order is in Transit state")
            if order.status in TERMINAL:
                raise FakeOrderError(400, "DH-906", f"Order is already {order.status}")
            order.status = "CANCELLED"
            order.updated = time.time()
        self._publish(order)
        return order

    def modify(self, order_id: str, payload: dict[str, Any]) -> FakeOrder:
        with self._lock:
            order = self.orders.get(order_id)
            if order is None:
                raise FakeOrderError(400, "DH-906", "Incorrect request for order and cannot be processed")
            if order.status == "TRANSIT":
                raise FakeOrderError(400, "DH-906", "Order is in Transit state")
            if order.status in TERMINAL:
                raise FakeOrderError(400, "DH-906", f"Order is already {order.status}")
            if order.modifications >= 25:
                raise FakeOrderError(400, "DH-906", "Order modification limit reached")
            quantity = int(payload.get("quantity") or order.quantity)
            if quantity < order.filled_qty:
                raise FakeOrderError(400, "DH-905", "Quantity below traded quantity", "Input_Exception")
            order.quantity = quantity
            order.price = float(payload.get("price") or order.price)
            order.order_type = str(payload.get("orderType") or order.order_type)
            order.trigger_price = float(payload.get("triggerPrice") or 0.0) if order.order_type in (
                "STOP_LOSS", "STOP_LOSS_MARKET") else 0.0
            order.modifications += 1
            order.updated = time.time()
        self._publish(order)
        return order

    def order_list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [o.as_json(self.client_id, self.instrument(o.exchange_segment, o.security_id))
                    for o in self.orders.values()]

    def trade_list(self, order_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(t) for t in self.trades if order_id is None or t["orderId"] == order_id]

    def position_list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [p.as_json(self.client_id) for p in self._positions.values()]

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()

    # -- bookkeeping --------------------------------------------------------------------------------------

    def _record_trade(self, order: FakeOrder, qty: int, price: float) -> None:
        now = dhan_time(time.time())
        self.trades.append({
            "dhanClientId": self.client_id, "orderId": order.order_id,
            "exchangeOrderId": order.exchange_order_id, "exchangeTradeId": str(next(self._trade_ids)),
            "transactionType": order.transaction_type, "exchangeSegment": order.exchange_segment,
            "productType": order.product_type, "orderType": order.order_type,
            "tradingSymbol": f"SYM-{order.security_id}", "customSymbol": f"SYM {order.security_id}",
            "securityId": order.security_id, "tradedQuantity": qty, "tradedPrice": price,
            "createTime": now, "updateTime": now, "exchangeTime": now, "drvExpiryDate": "2024-10-31",
            "drvOptionType": "CALL", "drvStrikePrice": 25000.0,
        })

    def _book_position(self, segment: str, security_id: str, product: str, side: str, qty: int,
                       price: float) -> None:
        key = (segment, security_id, product)
        pos = self._positions.setdefault(key, _Position(segment, security_id, product))
        if side == "BUY":
            pos.buy_qty += qty
            pos.buy_value += qty * price
        else:
            pos.sell_qty += qty
            pos.sell_value += qty * price
