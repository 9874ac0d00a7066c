"""Specs for DhanClient: the real dhanhq SDK against the fake Dhan REST server over real sockets."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from actors.brokers.base import PermanentBrokerError, TemporaryBrokerError
from actors.dhan.client import DhanClient
from actors.dhan.errors import DhanAuthError, InvalidExpiry, RateLimited
from config.settings import Settings
from tests.fakedhan import FakeDhan

WINDOW = 0.25  # the option-chain window in these tests (production: 3 s, the settings floor)


@pytest.fixture
def fake() -> Iterator[FakeDhan]:
    with FakeDhan(option_chain_window=WINDOW) as server:
        yield server


def make_client(fake: FakeDhan, *, rate_key: str = "request", **dhan: object) -> DhanClient:
    settings = Settings().replace(dhan=fake.dhan_settings(request_timeout_seconds=1.0, **dhan),
                                  option_chain={"rate_key": rate_key})
    return DhanClient(settings, option_chain_min_interval=WINDOW)


def call_when_allowed(fn, *args, attempts: int = 10):  # type: ignore[no-untyped-def]
    """What the poller actor does: call, and on RateLimited come back after retry_after."""
    for _ in range(attempts):
        try:
            return fn(*args)
        except RateLimited as exc:
            time.sleep(exc.retry_after)  # the poller schedules a timer for this; here we just wait it out
    raise AssertionError("still rate limited")


def test_option_chain_and_expiry_list_come_back_as_dhan_sent_them(fake: FakeDhan) -> None:
    client = make_client(fake)
    assert client.expiry_list("NIFTY") == ["2024-10-24", "2024-10-31", "2024-11-07"]
    chain = client.option_chain("NIFTY", "2024-10-31")
    assert chain["last_price"] == 25642.8
    strike = chain["oc"]["25650.000000"]
    assert {"ce", "pe"} <= set(strike)
    assert isinstance(strike["ce"]["security_id"], int)
    sent = fake.rest.requests_to("/optionchain", "POST")[-1]
    assert sent.body["UnderlyingScrip"] == 13
    assert sent.body["UnderlyingSeg"] == "IDX_I"
    assert sent.body["Expiry"] == "2024-10-31"
    assert sent.headers["client-id"] == fake.client_id


def test_a_second_request_inside_the_window_is_refused_locally_without_reaching_dhan(fake: FakeDhan) -> None:
    client = make_client(fake)
    client.option_chain("NIFTY", "2024-10-31")
    with pytest.raises(RateLimited) as refused:
        client.option_chain("NIFTY", "2024-10-31")
    assert 0 < refused.value.retry_after <= WINDOW
    assert isinstance(refused.value, TemporaryBrokerError)
    assert len(fake.rest.requests_to("/optionchain")) == 1
    # another unique request (a different expiry) is its own window
    client.option_chain("NIFTY", "2024-11-07")
    assert client.option_chain_wait("NIFTY", "2024-11-07") > 0
    assert len(fake.rest.requests_to("/optionchain")) == 2


def test_global_rate_key_puts_every_option_chain_request_in_one_window(fake: FakeDhan) -> None:
    client = make_client(fake, rate_key="global")
    client.option_chain("NIFTY", "2024-10-31")
    with pytest.raises(RateLimited):
        client.option_chain("BANKNIFTY", "2024-10-30")


def test_the_client_never_exceeds_one_unique_request_per_window(fake: FakeDhan) -> None:
    client = make_client(fake)
    for _ in range(5):
        call_when_allowed(client.option_chain, "NIFTY", "2024-10-31")
    chain_requests = fake.rest.requests_to("/optionchain")
    assert len(chain_requests) == 5
    assert all(r.status == 200 for r in chain_requests)  # the fake never had to say 429
    gaps = [b.mono - a.mono for a, b in zip(chain_requests, chain_requests[1:], strict=False)]
    assert min(gaps) >= WINDOW


def test_option_chain_429s_back_off_with_a_growing_hold(fake: FakeDhan) -> None:
    client = make_client(fake)
    fake.rest.fail("/optionchain", method="POST", status=429, times=2)
    holds = []
    for _ in range(2):
        with pytest.raises(RateLimited) as limited:
            client.option_chain("NIFTY", "2024-10-31")
        assert limited.value.code == "805"
        holds.append(limited.value.retry_after)
        with pytest.raises(RateLimited):  # held back locally: nothing is sent during the hold
            client.option_chain("NIFTY", "2024-10-31")
        time.sleep(limited.value.retry_after)
    assert holds == [pytest.approx(2 * WINDOW), pytest.approx(4 * WINDOW)]
    assert client.option_chain("NIFTY", "2024-10-31")["last_price"] == 25642.8
    sent = fake.rest.requests_to("/optionchain")
    assert [r.status for r in sent] == [429, 429, 200]
    assert sent[1].mono - sent[0].mono >= 2 * WINDOW
    assert sent[2].mono - sent[1].mono >= 4 * WINDOW


def test_an_unknown_expiry_is_an_invalid_expiry_error(fake: FakeDhan) -> None:
    with pytest.raises(InvalidExpiry) as invalid:
        make_client(fake).option_chain("NIFTY", "2024-01-04")
    assert invalid.value.code == "811"
    assert isinstance(invalid.value, PermanentBrokerError)


def test_ltp_fetches_every_symbol_in_one_request_at_most_once_a_second(fake: FakeDhan) -> None:
    fake.state.set_ltp("NSE_FNO", 49081, 101.35)
    client = make_client(fake)
    prices = client.ltp(["NIFTY", "BANKNIFTY", "SEC_49081", "SEC_1"])
    assert prices == {"NIFTY": 25642.8, "BANKNIFTY": 52110.35, "SEC_49081": 101.35}
    sent = fake.rest.requests_to("/marketfeed/ltp")
    assert len(sent) == 1
    assert sorted(sent[0].body["IDX_I"]) == [13, 25]
    assert sorted(sent[0].body["NSE_FNO"]) == [1, 49081]
    with pytest.raises(RateLimited):
        client.ltp(["NIFTY"])


def test_server_errors_are_temporary_with_the_data_api_code(fake: FakeDhan) -> None:
    fake.rest.fail("/optionchain/expirylist", status=500)
    with pytest.raises(TemporaryBrokerError) as failed:
        make_client(fake).expiry_list("NIFTY")
    assert failed.value.code == "800"


def test_a_bad_token_is_an_auth_error_on_trading_and_data_apis(fake: FakeDhan) -> None:
    client = make_client(fake, access_token="expired-token-xyz")
    with pytest.raises(DhanAuthError) as data_api:
        client.expiry_list("NIFTY")
    assert data_api.value.code == "808"
    with pytest.raises(DhanAuthError) as trading_api:
        client.call("positions", client.sdk.get_positions)
    assert trading_api.value.code == "DH-901"


def test_an_unreachable_server_is_a_temporary_network_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings().replace(dhan={"api_base_url": f"http://127.0.0.1:{port}/v2", "client_id": "1",
                                        "access_token": "unreachable-token", "request_timeout_seconds": 1.0})
    client = DhanClient(settings)
    with pytest.raises(TemporaryBrokerError) as failed:
        client.call("positions", client.sdk.get_positions, submit=True)
    assert failed.value.code == "NETWORK"
    assert type(failed.value) is TemporaryBrokerError  # refused: certainly not sent, so not ambiguous


def test_an_empty_2xx_body_is_not_mistaken_for_success(fake: FakeDhan) -> None:
    fake.rest.fail("/orders/*", method="DELETE", status=202, body=b"")
    client = make_client(fake)
    with pytest.raises(TemporaryBrokerError) as failed:
        client.call("cancel_order", client.sdk.cancel_order, "112111182198")
    assert failed.value.code == "UNREADABLE"
