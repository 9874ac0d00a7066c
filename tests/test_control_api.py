"""The trading control API: the in-process Falcon app for validation, a real waitress server end to end."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import falcon.testing
import orjson
import pytest
import requests

from core.risk import ist_day
from httpapi.app import create_control_app
from tests.support.trading import TOKEN, TraderHarness, eventually, trader_settings

AUTH = {"Authorization": f"Bearer {TOKEN}"}
PRICES = {"SEC_49081": 100.0, "SEC_49082": 200.0, "NIFTY": 25000.0}



@pytest.fixture
def harness(pg_url: str) -> Iterator[TraderHarness]:
    settings = trader_settings(pg_url, execution={"lot_sizes": {"SEC_49081": 75}})
    with TraderHarness(settings, prices=PRICES) as h:
        yield h


@pytest.fixture
def client(harness: TraderHarness) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_control_app(harness.runtime, harness.trader.api))


def _entry(**overrides: Any) -> dict[str, Any]:
    return {"pos_id": "API-1", "symbol": "SEC_49081", "side": "BUY", "qty": 75, **overrides}


def test_mutating_endpoints_need_the_bearer_token(client: falcon.testing.TestClient) -> None:
    for path in ("/v1/trades", "/v1/trades/API-1/exit", "/v1/control/kill-switch", "/v1/control/flatten",
                 "/v1/control/reconcile/ack"):
        assert client.simulate_post(path, json={}).status_code == 401, path
        wrong = client.simulate_post(path, json={}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401, path
        assert wrong.json["error"] == "unauthorized"


@pytest.mark.parametrize(("body", "field"), [
    ({"symbol": "SEC_49081", "side": "BUY", "qty": 75}, "pos_id"),
    (_entry(pos_id="bad id!"), "pos_id"),
    (_entry(pos_id=7), "pos_id"),
    (_entry(symbol="RELIANCE"), "symbol"),
    (_entry(side="HOLD"), "side"),
    (_entry(side="buy"), "side"),
    (_entry(qty=0), "qty"),
    (_entry(qty=-75), "qty"),
    (_entry(qty=75.0), "qty"),
    (_entry(qty="75"), "qty"),
    (_entry(qty=True), "qty"),
    (_entry(qty=50), "qty"),  # not a multiple of the lot size 75
    (_entry(price=-1), "price"),
    (_entry(price=0), "price"),
    (_entry(price="100"), "price"),
    (_entry(reason=5), "reason"),
    (_entry(colour="red"), "colour"),
])
def test_manual_entry_is_validated_naming_the_field(client: falcon.testing.TestClient, body: dict[str, Any],
                                                    field: str) -> None:
    answer = client.simulate_post("/v1/trades", json=body, headers=AUTH)
    assert answer.status_code == 400, answer.text
    assert answer.json["param"] == field


def test_malformed_bodies_are_400_or_415_never_500(client: falcon.testing.TestClient) -> None:
    assert client.simulate_post("/v1/trades", body=b"{not json", headers={
        **AUTH, "Content-Type": "application/json"}).status_code == 400
    assert client.simulate_post("/v1/trades", body=b"[1, 2]", headers={
        **AUTH, "Content-Type": "application/json"}).status_code == 400
    assert client.simulate_post("/v1/trades", body=b"pos_id=x", headers={
        **AUTH, "Content-Type": "application/x-www-form-urlencoded"}).status_code == 415
    assert client.simulate_post("/v1/control/kill-switch", json={"engaged": "yes"},
                                headers=AUTH).json["param"] == "engaged"


def test_manual_entry_goes_through_the_risk_guard_and_the_executor(harness: TraderHarness,
                                                                   client: falcon.testing.TestClient) -> None:
    accepted = client.simulate_post("/v1/trades", json=_entry(price=100.0), headers=AUTH)
    assert accepted.status_code == 202 and accepted.json == {"pos_id": "API-1", "status": "accepted"}
    harness.wait_state("API-1", "POSITION_OPEN")
    duplicate = client.simulate_post("/v1/trades", json=_entry(), headers=AUTH)
    assert duplicate.status_code == 409 and duplicate.json["error"] == "duplicate pos_id"

    detail = client.simulate_get("/v1/trades/API-1").json
    assert [e["event"] for e in detail["timeline"]] == ["SignalAccepted", "EntryRequested", "OrderPlaced",
                                                        "OrderFilled"]
    assert detail["trade"]["state"] == "POSITION_OPEN" and detail["live"]["open_qty"] == 75
    assert detail["timeline"][0]["payload"]["reason"].startswith("operator")
    assert detail["orders"][0]["leg"] == "ENTRY"

    harness.quotes.set("SEC_49081", 110.0)
    positions = client.simulate_get("/v1/positions").json
    (position,) = positions["positions"]
    assert position["pos_id"] == "API-1" and position["unrealized_pnl"] == pytest.approx(750.0)
    assert positions["summary"]["open_exposure"] == pytest.approx(75 * 110.0)

    assert client.simulate_post("/v1/control/kill-switch", json={"engaged": True, "reason": "lunch"},
                                headers=AUTH).status_code == 200
    denied = client.simulate_post("/v1/trades", json=_entry(pos_id="API-2"), headers=AUTH)
    assert denied.status_code == 403
    assert denied.json["code"] == "KILL_SWITCH" and "lunch" in denied.json["reason"]

    exited = client.simulate_post("/v1/trades/API-1/exit", json={"reason": "take profit"}, headers=AUTH)
    assert exited.status_code == 202 and exited.json["exit_requested"] is True
    harness.wait_state("API-1", "CLOSED")
    again = client.simulate_post("/v1/trades/API-1/exit", headers=AUTH)
    assert again.status_code == 409
    assert client.simulate_post("/v1/trades/NOPE-9/exit", headers=AUTH).status_code == 404


def test_read_endpoints_filter_and_validate(harness: TraderHarness, client: falcon.testing.TestClient) -> None:
    harness.enter("READ-1")
    harness.wait_state("READ-1", "POSITION_OPEN")
    today = ist_day(harness.clock.now())
    assert client.simulate_get("/v1/trades", params={"state": "POSITION_OPEN"}).json["count"] == 1
    assert client.simulate_get("/v1/trades", params={"state": "closed"}).json["count"] == 0
    assert client.simulate_get("/v1/trades", params={"day": today}).json["trades"][0]["pos_id"] == "READ-1"
    assert client.simulate_get("/v1/trades", params={"day": "2001-01-01"}).json["count"] == 0
    assert client.simulate_get("/v1/trades", params={"state": "FLYING"}).json["param"] == "state"
    assert client.simulate_get("/v1/trades", params={"day": "2026-02-31"}).json["param"] == "day"
    assert client.simulate_get("/v1/trades", params={"day": "yesterday"}).status_code == 400
    assert client.simulate_get("/v1/trades/UNKNOWN-1").status_code == 404
    assert client.simulate_get("/v1/trades/bad%20id").status_code == 400
    risk = client.simulate_get("/v1/risk").json
    assert risk["trading_enabled"] is True and risk["open_positions"] == 1
    assert risk["limits"]["square_off_time"] == "24:00" and risk["startup_reconciliation_passed"] is True
    status = client.simulate_get("/v1/status").json
    assert status["trading"]["ready"] is True and status["trading"]["executor"]["submits"] == 1


def test_no_input_gives_a_500(client: falcon.testing.TestClient) -> None:
    paths = ["/v1/trades", "/v1/trades/X-1/exit", "/v1/control/kill-switch", "/v1/control/flatten",
             "/v1/control/reconcile/ack", "/v1/trades/%00", "/v1/trades/" + "x" * 300]
    bodies: list[bytes] = [b"", b"null", b"0", b'"text"', b"{}", b'{"engaged": null}', b'{"qty": 1e309}',
                           orjson.dumps(_entry(qty=2**62)), orjson.dumps(_entry(price=1e308)),
                           b'{"pos_id": {"a": 1}}', b"\xff\xfe", b'{"reason": "' + b"r" * 5000 + b'"}']
    for path, body in itertools.product(paths, bodies):
        for headers in ({**AUTH, "Content-Type": "application/json"}, {**AUTH, "Content-Type": "text/plain"}):
            answer = client.simulate_post(path, body=body, headers=headers)
            assert answer.status_code < 500, (path, body, answer.status_code, answer.text)
    for query in ("state=%00", "day=%ff", "state=" + "A" * 500, "day=2026-13-01&day=2026-01-01"):
        assert client.simulate_get("/v1/trades", query_string=query).status_code < 500, query


def test_kill_switch_and_flatten_over_a_real_http_server(harness: TraderHarness) -> None:
    url = harness.url
    harness.enter("FLAT-1", symbol="SEC_49081")
    harness.enter("FLAT-2", symbol="SEC_49082", price=200.0)
    harness.wait_state("FLAT-1", "POSITION_OPEN")
    harness.wait_state("FLAT-2", "POSITION_OPEN")

    engaged = requests.post(f"{url}/v1/control/kill-switch", json={"engaged": True}, headers=AUTH, timeout=5)
    assert engaged.status_code == 200 and engaged.json()["kill_switch"]["engaged"] is True
    assert engaged.json()["trading_enabled"] is False
    denied = requests.post(f"{url}/v1/trades", json=_entry(pos_id="FLAT-3"), headers=AUTH, timeout=5)
    assert denied.status_code == 403 and denied.json()["code"] == "KILL_SWITCH"

    flattened = requests.post(f"{url}/v1/control/flatten", json={"reason": "risk off"}, headers=AUTH, timeout=5)
    assert flattened.status_code == 202, flattened.text
    assert sorted(flattened.json()["exiting"]) == ["FLAT-1", "FLAT-2"]
    harness.wait_state("FLAT-1", "CLOSED")
    harness.wait_state("FLAT-2", "CLOSED")
    assert harness.storage.trades.get_trade("FLAT-1").detail["exit_reason"].startswith("FLATTEN")
    risk = requests.get(f"{url}/v1/risk", timeout=5).json()
    assert risk["kill_switch"]["engaged"] is True and risk["flattening"]  # flattened, then stays halted
    assert requests.get(f"{url}/v1/positions", timeout=5).json()["positions"] == []

    released = requests.post(f"{url}/v1/control/kill-switch", json={"engaged": False}, headers=AUTH, timeout=5)
    assert released.status_code == 200 and released.json()["trading_enabled"] is True
    accepted = requests.post(f"{url}/v1/trades", json=_entry(pos_id="FLAT-4", price=100.0), headers=AUTH, timeout=5)
    assert accepted.status_code == 202
    harness.wait_state("FLAT-4", "POSITION_OPEN")
    eventually(lambda: harness.trader.book.get("FLAT-4") is not None, message="not swept by the old flatten")
    assert harness.state("FLAT-4") == "POSITION_OPEN"
