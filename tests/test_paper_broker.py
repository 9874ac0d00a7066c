"""Specs for the paper broker: idempotent placement, latency, adverse slippage, LIMIT respect, partial
fills, cancels, order updates, the failure hooks the executor tests use, and a whole trade through it."""

from __future__ import annotations

import threading

import pytest

from actors.brokers.base import (
    AmbiguousSubmitError,
    OrderNotFound,
    PermanentBrokerError,
    TemporaryBrokerError,
)
from actors.brokers.paper import PaperBroker, paper_broker_from_settings
from actors.clock import VirtualClock
from config.settings import BrokerSettings
from core.orders import BrokerOrder, Leg, OrderRequest, OrderStatus, Side, correlation_id
from core.trade import (
    EntryRequested,
    ExitRequested,
    PlaceOrder,
    RecordClosedTrade,
    SignalAccepted,
    TradeContext,
    TradeState,
    apply,
    observe,
)

T0 = 1_795_147_200.0  # 2026-11-20 09:30 IST


class Market:
    def __init__(self, **prices: float) -> None:
        self.prices: dict[str, float] = dict(prices)

    def quote(self, symbol: str) -> float | None:
        return self.prices.get(symbol)


def request(cid: str = "T1-E", side: Side = Side.BUY, qty: int = 100, price: float = 0.0,
            symbol: str = "SEC_1") -> OrderRequest:
    return OrderRequest(correlation_id=cid, pos_id="T1", leg=Leg.ENTRY, symbol=symbol, side=side, qty=qty,
                        price=price, expected_price=100.0)


def make(latency: float = 0.0, slippage: float = 0.0, partial: bool = False,
         **prices: float) -> tuple[PaperBroker, VirtualClock, Market, list[BrokerOrder]]:
    market = Market(**(prices or {"SEC_1": 100.0}))
    clock = VirtualClock(T0)
    broker = PaperBroker(market.quote, clock, latency_seconds=latency, slippage_pct=slippage,
                         partial_fills=partial)
    updates: list[BrokerOrder] = []
    broker.subscribe_order_updates(updates.append)
    return broker, clock, market, updates


def test_place_accepts_at_once_transit_then_pending_and_tells_the_listeners() -> None:
    broker, _, _, updates = make()
    order = broker.place(request())
    assert order.status is OrderStatus.PENDING and order.filled_qty == 0 and order.updated_at == T0
    assert [u.status for u in updates] == [OrderStatus.TRANSIT, OrderStatus.PENDING]
    assert broker.get_order(order.order_id) == order == broker.find_by_correlation_id("T1-E")


def test_placing_the_same_correlation_id_twice_returns_the_existing_order() -> None:
    broker, _, _, updates = make()
    first = broker.place(request())
    again = broker.place(request(qty=999, price=1.0))
    assert again == first and len(broker.orders()) == 1 and len(updates) == 2
    broker.poll()
    assert broker.place(request()).status is OrderStatus.TRADED  # still that order, whatever its state
    assert len(broker.orders()) == 1


