"""Several trader processes on one PostgreSQL (issue 9, requirement 5): the kill switch, a flatten and the
reconciliation hold are shared; daily loss, losing streaks, open positions and open notional count every
process's trades; a trade has one owner at a time (its lease), and a process adopts only the trades whose
owner stopped renewing.

The end-to-end test runs two real `mybot run` daemons against one fake Dhan account (the real dhanhq SDK
over real sockets) and one PostgreSQL schema, and kills one with SIGKILL. The others run two runtimes in
this process (TraderHarness), each with its own paper broker: the risk rules read the shared database."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakedhan import FakeDhan
from tests.support.daemon import Daemon, control_call
from tests.support.trading import TraderHarness, trader_settings
from tests.support.waiting import eventually

TOKEN = "multi-process-control-token"

DAEMON_CONFIG = """
[feed]
source = "sim"
symbols = ["NIFTY"]
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
max_slippage_pct = 50.0  # the fake fills at the limit, 1 % from the price
[reconcile]
interval_seconds = 0.5
owner_id = "{owner}"
lease_ttl_seconds = 3.0
lease_renew_seconds = 0.3
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


class Trader:
    """One trader daemon on the shared fake Dhan account and PostgreSQL schema."""

    def __init__(self, tmp_path: Path, owner: str, fake: FakeDhan, pg_url: str) -> None:
        self.tmp_path, self.owner, self.fake, self.pg_url = tmp_path, owner, fake, pg_url
        self.daemon = self._start()
        self.port = self.daemon.port("control")

    def _start(self) -> Daemon:
        config = DAEMON_CONFIG.format(owner=self.owner, api=self.fake.rest.base_url, feed=self.fake.feed.url,
                                      updates=self.fake.order_updates.url, master=self.fake.scrip_master_url)
        daemon = Daemon(self.tmp_path, self.owner, config, "all", MYBOT_STORAGE_URL=self.pg_url,
                        MYBOT_CONTROL_TOKEN=TOKEN, MYBOT_DHAN_CLIENT_ID=self.fake.client_id,
                        MYBOT_DHAN_ACCESS_TOKEN=self.fake.access_token, MYBOT_LOG_LEVEL="INFO")
        daemon.event("RECONCILE_STARTUP_PASSED", timeout=30)
        return daemon

    def restart(self) -> None:
        assert self.daemon.stop() == 0
        self.daemon = self._start()
        self.port = self.daemon.port("control")

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        return control_call(self.port, method, path, body, token=TOKEN)

    def state(self, pos_id: str) -> str | None:
        status, body = self.call("GET", f"/v1/trades/{pos_id}")
        return body["trade"]["state"] if status == 200 else None

    def enter(self, pos_id: str) -> tuple[int, dict[str, Any]]:
        return self.call("POST", "/v1/trades", {"pos_id": pos_id, "symbol": "SEC_40001", "side": "BUY", "qty": 65,
                                                "price": 100.0})


@pytest.fixture
def fake() -> Iterator[FakeDhan]:
    with FakeDhan() as fake:
        yield fake


def test_two_daemons_share_switches_never_run_each_others_trades_and_adopt_a_killed_ones(
        tmp_path: Path, fake: FakeDhan, pg_url: str) -> None:
    a = Trader(tmp_path, "trader-A", fake, pg_url)
    b = Trader(tmp_path, "trader-B", fake, pg_url)
    try:
        # A kill switch engaged on A denies entries on B; released on B, it is released for A too.
        assert a.call("POST", "/v1/control/kill-switch", {"engaged": True, "reason": "news"})[0] == 200
        status, body = b.enter("MP-DENIED")
        assert status == 403 and body["code"] == "KILL_SWITCH", body
        assert b.call("POST", "/v1/control/kill-switch", {"engaged": False, "reason": "news over"})[0] == 200
        status, body = a.enter("MP-1")
        assert status == 202, body
        eventually(lambda: a.state("MP-1") == "POSITION_OPEN", 10,
                   message=lambda: f"A's trade open (now {a.state('MP-1')}); A said: {a.daemon.tail()}")

        # B restarts: it sees A's live trade and leaves it to A (its lease is live).
        b.restart()
        startup = b.daemon.event("RECONCILE_STARTUP")
        assert startup["adopted"] == [] and startup["managed_elsewhere"] == ["MP-1"]
        status, positions = b.call("GET", "/v1/positions")
        assert status == 200 and all(p["pos_id"] != "MP-1" for p in positions["positions"])
        assert b.call("POST", "/v1/trades/MP-1/exit", {"reason": "not mine"})[0] == 409

        # A is killed: once its lease expires B adopts the trade, recovers it from the journal and the
        # broker, and exits it. One entry order and one exit order ever reached the broker.
        a.daemon.kill()
        adopted = b.daemon.event("TRADES_ADOPTED", timeout=15)
        assert adopted["adopted"] == ["MP-1"] and adopted["owner"] == "trader-B"
        eventually(lambda: any(p["pos_id"] == "MP-1" for p in b.call("GET", "/v1/positions")[1]["positions"]), 10,
                   message="B manages the adopted trade")
        status, body = b.call("POST", "/v1/trades/MP-1/exit", {"reason": "adopted"})
        assert status == 202 and body["exit_requested"], body
        eventually(lambda: b.state("MP-1") == "CLOSED", 10, message="the adopted trade closed by B")
        orders = [o for o in fake.state.order_list() if str(o.get("correlationId", "")).startswith("MP-1-")]
        assert sorted(o["transactionType"] for o in orders) == ["BUY", "SELL"], orders
        assert sum(int(p["netQty"]) for p in fake.state.position_list()) == 0
    finally:
        for trader in (a, b):
            trader.daemon.stop()


