"""MDS client mode: the HTTP client against a real MDS and a scripted server, and the poller actor."""

from __future__ import annotations

import http.server
import json
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from actors.clock import SystemClock, VirtualClock
from actors.signals.mds_client import CandlePushed, FetchCandles, MdsClientActor, MdsClientState, RefreshQuote
from actors.signals.messages import CandlesClosed
from actors.sources.mds_http import MdsHttpClient, MdsMarketView, MdsRejected, MdsUnavailable
from config.settings import load_settings
from core.market import IST, Candle
from daemon.runtime import Runtime
from storage.bus import InProcessBus
from storage.records import OptionChainRecord
from supervision.scheduler import Scheduler
from telemetry.logs import configure_logging
from tests.support.series import SESSION_OPEN, trend_ticks, write_ticks

MINUTE = 60


@pytest.fixture(autouse=True)
def quiet_logs() -> None:
    configure_logging("WARNING")


# -- a scripted HTTP server ---------------------------------------------------------------------------------
class Scripted:
    """Answers GETs from a list of (status, body); the last answer repeats. Counts requests."""

    def __init__(self, answers: list[tuple[int, Any]]) -> None:
        self.answers = answers
        self.requests = 0
        scripted = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                status, body = scripted.answers[min(scripted.requests, len(scripted.answers) - 1)]
                scripted.requests += 1
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


QUOTE = {"symbol": "NIFTY", "ltp": 24010.5, "ts": "2026-11-20T10:00:00+05:30", "age_seconds": 0.1}


def test_5xx_is_retried_within_its_bounds_and_then_answered() -> None:
    server = Scripted([(503, {"error": "busy"}), (502, {"error": "gateway"}), (200, QUOTE)])
    try:
        client = MdsHttpClient(server.url, timeout=1.0, attempts=3, retry_wait=0.01)
        assert client.quote("NIFTY") == (24010.5, pytest.approx(SESSION_OPEN + 45 * MINUTE))
        assert server.requests == 3
    finally:
        server.close()


def test_a_4xx_is_refused_at_once_and_a_404_is_no_answer() -> None:
    server = Scripted([(400, {"error": "invalid parameter"})])
    try:
        client = MdsHttpClient(server.url, timeout=1.0, attempts=3, retry_wait=0.01)
        with pytest.raises(MdsRejected):
            client.quote("NIFTY")
        assert server.requests == 1
        server.answers = [(404, {"error": "no quote"})]
        assert client.quote("NIFTY") is None and client.option_chain("NIFTY") is None
    finally:
        server.close()


def test_an_unreachable_mds_is_unavailable_after_a_bounded_number_of_tries() -> None:
    server = Scripted([(200, QUOTE)])
    url = server.url
    server.close()  # nothing listens there any more
    client = MdsHttpClient(url, timeout=0.5, attempts=3, retry_wait=0.01)
    started = time.monotonic()
    with pytest.raises(MdsUnavailable):
        client.candles_last("NIFTY", 5)
    assert client.requests == 3 and time.monotonic() - started < 3.0


def test_the_client_reads_a_running_mds(tmp_path: Path) -> None:
    ticks = write_ticks(tmp_path / "ticks.csv", trend_ticks(warm=20, up=5, down=0))
    settings = load_settings(env={}, overrides={
        "storage": {"url": f"sqlite:///{tmp_path / 'mds.db'}"}, "http": {"mds_port": 0, "control_port": 0},
        "feed": {"source": "replay", "replay_path": str(ticks), "replay_speed": 0, "symbols": ["NIFTY"]},
        "option_chain": {"underlyings": []}})
    runtime = Runtime(settings, "mds").start()
    try:
        assert runtime.market_data is not None and runtime.market_data.feed_state.finished_event.wait(10)
        mds_url = next(s.url for s in runtime.servers if s.name == "mds") + "/v1"
        client = MdsHttpClient(mds_url, timeout=2.0)
        candles = client.candles_last("NIFTY", 100)
        # The last minute closed at the end of the input; every minute is there, in order.
        assert [c.ts for c in candles] == [SESSION_OPEN + i * MINUTE for i in range(25)]
        assert candles[0].open == 23998.5 and all(c.timeframe == MINUTE for c in candles)
        assert client.quote("NIFTY") is not None
        assert client.option_chain("NIFTY") is None  # no chain source behind a replay
        with pytest.raises(MdsRejected):
            client.candles_last("SEC_1", 5)  # a symbol this MDS does not serve
        healthy, body = client.health()
        assert body["role"] == "mds" and isinstance(healthy, bool)
    finally:
        runtime.shutdown()


