"""Issue 9, requirement 1, through the whole runtime: restarting any supervisor keeps every handle working.

For every supervisor of the tree in turn, a real runtime (role all: the sim feed, the paper broker,
PostgreSQL, the control API on a real waitress socket behind the bearer token) is asked over HTTP to
restart it (`POST /v1/actors/{id}/restart`). Once the status endpoint shows the tree running again:
- a position opened before the restart is exited through the API and reaches CLOSED (its trade actor's
  handle, the router and the executor survived);
- a manual entry reaches POSITION_OPEN and its exit CLOSED;
- an entry that can never fill (an instrument nothing quotes) still times out: ORDER_TIMEOUT, CANCELLED;
- candles whose minute starts after the restart reach the candles table, for every symbol, and the
  strategy decides on new candles;
- /v1/health answers 200.

The runtime runs on a clock 60 times faster than real time (the runtime takes any Clock), so the sim
feed closes a 1-minute candle every real second and an order timeout of 150 clock seconds is 2.5 real
seconds. Everything else (HTTP, PostgreSQL, the scheduler's timers) is real.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
import pytest

from config.settings import load_settings
from core.market import IST
from daemon.runtime import Runtime
from telemetry.logs import configure_logging
from tests.support.waiting import eventually

# Every supervisor of the role-all tree, depth first. Kept by hand: an id that vanishes from the tree, or a
# new one nobody added here, fails every case below (test_the_list_is_the_tree_read_at_test_time).
SUPERVISORS = ("root", "market_data", "ingest", "candles", "trading", "trades", "signals")
SYMBOLS = ("NIFTY", "BANKNIFTY", "SEC_49081", "SEC_49082")
TRADED = "SEC_49081"  # quoted by the sim feed: the paper broker fills it
UNQUOTED = "SEC_7"  # neither fed nor in a sim option chain: an entry on it is never filled
TOKEN = "restart-every-supervisor-token"
SPEED = 60.0  # clock seconds per real second
ORDER_TIMEOUT = 150.0  # clock seconds: 2.5 s real, ample for a paper fill on a busy machine
WAIT = 20.0  # real seconds any one condition may take on a loaded machine


class ScaledClock:
    """Runs `speed` times faster than real time from `start` (epoch seconds): 1-minute candles close every
    60/speed real seconds. Monotonic time is scaled alike, so the feed's staleness and every timeout the
    actors measure agree with the candles."""

    def __init__(self, start: float, speed: float) -> None:
        self.start = start
        self.speed = speed
        self.real_start = time.monotonic()

    def now(self) -> float:
        return self.start + (time.monotonic() - self.real_start) * self.speed

    def monotonic(self) -> float:
        return self.now()


@dataclass
class Daemon:
    runtime: Runtime
    clock: ScaledClock
    pg_url: str

    @property
    def url(self) -> str:
        return self.runtime.servers[-1].url  # the control API

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", method=method, data=data, headers={
            "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=15) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    def quoted(self, symbol: str) -> bool:
        """The MDS API (the other waitress socket) has a quote for symbol: the sim feed ticked it."""
        try:
            with urllib.request.urlopen(f"{self.runtime.servers[0].url}/v1/quote?symbol={symbol}", timeout=15):
                return True
        except urllib.error.HTTPError:
            return False

    def trade(self, pos_id: str) -> dict[str, Any]:
        code, body = self.call("GET", f"/v1/trades/{pos_id}")
        assert code == 200, body
        return body

    def state(self, pos_id: str) -> str | None:
        code, body = self.call("GET", f"/v1/trades/{pos_id}")
        return body["trade"]["state"] if code == 200 and body["trade"] else None

    def wait_state(self, pos_id: str, state: str) -> None:
        eventually(lambda: self.state(pos_id) == state, WAIT,
                   message=lambda: f"{pos_id} {state}; it is {self.state(pos_id)}: {self.trade(pos_id)['timeline']}")

    def enter(self, pos_id: str, symbol: str = TRADED, price: float | None = None) -> None:
        assert self.runtime.trading is not None
        qty = self.runtime.trading.api.lot_size(symbol) or 75  # one lot (the instrument master's, if it knows)
        body: dict[str, Any] = {"pos_id": pos_id, "symbol": symbol, "side": "BUY", "qty": qty}
        if price is not None:
            body["price"] = price
        code, answer = self.call("POST", "/v1/trades", body)
        assert code == 202, answer

    def exit(self, pos_id: str) -> None:
        code, answer = self.call("POST", f"/v1/trades/{pos_id}/exit", {"reason": "operator"})
        assert code == 202, answer

    def candles_since(self, ts: float) -> set[str]:
        """The symbols with a stored candle whose minute starts after `ts`."""
        with psycopg.connect(self.pg_url) as conn:
            rows = conn.execute("SELECT DISTINCT symbol FROM candles WHERE ts > to_timestamp(%s)", (ts,)).fetchall()
        return {row[0] for row in rows}

    def strategy_candles(self) -> int:
        """Live candles the strategy decided on (its counters outlive its restarts)."""
        code, body = self.call("GET", "/v1/status")
        assert code == 200, body
        return int(body["strategy"]["candles"])

    def tree(self) -> dict[str, Any]:
        code, body = self.call("GET", "/v1/status")
        assert code == 200, body
        tree = body["supervision"]
        assert isinstance(tree, dict) and "children" in tree, tree
        return tree


def supervisor_ids(tree: dict[str, Any]) -> list[str]:
    """The ids of the supervisors in a status tree, depth first."""
    found = [tree["id"]]
    for child in tree["children"]:
        if child.get("supervisor"):
            found.extend(supervisor_ids(child["supervisor"]))
    return found


def restart_counts(tree: dict[str, Any]) -> dict[str, int]:
    """How often each supervisor was restarted: by its parent (its slot), or in place (the root)."""
    counts = {tree["id"]: tree["restarts_in_place"]}
    for child in tree["children"]:
        if child.get("supervisor"):
            counts.update(restart_counts(child["supervisor"]))
            counts[child["id"]] += child["restarts"]
    return counts


def not_running(tree: dict[str, Any]) -> list[str]:
    """Children anywhere in the tree that are not running, or nested supervisors that did not answer."""
    down = []
    for child in tree["children"]:
        if child["state"] != "running" or ("supervisor" in child and child["supervisor"] is None):
            down.append(child["id"])
        elif child.get("supervisor"):
            down.extend(not_running(child["supervisor"]))
    return down


@pytest.fixture
def daemon(pg_url: str) -> Iterator[Daemon]:
    configure_logging("WARNING")
    settings = load_settings(env={}, overrides={
        "storage": {"url": pg_url},
        "http": {"mds_port": 0, "control_port": 0, "threads": 4},
        "control": {"token": TOKEN},
        "feed": {"source": "sim", "symbols": list(SYMBOLS), "sim_ticks_per_second": 0.5,
                 "stale_seconds": 600.0},  # 10 real seconds: a loaded machine is not a stale feed
        "broker": {"kind": "paper", "paper_latency_ms": 0.0, "paper_poll_ms": 10.0, "protection_band_pct": 5.0},
        "execution": {"order_timeout_seconds": ORDER_TIMEOUT},
        "calendar": {"enabled": False},  # any day, any hour: the test runs at 10:00 IST of whatever today is
        "risk": {"session_start": "00:00", "session_end": "24:00", "square_off_time": "24:00",
                 "max_open_positions": 100, "daily_max_loss": 0.0, "daily_max_loss_pct": 0.0,
                 "consecutive_losses_limit": 1000},
        "supervision": {"backoff_initial_seconds": 0.02, "backoff_max_seconds": 0.2,
                        "shutdown_timeout_seconds": 2.0},
    })
    # 10:00 IST today, whatever the real time: the run stays inside one trading day.
    start = datetime.now(IST).replace(hour=10, minute=0, second=0, microsecond=0).timestamp()
    clock = ScaledClock(start, SPEED)
    runtime = Runtime(settings, "all", clock=clock).start()
    try:
        assert runtime.trading is not None and runtime.trading.ready.wait(WAIT), "start-up reconciliation"
        daemon = Daemon(runtime, clock, pg_url)
        eventually(lambda: daemon.quoted(TRADED), WAIT, message=f"a quote for {TRADED}")
        yield daemon
    finally:
        runtime.shutdown()


def wait_healthy(daemon: Daemon) -> None:
    def health() -> tuple[int, Any]:
        return daemon.call("GET", "/v1/health")

    eventually(lambda: health()[0] == 200, WAIT, message=lambda: f"health 200: {health()}")


def test_the_list_is_the_tree_read_at_test_time(daemon: Daemon) -> None:
    assert supervisor_ids(daemon.tree()) == list(SUPERVISORS)


@pytest.mark.parametrize("supervisor", SUPERVISORS)
def test_after_restarting_a_supervisor_entries_exits_timeouts_and_candles_still_work(daemon: Daemon,
                                                                                     supervisor: str) -> None:
    assert supervisor in supervisor_ids(daemon.tree()), f"{supervisor} is no longer in the supervision tree"
    wait_healthy(daemon)
    daemon.enter("BEFORE")  # a live trade across the restart: its actor's handle must survive it
    daemon.wait_state("BEFORE", "POSITION_OPEN")

    restarted_at, decided = daemon.clock.now(), daemon.strategy_candles()
    code, answer = daemon.call("POST", f"/v1/actors/{supervisor}/restart")
    assert code == 200 and answer["restarted"] == supervisor, answer
    # Done when the status endpoint shows the restart counted and every actor of the tree running again.
    eventually(lambda: restart_counts(tree := daemon.tree())[supervisor] >= 1 and not not_running(tree), WAIT,
               message=lambda: f"{supervisor} restarted and the tree running: {daemon.tree()}")

    daemon.exit("BEFORE")
    daemon.enter("AFTER")
    daemon.enter("NEVER-FILLED", symbol=UNQUOTED, price=100.0)
    daemon.wait_state("AFTER", "POSITION_OPEN")
    daemon.exit("AFTER")
    daemon.wait_state("BEFORE", "CLOSED")
    daemon.wait_state("AFTER", "CLOSED")
    daemon.wait_state("NEVER-FILLED", "CANCELLED")
    timeline = [event["event"] for event in daemon.trade("NEVER-FILLED")["timeline"]]
    assert timeline == ["SignalAccepted", "EntryRequested", "OrderPlaced", "OrderTimedOut", "OrderCancelled"]

    eventually(lambda: daemon.candles_since(restarted_at) == set(SYMBOLS), WAIT,
               message=lambda: f"candles after the restart: {daemon.candles_since(restarted_at)}")
    eventually(lambda: daemon.strategy_candles() >= decided + len(SYMBOLS), WAIT,
               message=lambda: f"the strategy decides on new candles ({decided} -> {daemon.strategy_candles()})")
    wait_healthy(daemon)
