"""The MDS on real Redis: what subscribers receive, and an outage that degrades without stopping candles."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import redis

from config.settings import load_settings
from daemon.runtime import Runtime
from telemetry.logs import configure_logging
from tests.tcp_proxy import TcpProxy
from tests.test_mds_pipeline import SYMBOLS, drain, expected_candles, make_ticks, mds_runtime, write_csv


def _health(runtime: Runtime) -> tuple[int, dict]:
    url = f"{runtime.servers[-1].url}/v1/health"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_closed_candles_ticks_and_quotes_reach_redis_subscribers(tmp_path, redis_url, redis_prefix) -> None:
    configure_logging("WARNING")
    ticks = make_ticks(minutes=12, per_second=3, seed=8)
    csv = tmp_path / "ticks.csv"
    write_csv(csv, ticks)
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    pubsub.subscribe(f"{redis_prefix}candles:NIFTY", f"{redis_prefix}ticks:NIFTY")
    received: list[tuple[str, dict]] = []
    listening = threading.Event()

    def listen() -> None:
        try:
            for message in pubsub.listen():
                if message["type"] == "subscribe":
                    listening.set()
                elif message["type"] == "message":
                    received.append((message["channel"].decode(), json.loads(message["data"])))
        except (ValueError, redis.ConnectionError):
            return  # the test closed the connection: listening is over

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert listening.wait(5)
    import tests.test_mds_pipeline as pipeline

    original = pipeline.load_settings

    def with_redis(env, overrides):
        overrides["storage"].update({"redis_url": redis_url, "redis_prefix": redis_prefix})
        return original(env=env, overrides=overrides)

    pipeline.load_settings = with_redis
    try:
        runtime, parts = mds_runtime(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", csv)
    finally:
        pipeline.load_settings = original
    try:
        drain(runtime, parts)
        expected = expected_candles(ticks, 60)["NIFTY"]
        deadline = time.monotonic() + 10
        candle_messages: list[dict] = []
        while time.monotonic() < deadline:
            candle_messages = [m for ch, m in received if ch.endswith("candles:NIFTY")]
            if len(candle_messages) >= len(expected):
                break
            listening.wait(0.05)
        closed = [m for m in candle_messages if m["event"] == "CANDLE_CLOSED"]
        assert [m["ts"] for m in closed] == [e["ts"] for e in expected]
        final = {m["ts"]: m for m in candle_messages}  # the last message per minute (revisions win)
        assert [(final[e["ts"]]["close"], final[e["ts"]]["volume"]) for e in expected] == [
            (e["close"], e["volume"]) for e in expected]
        tick_count = sum(len(m["ticks"]) for ch, m in received if ch.endswith("ticks:NIFTY"))
        assert tick_count == sum(1 for t in ticks if t.symbol == "NIFTY")
        quote = json.loads(client.get(f"{redis_prefix}quote:NIFTY"))
        assert quote["ltp"] > 0
    finally:
        runtime.shutdown()
        pubsub.close()
        client.close()


def test_a_redis_outage_degrades_health_but_candles_keep_building(tmp_path, redis_url, redis_prefix) -> None:
    configure_logging("CRITICAL")
    parts_url = urlsplit(redis_url)
    proxy = TcpProxy(parts_url.hostname or "127.0.0.1", parts_url.port or 6379)
    settings = load_settings(env={}, overrides={
        "storage": {"url": f"sqlite:///{tmp_path / 'db.sqlite'}",
                    "redis_url": f"redis://127.0.0.1:{proxy.port}/0", "redis_prefix": redis_prefix},
        "feed": {"source": "sim", "symbols": SYMBOLS, "sim_ticks_per_second": 50},
        "http": {"mds_port": 0, "control_port": 0}, "option_chain": {"underlyings": []}})
    runtime = Runtime(settings, "mds").start()
    parts = runtime.market_data
    assert parts is not None
    try:
        wait = threading.Event()
        deadline = time.monotonic() + 10
        while _health(runtime)[0] != 200 and time.monotonic() < deadline:
            wait.wait(0.05)
        assert _health(runtime)[0] == 200
        proxy.stop_accepting_and_cut("refuse")
        deadline = time.monotonic() + 15
        while _health(runtime)[0] != 503 and time.monotonic() < deadline:
            wait.wait(0.05)
        code, body = _health(runtime)
        assert code == 503 and "redis" in body["failing"]
        ticks_during = parts.feed_state.ticks
        deadline = time.monotonic() + 10
        while parts.feed_state.ticks < ticks_during + 100 and time.monotonic() < deadline:
            wait.wait(0.05)
        assert parts.feed_state.ticks >= ticks_during + 100  # the feed and the builders carry on
        assert parts.cache.quote("NIFTY") is not None
        assert runtime.status()["bus"]["failures"] > 0
        proxy.resume()
        deadline = time.monotonic() + 20
        while _health(runtime)[0] != 200 and time.monotonic() < deadline:
            wait.wait(0.1)
        assert _health(runtime)[0] == 200
    finally:
        runtime.shutdown()
        proxy.close()