def test_concurrent_places_with_one_correlation_id_make_one_order() -> None:
    broker, _, _, _ = make()
    barrier = threading.Barrier(8)
    results: list[BrokerOrder] = []
    lock = threading.Lock()

    def place() -> None:
        barrier.wait(timeout=5)
        order = broker.place(request())
        with lock:
            results.append(order)

    threads = [threading.Thread(target=place) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert len(results) == 8 and len({r.order_id for r in results}) == 1 and len(broker.orders()) == 1


def test_ids_are_deterministic_from_a_counter() -> None:
    ids = []
    for _ in range(2):
        broker, _, _, _ = make()
        ids.append([broker.place(request(cid=f"T{i}-E")).order_id for i in range(3)])
    assert ids[0] == ids[1] and len(set(ids[0])) == 3


def test_fills_wait_for_the_latency_and_a_quote() -> None:
    broker, clock, market, updates = make(latency=0.5, SEC_1=100.0, SEC_2=50.0)
    order = broker.place(request(symbol="SEC_1"))
    assert broker.poll(T0 + 0.49) == []
    (filled,) = broker.poll(T0 + 0.5)
    assert filled.status is OrderStatus.TRADED and filled.filled_qty == 100 and filled.avg_price == 100.0
    assert updates[-1] == filled == broker.get_order(order.order_id)
    clock.advance(T0 + 1)
    broker.place(request(cid="T2-E", symbol="SEC_9"))  # nobody quotes SEC_9
    clock.advance(T0 + 5)
    assert broker.poll() == []
    market.prices["SEC_9"] = 12.5
    (late,) = broker.poll()
    assert late.avg_price == 12.5 and late.updated_at == T0 + 5


def test_slippage_moves_the_fill_against_us_on_both_sides() -> None:
    broker, _, _, _ = make(slippage=1.0)
    buy = broker.place(request(cid="B-E", side=Side.BUY))
    sell = broker.place(request(cid="S-E", side=Side.SELL))
    broker.poll()
    assert broker.get_order(buy.order_id).avg_price == pytest.approx(101.0)
    assert broker.get_order(sell.order_id).avg_price == pytest.approx(99.0)


def test_a_limit_is_never_crossed() -> None:
    broker, _, market, _ = make(slippage=0.5)
    buy = broker.place(request(cid="B-E", side=Side.BUY, price=100.0))  # market 100 + 0.5% = 100.5 > 100
    sell = broker.place(request(cid="S-E", side=Side.SELL, price=100.0))  # 99.5 < 100
    assert broker.poll() == []
    market.prices["SEC_1"] = 99.0  # buy executes at 99.495 <= 100, sell still below its limit
    (buy_fill,) = broker.poll()
    assert buy_fill.order_id == buy.order_id and buy_fill.avg_price == pytest.approx(99.495)
    market.prices["SEC_1"] = 101.0
    (sell_fill,) = broker.poll()
    assert sell_fill.order_id == sell.order_id and sell_fill.avg_price == pytest.approx(100.495)


def test_partial_fills_fill_half_first_then_the_rest() -> None:
    broker, _, market, updates = make(partial=True)
    order = broker.place(request(qty=75))
    (first,) = broker.poll()
    assert first.status is OrderStatus.PART_TRADED and first.filled_qty == 37 and first.remaining_qty == 38
    market.prices["SEC_1"] = 102.0
    (second,) = broker.poll()
    assert second.status is OrderStatus.TRADED and second.filled_qty == 75
    assert second.avg_price == pytest.approx((37 * 100 + 38 * 102) / 75)
    assert [t.qty for t in broker.trades()] == [37, 38]
    assert [u.status for u in updates if u.order_id == order.order_id][-2:] == [OrderStatus.PART_TRADED,
                                                                               OrderStatus.TRADED]


def test_held_fills_never_fill_until_released() -> None:
    broker, _, _, _ = make()
    broker.hold_fills(True)
    order = broker.place(request())
    assert broker.poll(T0 + 3600) == [] and broker.get_order(order.order_id).status is OrderStatus.PENDING
    broker.hold_fills(False)
    assert broker.poll()[0].status is OrderStatus.TRADED


def test_cancel_ends_a_working_order_and_keeps_its_fills() -> None:
    broker, _, _, updates = make(partial=True)
    order = broker.place(request())
    broker.poll()
    cancelled = broker.cancel(order.order_id)
    assert cancelled.status is OrderStatus.CANCELLED and cancelled.filled_qty == 50
    assert updates[-1] == cancelled and broker.cancel(order.order_id) == cancelled  # twice is harmless
    assert broker.poll() == []
    done = broker.place(request(cid="T2-E"))
    broker.poll()
    broker.poll()  # partial fills: half, then the rest
    with pytest.raises(PermanentBrokerError, match="TRADED"):
        broker.cancel(done.order_id)
    with pytest.raises(OrderNotFound):
        broker.cancel("nope")


def test_modify_changes_a_working_order() -> None:
    broker, _, _, updates = make()
    order = broker.place(request(price=95.0))
    assert broker.poll() == []
    modified = broker.modify(order.order_id, 100, 100.0)
    assert modified.price == 100.0 and updates[-1] == modified
    assert broker.poll()[0].status is OrderStatus.TRADED
    with pytest.raises(PermanentBrokerError):
        broker.modify(order.order_id, 100, 101.0)


def test_unknown_orders_are_typed_not_found() -> None:
    broker, _, _, _ = make()
    with pytest.raises(OrderNotFound):
        broker.get_order("P404")
    assert broker.find_by_correlation_id("nobody-E") is None


def test_fail_next_place_raises_once_and_books_nothing() -> None:
    broker, _, _, updates = make()
    broker.fail_next_place(TemporaryBrokerError("DH-904 rate limit", code="DH-904"))
    with pytest.raises(TemporaryBrokerError, match="rate limit"):
        broker.place(request())
    assert broker.orders() == [] and updates == [] and broker.find_by_correlation_id("T1-E") is None
    assert broker.place(request()).status is OrderStatus.PENDING


def test_an_ambiguous_submit_that_went_through_is_found_by_correlation_id() -> None:
    broker, _, _, _ = make()
    broker.fail_next_place(AmbiguousSubmitError("read timeout"), after_accept=True)
    with pytest.raises(AmbiguousSubmitError):
        broker.place(request())
    found = broker.find_by_correlation_id("T1-E")
    assert found is not None and found.status is OrderStatus.PENDING
    assert broker.place(request()) == found and len(broker.orders()) == 1  # resend = the same order


def test_reject_next_place_is_rejected_by_the_exchange_on_the_first_poll() -> None:
    broker, _, _, _ = make()
    broker.reject_next_place("RMS: insufficient margin")
    order = broker.place(request())
    assert order.status is OrderStatus.PENDING
    (rejected,) = broker.poll()
    assert rejected.status is OrderStatus.REJECTED and "margin" in rejected.reason
    assert broker.place(request(cid="T2-E")).status is OrderStatus.PENDING
    assert [o.status for o in broker.poll()] == [OrderStatus.TRADED]


def test_bad_requests_and_a_closed_broker_are_refused_permanently() -> None:
    broker, _, _, _ = make()
    with pytest.raises(PermanentBrokerError):
        broker.place(request(qty=0))
    with pytest.raises(PermanentBrokerError):
        broker.place(request(price=-1.0))
    broker.close()
    with pytest.raises(PermanentBrokerError, match="closed"):
        broker.place(request())


def test_positions_and_trades_follow_the_fills() -> None:
    broker, _, market, _ = make()
    broker.place(request(cid="A-E", side=Side.BUY, qty=150))
    broker.poll()
    market.prices["SEC_1"] = 104.0
    broker.place(request(cid="A-X", side=Side.SELL, qty=100))
    broker.poll()
    (position,) = broker.positions()
    assert position.net_qty == 50 and position.buy_avg == 100.0 and position.sell_avg == 104.0
    assert position.realized_pnl == pytest.approx(400.0)
    assert [(t.side, t.qty, t.price) for t in broker.trades()] == [(Side.BUY, 150, 100.0), (Side.SELL, 100, 104.0)]


def test_a_failing_listener_does_not_starve_the_others_and_listeners_may_call_back() -> None:
    broker, _, _, _ = make()
    seen: list[OrderStatus] = []

    def broken(order: BrokerOrder) -> None:
        raise RuntimeError("listener bug")

    def reentrant(order: BrokerOrder) -> None:
        seen.append(broker.get_order(order.order_id).status)  # would deadlock if called under the lock

    broker.subscribe_order_updates(broken)
    broker.subscribe_order_updates(reentrant)
    broker.place(request())
    broker.poll()
    assert seen[-1] is OrderStatus.TRADED and len(seen) == 3


def test_settings_build_a_broker_with_ms_latency() -> None:
    market = Market(SEC_1=100.0)
    broker = paper_broker_from_settings(BrokerSettings(paper_latency_ms=250.0, paper_slippage_pct=1.0),
                                        market.quote, VirtualClock(T0))
    broker.place(request())
    assert broker.poll(T0 + 0.2) == []
    assert broker.poll(T0 + 0.25)[0].avg_price == pytest.approx(101.0)


def test_a_whole_trade_runs_through_the_paper_broker_and_the_trade_machine() -> None:
    broker, clock, market, updates = make(latency=0.1, partial=True, SEC_1=100.0)
    context = TradeContext()
    outbox: list[object] = []

    def step(event: object) -> None:
        nonlocal context
        context, commands = apply(context, event)  # type: ignore[arg-type]
        for command in commands:
            outbox.append(command)
            if isinstance(command, PlaceOrder):
                for change in observe(context, broker.place(command.request), clock.now()):
                    step(change)

    def pump(now: float) -> None:
        clock.advance(now)
        for change in broker.poll():
            for event in observe(context, change, now):
                step(event)

    step(SignalAccepted(at=T0, pos_id="T1", symbol="SEC_1", instrument="NIFTY 24500 CE", side=Side.BUY,
                        qty=150, expected_price=100.0))
    step(EntryRequested(at=T0, limit_price=101.0, expected_price=100.0))
    assert context.state is TradeState.ORDER_PLACED
    assert context.entry_correlation_id == correlation_id("T1", Leg.ENTRY)
    pump(T0 + 0.1)
    assert context.state is TradeState.ENTRY_PARTIALLY_FILLED
    pump(T0 + 0.2)
    assert context.state is TradeState.POSITION_OPEN and context.open_qty == 150
    market.prices["SEC_1"] = 110.0
    step(ExitRequested(at=T0 + 60, reason="target", limit_price=108.0, expected_price=110.0))
    pump(T0 + 60.2)
    pump(T0 + 60.3)
    assert context.state is TradeState.CLOSED
    (record,) = [c for c in outbox if isinstance(c, RecordClosedTrade)]
    assert record.realized_pnl == pytest.approx(1500.0)
    assert len(broker.orders()) == 2 and all(u.correlation_id.startswith("T1-") for u in updates)
