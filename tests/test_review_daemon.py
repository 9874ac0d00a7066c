"""The review over a log the real trader wrote (not lines written for the test): the vocabulary and the
fields the actors log today are what the review reads."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pykka
import pytest
import requests

import review
from telemetry.logs import configure_logging
from tests.support.trading import TOKEN, TraderHarness, eventually, trader_settings

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "trader.log"
    with open(os.devnull, "w") as devnull:
        configure_logging("INFO", str(path), stream=devnull)
        try:
            yield path
        finally:
            root = logging.getLogger()
            for handler in list(root.handlers):
                root.removeHandler(handler)
                handler.close()
            pykka.ActorRegistry.stop_all()


def test_a_real_traders_log_reads_back_into_its_trades_and_incidents(pg_url: str, log_file: Path) -> None:
    settings = trader_settings(pg_url, execution={"lot_sizes": {"SEC_49081": 75}})
    with TraderHarness(settings, prices={"SEC_49081": 100.0}) as harness:
        url = harness.url
        entry = {"pos_id": "REAL-1", "symbol": "SEC_49081", "side": "BUY", "qty": 75, "price": 100.0}
        assert requests.post(f"{url}/v1/trades", json=entry, headers=AUTH, timeout=5).status_code == 202
        harness.wait_state("REAL-1", "POSITION_OPEN")
        engaged = requests.post(f"{url}/v1/control/kill-switch", json={"engaged": True, "reason": "review test"},
                                headers=AUTH, timeout=5)
        assert engaged.status_code == 200
        denied = requests.post(f"{url}/v1/trades", json={**entry, "pos_id": "REAL-2"}, headers=AUTH, timeout=5)
        assert denied.status_code == 403
        assert requests.post(f"{url}/v1/control/kill-switch", json={"engaged": False}, headers=AUTH,
                             timeout=5).status_code == 200
        assert requests.post(f"{url}/v1/trades/REAL-1/exit", json={"reason": "take profit"}, headers=AUTH,
                             timeout=5).status_code == 202
        harness.wait_state("REAL-1", "CLOSED")
        restarted = requests.post(f"{url}/v1/actors/timeout-monitor/restart", headers=AUTH, timeout=5)
        assert restarted.status_code == 200
        eventually(lambda: "ACTOR_RESTARTED" in log_file.read_text(), message="the restart logged")

    result = review.review([str(log_file)])
    assert result.garbled == 0 and len(result.processes) == 1
    [process] = result.processes
    assert process.pid == os.getpid() and process.end == "stopped (exit 0)"
    stories = {t.pos_id: t for t in result.trades}
    story = stories["REAL-1"]
    journal = [s.event for s in story.steps if s.source == "journal"]
    assert journal == ["ENTRY_SIGNAL", "ENTRY_REQUESTED", "ORDER_PLACED", "ORDER_FILLED", "EXIT_SIGNAL",
                       "ORDER_PLACED", "ORDER_FILLED"]
    assert "ORDER_SUBMITTED" in [s.event for s in story.steps] and story.steps[-1].event in (
        "TRADE_CLOSED", "RISK_TRADE_COUNTED")
    assert story.state == "CLOSED" and story.complete, story.missing
    assert story.exit_reason == "OPERATOR: take profit" and story.realized_pnl is not None
    assert [o.leg for o in story.orders] == ["ENTRY", "EXIT"] and all(o.status == "FILLED" for o in story.orders)
    assert all(v is not None and v >= 0 for k, v in story.latencies.items() if k != "candle_close_to_signal")
    kinds = {i.kind: i for i in result.incidents}
    assert kinds["KILL_SWITCH"].detail.endswith("review test") and kinds["KILL_SWITCH"].duration is not None
    assert kinds["ACTOR_RESTART"].actor == "timeout-monitor" and kinds["ACTOR_RESTART"].ended_by == "ACTOR_RESTARTED"
    assert result.summary.entries_denied == {"KILL_SWITCH": 1}
    assert result.summary.closed == 1 and result.summary.net_pnl == story.net_pnl
