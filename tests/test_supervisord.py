"""The daemon under a real supervisord, configured by the shipped deploy/ files (tests/support/supervisord.py):
a kill -9 in the middle of a trade, an escalation (exit 1), and `supervisorctl stop`.

The broker is the real DhanBroker (dhanhq SDK) against the fake Dhan over real sockets, so the orders live
outside the killed process, as at Dhan: what the restarted process recovers is what the broker holds.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

import review
from core.orders import Leg, correlation_id
from tests.fakedhan import FakeDhan
from tests.support.supervisord import Supervisord
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

TOKEN = "supervisord-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def fake() -> Iterator[FakeDhan]:
    with FakeDhan() as dhan:
        yield dhan


def trader_config(pg_url: str, fake: FakeDhan, **sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    config: dict[str, dict[str, Any]] = {
        "storage": {"url": pg_url, "redis_url": ""},
        "dhan": {k: v for k, v in fake.dhan_settings().items() if k.endswith("_url")},
        "risk": {"session_start": "00:00", "session_end": "24:00", "square_off_time": "24:00"},
        "calendar": {"enabled": False},  # tests run at night and on weekends
        "execution": {"lot_sizes": {"SEC_49081": 75}, "order_timeout_seconds": 120, "max_slippage_pct": 5.0},
        "reconcile": {"interval_seconds": 1.0},
        "log": {"file_max_bytes": 10_000, "file_backups": 50},  # small: the review reads rotated files
    }
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    return config


def secrets(fake: FakeDhan) -> dict[str, str]:
    return {"control_token.txt": TOKEN, "dhan_client_id.txt": fake.client_id,
            "dhan_access_token.txt": fake.access_token}


def trade_state(sup: Supervisord, pos_id: str) -> str | None:
    answer = requests.get(f"{sup.url}/v1/trades/{pos_id}", timeout=5)
    return answer.json()["trade"]["state"] if answer.status_code == 200 and answer.json()["trade"] else None


def test_a_kill_9_mid_trade_is_restarted_and_recovered_with_no_duplicate_order(
        pg_url: str, fake: FakeDhan, tmp_path: Path) -> None:
    fake.state.hold_orders(True)  # the entry order waits at the broker: the trade is in the middle
    cid = correlation_id("SUP-1", Leg.ENTRY)
    with Supervisord(tmp_path, settings=trader_config(pg_url, fake), secrets=secrets(fake),
                     program={"startsecs": "1"}) as sup:
        first = sup.wait_healthy()
        entry = {"pos_id": "SUP-1", "symbol": "SEC_49081", "side": "BUY", "qty": 75, "price": 100.0}
        assert requests.post(f"{sup.url}/v1/trades", json=entry, headers=AUTH, timeout=10).status_code == 202
        eventually(lambda: trade_state(sup, "SUP-1") == "ORDER_PLACED", timeout=20, message="entry at the broker")
        assert fake.state.count_orders(cid) == 1

        os.kill(first, signal.SIGKILL)
        second = sup.wait_healthy(other_than=first)  # supervisord started a new process; it recovered
        (order,) = fake.state.orders_with_correlation_id(cid)
        fake.state.hold_orders(False)
        fake.state.fill(order.order_id, price=100.0)  # the fill reaches the process that took over
        eventually(lambda: trade_state(sup, "SUP-1") == "POSITION_OPEN", timeout=20,
                   message=f"the recovered trade took the fill\n{sup.problems()}")
        assert fake.state.count_orders(cid) == 1  # recovery looked the order up; it never sent another
        assert len(fake.rest.requests_to("/orders", method="POST")) == 1

        assert requests.post(f"{sup.url}/v1/trades/SUP-1/exit", json={"reason": "after the restart"},
                             headers=AUTH, timeout=10).status_code == 202
        eventually(lambda: trade_state(sup, "SUP-1") == "CLOSED", timeout=20, message="exited")
        assert len(fake.rest.requests_to("/orders", method="POST")) == 2  # the entry and the exit, once each

        started = time.monotonic()
        stopped = sup.ctl("stop", "mybot")
        elapsed = time.monotonic() - started
        assert stopped.returncode == 0 and elapsed < 5, (stopped.stdout, stopped.stderr, elapsed)
        assert "STOPPED" in sup.ctl("status", "mybot").stdout

    rotated = sorted(p.name for p in sup.logs.glob("mybot.log.*"))
    assert rotated, "the log never rotated: the review must read rotated files"
    result = review.review([str(sup.log_file)])
    assert [p.pid for p in result.processes] == [first, second]
    assert result.processes[0].end == "killed (no RUNTIME_STOPPED line)"
    assert result.processes[1].end == "stopped (exit 0)"
    (restart,) = [i for i in result.incidents if i.kind == "PROCESS_RESTART"]
    assert restart.details["cause"] == "killed (no RUNTIME_STOPPED line)" and "SUP-1" in restart.pos_ids
    (story,) = [t for t in result.trades if t.pos_id == "SUP-1"]
    assert story.state == "CLOSED" and story.complete, story.missing
    assert story.processes == [p.id for p in result.processes]
    events = [s.event for s in story.steps]
    restart_at = events.index("PROCESS_RESTART")
    assert "ORDER_PLACED" in events[:restart_at] and "TRADE_RECOVERING" in events[restart_at:]
    assert [o.leg for o in story.orders] == ["ENTRY", "EXIT"] and all(o.status == "FILLED" for o in story.orders)
    assert [s.at for s in story.steps] == sorted(s.at for s in story.steps)


def test_an_escalation_exits_1_and_supervisord_restarts_it(fake: FakeDhan, tmp_path: Path) -> None:
    """An mds process on a replay file: its feed crash-loops past the restart intensity once the file is
    gone (an operator restart of the feed makes it read the file again), the root gives up, exit 1."""
    ticks = tmp_path / "ticks.csv"
    start = int(time.time()) - 60
    ticks.write_text("ts,symbol,ltp,volume\n" + "".join(
        f"{time.strftime('%Y-%m-%dT%H:%M:%S+00:00', time.gmtime(start + n))},NIFTY,{24000 + n % 7},1\n"
        for n in range(3600)))
    config = {"storage": {"url": f"sqlite:///{tmp_path / 'mds.db'}", "redis_url": ""},
              "feed": {"source": "replay", "replay_path": str(ticks), "replay_speed": 1.0, "symbols": ["NIFTY"]},
              "option_chain": {"underlyings": []}, "broker": {"kind": "paper"},
              "supervision": {"max_restarts": 1, "backoff_initial_seconds": 0.01}}
    with Supervisord(tmp_path / "sup", settings=config, secrets={"control_token.txt": TOKEN}, role="mds",
                     program={"startsecs": "1"}) as sup:
        first = sup.wait_healthy()
        moved = ticks.rename(tmp_path / "ticks.away")
        assert requests.post(f"{sup.url}/v1/actors/feed/restart", headers=AUTH, timeout=10).status_code in (200, 503)
        eventually(lambda: '"RUNTIME_ESCALATED"' in sup.log_file.read_text(), timeout=20,
                   message=f"the escalation\n{sup.problems()}")
        moved.rename(ticks)  # the next process finds its file again
        second = sup.wait_healthy(other_than=first)
        assert sup.ctl("stop", "mybot").returncode == 0

    result = review.review([str(sup.log_file)])
    first_process = next(p for p in result.processes if p.pid == first)
    assert first_process.exit_code == 1 and first_process.end == "stopped (exit 1)"
    assert second in [p.pid for p in result.processes] and result.processes[-1].end == "stopped (exit 0)"
    escalations = [i for i in result.incidents if i.kind == "ESCALATION" and i.details.get("process_exit")]
    assert escalations and escalations[0].process == first_process.id
    restarts = [i for i in result.incidents if i.kind == "PROCESS_RESTART"]
    assert restarts[0].details["cause"] == "stopped (exit 1)" and restarts[0].ended_by == "RUNTIME_STARTED"
