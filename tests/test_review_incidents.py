"""Incident rules one by one, each day written through telemetry.logs the way the daemon's parts log."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

import review
from core.orders import Leg, correlation_id
from telemetry.logs import get_logger
from tests import review_support as day
from tests.review_support import DAY, Trade, VirtualClock, ist, process_log

ROOT = Path(__file__).resolve().parent.parent


def _review(path: Path, **filters: str) -> review.Review:
    return review.review([str(path)], day=DAY, **filters)


def test_a_crash_loop_is_one_incident_until_the_actor_is_given_up(tmp_path: Path) -> None:
    log = tmp_path / "mybot.log"
    clock = VirtualClock(ist("10:00:00"))
    with process_log(log, clock):
        day.runtime_starting()
        day.actor_crashed("option-chain-poller", "DhanError: 500")
        clock.advance(1.0)
        get_logger("mybot.supervision", actor="market_data").event(
            "ACTOR_RESTART_SCHEDULED", "option-chain-poller restarts in 2.000 s", child="option-chain-poller",
            delay_seconds=2.0, attempt=1)
        day.actor_crashed("option-chain-poller", "DhanError: 500", generation=1)
        clock.advance(3.0)
        get_logger("mybot.supervision", actor="market_data").event(
            "ACTOR_STOPPED", "option-chain-poller ended (crash); temporary: not restarted",
            child="option-chain-poller", discarded=0)
    [crash] = _review(log).incidents
    assert (crash.kind, crash.count, crash.duration, crash.ended_by) == ("ACTOR_CRASH", 2, 4.0,
                                                                         "ACTOR_STOPPED (not restarted)")
    assert crash.details["backoff_seconds"] == 2.0 and len(crash.details["errors"]) == 2


def test_rest_for_one_restarts_belong_to_the_crash_and_an_operator_restart_is_its_own(tmp_path: Path) -> None:
    log = tmp_path / "mybot.log"
    clock = VirtualClock(ist("10:00:00"))
    with process_log(log, clock):
        day.actor_crashed("feed", "RuntimeError: source failed")
        clock.advance(0.1)
        day.actor_started("market_data", "feed", restarted=True, generation=1)
        day.actor_started("market_data", "candles", restarted=True, generation=1)
        clock.at("11:00:00")
        get_logger("mybot.supervision", actor="trading").event(
            "ACTOR_RESTART_REQUESTED", "operator restart of executor", child="executor")
        clock.advance(0.05)
        day.actor_started("trading", "executor", restarted=True, generation=1)
    crash, restart = _review(log).incidents
    assert crash.kind == "ACTOR_CRASH" and crash.details["also_restarted"] == ["candles"]
    assert (restart.kind, restart.actor, round(restart.duration or 0, 3)) == ("ACTOR_RESTART", "executor", 0.05)


def test_a_trade_actor_crash_is_part_of_the_trades_story(tmp_path: Path) -> None:
    log = tmp_path / "mybot.log"
    clock = VirtualClock(ist("10:00:00"))
    with process_log(log, clock):
        trade = Trade("NIFTY-X-1", clock)
        trade.signal(24500.0, 100.0)
        trade.accept(100.0, 101.0)
        trade.placed("P1", Leg.ENTRY, 101.0)
        clock.advance(1)
        day.actor_crashed("trade:NIFTY-X-1", "KeyError: 'avg_price'", poison="BrokerOrderUpdated")
        clock.advance(0.01)
        day.actor_started("trades", "trade:NIFTY-X-1", restarted=True, generation=1)
        trade.recovering()
    result = _review(log)
    assert [(i.kind, i.pos_ids) for i in result.incidents] == [("ACTOR_CRASH", ["NIFTY-X-1"]),
                                                               ("DEAD_LETTER", ["NIFTY-X-1"])]
    [story] = result.trades
    assert [s.event for s in story.steps][-3:] == ["ACTOR_CRASHED", "DEAD_LETTER", "TRADE_RECOVERING"]
    assert story.missing == []  # still ORDER_PLACED: nothing more is implied
    assert story.incidents == [i.id for i in result.incidents]


def test_a_kill_switch_found_engaged_at_start_began_before_the_log(tmp_path: Path) -> None:
    log = tmp_path / "mybot.log"
    clock = VirtualClock(ist("09:00:00"))
    with process_log(log, clock):
        day.runtime_starting()
        day.risk_log.event("RISK_STATE_LOADED", "risk state loaded", day=DAY, realized_pnl=0.0, consecutive_losses=0,
                           trades_closed=0, kill_switch=True, reconciliation_hold=False, trading_enabled=True,
                           entries="KILL_SWITCH")
        clock.at("09:30:00")
        day.flatten("operator flatten", ["NIFTY-A", "NIFTY-B"])
    [kill] = _review(log).incidents
    assert (kill.kind, kill.start, kill.end, kill.ongoing) == ("KILL_SWITCH", None, None, True)
    assert kill.pos_ids == ["NIFTY-A", "NIFTY-B"] and kill.details["flattened"] == ["NIFTY-A", "NIFTY-B"]


def test_a_process_that_dies_ends_its_own_outages_and_keeps_the_days_switches(tmp_path: Path) -> None:
    log = tmp_path / "mybot.log"
    clock = VirtualClock(ist("10:00:00"))
    with process_log(log, clock):
        day.runtime_starting()
        day.runtime_started(10)
        clock.at("10:10:00")
        day.kill_switch(True, "manual")
        day.feed_stale("NIFTY")
        day.storage_unavailable()
        clock.at("10:10:05")
        day.bus_degraded()
    clock.at("10:11:00")
    with process_log(log, clock):
        day.runtime_starting()
        clock.advance(1)
        day.runtime_started(11)
    incidents = {i.kind: i for i in _review(log).incidents}
    for kind in ("FEED_STALE", "DATABASE_OUTAGE", "REDIS_OUTAGE"):
        assert incidents[kind].end == ist("10:10:05") and incidents[kind].ended_by == "process ended"
    assert incidents["KILL_SWITCH"].ongoing
    assert incidents["PROCESS_RESTART"].duration == pytest.approx(56.0)


def test_a_hold_for_another_reason_than_reconciliation_is_an_incident(tmp_path: Path) -> None:
    log = tmp_path / "mybot.log"
    clock = VirtualClock(ist("10:00:00"))
    with process_log(log, clock):
        day.risk_log.event("RECONCILIATION_HOLD", "trade X: journal unreadable", level=40, engaged=True,
                           reason="trade X: journal unreadable (unknown trade event 'Foo')")
        clock.advance(60)
        day.reconcile_acknowledged("alice", 0, {})
    [hold] = _review(log).incidents
    assert (hold.kind, hold.duration, hold.details["acknowledged_by"]) == ("RECONCILE_HOLD", 60.0, "alice")


def test_an_exit_that_keeps_failing_pages_a_human_and_that_is_an_exit_retries_incident(tmp_path: Path) -> None:
    log = tmp_path / "mybot.log"
    clock = VirtualClock(ist("10:00:00"))
    with process_log(log, clock):
        trade = Trade("NIFTY-R-1", clock)
        trade.signal(24500.0, 100.0)
        trade.accept(100.0, 101.0)
        trade.placed("P1", Leg.ENTRY, 101.0)
        trade.filled("P1", Leg.ENTRY, 75, 100.5)
        clock.at("10:30:00")
        for attempt in range(5):
            trade.exit_requested("EXIT_SCORE" if attempt == 0 else "retry exit", 99.0, 100.0)
            trade.submit_deferred(Leg.EXIT, 1)
            clock.advance(1)
            trade.rejected(Leg.EXIT, "RMS: blocked")
    result = _review(log)
    [retries] = [i for i in result.incidents if i.kind == "EXIT_RETRIES"]
    assert retries.count == 5 and retries.ongoing and retries.details["submit_retries"] == 5
    assert len(retries.details["operator_alerts"]) == 1 and "still retrying" in retries.details["operator_alerts"][0]
    assert result.trades[0].state == "POSITION_OPEN" and result.summary.open == 1


def test_lines_linked_only_by_a_hashed_correlation_id_join_their_trade(tmp_path: Path) -> None:
    log = tmp_path / "mybot.log"
    long_pos_id = "BANKNIFTY-STRANGLE-2611201000-LONGNAME-1"  # too long for a readable correlation id
    clock = VirtualClock(ist("10:00:00"))
    with process_log(log, clock):
        hashed = correlation_id(long_pos_id, Leg.ENTRY)
        get_logger("mybot.broker.paper").event("PAPER_ORDER_ACCEPTED", "paper order accepted", order_id="P9",
                                               correlation_id=hashed, symbol="SEC_1", side="BUY", qty=15, price=1.0)
        trade = Trade(long_pos_id, clock, symbol="SEC_1", qty=15)
        clock.advance(0.01)
        trade.accept(1.0, 1.0)
    [story] = _review(log).trades
    assert hashed.startswith("h") and [s.event for s in story.steps] == [
        "PAPER_ORDER_ACCEPTED", "ENTRY_SIGNAL", "ENTRY_REQUESTED"]


def test_stdin_is_read_plain_or_gzipped(tmp_path: Path) -> None:
    log = tmp_path / "mybot.log"
    clock = VirtualClock(ist("10:00:00"))
    with process_log(log, clock):
        day.feed_stale("NIFTY")
        clock.advance(12.5)
        day.feed_resumed("NIFTY")
    for data in (log.read_bytes(), gzip.compress(log.read_bytes())):
        run = subprocess.run([sys.executable, "-m", "daemon.cli", "review", "-", "--day", DAY, "--json"], cwd=ROOT,
                             input=data, capture_output=True, timeout=60)
        assert run.returncode == 0, run.stderr
        document = orjson.loads(run.stdout)
        assert [(i["kind"], i["duration_seconds"], i["process"]) for i in document["incidents"]] == [
            ("FEED_STALE", 12.5, "-#1")]


def test_lines_that_carry_their_pid_tell_processes_apart_without_a_start_line(tmp_path: Path) -> None:
    log = tmp_path / "mybot.log"
    clock = VirtualClock(ist("10:00:00"))
    with process_log(log, clock):
        events = get_logger("mybot.test", pid=4001, role="trader")
        events.event("CONTROL_CALL", "GET /v1/status")
        clock.advance(30)
        events.event("CONTROL_CALL", "GET /v1/status")
        clock.advance(12)
        get_logger("mybot.test", pid=4002, role="trader").event("CONTROL_CALL", "GET /v1/status")
    result = _review(log)
    assert [(p.id, p.pid) for p in result.processes] == [("mybot.log#1", 4001), ("mybot.log#2", 4002)]
    [restart] = result.incidents
    assert (restart.kind, restart.duration, restart.ended_by) == ("PROCESS_RESTART", 12.0, "first line of pid 4002")


KILLED_HALF = """
import logging, sys, time
from pathlib import Path
from core.orders import Leg
from tests.review_support import Trade, VirtualClock, ist, process_log, runtime_started, runtime_starting
log, second = Path(sys.argv[1]), sys.argv[2] == "second"
clock = VirtualClock(ist("10:05:20" if second else "10:00:00"))
with process_log(log, clock, max_bytes=2_000):
    if second:
        logging.disable(logging.CRITICAL)  # the journal replayed in memory: the real actor logs none of it
    else:
        runtime_starting("trader")
        runtime_started(int(sys.argv[3]), "trader")
    trade = Trade("NIFTY-K-1", VirtualClock(ist("10:01:00")) if second else clock)
    trade.signal(24500.0, 100.0)
    trade.accept(100.0, 101.0)
    trade.submitted("P1", Leg.ENTRY, 101.0)
    trade.placed("P1", Leg.ENTRY, 101.0)
    trade.filled("P1", Leg.ENTRY, 75, 100.2)
    if not second:
        print("open", flush=True)
        time.sleep(120)  # killed here
    logging.disable(logging.NOTSET)
    trade.clock = clock
    runtime_starting("trader")
    clock.advance(1)
    runtime_started(int(sys.argv[3]), "trader")
    trade.recovering()
    clock.advance(60)
    trade.exit_requested("EXIT_SCORE", 99.0, 100.0)
    trade.submitted("P2", Leg.EXIT, 99.0)
    trade.placed("P2", Leg.EXIT, 99.0)
    trade.filled("P2", Leg.EXIT, 75, 100.9)
