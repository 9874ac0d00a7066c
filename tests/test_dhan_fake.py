"""Specs for the fake Dhan itself: the shapes it answers with are Dhan's (dhan-api.md), checked with raw HTTP
and with the SDK's own parsers, so the adapter tests exercise the real protocol."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
import requests
from dhanhq import DhanContext, MarketFeed, dhanhq

from tests.fakedhan import IST_OFFSET, FakeDhan


@pytest.fixture
def fake() -> Iterator[FakeDhan]:
    with FakeDhan() as server:
        yield server


def headers(fake: FakeDhan, token: str | None = None) -> dict[str, str]:
    return {"access-token": token or fake.access_token, "client-id": fake.client_id,
            "Content-type": "application/json", "Accept": "application/json"}


def sdk(fake: FakeDhan) -> dhanhq:
    context = DhanContext(fake.client_id, fake.access_token)
    context.get_dhan_http().base_url = fake.rest.base_url
    context.get_dhan_http().timeout = 2.0
    return dhanhq(context)


def test_trading_errors_are_bare_and_data_errors_are_wrapped(fake: FakeDhan) -> None:
    base = fake.rest.base_url
    unknown = requests.get(f"{base}/orders/external/nobody", headers=headers(fake), timeout=2)
    assert unknown.status_code == 404
    assert unknown.json() == {"errorType": "Order_Error", "errorCode": "DH-906",
                              "errorMessage": "Incorrect request for order and cannot be processed"}
    assert requests.get(f"{base}/orders/123", headers=headers(fake), timeout=2).json() == []
    bad_token = requests.get(f"{base}/positions", headers=headers(fake, "wrong"), timeout=2)
    assert bad_token.status_code == 401 and bad_token.json()["errorCode"] == "DH-901"
    bad_expiry = requests.post(f"{base}/optionchain", headers=headers(fake), timeout=2,
                               json={"UnderlyingScrip": 13, "UnderlyingSeg": "IDX_I", "Expiry": "2020-01-02"})
    assert bad_expiry.status_code == 400
    assert bad_expiry.json() == {"data": {"811": "Invalid Expiry Date"}, "status": "failed"}
    fake.rest.fail("/marketfeed/ltp", status=429)
    limited = requests.post(f"{base}/marketfeed/ltp", headers=headers(fake), json={"IDX_I": [13]}, timeout=2)
    assert limited.status_code == 429 and limited.json()["data"] == {"805": "Too many requests"}


def test_the_option_chain_limit_answers_805_inside_the_window(fake: FakeDhan) -> None:
    body = {"UnderlyingScrip": 13, "UnderlyingSeg": "IDX_I", "Expiry": "2024-10-31"}
    url = f"{fake.rest.base_url}/optionchain"
    first = requests.post(url, headers=headers(fake), json=body, timeout=2)
    second = requests.post(url, headers=headers(fake), json=body, timeout=2)
    assert first.status_code == 200 and first.json()["status"] == "success"
    assert set(first.json()["data"]) == {"last_price", "oc"}
    assert second.status_code == 429 and "805" in second.json()["data"]


def test_the_sdk_reads_the_fakes_trading_answers(fake: FakeDhan) -> None:
    client = sdk(fake)
    placed = client.place_order("49081", "NSE_FNO", "BUY", 75, "LIMIT", "INTRADAY", 101.5, tag="corr-1")
    assert placed["status"] == "success" and placed["data"]["orderStatus"] == "TRANSIT"
    order_id = placed["data"]["orderId"]
    assert client.get_order_by_correlationID("corr-1")["data"]["orderStatus"] == "TRADED"
    (trade,) = client.get_trade_book(order_id)["data"]
    assert trade["tradedQuantity"] == 75 and trade["orderId"] == order_id
    assert len(client.get_trade_book()["data"]) == 1  # GET /trades/ (the SDK's trailing slash)
    assert client.get_fund_limits()["data"]["availabelBalance"] == 98440.0  # Dhan's spelling
    assert client.kill_switch("activate")["data"]["killSwitchStatus"].endswith("activated")
    assert client.status_kill_switch()["data"]["killSwitchStatus"] == "ACTIVATE"
    refused = client.place_order("49081", "NSE_FNO", "BUY", 75, "LIMIT", "INTRADAY", 101.5, tag="corr-2")
    assert refused["status"] == "failure" and refused["remarks"]["error_code"] == "DH-906"
    assert fake.state.count_orders("corr-1") == 1 and fake.state.count_orders("corr-2") == 0
    posted = fake.rest.requests_to("/orders", "POST")[0]
    assert posted.body["dhanClientId"] == fake.client_id  # the SDK injects it into every body
    assert posted.at > 0 and posted.status == 200


def test_the_sdk_decodes_the_fakes_feed_packets_and_its_goodbye_frames_are_tolerated(fake: FakeDhan) -> None:
    result: dict[str, object] = {}

    def run_sdk_feed() -> None:
        MarketFeed.market_feed_wss = fake.feed.url
        feed = MarketFeed(DhanContext(fake.client_id, fake.access_token), [(0, "13", 17)], version="v2")
        feed.run_forever()  # connects and subscribes
        result["prev_close"] = feed.get_data()
        result["quote"] = feed.get_data()
        feed.loop.run_until_complete(feed.disconnect())  # sends {"RequestCode": 12} and an 83-byte frame
        feed.loop.close()
        asyncio.set_event_loop(None)

    worker = threading.Thread(target=run_sdk_feed, daemon=True)
    worker.start()
    assert fake.feed.wait_for_subscriptions(1)
    fake.feed.push_tick(13, 25010.55, 1_729_750_500 + IST_OFFSET, volume=4321)
    worker.join(5.0)
    assert not worker.is_alive()
    assert result["prev_close"]["type"] == "Previous Close"  # type: ignore[index]
    quote = result["quote"]
    assert quote["type"] == "Quote Data" and quote["security_id"] == 13  # type: ignore[index]
    assert quote["LTP"] == "25010.55" and quote["volume"] == 4321  # type: ignore[index]
    assert quote["LTT"] == "11:45:00"  # type: ignore[index]  # the SDK shows IST wall-clock time
    assert fake.feed.wait_until_no_clients()
    assert fake.feed.disconnect_requests == 1
    assert [len(frame) for frame in fake.feed.binary_frames] == [83]
