"""The market calendar in the running system: health, stale-feed gating, the chain poller, the candle clock,
the risk guard. Real runtime, real sockets, the real SDK against the fake Dhan; the tests control the day
through a holidays file in tmp (today a holiday, or a special session) and the clock."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from config.settings import load_settings
from core.market import IST, minute_start
from daemon.runtime import Runtime
from tests.fakedhan import IST_OFFSET, FakeDhan
from tests.support.clock import SteppedClock, ist
from tests.support.trading import TraderHarness, trader_settings
from tests.support.waiting import eventually

TODAY = datetime.now(IST).date().isoformat()


@pytest.fixture
def fake() -> Any:
    with FakeDhan() as running:
        yield running


def holidays(tmp_path: Path, line: str) -> str:
    path = tmp_path / "holidays.txt"
    path.write_text(f"# test calendar\n{line}\n")
    return str(path)


def all_day_session_or_skip() -> None:
    if datetime.now(IST).strftime("%H:%M") >= "23:58":
        pytest.skip("a special session 00:00-23:59 ends in a moment: run it again after midnight IST")


def mds(fake: FakeDhan, tmp_path: Path, holidays_file: str, clock: Any = None, **sections: dict[str, Any]) -> Runtime:
    overrides: dict[str, Any] = {
        "storage": {"url": f"sqlite:///{tmp_path / 'mds.db'}"}, "dhan": fake.dhan_settings(),
        "feed": {"source": "dhan", "symbols": ["NIFTY"], "stale_seconds": 0.5, "rest_fallback": False,
                 "reconnect_initial_seconds": 0.05, "reconnect_max_seconds": 0.2},
        "http": {"mds_port": 0, "control_port": 0}, "option_chain": {"underlyings": ["NIFTY"], "poll_seconds": 3.0},
        "calendar": {"enabled": True, "holidays_file": holidays_file}}
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return Runtime(load_settings(env={}, overrides=overrides), "mds", clock=clock).start()


def get(runtime: Runtime, server: str, path: str) -> tuple[int, dict[str, Any]]:
    url = next(s.url for s in runtime.servers if s.name == server)
    try:
        with urllib.request.urlopen(f"{url}{path}", timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", "") == name]


def test_on_a_holiday_health_is_200_market_closed_no_feed_stale_and_the_poller_does_not_poll(
        fake: FakeDhan, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    runtime = mds(fake, tmp_path, holidays(tmp_path, f"{TODAY} Test holiday"))
    try:
        market = runtime.market_data
        assert market is not None
        assert fake.feed.wait_for_subscriptions(1)  # the feed is up, and silent: no tick ever comes
        stale_after = market.feed_state.checks + 3  # three 1-second checks, each long past stale_seconds
        eventually(lambda: market.feed_state.checks >= stale_after, 10.0, message="three feed checks")
        assert not market.feed_state.stale and not events(caplog, "FEED_STALE")
        status, body = get(runtime, "mds", "/v1/health")
        assert status == 200, body
        assert (body["market"], body["market_reason"]) == ("closed", "holiday: Test holiday")
        assert body["checks"]["feed"]["ok"] and body["checks"]["feed"]["market_open"] is False
        chains = runtime.status()["option_chains"]
        assert chains["polls"] == 0 and chains["idle"] == "market closed: holiday: Test holiday"
        assert not fake.rest.requests_to("/optionchain") and events(caplog, "OPTION_CHAINS_IDLE")
    finally:
        runtime.shutdown()


def test_a_special_session_opens_the_market_at_its_hours_and_then_a_silent_feed_is_stale(
        fake: FakeDhan, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    all_day_session_or_skip()
    caplog.set_level(logging.INFO)
    runtime = mds(fake, tmp_path, holidays(tmp_path, f"{TODAY} 00:00-23:59 Muhurat trading"))
    try:
        market = runtime.market_data
        assert market is not None
        eventually(lambda: market.feed_state.stale, 10.0, message="FEED_STALE on the silent feed")
        status, body = get(runtime, "mds", "/v1/health")
        assert (status, body["market"], body["market_reason"]) == (503, "open", "Muhurat trading")
        assert "feed" in body["failing"]
        eventually(lambda: fake.rest.requests_to("/optionchain/expirylist"), 10.0, message="the poller polls")
        assert runtime.status()["option_chains"]["idle"] is None
    finally:
        runtime.shutdown()


def test_the_candle_clock_closes_the_last_minute_at_the_close_but_not_after_hours(
        fake: FakeDhan, tmp_path: Path) -> None:
    monday = "2026-11-30"  # a regular trading day in the shipped calendar
    clock = SteppedClock(ist(2026, 11, 30, 15, 29, 50))
    runtime = mds(fake, tmp_path, holidays(tmp_path, "2026-11-24 Guru Nanak Jayanti"), clock=clock,
                  feed={"stale_seconds": 60.0}, option_chain={"underlyings": []})
    try:
        market = runtime.market_data
        assert market is not None and fake.feed.wait_for_subscriptions(1)
        in_session = ist(2026, 11, 30, 15, 29, 55)
        assert fake.feed.push_tick(13, 24_100.0, ltt=int(in_session) + IST_OFFSET) == 1
        eventually(lambda: market.cache.candles("NIFTY", 60, 1, True), 5.0, message="the 15:29 candle forming")
        clock.set(ist(2026, 11, 30, 15, 30, 2))  # the session closed two seconds ago; no tick comes
        closed = eventually(lambda: market.cache.last_closed("NIFTY"), 5.0, message="15:29 closed by the clock")
        assert closed.ts == minute_start(in_session) and datetime.fromtimestamp(closed.ts, IST).isoformat() == \
            f"{monday}T15:29:00+05:30"

        clock.set(ist(2026, 11, 30, 18, 0, 10))  # after hours: a stray packet forms a minute ...
        assert fake.feed.push_tick(13, 24_105.0, ltt=int(clock.now()) + IST_OFFSET) == 1
        eventually(lambda: market.cache.candles("NIFTY", 60, 1, True)[-1].ts == minute_start(clock.now()), 5.0,
                   message="the 18:00 minute forming")
        clock.set(ist(2026, 11, 30, 18, 1, 30))  # ... which the clock does not close outside the session
        after = market.feed_state.checks + 3
        eventually(lambda: market.feed_state.checks >= after, 10.0, message="three feed checks")
        assert market.cache.last_closed("NIFTY") == closed
    finally:
        runtime.shutdown()


def test_the_risk_guard_denies_entries_on_a_holiday_and_health_says_the_market_is_closed(
        sqlite_url: str, tmp_path: Path) -> None:
    settings = trader_settings(sqlite_url, calendar={"enabled": True,
                                                     "holidays_file": holidays(tmp_path, f"{TODAY} Test holiday")})
    with TraderHarness(settings) as h:
        h.enter("CAL-HOLIDAY")
        h.wait_state("CAL-HOLIDAY", "DENIED")
        denied = [e for e in h.storage.trades.events("CAL-HOLIDAY") if e.event == "EntryDenied"]
        assert denied and denied[0].payload["reason"] == "MARKET_CLOSED: market closed: holiday: Test holiday"
        status, body = get(h.runtime, "control", "/v1/health")
        assert (status, body["market"], body["market_reason"]) == (200, "closed", "holiday: Test holiday")
        risk = h.trader.risk.status()
        assert risk["deny_code"] == "MARKET_CLOSED" and not risk["trading_enabled"]


def test_during_a_special_session_the_risk_guard_lets_entries_through(sqlite_url: str, tmp_path: Path) -> None:
    all_day_session_or_skip()
    line = f"{TODAY} 00:00-23:59 Muhurat trading"
    settings = trader_settings(sqlite_url, calendar={"enabled": True, "holidays_file": holidays(tmp_path, line)},
                               risk={"square_off_time": "15:30"})  # no margin before the special close
    with TraderHarness(settings) as h:
        h.enter("CAL-MUHURAT")
        h.wait_state("CAL-MUHURAT", "POSITION_OPEN")
        status, body = get(h.runtime, "control", "/v1/health")
        assert (status, body["market"], body["market_reason"]) == (200, "open", "Muhurat trading")
