"""The traded contract rides the live feed (issue 10, item 2) in the embedded default: the simulated feed
walks a position's option from its chain premium while the position is open, its ticks price the marks
and the exit, and it is dropped when the trade ends. (The same with Dhan's websocket: test_options_dhan_e2e.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.trading.api import ManualEntryRequest
from config.settings import load_settings
from core.chains import parse_chain
from core.orders import Side
from daemon.runtime import Runtime
from telemetry.logs import configure_logging
from tests.support.waiting import eventually


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    configure_logging("WARNING")
    settings = load_settings(env={}, overrides={
        "storage": {"url": f"sqlite:///{tmp_path / 'db.sqlite'}"},
        "http": {"mds_port": 0, "control_port": 0, "threads": 2},
        "feed": {"symbols": ["NIFTY"]},
        "option_chain": {"underlyings": ["NIFTY"], "poll_seconds": 3.0},
        "risk": {"session_start": "00:00", "session_end": "24:00", "square_off_time": "24:00"},
        "calendar": {"enabled": False},  # any day, any hour
        "broker": {"paper_latency_ms": 0.0, "paper_poll_ms": 10.0},
        "reconcile": {"interval_seconds": 0.5},
        "log": {"level": "WARNING"},
    })
    process = Runtime(settings, "all").start()
    try:
        assert process.trading is not None and process.trading.ready.wait(10)
        yield process
    finally:
        process.shutdown()


def test_a_positions_option_ticks_while_it_is_held_and_stops_after_the_exit(runtime: Runtime) -> None:
    market = runtime.market_data
    assert market is not None and runtime.trading is not None
    record = eventually(lambda: market.cache.option_chain("NIFTY", None), 10, message="a simulated chain")
    leg = parse_chain(record.payload).atm("CE", 0.0)
    assert leg is not None
    symbol = leg.symbol
    assert runtime.instruments.lot_size(symbol) == 65  # the snapshot's NIFTY contract (sim and paper)
    assert market.cache.quote(symbol) is None  # not on the feed before anyone holds it

    decision = runtime.trading.api.enter(ManualEntryRequest("SIM-1", symbol, Side.BUY, 65))
    assert decision.accepted, decision
    eventually(lambda: symbol in market.feed_state.contracts, 5, message="the contract on the feed")
    first = eventually(lambda: market.cache.quote(symbol), 5, message="ticks of the contract")
    assert abs(first[0] - leg.last_price) / leg.last_price < 0.2  # it walks from its chain premium
    eventually(lambda: runtime.storage.trades.get_trade("SIM-1").state == "POSITION_OPEN", 5, message="open")
    status = runtime.status()["feed"]
    assert status["contracts"] == {symbol: ["SIM-1"]} and status["contracts_subscribed"] == [symbol]

    runtime.trading.api.exit("SIM-1", "test")
    eventually(lambda: runtime.storage.trades.get_trade("SIM-1").state == "CLOSED", 5, message="closed")
    eventually(lambda: symbol not in market.feed_state.contracts, 5, message="off the feed")
    assert market.contracts.watched() == {}
    exit_event = next(e for e in runtime.storage.trades.events("SIM-1") if e.event == "ExitRequested")
    assert exit_event.payload["limit_price"] > 0
