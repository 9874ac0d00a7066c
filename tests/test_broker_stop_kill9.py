"""The broker-side stop across a `kill -9` (issue 10, item 4): while a position is open, a stop-loss order
rests at Dhan `exits.broker_stop_pct` beyond the local stop, so a dead process still leaves the position
protected. A real `mybot run` daemon (Dhan broker and feed: the real dhanhq SDK against the fake Dhan over real
sockets, PostgreSQL) opens a position, is killed with SIGKILL, the price falls through the stop while it is
dead and the fake exchange fills the stop; the restarted daemon finds the fill and the trade ends CLOSED with
the stop's fill, with no second exit order and no reconciliation incident."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakedhan import FakeDhan
from tests.support.daemon import Daemon, control_call
from tests.support.waiting import eventually

TOKEN = "broker-stop-control-token"
SECURITY_ID = 40001  # a NIFTY option of the fake's scrip master (lot 65)
CONFIG = """
[feed]
source = "dhan"
symbols = ["NIFTY"]
stale_seconds = 600
reconnect_initial_seconds = 0.05
reconnect_max_seconds = 0.2
[option_chain]
underlyings = []
[broker]
kind = "dhan"
read_retry_initial_seconds = 0.01
[calendar]
enabled = false
[risk]
session_start = "00:00"
session_end = "24:00"
square_off_time = "24:00"
[strategy]
warmup_candles = 100000
[execution]
max_slippage_pct = 50.0
[exits]
stop_loss_pct = 10.0
broker_stop_pct = 2.0
[reconcile]
interval_seconds = 0.5
owner_id = "broker-stop-test"
[supervision]
backoff_initial_seconds = 0.05
backoff_max_seconds = 0.5
[dhan]
api_base_url = "{api}"
feed_url = "{feed}"
order_update_url = "{updates}"
scrip_master_url = "{master}"
request_timeout_seconds = 2.0
"""


@pytest.fixture
def fake() -> Iterator[FakeDhan]:
    with FakeDhan() as server:
        server.state.hold_orders()  # the test fills the entry; the stop fills when the price crosses it
        yield server


def start(tmp_path: Path, fake: FakeDhan, pg_url: str) -> tuple[Daemon, int]:
    config = CONFIG.format(api=fake.rest.base_url, feed=fake.feed.url, updates=fake.order_updates.url,
                           master=fake.scrip_master_url)
    daemon = Daemon(tmp_path, "trader", config, "all", MYBOT_STORAGE_URL=pg_url, MYBOT_CONTROL_TOKEN=TOKEN,
                    MYBOT_DHAN_CLIENT_ID=fake.client_id, MYBOT_DHAN_ACCESS_TOKEN=fake.access_token,
                    MYBOT_LOG_LEVEL="INFO")
    daemon.event("RECONCILE_STARTUP_PASSED", timeout=30)
    return daemon, daemon.port("control")


def call(port: int, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    return control_call(port, method, path, body, token=TOKEN)


def reconciliation(port: int) -> dict[str, Any]:
    status, body = call(port, "GET", "/v1/status")
    assert status == 200, body
    return dict(body["trading"]["reconciliation"])


def orders(fake: FakeDhan, side: str, order_type: str) -> list[Any]:
    with fake.state._lock:
        return [o for o in fake.state.orders.values() if o.security_id == str(SECURITY_ID)
                and o.transaction_type == side and o.order_type == order_type]


def test_the_broker_side_stop_closes_the_position_while_the_process_is_dead(
        tmp_path: Path, fake: FakeDhan, pg_url: str) -> None:
    daemon, port = start(tmp_path, fake, pg_url)
    try:
        status, body = call(port, "POST", "/v1/trades", {"pos_id": "KILL-STOP-1", "symbol": f"SEC_{SECURITY_ID}",
                                                         "side": "BUY", "qty": 65, "price": 100.0})
        assert status == 202, body
        [entry] = eventually(lambda: orders(fake, "BUY", "LIMIT"), 10, message="the entry at the fake")
        fake.state.fill(entry.order_id, price=100.0)
        # 10 % below the fill is the local stop (90); the broker's rests 2 % beyond it: 88.2, on the tick
        [stop] = eventually(lambda: orders(fake, "SELL", "STOP_LOSS"), 10, message="the broker-side stop")
        assert stop.trigger_price == 88.2 and stop.quantity == 65 and stop.status == "PENDING"
        daemon.event("ORDER_PLACED", leg="STOP", pos_id="KILL-STOP-1", timeout=10)
    finally:
        assert daemon.kill() == -9

    fake.state.set_ltp("NSE_FNO", SECURITY_ID, 88.0)  # the market falls through the stop: the exchange fills it
    assert stop.status == "TRADED" and stop.filled_qty == 65

    daemon, port = start(tmp_path, fake, pg_url)
    try:
        def closed() -> dict[str, Any] | None:
            status, body = call(port, "GET", "/v1/trades/KILL-STOP-1")
            trade = body.get("trade") if status == 200 else None
            return trade if trade and trade["state"] == "CLOSED" else None

        trade = eventually(closed, 20, message="the trade CLOSED by the stop's fill")
        filled = daemon.event("ORDER_FILLED", leg="STOP", pos_id="KILL-STOP-1")  # found by the restarted daemon
        assert filled["from_state"] == "POSITION_OPEN" and filled["to_state"] == "CLOSED"
        assert trade["exit_price"] == pytest.approx(88.0) and trade["filled_qty"] == 65
        assert trade["detail"]["exit_reason"] == "BROKER_STOP"
        assert trade["realized_pnl"] == pytest.approx(-12.0 * 65)
        assert not orders(fake, "SELL", "LIMIT"), "no second exit beside the stop's fill"
        with fake.state._lock:
            net = sum(p["netQty"] for p in fake.state.position_list() if str(p["securityId"]) == str(SECURITY_ID))
        assert net == 0
        passes = reconciliation(port)["passes"]
        eventually(lambda: reconciliation(port)["passes"] >= passes + 2, 10, message="two passes after the close")
        assert not reconciliation(port)["incidents"], daemon.tail()
        assert not [line for line in daemon.lines if line.get("event") == "RECONCILE_INCIDENT"], daemon.tail()
    finally:
        assert daemon.stop() == 0
