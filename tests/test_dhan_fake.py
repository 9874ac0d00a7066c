"""Specs for the fake Dhan itself: the shapes it answers with are Dhan's (dhan-api.md), checked with raw HTTP
and with the SDK's own parsers, so the adapter tests exercise the real protocol."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import threading
import time
from collections.abc import Iterator
from datetime import date

import pytest
import requests
from dhanhq import DhanContext, DhanLogin, MarketFeed, dhanhq
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from core.instruments import InstrumentIndex, ParseReport, parse_scrip_master
from core.token import read_claims
from tests.fakedhan import IST_OFFSET, FakeDhan, totp, unsigned_jwt


@pytest.fixture
def fake() -> Iterator[FakeDhan]:
    with FakeDhan() as server:
        yield server


def headers(fake: FakeDhan, token: str | None = None) -> dict[str, str]:
    return {"access-token": token or fake.access_token, "client-id": fake.client_id,
            "Content-type": "application/json", "Accept": "application/json"}


def disconnect_reason(packet: bytes) -> int:
    code, _, _, _, reason = struct.unpack("<BHBIH", packet[:10])
    assert code == 50
    return int(reason)


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


# -- the scrip master ------------------------------------------------------------------------------------


def test_the_scrip_master_is_served_without_a_token_and_parses_with_nifty_lot_65(fake: FakeDhan) -> None:
    answer = requests.get(fake.scrip_master_url, timeout=5, stream=True)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "text/csv"
    report = ParseReport()
    index = InstrumentIndex(parse_scrip_master(answer.iter_lines(decode_unicode=True), report=report))
    assert report.rejected == 0 and report.kept == len(fake.state.instruments)
    nifty = [i for i in index if i.underlying == "NIFTY" and i.is_option]
    assert nifty and {(i.lot_size, i.tick_size, i.segment) for i in nifty} == {(65, 0.05, "NSE_FNO")}
    assert {i.lot_size for i in index if i.underlying == "BANKNIFTY" and i.is_option} == {30}
    assert {i.lot_size for i in index if i.underlying == "FINNIFTY" and i.is_option} == {60}
    assert index.index("NIFTY").security_id == "13"  # type: ignore[union-attr]
    assert len(index.expiries("NIFTY")) == 4  # three weeklies and the monthly, from today on


def test_the_scrip_master_path_is_configurable_and_its_contracts_drive_chains_and_orders() -> None:
    with FakeDhan(master_day=date(2026, 11, 29)) as fake:
        fake.rest.scrip_master_path = "/v2/instrument/master.csv"
        master = [i for i in fake.state.instruments if i.underlying in ("NIFTY", "BANKNIFTY", "FINNIFTY")]
        fake.set_scrip_master(master)  # now the expiry lists and chains come from it
        rows = list(parse_scrip_master(requests.get(fake.scrip_master_url, timeout=5).text.splitlines()))
        assert fake.scrip_master_url.endswith("/v2/instrument/master.csv") and len(rows) == len(master)
        client = sdk(fake)
        expiries = client.expiry_list(13, "IDX_I")["data"]["data"]
        assert expiries == ["2026-12-01", "2026-12-08", "2026-12-15", "2026-12-29"]
        chain = client.option_chain(13, "IDX_I", "2026-12-29")["data"]["data"]
        atm = chain["oc"]["25650.000000"]
        contract = fake.state.instrument("NSE_FNO", str(atm["ce"]["security_id"]))
        assert contract is not None and (contract.strike, contract.option_type, contract.expiry, contract.lot_size) \
            == (25650.0, "CE", "2026-12-29", 65)
        placed = client.place_order(contract.security_id, "NSE_FNO", "BUY", 130, "LIMIT", "INTRADAY", 101.5)
        order = client.get_order_by_id(placed["data"]["orderId"])["data"]
        assert (order["tradingSymbol"], order["drvStrikePrice"], order["drvOptionType"]) == \
            ("NIFTY-Dec2026-25650-CE", 25650.0, "CALL")
        update = fake.order_updates.sent[-1]["Data"]
        assert (update["LotSize"], update["DisplayName"], update["OptType"]) == (65, "NIFTY-Dec2026-25650-CE", "CE")


# -- tokens: expiry, RenewToken, TOTP login ------------------------------------------------------------------


def jwt_fake(**kwargs: object) -> FakeDhan:
    return FakeDhan(access_token=unsigned_jwt("1000000001", time.time() + 3600), **kwargs)  # type: ignore[arg-type]


def test_renew_token_through_the_sdk_swaps_the_token_and_the_old_one_gets_dh_901() -> None:
    with jwt_fake() as fake:
        old = fake.access_token
        login = DhanLogin(fake.client_id)
        login.API_BASE_URL = fake.rest.base_url  # the SDK sends GET with access-token + dhanClientId headers
        renewed = login.renew_token(old)
        new = renewed["token"]
        assert new != old and read_claims(new).client_id == fake.client_id
        assert read_claims(new).seconds_left(time.time()) > 86_000  # a fresh 24-hour token
        sent = fake.rest.requests_to("/RenewToken")[-1]
        assert (sent.method, sent.headers["dhanclientid"]) == ("GET", fake.client_id)
        stale = sdk(fake).get_positions()  # the SDK client still holds the old token
        assert stale["status"] == "failure" and stale["remarks"]["error_code"] == "DH-901"
        fresh = DhanContext(fake.client_id, new)
        fresh.get_dhan_http().base_url = fake.rest.base_url
        assert dhanhq(fresh).get_positions()["status"] == "success"
        with pytest.raises(Exception, match="DH-901"):
            login.renew_token(old)  # a superseded token cannot be renewed again
        assert fake.tokens.renewals == 1


def test_renew_token_answers_access_token_on_post_when_switched() -> None:
    with jwt_fake(renew_field="accessToken") as fake:
        answer = requests.post(f"{fake.rest.base_url}/RenewToken", timeout=5,
                               headers={"access-token": fake.access_token, "client-id": fake.client_id})
        assert answer.status_code == 200 and set(answer.json()) == {"accessToken", "expiryTime"}
        new = answer.json()["accessToken"]
        assert requests.get(f"{fake.rest.base_url}/positions", headers=headers(fake, new), timeout=5).status_code == 200
        old = requests.get(f"{fake.rest.base_url}/positions", headers=headers(fake), timeout=5)
        assert old.status_code == 401 and old.json()["errorCode"] == "DH-901"
        wrong_client = requests.get(f"{fake.rest.base_url}/RenewToken", timeout=5,
                                    headers={"access-token": new, "dhanClientId": "999"})
        assert wrong_client.status_code == 401


def test_an_expired_token_gets_dh_901_on_trading_apis_and_807_on_data_apis() -> None:
    with jwt_fake() as fake:
        assert requests.get(f"{fake.rest.base_url}/positions", headers=headers(fake), timeout=5).status_code == 200
        fake.tokens.clock = lambda: time.time() + 2 * 3600  # two hours later: past the token's exp
        trading = requests.get(f"{fake.rest.base_url}/positions", headers=headers(fake), timeout=5)
        assert trading.status_code == 401 and trading.json()["errorCode"] == "DH-901"
        data = requests.post(f"{fake.rest.base_url}/marketfeed/ltp", headers=headers(fake), json={"IDX_I": [13]},
                             timeout=5)
        assert data.status_code == 401 and data.json() == {"data": {"807": "Access token expired"},
                                                           "status": "failed"}
        renew = requests.get(f"{fake.rest.base_url}/RenewToken", timeout=5,
                             headers={"access-token": fake.access_token, "dhanClientId": fake.client_id})
        assert renew.status_code == 401  # too late to renew: log in again (TOTP)


def feed_path(fake: FakeDhan, token: str) -> str:
    return f"{fake.feed.url}/?version=2&token={token}&clientId={fake.client_id}&authType=2"


def first_packet(conn: ClientConnection) -> bytes:
    frame = conn.recv(timeout=5)
    assert isinstance(frame, bytes)
    return frame


def test_the_feed_refuses_an_expired_token_and_drops_a_live_connection_whose_token_dies() -> None:
    with jwt_fake() as fake:
        with ws_connect(feed_path(fake, fake.access_token)) as live:
            live.send(json.dumps({"RequestCode": 15, "InstrumentCount": 1,
                                  "InstrumentList": [{"ExchangeSegment": "IDX_I", "SecurityId": "13"}]}))
            assert first_packet(live)[0] == 6  # prev close: subscribed
            fake.tokens.expire(fake.access_token)
            goodbye = first_packet(live)
            assert (goodbye[0], disconnect_reason(goodbye)) == (50, 807)
            with pytest.raises(ConnectionClosed):
                live.recv(timeout=5)
        assert fake.feed.token_disconnects == 1
        with ws_connect(feed_path(fake, fake.access_token)) as refused:
            assert disconnect_reason(first_packet(refused)) == 807
        with ws_connect(feed_path(fake, "garbage")) as unknown:
            assert disconnect_reason(first_packet(unknown)) == 809


def test_a_renewed_token_closes_the_order_update_socket_of_the_old_one() -> None:
    with jwt_fake() as fake:
        old = fake.access_token
        with ws_connect(fake.order_updates.url) as socket_:
            socket_.send(json.dumps({"LoginReq": {"MsgCode": 42, "ClientId": fake.client_id, "Token": old},
                                     "UserType": "SELF"}))
            assert fake.order_updates.wait_for_logins(1)
            fake.tokens.renew(old)
            with pytest.raises(ConnectionClosed) as closed:
                socket_.recv(timeout=5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001


def test_totp_matches_the_rfc_6238_test_vectors() -> None:
    secret = base64.b32encode(b"12345678901234567890").decode()  # RFC 6238 appendix B, SHA-1
    vectors = {59: "94287082", 1111111109: "07081804", 1111111111: "14050471", 1234567890: "89005924",
               2000000000: "69279037", 20000000000: "65353130"}
    for at, code in vectors.items():
        assert totp(secret, at, digits=8) == code


def test_generate_access_token_with_pin_and_totp_through_the_sdk() -> None:
    with FakeDhan() as fake:
        login = DhanLogin(fake.client_id)
        login.AUTH_BASE_URL = fake.rest.root_url  # POST /app/generateAccessToken?dhanClientId=&pin=&totp=
        answer = login.generate_token(fake.tokens.pin, totp(fake.tokens.totp_secret, time.time()))
        token = answer["accessToken"]
        assert answer["dhanClientId"] == fake.client_id and read_claims(token).client_id == fake.client_id
        assert requests.get(f"{fake.rest.base_url}/positions", headers=headers(fake, token), timeout=5).ok
        with pytest.raises(Exception, match="Invalid client id, PIN or TOTP"):
            login.generate_token(fake.tokens.pin, "000000" if totp(fake.tokens.totp_secret, time.time()) != "000000"
                                 else "111111")
        with pytest.raises(Exception, match="Invalid client id, PIN or TOTP"):
            login.generate_token("999999", totp(fake.tokens.totp_secret, time.time()))
        other = DhanLogin("42")
        other.AUTH_BASE_URL = fake.rest.root_url
        with pytest.raises(Exception, match="Invalid client id"):
            other.generate_token(fake.tokens.pin, totp(fake.tokens.totp_secret, time.time()))
        missing = requests.post(f"{fake.rest.root_url}/app/generateAccessToken", timeout=5,
                                json={"dhanClientId": fake.client_id, "pin": fake.tokens.pin})
        assert missing.status_code == 400 and "totp" in missing.json()["message"]
        assert fake.tokens.logins == 1