# -- two runtimes in this process on one schema: the counters are every process's --------------------------


def _harness(pg_url: str, owner: str, **risk: Any) -> TraderHarness:
    return TraderHarness(trader_settings(pg_url, reconcile={"owner_id": owner}, risk=risk))


def _decision(h: TraderHarness, pos_id: str) -> str:
    h.enter(pos_id)
    state = h.wait_state(pos_id, "POSITION_OPEN", "DENIED", "REJECTED", timeout=10)
    if state == "DENIED":
        return str(h.storage.trades.get_trade(pos_id).detail.get("reason") or "DENIED")
    return state


def test_open_positions_and_daily_loss_count_the_trades_of_every_process(pg_url: str) -> None:
    with _harness(pg_url, "A", max_open_positions=3, daily_max_loss=2000.0) as a, \
            _harness(pg_url, "B", max_open_positions=3, daily_max_loss=2000.0) as b:
        assert _decision(a, "A-1") == "POSITION_OPEN" and _decision(a, "A-2") == "POSITION_OPEN"
        assert _decision(b, "B-1") == "POSITION_OPEN"
        assert _decision(b, "B-2").startswith("MAX_OPEN_POSITIONS: 3 open positions")
        # A loses more than the daily limit allows (-40 x 75): B stops entering on what A lost.
        a.quotes.set("SEC_49081", 60.0)
        a.exit("A-1")
        a.wait_state("A-1", "CLOSED")
        b.exit("B-1")
        b.wait_state("B-1", "CLOSED")
        assert _decision(b, "B-3").startswith("DAILY_MAX_LOSS")


def test_two_processes_racing_for_the_last_slot_never_both_get_it(pg_url: str) -> None:
    """The entry gate serializes the risk check and the first journal step across processes."""
    with _harness(pg_url, "A", max_open_positions=1) as a, _harness(pg_url, "B", max_open_positions=1) as b:
        start = threading.Barrier(2)

        def enter(h: TraderHarness, pos_id: str) -> None:
            start.wait()
            h.enter(pos_id)

        threads = [threading.Thread(target=enter, args=(a, "RACE-A")), threading.Thread(target=enter, args=(b, "RACE-B"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        states = sorted([a.wait_state("RACE-A", "POSITION_OPEN", "DENIED", timeout=10),
                         b.wait_state("RACE-B", "POSITION_OPEN", "DENIED", timeout=10)])
        assert states == ["DENIED", "POSITION_OPEN"]


def test_a_switch_written_by_one_process_is_never_erased_by_another(pg_url: str) -> None:
    """Process B's writes (a reconciliation hold and its release, a trade's close) leave A's kill switch be."""
    with _harness(pg_url, "A") as a, _harness(pg_url, "B") as b:
        a.trader.api.kill_switch(True, "desk closed")
        assert b.trader.risk.set_reconciliation_hold(True, "drill")
        assert b.trader.risk.set_reconciliation_hold(False)
        document = b.storage.bot_state.get("risk")
        assert document["kill_switch_engaged"] is True and document["kill_switch_reason"] == "operator: desk closed"
        assert b.trader.risk.refresh().kill_switch_engaged
        assert _decision(b, "B-AFTER").startswith("KILL_SWITCH")
