"""The reconciler: missed fills applied through the trade actors, unexplained differences quarantined."""

from __future__ import annotations

import requests

from core.orders import Leg, OrderRequest, Side
from tests.support.trading import TOKEN, ScriptedBroker, TraderHarness, eventually, trader_settings


def _incident_kinds(h: TraderHarness) -> set[str]:
    return {i["kind"] for i in h.trader.reconcile.snapshot()["incidents"]}


def test_reconciler_applies_a_fill_the_update_stream_missed(pg_url: str) -> None:
    settings = trader_settings(pg_url, reconcile={"interval_seconds": 0.2})
    with TraderHarness(settings) as h:
        h.broker.hold_fills(True)
        h.broker.deliver_updates = False  # every order update is lost from now on
        h.enter("REC-1")
        h.wait_state("REC-1", "ORDER_PLACED")  # the submit's own answer still arrives
        h.broker.hold_fills(False)
        h.wait_state("REC-1", "POSITION_OPEN")
        assert h.events("REC-1") == ["SignalAccepted", "EntryRequested", "OrderPlaced", "OrderFilled"]
        assert h.trader.reconcile.snapshot()["missed_fills_applied"] >= 1
        assert any(o.filled_qty == 75 for o in h.broker.dropped)
        assert not h.trader.risk.snapshot().reconciliation_hold


def test_unknown_broker_position_holds_entries_until_acknowledged_over_http(pg_url: str) -> None:
    settings = trader_settings(pg_url, reconcile={"interval_seconds": 0.2})
    with TraderHarness(settings, prices={"SEC_49081": 100.0, "SEC_49082": 50.0}) as h:
        # Someone trades on the account by hand: a position no trade of ours explains.
        h.broker.place(OrderRequest(correlation_id="", pos_id="", leg=Leg.ENTRY, symbol="SEC_49082",
                                    side=Side.BUY, qty=50, price=0.0, expected_price=50.0))
        eventually(lambda: h.trader.risk.snapshot().reconciliation_hold, message="incident")
        assert _incident_kinds(h) == {"BROKER_POSITION_WITHOUT_TRADE"}
        (incident,) = h.trader.reconcile.snapshot()["incidents"]
        assert incident["symbol"] == "SEC_49082" and incident["broker_qty"] == 50 and incident["book_qty"] == 0
        h.enter("REC-2")
        h.wait_state("REC-2", "DENIED")
        assert h.storage.trades.events("REC-2")[-1].payload["reason"].startswith("RECONCILIATION_HOLD")

        assert requests.post(f"{h.url}/v1/control/reconcile/ack", timeout=5).status_code == 401
        answer = requests.post(f"{h.url}/v1/control/reconcile/ack", timeout=5,
                               headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["hold_released"] is True
        assert answer.json()["accepted_differences"] == {"SEC_49082": 50}
        passes = h.trader.reconcile.snapshot()["passes"]
        eventually(lambda: h.trader.reconcile.snapshot()["passes"] >= passes + 3, message="more passes")
        assert not h.trader.risk.snapshot().reconciliation_hold  # the accepted difference does not raise again
        h.enter("REC-3")
        h.wait_state("REC-3", "POSITION_OPEN")


def test_restart_adopts_open_trades_and_recovers_fills_made_while_down(pg_url: str) -> None:
    settings = trader_settings(pg_url)
    first = TraderHarness(settings)
    broker = first.broker
    with first as h:
        broker.hold_fills(True)
        h.enter("ADOPT-1")
        h.wait_state("ADOPT-1", "ORDER_PLACED")
    broker.hold_fills(False)
    broker.poll()  # it fills while no trader runs
    with TraderHarness(settings, broker=broker, quotes=first.quotes) as h:
        h.wait_state("ADOPT-1", "POSITION_OPEN")
        assert h.trader.reconcile.snapshot()["adopted_at_start"] == ["ADOPT-1"]
        assert h.events("ADOPT-1") == ["SignalAccepted", "EntryRequested", "OrderPlaced", "OrderFilled"]
        assert len(broker.places) == 1
        assert not h.trader.risk.snapshot().reconciliation_hold


def test_a_trade_the_broker_does_not_know_is_an_incident(pg_url: str) -> None:
    settings = trader_settings(pg_url)
    with TraderHarness(settings) as h:
        h.enter("GHOST-1")
        h.wait_state("GHOST-1", "POSITION_OPEN")
    fresh = TraderHarness(settings)
    lost = ScriptedBroker(fresh.quotes, fresh.clock)  # a broker account that never saw the order
    with TraderHarness(settings, broker=lost, quotes=fresh.quotes) as h:
        eventually(lambda: h.trader.risk.snapshot().reconciliation_hold, message="incident")
        assert _incident_kinds(h) == {"TRADE_UNKNOWN_TO_BROKER"}
        (incident,) = h.trader.reconcile.snapshot()["incidents"]
        assert incident["pos_id"] == "GHOST-1" and incident["book_qty"] == 75 and incident["broker_qty"] == 0
        assert h.trader.book.get("GHOST-1").open_qty == 75  # never invents (or drops) fills
        assert lost.places == []
