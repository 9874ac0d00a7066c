"""The MDS on Dhan: the real dhanhq SDK against the fake Dhan over real sockets, through every actor.

Ticks in -> candles in PostgreSQL and over HTTP; a dropped websocket and a disconnect packet reconnect and
resubscribe; option-chain 429s back off and the poller never exceeds one unique request per 3 s.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta

import pytest

from actors.market_data.assembly import MarketDataHandles
from actors.market_data.messages import FlushCandles
from config.settings import load_settings
from core.market import IST
from daemon.runtime import Runtime
from storage.opening import open_storage
from telemetry.logs import configure_logging
from tests.fakedhan import FakeDhan, ist_epoch_now


def _until(predicate, timeout: float = 15.0, what: str = "condition"):
    """Poll state that lives in another process or socket (no event to await), bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def _runtime(fake: FakeDhan, storage_url: str, **sections) -> tuple[Runtime, MarketDataHandles]:
    overrides = {"storage": {"url": storage_url}, "dhan": fake.dhan_settings(),
                 "feed": {"source": "dhan", "symbols": ["NIFTY", "SEC_49081"], "stale_seconds": 30,
                          "reconnect_initial_seconds": 0.05, "reconnect_max_seconds": 0.2},
                 "http": {"mds_port": 0, "control_port": 0}, "option_chain": {"underlyings": []},
                 "calendar": {"enabled": False}}  # the candle clock and stale checks at any hour (tests run at night)
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    runtime = Runtime(load_settings(env={}, overrides=overrides), "mds").start()
    parts = runtime.market_data
    assert parts is not None
    return runtime, parts


def test_dhan_ticks_become_candles_in_postgresql_and_over_http_and_survive_reconnects(pg_url) -> None:
    configure_logging("WARNING")
    with FakeDhan() as fake:
        runtime, parts = _runtime(fake, pg_url)
        try:
            mds_url = next(s for s in runtime.servers if s.name == "mds").url
            assert fake.feed.wait_for_subscriptions(1, timeout=10)
            minute = (ist_epoch_now() // 60 - 3) * 60  # a minute that has already ended
            for second, price in ((1, 25000.0), (10, 25010.5), (30, 24990.25), (45, 25005.0)):
                assert fake.feed.push_tick(13, price, ltt=minute + second, volume=100) == 1
            fake.feed.push_tick(49081, 120.5, ltt=minute + 5, volume=75, segment="NSE_FNO")
            expected_ts = datetime.fromtimestamp(minute - 19_800, IST).isoformat()

            def nifty_candle():
                _, body = _get(f"{mds_url}/v1/candles/last?symbol=NIFTY&limit=5")
                return next((c for c in body["candles"] if c["ts"] == expected_ts), None)

            candle = _until(lambda: (c := nifty_candle()) and c["close"] == 25005.0 and c, what="NIFTY candle")
            assert (candle["open"], candle["high"], candle["low"]) == (25000.0, 25010.5, 24990.25)
            quote = _get(f"{mds_url}/v1/quote?symbol=SEC_49081")[1]
            assert quote["ltp"] == 120.5

            parts.persister.ask(FlushCandles(), timeout=10)
            stored = open_storage(pg_url)
            try:
                row = stored.candles.latest("NIFTY", 5)[-1]
                assert (row.open, row.high, row.low, row.close) == (25000.0, 25010.5, 24990.25, 25005.0)
            finally:
                stored.close()

            # The websocket drops: the feed reconnects and subscribes again, and ticks flow on.
            fake.feed.drop_connections()
            assert fake.feed.wait_for_subscriptions(2, timeout=10)
            _until(lambda: fake.feed.push_tick(13, 25100.0, volume=10) == 1, what="resubscribed feed")
            _until(lambda: _get(f"{mds_url}/v1/quote?symbol=NIFTY")[1].get("ltp") == 25100.0,
                   what="tick after reconnect")

            # Dhan says goodbye with a disconnect packet (805: too many connections): reconnect later.
            fake.feed.send_disconnect(805)
            assert fake.feed.wait_for_subscriptions(3, timeout=10)
            _until(lambda: fake.feed.push_tick(13, 25200.0, volume=10) == 1, what="feed after disconnect")
            _until(lambda: _get(f"{mds_url}/v1/quote?symbol=NIFTY")[1].get("ltp") == 25200.0,
                   what="tick after disconnect packet")
            status = runtime.status()["feed"]
            assert status["source_status"]["reconnects"] >= 2
        finally:
            runtime.shutdown()


@pytest.mark.slow
def test_option_chain_429s_back_off_and_the_poller_never_exceeds_dhans_limit(tmp_path) -> None:
    configure_logging("WARNING")
    with FakeDhan(option_chain_window=3.0) as fake:
        expiry = (datetime.now(IST) + timedelta(days=2)).date().isoformat()
        chain = {"last_price": 25642.8, "oc": {"25650.000000": {
            "ce": {"last_price": 134.0, "security_id": 42528}, "pe": {"last_price": 120.0, "security_id": 42529}}}}
        fake.state.set_option_chain(13, "IDX_I", expiry, chain)
        fake.rest.fail("/optionchain", method="POST", status=429, times=1)
        runtime, _ = _runtime(fake, f"sqlite:///{tmp_path / 'db.sqlite'}",
                              option_chain={"underlyings": ["NIFTY"], "poll_seconds": 3.0},
                              feed={"symbols": ["NIFTY"]})
        try:
            mds_url = next(s for s in runtime.servers if s.name == "mds").url
            body = _until(lambda: (r := _get(f"{mds_url}/v1/option_chain?symbol=NIFTY")) [0] == 200 and r[1],
                          timeout=30, what="option chain after the 429")
            assert body["expiry"] == expiry and body["payload"] == chain
            requests = fake.rest.requests_to("/optionchain", method="POST")
            assert requests[0].status == 429 and requests[-1].status == 200
            gaps = [b.mono - a.mono for a, b in zip(requests, requests[1:], strict=False)]
            assert all(gap >= 3.0 for gap in gaps), gaps
            assert runtime.status()["option_chains"]["errors"] >= 1
        finally:
            runtime.shutdown()


def test_a_silent_symbol_goes_stale_in_health_and_resumes_with_its_next_tick(tmp_path) -> None:
    configure_logging("WARNING")
    with FakeDhan() as fake:
        runtime, parts = _runtime(fake, f"sqlite:///{tmp_path / 'db.sqlite'}",
                                  feed={"symbols": ["NIFTY"], "stale_seconds": 1.0, "rest_fallback": False})
        try:
            control = next(s for s in runtime.servers if s.name == "control").url
            assert fake.feed.wait_for_subscriptions(1, timeout=10)
            fake.feed.push_tick(13, 25000.0)
            code, body = _until(lambda: (r := _get(f"{control}/v1/health"))[0] == 503 and r, what="FEED_STALE")
            assert body["checks"]["feed"]["stale"] == ["NIFTY"]
            assert body["checks"]["feed"]["last_tick_age_seconds"]["NIFTY"] > 1.0
            fake.feed.push_tick(13, 25001.0)
            _until(lambda: _get(f"{control}/v1/health")[0] == 200, what="FEED_RESUMED")
            assert parts.feed_state.stale == set()
        finally:
            runtime.shutdown()