# -- the poller actor, with a fake MDS -------------------------------------------------------------------------
class FakeMds:
    """Stands in for MdsHttpClient: the candles an MDS holds, newest last."""

    base_url = "fake://mds"
    attempts = 1

    def __init__(self, candles: list[Candle]) -> None:
        self.candles = candles
        self.limits: list[int] = []
        self.down = False

    def candles_last(self, symbol: str, limit: int, timeframe_seconds: int = 60) -> list[Candle]:
        if self.down:
            raise MdsUnavailable("connection refused")
        self.limits.append(limit)
        return self.candles[-limit:]

    def health(self) -> tuple[bool, dict[str, Any]]:
        return True, {"checks": {"feed": {"stale": []}}}

    def option_chain(self, symbol: str, expiry: str | None = None) -> OptionChainRecord | None:
        return None


class Deliveries:
    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.cond = threading.Condition()

    def __call__(self, message: Any) -> bool:
        with self.cond:
            self.messages.append(message)
            self.cond.notify_all()
        return True

    def wait(self, count: int, timeout: float = 5.0) -> list[Any]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.messages) >= count, timeout), self.messages
            return list(self.messages)


def minute(i: int, close: float = 100.0) -> Candle:
    return Candle("NIFTY", SESSION_OPEN + i * MINUTE, close, close + 1, close - 1, close)


def start_client(fake: FakeMds, deliveries: Deliveries, history: int = 50) -> tuple[Any, MdsClientState]:
    state = MdsClientState()
    view = MdsMarketView(fake, SystemClock())  # type: ignore[arg-type]
    ref = MdsClientActor.start(None, fake, view, ("NIFTY",), (), deliveries, SystemClock(), Scheduler.shared(),
                               state, history_minutes=history, poll_seconds=60.0, fetch_delay=0.0,
                               chain_poll_seconds=60.0)
    return ref, state


def test_the_first_fetch_is_history_then_only_new_minutes_in_order() -> None:
    fake = FakeMds([minute(i) for i in range(80)])
    deliveries = Deliveries()
    ref, state = start_client(fake, deliveries, history=50)
    first = deliveries.wait(1)[0]
    assert isinstance(first, CandlesClosed) and first.history
    assert [c.ts for c in first.candles] == [minute(i).ts for i in range(30, 80)]

    fake.candles += [minute(i) for i in range(80, 83)]
    ref.tell(FetchCandles())
    second = deliveries.wait(2)[1]
    assert not second.history and [c.ts for c in second.candles] == [minute(i).ts for i in (80, 81, 82)]
    ref.tell(FetchCandles())  # nothing new: nothing delivered
    ref.ask(FetchCandles())
    assert len(deliveries.messages) == 2 and state.last_delivered["NIFTY"] == minute(82).ts


def test_a_long_outage_is_caught_up_in_order() -> None:
    fake = FakeMds([minute(i) for i in range(5)])
    deliveries = Deliveries()
    ref, state = start_client(fake, deliveries, history=5)
    deliveries.wait(1)
    fake.down = True
    ref.ask(FetchCandles())
    assert state.consecutive_failures == 1 and "connection refused" in state.last_error
    fake.down = False
    fake.candles += [minute(i) for i in range(5, 305)]  # five hours missed
    ref.ask(FetchCandles())
    caught_up = deliveries.wait(2)[1]
    assert [c.ts for c in caught_up.candles] == [minute(i).ts for i in range(5, 305)]
    assert state.consecutive_failures == 0 and max(fake.limits) >= 300


