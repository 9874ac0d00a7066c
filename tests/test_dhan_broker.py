"""Specs for DhanBroker: the real dhanhq SDK against the fake Dhan (REST + order-update socket)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from actors.brokers.base import (
    AmbiguousSubmitError,
    OrderNotFound,
    PermanentBrokerError,
    TemporaryBrokerError,
)
from actors.clock import SystemClock
from actors.dhan.broker import DhanBroker, order_from_update
from actors.dhan.errors import RateLimited
from actors.dhan.ids import InstrumentMap
from config.settings import Settings
from core.orders import BrokerOrder, Leg, OrderRequest, OrderStatus, Side, correlation_id
from tests.fakedhan import FakeDhan

TIMEOUT = 0.5  # request timeout in these tests


@pytest.fixture
def fake() -> Iterator[FakeDhan]:
    with FakeDhan() as server:
        yield server


@pytest.fixture
def broker(fake: FakeDhan) -> Iterator[DhanBroker]:
    settings = Settings().replace(dhan=fake.dhan_settings(request_timeout_seconds=TIMEOUT),
                                  broker={"read_retry_initial_seconds": 0.01},
                                  supervision={"backoff_initial_seconds": 0.05})
    adapter = DhanBroker(settings, SystemClock())
    yield adapter
    adapter.close()


def entry(pos_id: str, symbol: str = "SEC_49081", side: Side = Side.BUY, qty: int = 75,
          price: float = 101.52) -> OrderRequest:
    return OrderRequest(correlation_id(pos_id, Leg.ENTRY), pos_id, Leg.ENTRY, symbol, side, qty, price, price)


class Updates:
    def __init__(self) -> None:
        self.orders: list[BrokerOrder] = []
        self._cond = threading.Condition()

    def __call__(self, order: BrokerOrder) -> None:
        with self._cond:
            self.orders.append(order)
            self._cond.notify_all()

    def wait_for(self, predicate, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
        with self._cond:
            return self._cond.wait_for(lambda: any(predicate(o) for o in self.orders), timeout)


def test_place_get_find_positions_and_trades_round_trip(fake: FakeDhan, broker: DhanBroker) -> None:
    placed = broker.place(entry("pos1"))
    assert placed.status is OrderStatus.TRANSIT
    assert placed.correlation_id == "pos1-E" and placed.symbol == "SEC_49081"
    assert placed.price == 101.55  # a BUY limit rounds up onto the 0.05 grid: never less marketable

    sent = fake.rest.requests_to("/orders", "POST")[0].body
    assert sent["correlationId"] == "pos1-E"
    assert (sent["orderType"], sent["productType"], sent["validity"]) == ("LIMIT", "INTRADAY", "DAY")
    assert (sent["exchangeSegment"], sent["securityId"], sent["transactionType"]) == ("NSE_FNO", "49081", "BUY")
    assert sent["quantity"] == 75 and sent["price"] == 101.55

    fetched = broker.get_order(placed.order_id)
    assert fetched.status is OrderStatus.TRADED
    assert (fetched.filled_qty, fetched.avg_price, fetched.remaining_qty) == (75, 101.55, 0)
    assert broker.find_by_correlation_id("pos1-E") == fetched
    assert [o.order_id for o in broker.orders()] == [placed.order_id]

    (position,) = broker.positions()
    assert (position.symbol, position.net_qty, position.buy_avg) == ("SEC_49081", 75, 101.55)
    (trade,) = broker.trades()
    assert (trade.order_id, trade.symbol, trade.side, trade.qty, trade.price) == (
        placed.order_id, "SEC_49081", Side.BUY, 75, 101.55)
    assert trade.at > 0


def test_cancel_and_modify_a_held_order(fake: FakeDhan, broker: DhanBroker) -> None:
    fake.state.hold_orders()
    placed = broker.place(entry("pos2", side=Side.SELL, price=99.98))
    assert placed.price == 99.95  # a SELL limit rounds down
    modified = broker.modify(placed.order_id, 150, 99.0)
    assert (modified.qty, modified.price, modified.status) == (150, 99.0, OrderStatus.PENDING)
    put = fake.rest.requests_to("/orders/*", "PUT")[0].body
    assert (put["quantity"], put["price"], put["legName"], put["orderType"]) == (150, 99.0, "ENTRY_LEG", "LIMIT")

    fake.state.fill(placed.order_id, qty=75, price=99.1)
    partly = broker.get_order(placed.order_id)
    assert (partly.status, partly.filled_qty, partly.avg_price) == (OrderStatus.PART_TRADED, 75, 99.1)
    cancelled = broker.cancel(placed.order_id)
    assert cancelled.status is OrderStatus.CANCELLED and cancelled.filled_qty == 75
    with pytest.raises(PermanentBrokerError) as again:
        broker.cancel(placed.order_id)
    assert again.value.code == "DH-906"


def test_an_ambiguous_place_is_resolved_by_correlation_id_to_exactly_one_order(
        fake: FakeDhan, broker: DhanBroker) -> None:
    fake.rest.delay("/orders", 3 * TIMEOUT, method="POST")  # Dhan takes the order but answers too late
    with pytest.raises(AmbiguousSubmitError) as unknown:
        broker.place(entry("pos3"))
    assert unknown.value.code == "TIMEOUT"
    found = broker.find_by_correlation_id("pos3-E")
    assert found is not None and found.correlation_id == "pos3-E"
    assert fake.state.count_orders("pos3-E") == 1
    assert len(fake.rest.requests_to("/orders", "POST")) == 1  # never retried on its own


@pytest.mark.parametrize(("status", "expected", "code"), [
    (500, AmbiguousSubmitError, "DH-908"),
    (429, RateLimited, "DH-904"),
    (401, PermanentBrokerError, "DH-901"),
])
def test_place_failures_are_classified_for_the_executor(fake: FakeDhan, broker: DhanBroker, status: int,
                                                         expected: type, code: str) -> None:
    fake.rest.fail("/orders", method="POST", status=status)
    with pytest.raises(expected) as failed:
        broker.place(entry("pos4"))
    assert failed.value.code == code
    assert len(fake.rest.requests_to("/orders", "POST")) == 1


def test_a_rejected_input_is_a_permanent_error(broker: DhanBroker) -> None:
    with pytest.raises(PermanentBrokerError) as rejected:
        broker.place(entry("pos5", qty=0))
    assert rejected.value.code == "DH-905"
    assert not isinstance(rejected.value, TemporaryBrokerError)


def test_find_by_correlation_id_sees_an_order_still_in_transit_through_the_order_book() -> None:
    with FakeDhan(transit_seconds=30.0) as fake:
        settings = Settings().replace(dhan=fake.dhan_settings(request_timeout_seconds=TIMEOUT))
        broker = DhanBroker(settings, SystemClock())
        try:
            placed = broker.place(entry("pos6"))
            found = broker.find_by_correlation_id("pos6-E")
            assert found is not None and found.order_id == placed.order_id
            assert found.status is OrderStatus.TRANSIT
            assert [r.status for r in fake.rest.requests_to("/orders/external/*")] == [404]
            with pytest.raises(TemporaryBrokerError) as transit:  # cancel while in transit: ask again later
                broker.cancel(placed.order_id)
            assert transit.value.code == "DH-906"
        finally:
            broker.close()


def test_unknown_orders(broker: DhanBroker) -> None:
    with pytest.raises(OrderNotFound):
        broker.get_order("999")
    assert broker.find_by_correlation_id("nobody-E") is None


def test_reads_are_retried_a_bounded_number_of_times(fake: FakeDhan, broker: DhanBroker) -> None:
    fake.state.add_position(49082, -150, price=80.0)  # a position the bot never opened
    fake.rest.fail("/positions", status=500, times=2)
    (position,) = broker.positions()
    assert (position.symbol, position.net_qty, position.sell_avg) == ("SEC_49082", -150, 80.0)
    assert len(fake.rest.requests_to("/positions")) == 3

    fake.rest.fail("/positions", status=503, times=10)
    with pytest.raises(TemporaryBrokerError):
        broker.positions()
    assert len(fake.rest.requests_to("/positions")) == 6  # read_attempts = 3, then give up


def test_orders_are_paced_at_ten_per_second(fake: FakeDhan, broker: DhanBroker) -> None:
    fake.state.hold_orders()
    # Dhan's 10/s, measured by the fake over 0.98 s: 20 ms of slack for loopback scheduling jitter.
    fake.rest.set_order_limit(10, window=0.98)
    for n in range(12):
        broker.place(entry(f"rate{n}"))
    posts = fake.rest.requests_to("/orders", "POST")
    assert [r.status for r in posts] == [200] * 12  # the fake's 10/s limit never had to refuse one
    arrivals = [r.mono for r in posts]
    # any 11 consecutive orders span at least 1 s (20 ms allowed for loopback scheduling jitter)
    assert all(arrivals[i + 10] - arrivals[i] >= 0.98 for i in range(len(arrivals) - 10))


def test_order_updates_arrive_through_the_order_update_socket(fake: FakeDhan, broker: DhanBroker) -> None:
    updates = Updates()
    broker.subscribe_order_updates(updates)
    assert fake.order_updates.wait_for_logins(1)
    login = fake.order_updates.logins[0]["LoginReq"]
    assert (login["MsgCode"], login["ClientId"], login["Token"]) == (42, fake.client_id, fake.access_token)

    placed = broker.place(entry("pos7"))
    assert updates.wait_for(lambda o: o.order_id == placed.order_id and o.status is OrderStatus.TRADED)
    traded = [o for o in updates.orders if o.status is OrderStatus.TRADED][0]
    assert (traded.correlation_id, traded.symbol, traded.side, traded.filled_qty, traded.avg_price) == (
        "pos7-E", "SEC_49081", Side.BUY, 75, 101.55)

    fake.state.hold_orders()
    held = broker.place(entry("pos8", side=Side.SELL))
    broker.cancel(held.order_id)  # Dhan's sample writes the status "Cancelled"
    assert updates.wait_for(lambda o: o.order_id == held.order_id and o.status is OrderStatus.CANCELLED)


def test_the_order_update_socket_reconnects_after_a_drop(fake: FakeDhan, broker: DhanBroker) -> None:
    updates = Updates()
    broker.subscribe_order_updates(updates)
    assert fake.order_updates.wait_for_logins(1)
    assert fake.order_updates.drop_connections() == 1
    assert fake.order_updates.wait_for_logins(2), "no new login after the drop"
    placed = broker.place(entry("pos9"))
    assert updates.wait_for(lambda o: o.order_id == placed.order_id and o.status is OrderStatus.TRADED)
    assert broker.order_updates_connected()


def test_order_update_messages_map_to_broker_orders() -> None:
    data = {"Exchange": "NSE", "Segment": "D", "SecurityId": "49081", "OrderNo": "1", "TxnType": "S",
            "Quantity": 150, "TradedQty": 75, "AvgTradedPrice": 99.5, "Price": 99.0, "Status": "Part_Traded",
            "CorrelationId": "p-X", "LastUpdatedTime": "2024-10-24 10:15:04", "ReasonDescription": "CONFIRMED"}
    order = order_from_update(data, InstrumentMap(), now=0.0)
    assert (order.order_id, order.symbol, order.side, order.qty, order.filled_qty) == ("1", "SEC_49081", Side.SELL,
                                                                                       150, 75)
    assert order.status is OrderStatus.PART_TRADED and order.correlation_id == "p-X"
    assert order.updated_at == 1729745104.0  # 2024-10-24 10:15:04 IST
    rejected = order_from_update({**data, "Status": "REJECTED", "ReasonDescription": "RMS: margin"},
                                 InstrumentMap(), now=0.0)
    assert rejected.status is OrderStatus.REJECTED and rejected.reason == "RMS: margin"