"""


def test_a_real_kill_9_mid_trade_loses_no_line_and_the_next_process_continues_the_story(tmp_path: Path) -> None:
    log = tmp_path / "trader.log"
    first = subprocess.Popen([sys.executable, "-c", KILLED_HALF, str(log), "first", "7001"], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    assert first.stdout is not None and first.stdout.readline() == "open\n"
    first.kill()  # SIGKILL: no handler runs, nothing is flushed that was not already written
    assert first.wait(timeout=10) == -9
    second = subprocess.run([sys.executable, "-c", KILLED_HALF, str(log), "second", "7002"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    result = review.review([str(log)])
    assert len(list(tmp_path.glob("trader.log.*"))) >= 1  # rotated while writing
    assert [(p.pid, p.end) for p in result.processes] == [(7001, "killed (no RUNTIME_STOPPED line)"),
                                                         (7002, "running at end of log")]
    [story] = result.trades
    assert story.complete and story.state == "CLOSED" and story.processes == ["trader.log#1", "trader.log#2"]
    assert [s.event for s in story.steps if s.source in ("journal", "review")] == [
        "ENTRY_SIGNAL", "ENTRY_REQUESTED", "ORDER_PLACED", "ORDER_FILLED", "PROCESS_RESTART", "EXIT_SIGNAL",
        "ORDER_PLACED", "ORDER_FILLED"]
    assert [i.kind for i in result.incidents] == ["PROCESS_RESTART"] and result.incidents[0].pos_ids == ["NIFTY-K-1"]


def test_lines_name_their_incidents_and_an_acknowledgement_ends_the_ones_it_names(tmp_path: Path) -> None:
    log = tmp_path / "mybot.log"
    clock = VirtualClock(ist("10:00:00"))
    recon = get_logger("mybot.Reconciler", actor="reconciler")
    with process_log(log, clock, pid=501, role="trader"):
        day.runtime_starting("trader")
        recon.event("RECONCILE_INCIDENT", "SEC_49082: broker holds 50", level=40, kind="BROKER_POSITION_WITHOUT_TRADE",
                    symbol="SEC_49082", difference=50, incident_id="reconcile-incident-aaaa")
        recon.event("RECONCILE_INCIDENT", "SEC_49083: broker holds 25", level=40, kind="BROKER_POSITION_WITHOUT_TRADE",
                    symbol="SEC_49083", difference=25, incident_id="reconcile-incident-cccc")
        clock.advance(30.0)
        feed = get_logger("mybot.FeedActor", actor="feed")
        feed.event("FEED_STALE", "no tick for NIFTY in 10.1 s", level=30, symbol="NIFTY", incident_id="feed-stale-1")
        clock.advance(5.0)
        feed.event("FEED_RESUMED", "NIFTY ticking again", symbol="NIFTY", incident_id="feed-stale-1")
    clock.at("10:05:00")
    with process_log(log, clock, pid=502, role="trader"):  # the next process sees the first difference again
        day.runtime_starting("trader")
        recon.event("RECONCILE_INCIDENT", "SEC_49082: broker holds 50", level=40, kind="BROKER_POSITION_WITHOUT_TRADE",
                    symbol="SEC_49082", difference=50, incident_id="reconcile-incident-bbbb")
        clock.advance(60.0)
        recon.event("RECONCILE_ACKNOWLEDGED", "1 incidents acknowledged by 10.0.0.7; hold released", incidents=1,
                    who="10.0.0.7", incident_ids=["reconcile-incident-bbbb"])
    result = _review(log)
    kinds = {(i.kind, i.symbol): i for i in result.incidents}
    acknowledged = kinds[("RECONCILE_INCIDENT", "SEC_49082")]
    assert acknowledged.id == "reconcile-incident-aaaa" and acknowledged.details["also_ids"] == ["reconcile-incident-bbbb"]
    assert acknowledged.ended_by == "RECONCILE_ACKNOWLEDGED" and acknowledged.details["acknowledged_by"] == "10.0.0.7"
    assert acknowledged.duration == 360.0 and acknowledged.count == 2
    assert kinds[("RECONCILE_INCIDENT", "SEC_49083")].ongoing  # not named by the acknowledgement
    stale = kinds[("FEED_STALE", "NIFTY")]
    assert (stale.id, stale.duration, stale.ended_by) == ("feed-stale-1", 5.0, "FEED_RESUMED")
    assert [p.role for p in result.processes] == ["trader", "trader"]
