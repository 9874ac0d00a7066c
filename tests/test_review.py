"""`mybot review` as a library: a day written through telemetry.logs by two processes (one killed with
-9 in the middle of a trade, one escalating), rotated and gzipped, read back into exactly its incidents,
each trade's story in order, the day at a glance, and the JSON schema."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

import review
from review.report_text import clock
from tests.review_support import (
    DAY,
    TRADE_DENIED,
    TRADE_HALTING,
    TRADE_RESTARTED,
    TRADE_RETRIED,
    TRADE_SLIPPED,
    TRADE_TIMEOUT,
    TRADE_WIN,
    build_day,
    ist,
)


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    built = build_day(tmp_path_factory.mktemp("day"))
    return [str(built["mds"]), str(built["trader"])]


@pytest.fixture(scope="module")
def day_review(logs: list[str]) -> review.Review:
    return review.review(logs, day=DAY)


def _span(incident: review.Incident) -> tuple[str, str, str, float | None]:
    return (incident.kind, clock(incident.start), clock(incident.end) if incident.end else "ongoing",
            None if incident.duration is None else round(incident.duration, 3))


def test_the_day_lists_exactly_its_incidents_with_their_durations(day_review: review.Review) -> None:
    assert [_span(i) for i in day_review.incidents] == [
        ("PROCESS_RESTART", "10:04:59.500", "10:05:21.000", 21.5),
        ("DATABASE_OUTAGE", "10:40:00.000", "10:41:30.000", 90.0),
        ("FEED_STALE", "10:58:03.120", "11:00:10.620", 127.5),
        ("ORDER_TIMEOUT", "11:00:30.000", "11:00:30.200", 0.2),
        ("ORDER_SLIPPAGE", "11:10:00.300", "11:10:01.000", 0.7),
        ("REDIS_OUTAGE", "11:20:00.000", "11:20:09.500", 9.5),
        ("ACTOR_CRASH", "11:30:00.000", "11:30:00.180", 0.18),
        ("DEAD_LETTER", "11:30:00.000", "11:30:00.000", 0.0),
        ("KILL_SWITCH", "12:00:00.000", "12:15:00.000", 900.0),
        ("RECONCILE_INCIDENT", "13:00:00.000", "13:05:00.000", 300.0),
        ("EXIT_RETRIES", "13:40:00.000", "13:40:01.000", 1.0),
        ("TOKEN_EXPIRY", "14:00:00.000", "14:30:00.000", 1800.0),
        ("LOSS_LIMIT_HALT", "14:42:00.621", "ongoing", None),
        ("ESCALATION", "15:00:00.000", "15:00:01.000", 1.0),
        ("PROCESS_RESTART", "15:00:01.000", "15:00:05.400", 4.4),
    ]


def test_each_incident_says_what_it_affected(day_review: review.Review) -> None:
    by_kind = {(i.kind, i.start): i for i in day_review.incidents}

    def one(kind: str, at: str) -> review.Incident:
        return by_kind[(kind, ist(at))]

    killed = one("PROCESS_RESTART", "10:04:59.500")
    assert killed.process == "trader.log#1" and killed.pos_ids == [TRADE_RESTARTED]
    assert killed.details["cause"] == "killed (no RUNTIME_STOPPED line)" and killed.details["pid"] == 2002
    assert one("PROCESS_RESTART", "15:00:01.000").details["cause"] == "stopped (exit 1)"
    outage = one("DATABASE_OUTAGE", "10:40:00.000")
    assert outage.process == "trader.log#2" and outage.count == 2 and outage.ended_by == "STORAGE_RECOVERED"
    stale = one("FEED_STALE", "10:58:03.120")
    assert (stale.symbol, stale.process, stale.pos_ids) == ("NIFTY", "mds.log#1", [TRADE_TIMEOUT])
    timeout = one("ORDER_TIMEOUT", "11:00:30.000")
    assert timeout.pos_ids == [TRADE_TIMEOUT] and timeout.details["order_id"] == "P3001"
    assert timeout.ended_by == "ORDER_CANCELLED"
    slippage = one("ORDER_SLIPPAGE", "11:10:00.300")
    assert slippage.pos_ids == [TRADE_SLIPPED] and slippage.details["pct"] == pytest.approx(1.0)
    crash = one("ACTOR_CRASH", "11:30:00.000")
    assert (crash.actor, crash.symbol, crash.ended_by) == ("candles:BANKNIFTY", "BANKNIFTY", "ACTOR_RESTARTED")
    assert one("DEAD_LETTER", "11:30:00.000").details["message_type"] == "TicksReceived"
    assert one("KILL_SWITCH", "12:00:00.000").detail == "news: RBI policy"
    reconcile = one("RECONCILE_INCIDENT", "13:00:00.000")
    assert reconcile.symbol == "SEC_49090" and reconcile.details["acknowledged_by"] == "operator"
    retries = one("EXIT_RETRIES", "13:40:00.000")
    assert retries.pos_ids == [TRADE_RETRIED] and retries.count == 2
    assert retries.details["rejections"] == ["RMS: margin shortfall"]
    assert one("LOSS_LIMIT_HALT", "14:42:00.621").pos_ids == [TRADE_HALTING]
    escalation = one("ESCALATION", "15:00:00.000")
    assert escalation.actor == "trading" and escalation.details["process_exit"] is True
    assert len({i.id for i in day_review.incidents}) == len(day_review.incidents)


def test_the_day_at_a_glance(day_review: review.Review) -> None:
    summary = day_review.summary
    pnl = {t.pos_id: t.net_pnl for t in day_review.trades}
    assert pnl == {TRADE_WIN: 577.5, TRADE_RESTARTED: -157.5, TRADE_TIMEOUT: None, TRADE_SLIPPED: -45.0,
                   TRADE_DENIED: None, TRADE_RETRIED: 457.5, TRADE_HALTING: -5250.0}
    assert (summary.signals, summary.closed, summary.open, summary.denied, summary.cancelled) == (7, 5, 0, 1, 1)
    assert summary.net_pnl == pytest.approx(577.5 - 157.5 - 45.0 + 457.5 - 5250.0)
    assert (summary.wins, summary.losses, summary.win_rate) == (2, 3, 0.4)
    # equity: 577.5, 420, 375, 832.5, -4417.5: the deepest fall is from the 832.5 peak
    assert summary.max_drawdown == pytest.approx(832.5 + 4417.5)
    assert summary.entries_denied == {"KILL_SWITCH": 1}
    assert summary.incidents["PROCESS_RESTART"] == 2 and sum(summary.incidents.values()) == 15
    assert [round(e[3], 2) for e in day_review.equity] == [577.5, 420.0, 375.0, 832.5, -4417.5]


def test_a_trade_killed_mid_way_has_its_whole_story_in_order_across_both_processes(
        day_review: review.Review) -> None:
    story = next(t for t in day_review.trades if t.pos_id == TRADE_RESTARTED)
    assert [(s.event, s.source) for s in story.steps] == [
        ("ENTRY_SIGNAL", "StrategyActor"), ("ENTRY_SIGNAL", "journal"), ("ENTRY_REQUESTED", "journal"),
        ("PAPER_ORDER_ACCEPTED", "paper"), ("ORDER_SUBMITTED", "Executor"), ("ORDER_PLACED", "journal"),
        ("ORDER_FILLED", "journal"), ("PROCESS_RESTART", "review"), ("TRADE_RECOVERING", "TradeActor"),
        ("EXIT_SIGNAL", "StrategyActor"), ("EXIT_SIGNAL", "journal"), ("PAPER_ORDER_ACCEPTED", "paper"),
        ("ORDER_SUBMITTED", "Executor"), ("ORDER_PLACED", "journal"), ("ORDER_FILLED", "journal"),
        ("TRADE_CLOSED", "TradeActor"), ("RISK_TRADE_COUNTED", "risk")]
    assert [s.at for s in story.steps] == sorted(s.at for s in story.steps)
    assert story.processes == ["trader.log#1", "trader.log#2"]
    assert story.steps[8].process == "trader.log#2" and story.steps[6].process == "trader.log#1"
    assert story.complete and story.missing == []
    assert story.state == "CLOSED" and story.exit_reason == "EXIT_SCORE"
    assert (story.symbol, story.underlying, story.instrument) == ("SEC_49081", "NIFTY", "NIFTY 24500 CE")
    assert (story.entry_price, story.exit_price, story.realized_pnl) == (98.2, 96.1, -157.5)
    assert story.charges is None and story.net_pnl == -157.5
    assert story.signal is not None and story.signal["candle_time"] == "2026-11-20T09:59:00+05:30"
    assert story.signal["components"]["trend"] == 0.62 and story.signal["entry_score"] == 0.72
    assert story.verdict == {"allowed": True, "at": ist("10:00:00.004"), "limit_price": 99.0}
    assert [(o.order_id, o.leg, o.status, o.filled_qty, o.avg_price) for o in story.orders] == [
        ("P2001", "ENTRY", "FILLED", 75, 98.2), ("P2002", "EXIT", "FILLED", 75, 96.1)]
    latencies = {k: None if v is None else round(v, 3) for k, v in story.latencies.items()}
    assert latencies == {"candle_close_to_signal": 0.0, "signal_to_placed": 0.036, "placed_to_filled": 0.25,
                         "exit_requested_to_filled": 0.432, "signal_to_closed": 1200.435}
    gaps = [None if s.since_previous is None else round(s.since_previous, 3) for s in story.steps[:3]]
    assert gaps == [None, 0.004, 0.0]


def test_each_kind_of_trade_ends_as_its_log_says(day_review: review.Review) -> None:
    stories = {t.pos_id: t for t in day_review.trades}
    timeout = stories[TRADE_TIMEOUT]
    assert timeout.state == "CANCELLED" and timeout.complete
    assert [(o.order_id, o.status) for o in timeout.orders] == [("P3001", "CANCELLED")]
    denied = stories[TRADE_DENIED]
    assert denied.state == "DENIED" and denied.complete and denied.orders == []
    assert denied.verdict is not None and denied.verdict["code"] == "KILL_SWITCH"
    slipped = stories[TRADE_SLIPPED]
    assert [s.event for s in slipped.steps if s.source == "journal"][-4:] == [
        "ORDER_SLIPPAGE", "EXIT_SIGNAL", "ORDER_PLACED", "ORDER_FILLED"]
    assert slipped.exit_reason.startswith("ORDER_SLIPPAGE")
    retried = stories[TRADE_RETRIED]
    assert [(o.leg, o.status) for o in retried.orders] == [("ENTRY", "FILLED"), ("EXIT", "REJECTED"),
                                                           ("EXIT", "FILLED")]
    assert retried.complete and retried.exit_reason.endswith("; reason: EXIT_SCORE")  # the retry's own reason


def test_garbled_lines_are_counted_per_file_and_shown(day_review: review.Review) -> None:
    assert day_review.garbled == 3
    samples = [s for f in day_review.files for s in f["samples"]]
    reasons = sorted(s["reason"] for s in samples)
    assert reasons == ["not JSON", "not JSON", "truncated line (the rest of the line was read)"]
    assert {s["text"] for s in samples if s["reason"] == "not JSON"} == {
        "Connecting to Dhan order update websocket ...", "dhanhq: token refreshed (plain print)"}
    assert sum(f["salvaged"] for f in day_review.files) == 1
    names = [Path(f["path"]).name for f in day_review.files]
    assert names == ["mds.log.4.gz", "mds.log.3", "mds.log.2", "mds.log.1", "mds.log",
                     "trader.log.3.gz", "trader.log.2", "trader.log.1", "trader.log"]
    assert sum(f["outside_window"] for f in day_review.files) == 1  # yesterday's line


def test_processes_are_told_apart_by_their_restarts(day_review: review.Review) -> None:
    assert [(p.id, p.pid, p.role, p.end) for p in day_review.processes] == [
        ("mds.log#1", 1001, "mds", "stopped (exit 0)"),
        ("trader.log#1", 2001, "trader", "killed (no RUNTIME_STOPPED line)"),
        ("trader.log#2", 2002, "trader", "stopped (exit 1)"),
        ("trader.log#3", 2003, "trader", "running at end of log")]


def test_a_window_keeps_the_incidents_and_trades_inside_it(logs: list[str]) -> None:
    result = review.review(logs, day=DAY, since="10:50", until="11:05")
    assert [_span(i) for i in result.incidents] == [
        ("FEED_STALE", "10:58:03.120", "11:00:10.620", 127.5),
        ("ORDER_TIMEOUT", "11:00:30.000", "11:00:30.200", 0.2)]
    assert [t.pos_id for t in result.trades] == [TRADE_TIMEOUT]
    assert result.summary.first == ist("10:50:00.010") and result.summary.last == ist("11:04:00.010")


def test_an_incident_cut_by_the_window_shows_its_end_and_an_unknown_start(logs: list[str]) -> None:
    result = review.review(logs, since=f"{DAY}T10:59:00", until=f"{DAY}T11:00:20")
    stale = [i for i in result.incidents if i.kind == "FEED_STALE"]
    assert len(stale) == 1 and stale[0].start is None and stale[0].end == ist("11:00:10.620")
    assert stale[0].duration is None and not stale[0].ongoing


def test_pos_id_keeps_that_trade_and_the_incidents_that_touched_it(logs: list[str]) -> None:
    result = review.review(logs, day=DAY, pos_id=TRADE_TIMEOUT)
    assert [t.pos_id for t in result.trades] == [TRADE_TIMEOUT]
    assert [i.kind for i in result.incidents] == ["FEED_STALE", "ORDER_TIMEOUT"]
    assert result.summary.cancelled == 1 and result.summary.closed == 0
    story = review.trade_story(logs, TRADE_RESTARTED, day=DAY)
    assert story is not None and story.complete and len(story.processes) == 2
    assert review.trade_story(logs, "NO-SUCH-TRADE", day=DAY) is None


def test_another_day_has_nothing_of_this_one(logs: list[str]) -> None:
    result = review.review(logs, day="2026-11-21")
    assert result.lines == 0 and result.incidents == [] and result.trades == []
    assert review.summarize(logs, day="2026-11-21").closed == 0


def test_the_api_functions_agree_with_the_whole_review(logs: list[str], day_review: review.Review) -> None:
    assert [i.id for i in review.incidents(logs, day=DAY)] == [i.id for i in day_review.incidents]
    assert review.summarize(logs, day=DAY).as_json() == day_review.summary.as_json()


def test_incident_ids_do_not_depend_on_the_window(logs: list[str], day_review: review.Review) -> None:
    narrow = review.review(logs, day=DAY, since="10:50", until="11:05")
    ids = {(i.kind, i.start): i.id for i in day_review.incidents}
    assert all(ids[(i.kind, i.start)] == i.id for i in narrow.incidents)


def test_the_json_form_follows_the_documented_schema(day_review: review.Review) -> None:
    document = orjson.loads(orjson.dumps(day_review.as_json()))
    assert review.validate(document) == []
    assert document["schema"] == "mybot.review/1"
    assert list(document) == ["schema", "window", "inputs", "processes", "summary", "incidents", "trades",
                              "equity", "prices"]
    assert document["window"] == {"day": DAY, "since": "2026-11-20T00:00:00.000+05:30",
                                  "until": "2026-11-21T00:00:00.000+05:30"}
    incident = document["incidents"][0]
    assert incident["start"] == "2026-11-20T10:04:59.500+05:30" and incident["duration_seconds"] == 21.5
    trade = next(t for t in document["trades"] if t["pos_id"] == TRADE_RESTARTED)
    assert trade["complete"] is True and trade["latencies_seconds"]["placed_to_filled"] == 0.25
    broken = dict(document, summary={**document["summary"], "net_pnl": "a lot"})
    del broken["trades"]
    assert review.validate(broken) == ["$: missing 'trades'", "$.summary.net_pnl: expected number, got str"]


def test_prices_come_from_candles_when_the_log_has_them(day_review: review.Review) -> None:
    [series] = day_review.prices
    assert series.symbol == "SEC_49081" and series.source == "candles" and len(series.points) > 300
    entries = [m for m in series.marks if m["kind"] == "entry"]
    exits = [m for m in series.marks if m["kind"] == "exit"]
    assert len(entries) == len(exits) == 5  # the denied trade placed nothing; the timed out one filled nothing
    assert entries[0] == {"at": ist("09:30:00.286"), "price": 101.5, "pos_id": TRADE_WIN, "kind": "entry"}


def test_the_text_report_has_every_section(day_review: review.Review) -> None:
    text = review.render_text(day_review)
    sections = ["PROCESSES", "DAY AT A GLANCE", "INCIDENTS (15)", "TRADES (7)", "GARBLED LINES (3)"]
    assert [text.index(s) for s in sections] == sorted(text.index(s) for s in sections)
    assert "  trades         5 closed, 0 open, 1 denied, 0 rejected, 1 cancelled (7 in all)" in text
    assert "  win rate       40.0% (2 won, 3 lost)" in text
    assert "across processes: trader.log#1 -> trader.log#2" in text
    assert "line 1: not JSON" not in text and "'Connecting to Dhan order update websocket ...'" in text
