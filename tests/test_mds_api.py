"""The seed's MDS paths: shapes, 09:15-aligned buckets, and a 4xx JSON for every bad query string."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import datetime

import falcon.testing
import pytest

from actors.clock import VirtualClock
from actors.market_data.market_cache import MarketCache
from core.market import IST, Candle
from httpapi.app import create_mds_app
from httpapi.server import HttpServer
from storage.records import OptionChainRecord

DAY = datetime(2026, 11, 20, tzinfo=IST)
OPEN = int(DAY.replace(hour=9, minute=15).timestamp())


class FakeRuntime:
    role = "mds"

    def health(self):
        return True, {"database": {"ok": True}}


def minute(i: int, price: float) -> Candle:
    return Candle("NIFTY", OPEN + 60 * i, price, price + 2, price - 1, price + 1, 10 * (i + 1), 3)


@pytest.fixture
def cache() -> MarketCache:
    clock = VirtualClock(OPEN + 60 * 375)
    cache = MarketCache(["NIFTY", "BANKNIFTY", "SEC_49081"], clock)
    cache.add_candles("NIFTY", [minute(i, 24000 + i) for i in range(375)])  # 09:15 .. 15:29
    cache.set_forming("NIFTY", Candle("NIFTY", OPEN + 60 * 375, 1.0, 9.0, 0.5, 2.0, 7, 1))
    cache.set_quotes({"NIFTY": (24374.5, OPEN + 60 * 375 - 2.5)})
    cache.set_option_chain(OptionChainRecord("NIFTY", "2026-11-25", {"last_price": 24374.5, "oc": {}}, OPEN))
    cache.set_option_chain(OptionChainRecord("NIFTY", "2026-12-02", {"last_price": 24374.5, "oc": {}}, OPEN))
    return cache


@pytest.fixture
def client(cache: MarketCache) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_mds_app(cache, FakeRuntime()))


def test_one_minute_candles_oldest_first_in_the_seed_shape(client) -> None:
    body = client.simulate_get("/v1/candles/last", params={"symbol": "NIFTY", "limit": "3"}).json
    assert body["symbol"] == "NIFTY" and body["timeframe_seconds"] == 60
    assert [c["ts"] for c in body["candles"]] == ["2026-11-20T15:27:00+05:30", "2026-11-20T15:28:00+05:30",
                                                  "2026-11-20T15:29:00+05:30"]
    assert set(body["candles"][0]) == {"ts", "open", "high", "low", "close", "volume"}


def test_hourly_buckets_are_aligned_to_the_0915_session_open(client) -> None:
    body = client.simulate_get("/v1/candles/last", params={"symbol": "NIFTY", "timeframe_seconds": "3600",
                                                           "limit": "10"}).json
    assert [c["ts"][11:16] for c in body["candles"]] == ["09:15", "10:15", "11:15", "12:15", "13:15",
                                                         "14:15", "15:15"]
    first = body["candles"][0]
    assert first["open"] == 24000 and first["close"] == 24000 + 59 + 1 and first["volume"] == sum(
        10 * (i + 1) for i in range(60))
    assert body["candles"][-1]["close"] == 24374 + 1  # 15:15 .. 15:29 only


def test_include_partial_appends_the_forming_candle(client) -> None:
    closed = client.simulate_get("/v1/candles/last", params={"symbol": "NIFTY", "limit": "2"}).json
    partial = client.simulate_get("/v1/candles/last", params={"symbol": "NIFTY", "limit": "2",
                                                              "include_partial": "true"}).json
    assert closed["candles"][-1]["ts"].endswith("15:29:00+05:30")
    assert partial["candles"][-1]["ts"].endswith("15:30:00+05:30") and partial["candles"][-1]["high"] == 9.0


def test_quote_reports_its_age(client) -> None:
    body = client.simulate_get("/v1/quote", params={"symbol": "NIFTY"}).json
    assert body == {"symbol": "NIFTY", "ltp": 24374.5, "ts": "2026-11-20T15:29:57.500000+05:30",
                    "age_seconds": 2.5}


def test_option_chain_defaults_to_the_nearest_expiry(client) -> None:
    nearest = client.simulate_get("/v1/option_chain", params={"symbol": "NIFTY"}).json
    chosen = client.simulate_get("/v1/option_chain", params={"symbol": "NIFTY", "expiry": "2026-12-02"}).json
    assert nearest["expiry"] == "2026-11-25" and chosen["expiry"] == "2026-12-02"
    assert nearest["payload"] == {"last_price": 24374.5, "oc": {}}


BAD_QUERIES = [
    ("/v1/candles/last", {}, "symbol"),
    ("/v1/candles/last", {"symbol": "nifty;drop"}, "symbol"),
    ("/v1/candles/last", {"symbol": "NIFTY", "timeframe_seconds": "90"}, "timeframe_seconds"),
    ("/v1/candles/last", {"symbol": "NIFTY", "timeframe_seconds": "0"}, "timeframe_seconds"),
    ("/v1/candles/last", {"symbol": "NIFTY", "timeframe_seconds": "86460"}, "timeframe_seconds"),
    ("/v1/candles/last", {"symbol": "NIFTY", "timeframe_seconds": "abc"}, "timeframe_seconds"),
    ("/v1/candles/last", {"symbol": "NIFTY", "limit": "0"}, "limit"),
    ("/v1/candles/last", {"symbol": "NIFTY", "limit": "5001"}, "limit"),
    ("/v1/candles/last", {"symbol": "NIFTY", "limit": "1e3"}, "limit"),
    ("/v1/candles/last", {"symbol": "NIFTY", "limit": "9" * 40}, "limit"),
    ("/v1/candles/last", {"symbol": "NIFTY", "include_partial": "maybe"}, "include_partial"),
    ("/v1/candles/last", {"symbol": ["NIFTY", "BANKNIFTY"]}, "symbol"),
    ("/v1/option_chain", {}, "symbol"),
    ("/v1/option_chain", {"symbol": "NIFTY", "expiry": "next week"}, "expiry"),
    ("/v1/option_chain", {"symbol": "NIFTY", "expiry": "2026-13-45x"}, "expiry"),
    ("/v1/quote", {}, "symbol"),
    ("/v1/quote", {"symbol": "SEC_"}, "symbol"),
    ("/v1/quote", {"symbol": "X" * 500}, "symbol"),
]


@pytest.mark.parametrize(("path", "params", "param"), BAD_QUERIES)
def test_bad_query_strings_get_a_400_naming_the_parameter(client, path, params, param) -> None:
    result = client.simulate_get(path, params=params)
    assert result.status_code == 400
    assert result.json["param"] == param and param in result.json["detail"]


@pytest.mark.parametrize("path", ["/v1/candles/last", "/v1/option_chain", "/v1/quote"])
def test_unknown_symbols_get_a_404(client, path) -> None:
    result = client.simulate_get(path, params={"symbol": "SEC_1234"})
    assert result.status_code == 404 and result.json["error"] == "unknown symbol"


def test_no_data_yet_is_a_404_not_a_500(client) -> None:
    assert client.simulate_get("/v1/quote", params={"symbol": "BANKNIFTY"}).status_code == 404
    assert client.simulate_get("/v1/option_chain", params={"symbol": "BANKNIFTY"}).status_code == 404
    body = client.simulate_get("/v1/candles/last", params={"symbol": "BANKNIFTY"}).json
    assert body["candles"] == []


def test_unknown_paths_and_methods_are_json_errors(client) -> None:
    missing = client.simulate_get("/v1/nothing")
    assert missing.status_code == 404 and "error" in missing.json
    wrong = client.simulate_post("/v1/quote", params={"symbol": "NIFTY"})
    assert wrong.status_code == 405 and "error" in wrong.json


def test_served_over_a_real_waitress_socket(cache: MarketCache) -> None:
    server = HttpServer(create_mds_app(cache, FakeRuntime()), "127.0.0.1", 0, 4, "mds-test").start()
    try:
        with urllib.request.urlopen(f"{server.url}/v1/candles/last?symbol=NIFTY&limit=300", timeout=5) as resp:
            assert len(json.load(resp)["candles"]) == 300
        with pytest.raises(urllib.error.HTTPError) as bad:
            urllib.request.urlopen(f"{server.url}/v1/candles/last?symbol=NIFTY&limit=-1", timeout=5)
        assert bad.value.code == 400 and json.load(bad.value)["param"] == "limit"
    finally:
        server.stop()
