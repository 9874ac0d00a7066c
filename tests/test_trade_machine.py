"""Specs for the trade lifecycle: the one transition table, every legal path, journal replay."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace

import pytest

from core.orders import BrokerOrder, Leg, OrderStatus, Side, correlation_id
from core.trade import (
    BROKER_STOP_REASON,
    EVENT_TYPES,
    EXIT_ALERT_EVERY,
    TERMINAL_STATES,
    TRANSITIONS,
    AlertOperator,
    CancelOrder,
    Command,
    EntryCancelRequested,
    EntryDenied,
    EntryRepriced,
    EntryRequested,
    Event,
    EventDecodeError,
    ExitRequested,
    IllegalTransition,
    ModifyOrder,
    OrderCancelled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderPlaced,
    OrderRejected,
    OrderSlippageDetected,
    OrderTimedOut,
    PlaceOrder,
    PositionAdopted,
    RaiseExitSignal,
    RecordClosedTrade,
    SignalAccepted,
    StopCancelRequested,
    StopMoved,
    StopRequested,
    TradeContext,
    TradeState,
    apply,
    can_apply,
    event_from_payload,
    observe,
    order_news,
    rebuild,
    request_for,
    slippage_exceeded,
    slippage_guard,
    slippage_pct,
    timeout_due,
)

S = TradeState
POS = "T20261120-001"
ENTRY_CID = correlation_id(POS, Leg.ENTRY)
T0 = 1_763_611_200.0  # 2025-11-20 09:30 IST


def signal(side: Side = Side.BUY, qty: int = 150, price: float = 100.0) -> SignalAccepted:
    return SignalAccepted(at=T0, pos_id=POS, symbol="SEC_49081", instrument="NIFTY 24500 CE", side=side,
                          qty=qty, expected_price=price, reason="score 0.81")


def entry(limit: float = 101.0, expected: float = 100.0) -> EntryRequested:
    return EntryRequested(at=T0 + 0.01, limit_price=limit, expected_price=expected)


def placed(leg: Leg = Leg.ENTRY, order_id: str = "E1", qty: int = 150, attempt: int = 0,
           at: float = T0 + 0.1) -> OrderPlaced:
    return OrderPlaced(at=at, order_id=order_id, correlation_id=correlation_id(POS, leg, attempt), leg=leg,
                       qty=qty, price=101.0)


def filled(qty: int, price: float, leg: Leg = Leg.ENTRY, order_id: str = "E1", at: float = T0 + 1) -> OrderFilled:
    return OrderFilled(at=at, order_id=order_id, leg=leg, filled_qty=qty, avg_price=price)


def part(qty: int, price: float, leg: Leg = Leg.ENTRY, order_id: str = "E1",
         at: float = T0 + 1) -> OrderPartiallyFilled:
    return OrderPartiallyFilled(at=at, order_id=order_id, leg=leg, filled_qty=qty, avg_price=price)


def exit_req(reason: str = "exit score 0.7", at: float = T0 + 60) -> ExitRequested:
    return ExitRequested(at=at, reason=reason, limit_price=95.0, expected_price=96.0)


def stop_req(trigger: float = 88.2, limit: float = 87.3, at: float = T0 + 2) -> StopRequested:
    return StopRequested(at=at, trigger_price=trigger, limit_price=limit)


class Run:
    """Applies events one by one, keeping the commands and the (state, event type) pairs used."""

    def __init__(self) -> None:
        self.context = TradeContext()
        self.commands: list[Command] = []
        self.journal: list[Event] = []
        self.pairs: set[tuple[TradeState, type[Event]]] = set()
        self.states: list[TradeState] = []

    def __call__(self, *events: Event) -> list[Command]:
        out: list[Command] = []
        for event in events:
            self.pairs.add((self.context.state, type(event)))
            self.context, commands = apply(self.context, event)
            self.journal.append(event)
            self.states.append(self.context.state)
            out.extend(commands)
        self.commands.extend(out)
        return out


def opened(qty: int = 150, price: float = 100.0) -> Run:
    run = Run()
    run(signal(qty=qty), entry(), placed(qty=qty), filled(qty, price))
    return run


# ----------------------------------------------------------------------------------- the legal paths


def path_happy() -> Run:
    run = Run()
    assert run(signal()) == []
    (place,) = run(entry())
    assert isinstance(place, PlaceOrder)
    assert place.request.correlation_id == ENTRY_CID and place.request.qty == 150
    assert place.request.side is Side.BUY and place.request.price == 101.0
    run(placed(), filled(150, 100.0))
    (exit_order,) = run(exit_req())
    assert isinstance(exit_order, PlaceOrder)
    assert exit_order.request.side is Side.SELL and exit_order.request.qty == 150
    assert exit_order.request.correlation_id == correlation_id(POS, Leg.EXIT)
    run(placed(Leg.EXIT, "X1"))
    (record,) = run(filled(150, 104.0, Leg.EXIT, "X1", at=T0 + 90))
    assert isinstance(record, RecordClosedTrade)
    assert record.realized_pnl == pytest.approx(600.0) and record.exit_reason == "exit score 0.7"
    assert run.states == [S.SIGNAL_GENERATED, S.ENTRY_PENDING, S.ORDER_PLACED, S.POSITION_OPEN, S.EXIT_PENDING,
                          S.EXIT_ORDER_PLACED, S.CLOSED]
    return run


def path_denied() -> Run:
    run = Run()
    run(signal(), EntryDenied(at=T0, reason="kill switch engaged"))
    assert run.context.state is S.DENIED and run.context.reason == "kill switch engaged"
    return run


def path_rejected_at_submit() -> Run:
    run = Run()
    run(signal(), entry(), OrderRejected(at=T0 + 0.2, leg=Leg.ENTRY, reason="DH-905 bad price"))
    assert run.context.state is S.REJECTED and run.context.open_qty == 0
    return run


def path_rejected_after_placement() -> Run:
    run = Run()
    run(signal(), entry(), placed(), OrderRejected(at=T0 + 0.3, leg=Leg.ENTRY, reason="RMS margin", order_id="E1"))
    assert run.context.state is S.REJECTED
    return run


def path_cancelled_elsewhere() -> Run:
    run = Run()
    run(signal(), entry(), placed(), OrderCancelled(at=T0 + 5, order_id="E1", leg=Leg.ENTRY, reason="expired"))
    assert run.context.state is S.CANCELLED
    return run


def path_timeout_cancel_cancelled() -> Run:
    run = Run()
    run(signal(), entry(), placed())
    assert run(OrderTimedOut(at=T0 + 30, order_id="E1", leg=Leg.ENTRY)) == [CancelOrder(POS, "E1", Leg.ENTRY)]
    assert run(OrderCancelled(at=T0 + 31, order_id="E1", leg=Leg.ENTRY)) == []
    assert run.states[-2:] == [S.ENTRY_CANCEL_PENDING, S.CANCELLED]
    return run


def path_rejected_while_cancelling() -> Run:
    run = Run()
    run(signal(), entry(), placed(), OrderTimedOut(at=T0 + 30, order_id="E1", leg=Leg.ENTRY),
        OrderRejected(at=T0 + 30.5, leg=Leg.ENTRY, reason="circuit limit", order_id="E1"))
    assert run.context.state is S.REJECTED
    return run


def path_partial_then_timeout_opens_with_filled_qty() -> Run:
    run = Run()
    run(signal(), entry(), placed(), part(50, 100.0), part(75, 100.2))
    assert run.context.state is S.ENTRY_PARTIALLY_FILLED and run.context.entry_filled_qty == 75
    assert run(OrderTimedOut(at=T0 + 30, order_id="E1", leg=Leg.ENTRY)) == [CancelOrder(POS, "E1", Leg.ENTRY)]
    assert run.context.state is S.ENTRY_PARTIAL_CANCEL_PENDING
    assert run(OrderCancelled(at=T0 + 31, order_id="E1", leg=Leg.ENTRY)) == []
    assert run.context.state is S.POSITION_OPEN and run.context.open_qty == 75
    (exit_order,) = run(exit_req())
    assert isinstance(exit_order, PlaceOrder) and exit_order.request.qty == 75  # only what we hold
    return run


def path_late_fill_after_timeout_opens_the_position() -> Run:
    run = Run()
    run(signal(), entry(), placed(), OrderTimedOut(at=T0 + 30, order_id="E1", leg=Leg.ENTRY))
    assert run(filled(150, 100.5, at=T0 + 30.2)) == []  # no pending exit: the position is just open
    assert run.context.state is S.POSITION_OPEN and run.context.open_qty == 150
    assert run.context.opened_at == T0 + 30.2
    return run


def path_late_partial_after_timeout_then_remainder() -> Run:
    run = Run()
    run(signal(), entry(), placed(), OrderTimedOut(at=T0 + 30, order_id="E1", leg=Leg.ENTRY),
        part(100, 100.0, at=T0 + 30.1), part(120, 100.0, at=T0 + 30.2), filled(150, 100.0, at=T0 + 30.3))
    assert run.states[-3:] == [S.ENTRY_PARTIAL_CANCEL_PENDING, S.ENTRY_PARTIAL_CANCEL_PENDING, S.POSITION_OPEN]
    return run


def path_remainder_cancelled_elsewhere_keeps_fills() -> Run:
    run = Run()
    run(signal(), entry(), placed(), part(50, 100.0), filled(150, 100.1))
    run2 = Run()
    run2(signal(), entry(), placed(), part(50, 100.0),
         OrderCancelled(at=T0 + 9, order_id="E1", leg=Leg.ENTRY, reason="IOC remainder"))
    assert run2.context.state is S.POSITION_OPEN and run2.context.open_qty == 50
    run.pairs |= run2.pairs
    return run


def path_exit_before_fill_cancels_entry() -> Run:
    run = Run()
    run(signal(), entry(), placed())
    assert run(exit_req("square-off")) == [CancelOrder(POS, "E1", Leg.ENTRY)]
    assert run(exit_req("kill switch")) == []  # the cancel is already on its way
    run(OrderCancelled(at=T0 + 61, order_id="E1", leg=Leg.ENTRY))
    assert run.context.state is S.CANCELLED
    return run


def path_exit_during_partial_entry_opens_then_exits() -> Run:
    run = Run()
    run(signal(), entry(), placed(), part(50, 100.0))
    assert run(exit_req("square-off")) == [CancelOrder(POS, "E1", Leg.ENTRY)]
    assert run(exit_req("kill switch")) == []
    # The remainder fills before the cancel lands: open, and the exit is asked for again at once.
    assert run(filled(150, 100.0, at=T0 + 61)) == [RaiseExitSignal(POS, "kill switch")]
    assert run.context.state is S.POSITION_OPEN
    run2 = Run()
    run2(signal(), entry(), placed(), OrderTimedOut(at=T0 + 30, order_id="E1", leg=Leg.ENTRY),
         exit_req("square-off"), part(50, 100.0, at=T0 + 30.5))
    assert run2(OrderCancelled(at=T0 + 31, order_id="E1", leg=Leg.ENTRY)) == [RaiseExitSignal(POS, "square-off")]
    assert run2.context.state is S.POSITION_OPEN and run2.context.open_qty == 50
    run.pairs |= run2.pairs
    return run


def path_slippage_raises_exit_and_closes() -> Run:
    run = opened(price=101.0)  # expected 100: 1% adverse on a BUY
    guard = slippage_guard(run.context, max_slippage_pct=0.5, at=T0 + 2)
    assert isinstance(guard, OrderSlippageDetected) and guard.pct == pytest.approx(1.0)
    (raise_exit,) = run(guard)
    assert isinstance(raise_exit, RaiseExitSignal) and "ORDER_SLIPPAGE" in raise_exit.reason
    assert slippage_guard(run.context, 0.5, T0 + 3) is None  # flagged once only
    run(exit_req("ORDER_SLIPPAGE"), placed(Leg.EXIT, "X1"), filled(150, 100.0, Leg.EXIT, "X1"))
    assert run.context.state is S.CLOSED and run.context.realized_pnl == pytest.approx(-150.0)
    return run


def path_exit_rejected_then_retried() -> Run:
    run = opened()
    run(exit_req())
    (retry,) = run(OrderRejected(at=T0 + 61, leg=Leg.EXIT, reason="DH-906 freeze qty"))
    assert isinstance(retry, RaiseExitSignal) and run.context.state is S.POSITION_OPEN
    (second,) = run(exit_req("retry"))
    assert isinstance(second, PlaceOrder)
    assert second.request.correlation_id == correlation_id(POS, Leg.EXIT, 1)  # a new order, deliberately
    run(placed(Leg.EXIT, "X2", attempt=1), OrderRejected(at=T0 + 63, leg=Leg.EXIT, reason="RMS", order_id="X2"))
    assert run.context.state is S.POSITION_OPEN
    return run


def path_exit_timeout_partial_cancel_then_retry_closes() -> Run:
    run = opened()
    run(exit_req(), placed(Leg.EXIT, "X1", at=T0 + 61), part(60, 104.0, Leg.EXIT, "X1"),
        part(100, 104.0, Leg.EXIT, "X1"))
    assert run(OrderTimedOut(at=T0 + 91, order_id="X1", leg=Leg.EXIT)) == [CancelOrder(POS, "X1", Leg.EXIT)]
    run(part(110, 104.0, Leg.EXIT, "X1", at=T0 + 91.5))  # still filling while the cancel travels
    (retry,) = run(OrderCancelled(at=T0 + 92, order_id="X1", leg=Leg.EXIT))
    assert isinstance(retry, RaiseExitSignal) and run.context.open_qty == 40
    run(exit_req("retry", at=T0 + 93), placed(Leg.EXIT, "X2", qty=40, attempt=1, at=T0 + 93))
    assert run.commands[-1].request.qty == 40  # type: ignore[union-attr]
    (record,) = run(part(20, 102.0, Leg.EXIT, "X2"), filled(40, 102.0, Leg.EXIT, "X2", at=T0 + 95))
    assert isinstance(record, RecordClosedTrade) and record.qty == 150
    # 110 units at 104 and 40 at 102 against 150 bought at 100
    assert record.avg_exit_price == pytest.approx((110 * 104 + 40 * 102) / 150)
    assert record.realized_pnl == pytest.approx(110 * 4 + 40 * 2)
    return run


def path_exit_timeouts_late_fill_and_external_cancels() -> Run:
    run = opened()
    run(exit_req(), placed(Leg.EXIT, "X1"), OrderTimedOut(at=T0 + 90, order_id="X1", leg=Leg.EXIT))
    run(filled(150, 103.0, Leg.EXIT, "X1", at=T0 + 90.5))  # late exit fill after the timeout
    assert run.context.state is S.CLOSED
    others = Run()
    others(signal(), entry(), placed(), filled(150, 100.0), exit_req(), placed(Leg.EXIT, "X1"),
           OrderCancelled(at=T0 + 70, order_id="X1", leg=Leg.EXIT, reason="cancelled in the Dhan app"))
    assert others.context.state is S.POSITION_OPEN
    others(exit_req(), placed(Leg.EXIT, "X2", attempt=1), part(50, 101.0, Leg.EXIT, "X2"),
           OrderCancelled(at=T0 + 80, order_id="X2", leg=Leg.EXIT))
    others(exit_req(), placed(Leg.EXIT, "X3", attempt=2), OrderTimedOut(at=T0 + 90, order_id="X3", leg=Leg.EXIT),
           OrderRejected(at=T0 + 91, leg=Leg.EXIT, reason="late reject", order_id="X3"))
    others(exit_req(), placed(Leg.EXIT, "X4", attempt=3), part(60, 101.0, Leg.EXIT, "X4"),
           OrderTimedOut(at=T0 + 95, order_id="X4", leg=Leg.EXIT), filled(100, 101.0, Leg.EXIT, "X4"))
    assert others.context.state is S.CLOSED and others.context.exit_filled_qty == 150
    run.pairs |= others.pairs
    return run


def path_exit_never_gives_up_and_pages_every_n_failures() -> Run:
    run = opened()
    for attempt in range(2 * EXIT_ALERT_EVERY):
        run(exit_req("EXIT_SCORE"))
        last = run(OrderRejected(at=T0 + 61, leg=Leg.EXIT, reason="RMS block"))
        retry = last[0]
        assert isinstance(retry, RaiseExitSignal) and retry.failed_attempts == attempt + 1
        assert retry.reason == "EXIT_SCORE" and "RMS block" in retry.detail  # the exit keeps its own reason
        alerts = [c for c in last if isinstance(c, AlertOperator)]
        assert len(alerts) == (1 if (attempt + 1) % EXIT_ALERT_EVERY == 0 else 0)
        if alerts:
            assert "150 units still open" in alerts[0].message and "still retrying" in alerts[0].message
    assert run.context.state is S.POSITION_OPEN and run.context.exit_reason == "EXIT_SCORE"
    return run


def path_rejected_remainders_keep_their_fills() -> Run:
    """A partial fill followed by a rejection (entry remainder, entry remainder being cancelled, exit remainder)
    leaves a position holding exactly the filled units, and it is exitable."""
    run = Run()
    run(signal(), entry(), placed(), part(50, 100.0))
    run(OrderRejected(at=T0 + 20, leg=Leg.ENTRY, reason="RMS: remainder rejected", order_id="E1"))
    assert run.context.state is S.POSITION_OPEN and run.context.open_qty == 50
    assert can_apply(run.context, ExitRequested)
    run(exit_req(), placed(Leg.EXIT, "X1", qty=50), part(20, 101.0, Leg.EXIT, "X1"))
    commands = run(OrderRejected(at=T0 + 40, leg=Leg.EXIT, reason="exit remainder rejected", order_id="X1"))
    assert run.context.state is S.POSITION_OPEN and run.context.open_qty == 30
    assert isinstance(commands[0], RaiseExitSignal) and commands[0].failed_attempts == 1
    cancelling = Run()
    cancelling(signal(), entry(), placed(), part(40, 100.0), OrderTimedOut(at=T0 + 30, order_id="E1", leg=Leg.ENTRY))
    cancelling(OrderRejected(at=T0 + 31, leg=Leg.ENTRY, reason="cancel raced a reject", order_id="E1"))
    assert cancelling.context.state is S.POSITION_OPEN and cancelling.context.open_qty == 40
    run.pairs |= cancelling.pairs
    return run


def path_an_adopted_orphan_is_exited_like_any_position() -> Run:
    run = Run()
    run(adopted())
    assert run.context.state is S.POSITION_OPEN and run.context.open_qty == 75
    run(exit_req("SQUARE_OFF"), placed(Leg.EXIT, "X1", qty=75), filled(75, 99.0, Leg.EXIT, "X1"))
    assert run.context.state is S.CLOSED and run.context.realized_pnl == pytest.approx(-2.0 * 75)
    return run


def path_an_entry_resent_late_is_repriced_first() -> Run:
    run = Run()
    run(signal(), entry(limit=101.0, expected=100.0))
    assert run(EntryRepriced(at=T0 + 2, limit_price=104.02, expected_price=103.0)) == []
    assert request_for(run.context).price == 104.02  # type: ignore[union-attr]  # the resend carries it
    run(placed(at=T0 + 2.1), filled(150, 103.5))
    assert run.context.state is S.POSITION_OPEN and run.context.expected_entry_price == 103.0
    return run


def path_the_kill_switch_cancels_working_entries_and_keeps_their_fills() -> Run:
    run = Run()
    run(signal(), entry(), placed())
    (cancel,) = run(EntryCancelRequested(at=T0 + 5, reason="kill switch: news"))
    assert cancel == CancelOrder(POS, "E1", Leg.ENTRY) and run.context.state is S.ENTRY_CANCEL_PENDING
    run(OrderCancelled(at=T0 + 6, order_id="E1", leg=Leg.ENTRY))
    assert run.context.state is S.CANCELLED
    partly = Run()
    partly(signal(), entry(), placed(), part(50, 100.0))
    (cancel,) = partly(EntryCancelRequested(at=T0 + 5, reason="kill switch"))
    assert isinstance(cancel, CancelOrder) and partly.context.state is S.ENTRY_PARTIAL_CANCEL_PENDING
    assert partly(OrderCancelled(at=T0 + 6, order_id="E1", leg=Leg.ENTRY)) == []  # held, not exited
    assert partly.context.state is S.POSITION_OPEN and partly.context.open_qty == 50
    run.pairs |= partly.pairs
    return run


# ------------------------------------------------------------------------------ the broker-side stop


def path_a_broker_stop_rests_moves_and_closes_the_position_when_it_fills() -> Run:
    run = opened()
    (place,) = run(stop_req())
    request = place.request if isinstance(place, PlaceOrder) else None
    assert request is not None and request.leg is Leg.STOP and request.side is Side.SELL and request.qty == 150
    assert request.trigger_price == 88.2 and request.price == 87.3
    assert request.correlation_id == correlation_id(POS, Leg.STOP) == f"{POS}-S"
    assert request_for(run.context) == request  # a stop whose submit has no answer is resolved like any other
    assert run(placed(Leg.STOP, "S1", at=T0 + 3)) == [] and run.context.stop_status == "WORKING"
    (modify,) = run(StopMoved(at=T0 + 4, trigger_price=95.0, limit_price=94.05))
    assert modify == ModifyOrder(POS, "S1", Leg.STOP, 150, 94.05, 95.0)
    assert run(part(50, 94.5, Leg.STOP, "S1", at=T0 + 5)) == []
    assert run.context.state is S.POSITION_OPEN and run.context.open_qty == 100
    (record,) = run(filled(150, 94.2, Leg.STOP, "S1", at=T0 + 6))
    assert isinstance(record, RecordClosedTrade) and record.exit_reason == BROKER_STOP_REASON
    assert record.avg_exit_price == pytest.approx(94.2) and record.realized_pnl == pytest.approx(150 * -5.8)
    assert run.context.state is S.CLOSED and run.context.stop_status == "ENDED"
    return run


def path_an_exit_beside_a_resting_stop_cancels_the_stop_first() -> Run:
    run = opened()
    run(stop_req(), placed(Leg.STOP, "S1"))
    with pytest.raises(IllegalTransition, match="cancel it first"):
        apply(run.context, exit_req())  # an exit order beside the stop could over-sell into a short
    (cancel,) = run(StopCancelRequested(at=T0 + 60, reason="STOP_LOSS"))
    assert cancel == CancelOrder(POS, "S1", Leg.STOP) and run.context.state is S.STOP_CANCEL_PENDING
    assert run(exit_req("FLATTEN: operator", at=T0 + 61)) == []  # remembered, nothing sent
    (again,) = run(OrderCancelled(at=T0 + 62, order_id="S1", leg=Leg.STOP))
    assert again == RaiseExitSignal(POS, "FLATTEN: operator") and run.context.state is S.POSITION_OPEN
    (exit_order,) = run(exit_req("FLATTEN: operator", at=T0 + 63))
    assert isinstance(exit_order, PlaceOrder) and exit_order.request.leg is Leg.EXIT
    assert exit_order.request.qty == 150 and exit_order.request.trigger_price == 0.0
    run(placed(Leg.EXIT, "X1", at=T0 + 64), filled(150, 95.0, Leg.EXIT, "X1", at=T0 + 65))
    assert run.context.state is S.CLOSED
    return run


def path_the_stop_fills_before_its_cancel_lands() -> Run:
    run = opened()
    run(stop_req(), placed(Leg.STOP, "S1"), StopCancelRequested(at=T0 + 60, reason="TARGET"))
    assert run(part(100, 88.0, Leg.STOP, "S1", at=T0 + 61)) == [] and run.context.state is S.STOP_CANCEL_PENDING
    (record,) = run(filled(150, 88.0, Leg.STOP, "S1", at=T0 + 62))
    assert isinstance(record, RecordClosedTrade) and record.exit_reason == BROKER_STOP_REASON
    return run


def path_a_stop_the_broker_refuses_or_someone_cancels_leaves_local_protection() -> Run:
    run = opened()
    run(stop_req())
    (alert,) = run(OrderRejected(at=T0 + 3, leg=Leg.STOP, reason="RMS: stop-loss orders blocked"))
    assert isinstance(alert, AlertOperator) and "protected by this process only" in alert.message
    assert run.context.stop_status == "ENDED" and run.context.reason == ""
    (place,) = run(stop_req(at=T0 + 4))
    assert isinstance(place, PlaceOrder) and place.request.correlation_id == correlation_id(POS, Leg.STOP, 1)
    run(placed(Leg.STOP, "S2", attempt=1, at=T0 + 5))
    (alert,) = run(OrderCancelled(at=T0 + 6, order_id="S2", leg=Leg.STOP, reason="cancelled by user"))
    assert isinstance(alert, AlertOperator) and run.context.stop_status == "ENDED"
    run(stop_req(at=T0 + 7))  # the shell decides whether to ask again (core.trade.wants_stop)
    run(placed(Leg.STOP, "S3", attempt=2, at=T0 + 8), StopCancelRequested(at=T0 + 9, reason="EXIT_SCORE"))
    (again,) = run(OrderRejected(at=T0 + 10, leg=Leg.STOP, reason="already expired", order_id="S3"))
    assert again == RaiseExitSignal(POS, "EXIT_SCORE") and run.context.state is S.POSITION_OPEN
    return run


PATHS: list[Callable[[], Run]] = [
    path_happy, path_denied, path_rejected_at_submit, path_rejected_after_placement, path_cancelled_elsewhere,
    path_timeout_cancel_cancelled, path_rejected_while_cancelling, path_partial_then_timeout_opens_with_filled_qty,
    path_late_fill_after_timeout_opens_the_position, path_late_partial_after_timeout_then_remainder,
    path_remainder_cancelled_elsewhere_keeps_fills, path_exit_before_fill_cancels_entry,
    path_exit_during_partial_entry_opens_then_exits, path_slippage_raises_exit_and_closes,
    path_exit_rejected_then_retried, path_exit_timeout_partial_cancel_then_retry_closes,
    path_exit_timeouts_late_fill_and_external_cancels, path_exit_never_gives_up_and_pages_every_n_failures,
    path_rejected_remainders_keep_their_fills,
    path_an_adopted_orphan_is_exited_like_any_position, path_an_entry_resent_late_is_repriced_first,
    path_the_kill_switch_cancels_working_entries_and_keeps_their_fills,
    path_a_broker_stop_rests_moves_and_closes_the_position_when_it_fills,
    path_an_exit_beside_a_resting_stop_cancels_the_stop_first, path_the_stop_fills_before_its_cancel_lands,
    path_a_stop_the_broker_refuses_or_someone_cancels_leaves_local_protection,
]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.__name__)
def test_legal_path_runs_and_rebuild_from_its_journal_equals_the_live_context(path: Callable[[], Run]) -> None:
    run = path()
    assert rebuild(run.journal) == run.context
    stored = [(event.name, json.loads(json.dumps(event.to_payload()))) for event in run.journal]
    assert rebuild(event_from_payload(name, payload) for name, payload in stored) == run.context
    assert run.context.seq == len(run.journal)


def test_every_transition_in_the_table_is_taken_by_some_legal_path() -> None:
    taken: set[tuple[TradeState, type[Event]]] = set()
    for path in PATHS:
        taken |= path().pairs
    assert taken <= set(TRANSITIONS)
    assert set(TRANSITIONS) - taken == set()


def sample(event_type: type[Event]) -> Event:
    return {
        SignalAccepted: signal(), EntryRequested: entry(), EntryDenied: EntryDenied(at=T0, reason="x"),
        OrderPlaced: placed(), OrderPartiallyFilled: part(10, 100.0), OrderFilled: filled(150, 100.0),
        OrderTimedOut: OrderTimedOut(at=T0, order_id="E1", leg=Leg.ENTRY),
        OrderSlippageDetected: OrderSlippageDetected(at=T0, order_id="E1", expected=100, actual=102, pct=2.0,
                                                     limit_pct=0.5),
        OrderRejected: OrderRejected(at=T0, leg=Leg.ENTRY, reason="x"),
        OrderCancelled: OrderCancelled(at=T0, order_id="E1", leg=Leg.ENTRY), ExitRequested: exit_req(),
        PositionAdopted: adopted(), EntryRepriced: EntryRepriced(at=T0, limit_price=101.0, expected_price=100.0),
        EntryCancelRequested: EntryCancelRequested(at=T0, reason="kill switch"),
        StopRequested: stop_req(), StopMoved: StopMoved(at=T0, trigger_price=90.0, limit_price=89.1),
        StopCancelRequested: StopCancelRequested(at=T0, reason="x"),
    }[event_type]


def adopted(qty: int = 75, price: float = 101.0) -> PositionAdopted:
    return PositionAdopted(at=T0, pos_id=POS, symbol="SEC_49081", instrument="NIFTY 24500 CE",
                           side=Side.BUY, qty=qty, avg_price=price, reason="75 units no live trade explains")


def test_every_state_and_event_pair_not_in_the_table_is_refused() -> None:
    refused = 0
    for state in TradeState:
        context = replace(opened().context, state=state)
        for event_type in EVENT_TYPES.values():
            if (state, event_type) in TRANSITIONS:
                continue
            assert not can_apply(context, event_type)
            with pytest.raises(IllegalTransition):
                apply(context, sample(event_type))
            refused += 1
    assert refused == len(TradeState) * len(EVENT_TYPES) - len(TRANSITIONS)


def test_terminal_states_accept_nothing() -> None:
    terminal = {S.CLOSED, S.REJECTED, S.CANCELLED, S.DENIED}
    assert not [pair for pair in TRANSITIONS if pair[0] in terminal]


def test_an_order_event_about_another_order_or_leg_is_refused() -> None:
    run = Run()
    run(signal(), entry(), placed())
    with pytest.raises(IllegalTransition, match="not the current"):
        apply(run.context, filled(150, 100.0, order_id="SOMEONE-ELSES"))
    with pytest.raises(IllegalTransition, match="EXIT event"):
        apply(run.context, filled(150, 100.0, leg=Leg.EXIT))
    with pytest.raises(IllegalTransition, match="correlation id"):
        apply(replace(run.context, state=S.ENTRY_PENDING), replace(placed(), correlation_id="other-E"))


def test_fills_that_go_backwards_or_exceed_the_position_are_refused() -> None:
    run = Run()
    run(signal(), entry(), placed(), part(100, 100.0))
    with pytest.raises(IllegalTransition, match="does not advance"):
        apply(run.context, part(100, 100.0))
    with pytest.raises(IllegalTransition, match="does not advance"):
        apply(run.context, filled(90, 100.0))
    run = opened(qty=50)
    run(exit_req(), placed(Leg.EXIT, "X1", qty=50))
    with pytest.raises(IllegalTransition, match="exceed the position"):
        apply(run.context, filled(60, 100.0, Leg.EXIT, "X1"))


def test_short_trade_realizes_profit_when_price_falls() -> None:
    run = Run()
    run(signal(side=Side.SELL, qty=50), entry(), placed(qty=50), filled(50, 200.0))
    (exit_order,) = run(exit_req())
    assert exit_order.request.side is Side.BUY  # type: ignore[union-attr]
    run(placed(Leg.EXIT, "X1", qty=50), filled(50, 190.0, Leg.EXIT, "X1"))
    assert run.context.realized_pnl == pytest.approx(500.0)


# ---------------------------------------------------------------------------------- slippage guard


def test_slippage_pct_is_signed_adverse_positive_for_both_sides() -> None:
    assert slippage_pct(100.0, 101.0, Side.BUY) == pytest.approx(1.0)
    assert slippage_pct(100.0, 99.0, Side.BUY) == pytest.approx(-1.0)
    assert slippage_pct(100.0, 99.0, Side.SELL) == pytest.approx(1.0)
    assert slippage_pct(0.0, 99.0, Side.SELL) == 0.0


def test_slippage_rule_trips_only_beyond_the_limit_either_way() -> None:
    assert not slippage_exceeded(0.5, 0.5)
    assert slippage_exceeded(0.51, 0.5) and slippage_exceeded(-0.6, 0.5)
    assert slippage_guard(opened(price=100.4).context, 0.5, T0) is None


# -------------------------------------------------------------------------------------- timeouts


def test_timeout_is_due_only_for_a_working_order_past_its_deadline() -> None:
    run = Run()
    run(signal(), entry())
    assert timeout_due(run.context, T0 + 999, 30) is None  # not placed yet: the executor resolves it
    run(placed(at=T0))
    assert timeout_due(run.context, T0 + 29.9, 30) is None
    assert timeout_due(run.context, T0 + 30, 30) == OrderTimedOut(at=T0 + 30, order_id="E1", leg=Leg.ENTRY)
    run = opened()
    assert timeout_due(run.context, T0 + 999, 30) is None
    run(exit_req(), placed(Leg.EXIT, "X1", at=T0 + 100))
    assert timeout_due(run.context, T0 + 131, 30) == OrderTimedOut(at=T0 + 131, order_id="X1", leg=Leg.EXIT)


# ------------------------------------------------------------------------ broker snapshots -> events


def snapshot(status: OrderStatus, filled_qty: int = 0, avg: float = 0.0, order_id: str = "E1",
             leg: Leg = Leg.ENTRY, qty: int = 150, attempt: int = 0) -> BrokerOrder:
    return BrokerOrder(order_id=order_id, correlation_id=correlation_id(POS, leg, attempt), symbol="SEC_49081",
                       side=Side.BUY if leg is Leg.ENTRY else Side.SELL, qty=qty, status=status,
                       filled_qty=filled_qty, avg_price=avg, price=101.0)


def settle(context: TradeContext, order: BrokerOrder, at: float = T0 + 5) -> tuple[TradeContext, list[Event]]:
    events = observe(context, order, at)
    for event in events:
        context, _ = apply(context, event)
    return context, events


def test_observe_turns_the_place_answer_into_order_placed_once() -> None:
    run = Run()
    run(signal(), entry())
    context, events = settle(run.context, snapshot(OrderStatus.PENDING))
    assert [type(e) for e in events] == [OrderPlaced] and context.state is S.ORDER_PLACED
    assert observe(context, snapshot(OrderStatus.PENDING), T0 + 6) == []  # duplicate update


def test_observe_handles_a_fill_that_beats_its_acknowledgement() -> None:
    run = Run()
    run(signal(), entry())
    context, events = settle(run.context, snapshot(OrderStatus.TRADED, 150, 100.2))
    assert [type(e) for e in events] == [OrderPlaced, OrderFilled] and context.state is S.POSITION_OPEN
    assert observe(context, snapshot(OrderStatus.PART_TRADED, 75, 100.0), T0 + 6) == []  # stale, late
    assert observe(context, snapshot(OrderStatus.TRADED, 150, 100.2), T0 + 6) == []  # duplicate


def test_observe_splits_a_cancel_with_fills_into_fill_then_cancel() -> None:
    run = Run()
    run(signal(), entry(), placed(), OrderTimedOut(at=T0 + 30, order_id="E1", leg=Leg.ENTRY))
    context, events = settle(run.context, snapshot(OrderStatus.CANCELLED, 60, 100.0))
    assert [type(e) for e in events] == [OrderPartiallyFilled, OrderCancelled]
    assert context.state is S.POSITION_OPEN and context.open_qty == 60
    assert observe(context, snapshot(OrderStatus.CANCELLED, 60, 100.0), T0 + 40) == []


def test_observe_reports_rejections_at_submit_and_later() -> None:
    run = Run()
    run(signal(), entry())
    context, events = settle(run.context, replace(snapshot(OrderStatus.REJECTED), reason="RMS margin"))
    assert [type(e) for e in events] == [OrderRejected] and context.state is S.REJECTED
    assert context.reason == "RMS margin"
    run = opened()
    run(exit_req(), placed(Leg.EXIT, "X1"))
    context, events = settle(run.context, snapshot(OrderStatus.REJECTED, order_id="X1", leg=Leg.EXIT))
    assert [type(e) for e in events] == [OrderRejected] and context.state is S.POSITION_OPEN


def test_observe_ignores_other_orders_and_old_exit_attempts() -> None:
    run = opened()
    assert observe(run.context, replace(snapshot(OrderStatus.TRADED, 150, 1.0), correlation_id="other-E",
                                        order_id="Z9"), T0) == []
    run(exit_req(), OrderRejected(at=T0, leg=Leg.EXIT, reason="x"), exit_req("retry"))
    old_attempt = snapshot(OrderStatus.REJECTED, order_id="X0", leg=Leg.EXIT, attempt=0)
    assert observe(run.context, old_attempt, T0) == []


def test_observe_refuses_to_drop_fills_the_trade_cannot_take() -> None:
    run = Run()
    run(signal(), entry(), placed(), OrderCancelled(at=T0 + 30, order_id="E1", leg=Leg.ENTRY))
    with pytest.raises(IllegalTransition, match="cannot take"):
        observe(run.context, snapshot(OrderStatus.TRADED, 150, 100.0), T0 + 40)


def test_exit_fills_observed_across_two_orders_accumulate() -> None:
    run = opened()
    run(exit_req(), placed(Leg.EXIT, "X1"))
    context, _ = settle(run.context, snapshot(OrderStatus.CANCELLED, 100, 104.0, order_id="X1", leg=Leg.EXIT))
    assert context.state is S.POSITION_OPEN and context.open_qty == 50
    context, (place,) = apply(context, exit_req("retry"))
    assert isinstance(place, PlaceOrder) and place.request.qty == 50
    context, _ = settle(context, snapshot(OrderStatus.TRADED, 50, 98.0, order_id="X2", leg=Leg.EXIT, qty=50,
                                          attempt=1))
    assert context.state is S.CLOSED
    assert context.realized_pnl == pytest.approx(100 * 4.0 + 50 * -2.0)


# ------------------------------------------------------------------------------------ serialization


def test_payloads_round_trip_and_bad_rows_are_typed_errors() -> None:
    for event_type in EVENT_TYPES.values():
        event = sample(event_type)
        assert event_from_payload(event.name, json.loads(json.dumps(event.to_payload()))) == event
    assert signal().to_payload()["side"] == "BUY"
    with pytest.raises(EventDecodeError, match="unknown"):
        event_from_payload("OrderTeleported", {})
    with pytest.raises(EventDecodeError):
        event_from_payload("OrderFilled", {"at": 1.0, "nonsense": True})
    with pytest.raises(EventDecodeError):
        event_from_payload("SignalAccepted", {**signal().to_payload(), "side": "SIDEWAYS"})


def test_log_names_use_the_seed_vocabulary() -> None:
    assert SignalAccepted.log_name == "ENTRY_SIGNAL" and ExitRequested.log_name == "EXIT_SIGNAL"
    assert OrderPlaced.log_name == "ORDER_PLACED" and OrderFilled.log_name == "ORDER_FILLED"
    assert OrderTimedOut.log_name == "ORDER_TIMEOUT" and OrderSlippageDetected.log_name == "ORDER_SLIPPAGE"
    assert OrderPartiallyFilled.log_name == "ORDER_FILLED"


def test_context_payload_is_plain_data() -> None:
    payload = opened().context.to_payload()
    assert json.loads(json.dumps(payload))["state"] == "POSITION_OPEN"
    assert payload["open_qty"] == 150 and payload["entry_correlation_id"] == ENTRY_CID


BROKER_OUTCOMES = (OrderPlaced, OrderPartiallyFilled, OrderFilled, OrderRejected, OrderCancelled)
# Pairs that cannot happen, each with the reason: nothing was sent yet, the trade is over, or `observe`
# reports the order's placement before anything else about it (so a leg in *_PENDING sees OrderPlaced first),
# or a placement is already known (a repeated OrderPlaced is no news and `observe` sends none).
CANNOT_HAPPEN = {
    **{(s, e): "no order was sent yet" for s in (S.NEW, S.SIGNAL_GENERATED) for e in BROKER_OUTCOMES},
    **{(s, e): "the trade is over: observe matches no working order" for s in TERMINAL_STATES
       for e in BROKER_OUTCOMES},
    **{(s, e): "observe reports OrderPlaced first" for s in (S.ENTRY_PENDING, S.EXIT_PENDING)
       for e in (OrderPartiallyFilled, OrderFilled, OrderCancelled)},
    **{(s, OrderPlaced): "the order is already placed: no news" for s in (
        S.ORDER_PLACED, S.ENTRY_PARTIALLY_FILLED, S.ENTRY_CANCEL_PENDING, S.ENTRY_PARTIAL_CANCEL_PENDING,
        S.EXIT_ORDER_PLACED, S.EXIT_PARTIALLY_FILLED, S.EXIT_CANCEL_PENDING)},
    (S.STOP_CANCEL_PENDING, OrderPlaced): "the stop is already placed: no news",
}


@pytest.mark.parametrize("state", list(TradeState), ids=str)
def test_every_broker_outcome_in_every_state_has_a_transition_or_cannot_happen(state: TradeState) -> None:
    for outcome in BROKER_OUTCOMES:
        if (state, outcome) in CANNOT_HAPPEN:
            assert (state, outcome) not in TRANSITIONS, f"{state} + {outcome.__name__} is said impossible"
        else:
            assert (state, outcome) in TRANSITIONS, f"{state} + {outcome.__name__}: the broker can say it"


def test_fees_are_cumulative_per_order_and_summed_over_every_exit_order() -> None:
    """Fill events carry the order's cumulative charges (as its quantity and price are cumulative): a later
    snapshot of the same order replaces, the next exit order adds; the closed trade reports them."""
    run = Run()
    run(signal(qty=150), entry(), placed(qty=150),
        OrderPartiallyFilled(at=T0 + 1, order_id="E1", leg=Leg.ENTRY, filled_qty=50, avg_price=100.0, fees=21.0),
        OrderFilled(at=T0 + 2, order_id="E1", leg=Leg.ENTRY, filled_qty=150, avg_price=100.0, fees=25.0))
    assert run.context.entry_fees == 25.0 and run.context.net_pnl == -25.0
    run(exit_req(), placed(Leg.EXIT, "X1", at=T0 + 61),
        OrderPartiallyFilled(at=T0 + 62, order_id="X1", leg=Leg.EXIT, filled_qty=100, avg_price=104.0, fees=30.0))
    run(OrderCancelled(at=T0 + 63, order_id="X1", leg=Leg.EXIT))
    assert run.context.exit_fees == 30.0 and run.context.exit_order_fees == 30.0
    run(exit_req("retry", at=T0 + 64), placed(Leg.EXIT, "X2", qty=50, attempt=1, at=T0 + 64))
    assert run.context.exit_order_fees == 0.0 and run.context.exit_fees == 30.0
    (record,) = run(OrderFilled(at=T0 + 65, order_id="X2", leg=Leg.EXIT, filled_qty=50, avg_price=102.0,
                                fees=22.0))
    assert isinstance(record, RecordClosedTrade)
    assert record.fees == pytest.approx(25.0 + 30.0 + 22.0)
    assert record.realized_pnl == pytest.approx(100 * 4 + 50 * 2)
    assert record.net_pnl == pytest.approx(500 - 77.0) == pytest.approx(run.context.net_pnl)


def test_observe_prices_each_fill_with_the_charges_of_the_order_so_far() -> None:
    run = Run()
    run(signal(qty=150), entry(), placed(qty=150))
    asked: list[tuple[Side, int, float]] = []

    def charges(side: Side, qty: int, price: float, at: float) -> float:
        asked.append((side, qty, price))
        return qty * 0.1

    (fill,) = observe(run.context, BrokerOrder(order_id="E1", correlation_id=correlation_id(POS, Leg.ENTRY),
                                               symbol="NIFTY", side=Side.BUY, qty=150, price=101.0,
                                               status=OrderStatus.PART_TRADED, filled_qty=60, avg_price=100.5),
                      at=T0 + 1, charges=charges)
    assert isinstance(fill, OrderPartiallyFilled) and fill.fees == pytest.approx(6.0)
    assert asked == [(Side.BUY, 60, 100.5)]


def test_observe_and_order_news_know_the_broker_side_stop() -> None:
    """The stop's broker snapshots become its events (placement, fills); the reconciler sees a missed stop fill."""
    run = opened()
    run(stop_req())
    stop = BrokerOrder(order_id="S1", correlation_id=correlation_id(POS, Leg.STOP), symbol="SEC_49081",
                       side=Side.SELL, qty=150, price=87.3, status=OrderStatus.PENDING)
    (placed_event,) = observe(run.context, stop, at=T0 + 3)
    assert isinstance(placed_event, OrderPlaced) and placed_event.leg is Leg.STOP
    run(placed_event)
    assert order_news(run.context, stop) == (False, False)  # nothing new
    traded = replace(stop, status=OrderStatus.TRADED, filled_qty=150, avg_price=87.9)
    assert order_news(run.context, traded) == (True, True)  # a fill the trade missed (killed meanwhile)
    (fill,) = observe(run.context, traded, at=T0 + 4)
    assert isinstance(fill, OrderFilled) and fill.leg is Leg.STOP
    run(fill)
    assert run.context.state is S.CLOSED and run.context.avg_exit_price == pytest.approx(87.9)
    # An entry order's late duplicate update is no news and no error in a state the stop made legal.
    assert observe(opened().context, BrokerOrder(order_id="E1", correlation_id=ENTRY_CID, symbol="SEC_49081",
                                                 side=Side.BUY, qty=200, status=OrderStatus.CANCELLED,
                                                 filled_qty=150, avg_price=100.0), at=T0 + 5) == []