def test_pushed_candles_go_straight_through_once_and_a_gap_is_fetched() -> None:
    fake = FakeMds([minute(i) for i in range(10)])
    deliveries = Deliveries()
    ref, state = start_client(fake, deliveries, history=10)
    deliveries.wait(1)
    ref.tell(CandlePushed(minute(10), "CANDLE_CLOSED"))  # the next minute: delivered as pushed
    ref.tell(CandlePushed(minute(10), "CANDLE_CLOSED"))  # the same again: dropped
    ref.tell(CandlePushed(minute(9, close=99.0), "CANDLE_REVISED"))  # a revision: not for the strategy
    fake.candles += [minute(10), minute(11), minute(12)]
    ref.tell(CandlePushed(minute(12), "CANDLE_CLOSED"))  # 11 was missed: catch up over HTTP, in order
    ref.ask(FetchCandles(symbols=("NIFTY",)))
    delivered = [c.ts for m in deliveries.wait(3)[1:] for c in m.candles]
    assert delivered == [minute(10).ts, minute(11).ts, minute(12).ts]
    assert state.duplicates_dropped == 1 and state.candles_pushed == 1


def test_the_paper_brokers_quote_falls_back_to_an_options_premium_in_the_chain() -> None:
    server = Scripted([(404, {"error": "unknown symbol"})])
    try:
        client = MdsHttpClient(server.url, timeout=1.0, attempts=1)
        clock = VirtualClock(SESSION_OPEN)  # the chain below expires a week later
        view = MdsMarketView(client, clock, quote_max_age=0.0)
        chain = {"data": {"last_price": 24000.0, "oc": {
            "24000.000000": {"ce": {"security_id": 49081, "last_price": 120.5},
                             "pe": {"security_id": 49082, "last_price": 98.0}}}}}
        view.set_chain(OptionChainRecord("NIFTY", "2026-11-27", chain, SESSION_OPEN))
        assert view.quote("SEC_49082") == 98.0
        assert view.quote("SEC_1") is None and view.quote("NIFTY") is None
        assert view.option_chain("NIFTY") == chain
        clock.advance(datetime(2026, 11, 27, 15, 30, tzinfo=IST).timestamp())  # that expiry is over
        assert view.option_chain("NIFTY") is None
    finally:
        server.close()


def test_redis_pushes_reach_the_client_through_the_bus() -> None:
    bus = InProcessBus()
    fake = FakeMds([minute(i) for i in range(3)])
    deliveries = Deliveries()
    state = MdsClientState()
    view = MdsMarketView(fake, SystemClock())  # type: ignore[arg-type]
    MdsClientActor.start(None, fake, view, ("NIFTY",), (), deliveries, SystemClock(), Scheduler.shared(), state,
                         history_minutes=3, poll_seconds=60.0, fetch_delay=0.0, chain_poll_seconds=60.0, bus=bus)
    deliveries.wait(1)
    from actors.market_data.messages import candle_message

    bus.publish("feed:status", b'{"event": "FEED_STALE", "symbol": "NIFTY", "at": 1.0}')
    bus.publish("candles:NIFTY", candle_message(minute(3)))
    messages = deliveries.wait(3)
    assert messages[1].event == "FEED_STALE" and messages[1].symbol == "NIFTY"
    assert [c.ts for c in messages[2].candles] == [minute(3).ts] and state.subscribed


def test_a_running_client_answers_quotes_from_memory_and_refreshes_them_itself() -> None:
    server = Scripted([(200, QUOTE)])
    try:
        client = MdsHttpClient(server.url, timeout=1.0, attempts=1)
        view = MdsMarketView(client, SystemClock(), quote_max_age=60.0)
        ref = MdsClientActor.start(None, FakeMds([]), view, ("NIFTY",), (), Deliveries(), SystemClock(),
                                   Scheduler.shared(), MdsClientState(), history_minutes=0, poll_seconds=60.0,
                                   fetch_delay=0.0, chain_poll_seconds=60.0)
        ref.ask(FetchCandles(symbols=("NIFTY",)))  # started: the view now refreshes through the actor
        assert view.quote("NIFTY") is None  # nothing known yet: no waiting on the network here
        ref.ask(RefreshQuote("NIFTY"))  # behind the refresh that first call asked for
        assert view.quote("NIFTY") == 24010.5 and server.requests == 1
        for _ in range(5):
            view.quote("NIFTY")  # fresh: from memory
        assert server.requests == 1
    finally:
        server.close()
