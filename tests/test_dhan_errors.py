"""Specs for the translation of dhanhq failure dicts into typed broker errors, and for the pure helpers
(rate windows, token bucket, symbol <-> instrument)."""

from __future__ import annotations

import pytest
import requests

from actors.brokers.base import (
    AmbiguousSubmitError,
    OrderNotFound,
    PermanentBrokerError,
    TemporaryBrokerError,
)
from actors.dhan.errors import (
    DhanAuthError,
    InvalidExpiry,
    RateLimited,
    Transport,
    error_from_response,
    unwrap,
)
from actors.dhan.ids import Instrument, InstrumentMap, UnknownSymbol, segment_from_order_update
from core.ratelimit import RateWindow, TokenBucket


def failure(remarks: object) -> dict[str, object]:
    return {"status": "failure", "remarks": remarks, "data": ""}


def trading_remarks(code: str, message: str = "msg", kind: str = "Order_Error") -> dict[str, str]:
    return {"error_code": code, "error_type": kind, "error_message": message}


NO_CODE = {"error_code": None, "error_type": None, "error_message": None}  # what the SDK makes of Data-API errors


@pytest.mark.parametrize(("response", "transport", "submit", "expected", "code"), [
    (failure(trading_remarks("DH-904", kind="Rate_Limit")), Transport(429), False, RateLimited, "DH-904"),
    (failure(NO_CODE), Transport(429, b'{"data":{"805":"Too many requests"},"status":"failed"}'), False,
     RateLimited, "805"),
    (failure(trading_remarks("DH-908")), Transport(500), False, TemporaryBrokerError, "DH-908"),
    (failure(trading_remarks("DH-908")), Transport(500), True, AmbiguousSubmitError, "DH-908"),
    (failure(trading_remarks("DH-909")), None, True, AmbiguousSubmitError, "DH-909"),
    (failure(NO_CODE), Transport(500, b'{"data":{"800":"Internal Server Error"},"status":"failed"}'), False,
     TemporaryBrokerError, "800"),
    (failure(trading_remarks("DH-901", kind="Invalid_Authentication")), Transport(401), False,
     DhanAuthError, "DH-901"),
    (failure(NO_CODE), Transport(401, b'{"data":{"807":"Access token expired"},"status":"failed"}'), False,
     DhanAuthError, "807"),
    (failure(trading_remarks("DH-902")), Transport(403), False, PermanentBrokerError, "DH-902"),
    (failure(trading_remarks("DH-905", kind="Input_Exception")), Transport(400), True, PermanentBrokerError,
     "DH-905"),
    (failure(trading_remarks("DH-906", "Order is in Transit state")), Transport(400), False,
     TemporaryBrokerError, "DH-906"),
    (failure(trading_remarks("DH-906", "Incorrect request for order and cannot be processed")),
     Transport(404), False, OrderNotFound, "DH-906"),
    (failure(trading_remarks("DH-906", "Invalid Token")), Transport(400), False, PermanentBrokerError, "DH-906"),
    (failure(NO_CODE), Transport(400, b'{"data":{"811":"Invalid Expiry Date"},"status":"failed"}'), False,
     InvalidExpiry, "811"),
    (failure(NO_CODE), Transport(400, b'{"data":{"813":"Invalid SecurityId"},"status":"failed"}'), False,
     PermanentBrokerError, "813"),
    # (2) an unreadable body: on a 2xx the server acted, so a submit is ambiguous
    (failure("Expecting value: line 1 column 1 (char 0)"), Transport(202, b""), True, AmbiguousSubmitError,
     "UNREADABLE"),
    (failure("Expecting value: line 1 column 1 (char 0)"), Transport(202, b""), False, TemporaryBrokerError,
     "UNREADABLE"),
    # (3) transport failures
    (failure("Read timed out."), Transport(exception=requests.ReadTimeout("Read timed out.")), True,
     AmbiguousSubmitError, "TIMEOUT"),
    (failure("Read timed out."), Transport(exception=requests.ReadTimeout("Read timed out.")), False,
     TemporaryBrokerError, "TIMEOUT"),
    (failure("refused"), Transport(exception=requests.ConnectionError(ConnectionRefusedError(111, "refused"))),
     True, TemporaryBrokerError, "NETWORK"),
    (failure("connect timeout"), Transport(exception=requests.ConnectTimeout("connect timeout")), True,
     TemporaryBrokerError, "TIMEOUT"),
    # no capture at all: a string remark may be a transport error after sending
    (failure("HTTPConnectionPool(host='x'): Read timed out."), None, True, AmbiguousSubmitError, "NETWORK"),
    (failure(NO_CODE), None, False, TemporaryBrokerError, ""),
])
def test_sdk_failure_dicts_become_the_right_typed_errors(response, transport, submit, expected, code) -> None:
    error = error_from_response(response, transport, submit=submit, operation="op")
    assert type(error) is expected
    assert error.code == code


def test_a_refused_connection_is_never_ambiguous_because_nothing_was_sent() -> None:
    refused = Transport(exception=requests.ConnectionError(ConnectionRefusedError(111, "Connection refused")))
    error = error_from_response(failure("refused"), refused, submit=True)
    assert not isinstance(error, AmbiguousSubmitError)
    assert isinstance(error, TemporaryBrokerError)


def test_unwrap_returns_the_body_on_success_and_raises_otherwise() -> None:
    assert unwrap({"status": "success", "remarks": "", "data": {"orderId": "1"}}) == {"orderId": "1"}
    with pytest.raises(RateLimited):
        unwrap(failure(trading_remarks("DH-904")), Transport(429))


# -- rate windows ------------------------------------------------------------------------------------------


def test_rate_window_allows_one_request_per_key_per_interval() -> None:
    window = RateWindow(3.0)
    assert window.acquire(("NIFTY", "2024-10-31"), 100.0) == 0.0
    assert window.acquire(("NIFTY", "2024-10-31"), 101.0) == pytest.approx(2.0)
    assert window.acquire(("NIFTY", "2024-11-07"), 101.0) == 0.0  # another unique request
    assert window.acquire(("NIFTY", "2024-10-31"), 103.0) == 0.0


def test_rate_window_measures_from_when_the_request_finished_and_penalties_extend_it() -> None:
    window = RateWindow(3.0)
    window.acquire("k", 0.0)
    window.touch("k", 0.8)  # the answer came back 0.8 s later
    assert window.wait_time("k", 3.0) == pytest.approx(0.8)
    window.penalize("k", 3.8, 12.0)
    assert window.wait_time("k", 4.0) == pytest.approx(11.8)
    window.penalize("k", 4.0, 1.0)  # a shorter hold never shortens a longer one
    assert window.wait_time("k", 4.0) == pytest.approx(11.8)


def test_token_bucket_with_burst_one_paces_requests_at_the_rate() -> None:
    bucket = TokenBucket(10.0, 1, now=0.0)
    assert bucket.acquire(0.0) == 0.0
    assert bucket.acquire(0.0) == pytest.approx(0.1)
    assert bucket.acquire(0.05) == pytest.approx(0.05)
    assert bucket.acquire(0.1) == 0.0
    fresh = TokenBucket(10.0, 1, now=0.0)
    passed = sum(1 for i in range(100) if fresh.acquire(0.005 + i * 0.01) == 0.0)
    assert passed == 10  # a request every 10 ms for 1 s: 10 got through


def test_token_bucket_burst_then_rate() -> None:
    bucket = TokenBucket(2.0, 3, now=0.0)
    assert [bucket.acquire(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.acquire(0.0) == pytest.approx(0.5)
    assert bucket.acquire(0.5) == 0.0


# -- ids -------------------------------------------------------------------------------------------------------


def test_symbols_map_to_dhan_instruments_and_back() -> None:
    ids = InstrumentMap()
    assert ids.instrument("NIFTY") == Instrument("IDX_I", 13)
    assert ids.instrument("BANKNIFTY") == Instrument("IDX_I", 25)
    assert ids.instrument("FINNIFTY") == Instrument("IDX_I", 27)
    assert ids.instrument("SEC_49081") == Instrument("NSE_FNO", 49081)
    assert ids.instrument("NIFTY").feed_segment == 0
    assert ids.instrument("SEC_49081").feed_segment == 2
    assert ids.symbol("IDX_I", 13) == "NIFTY"
    assert ids.symbol(0, 25) == "BANKNIFTY"
    assert ids.symbol("NSE_FNO", "49081") == "SEC_49081"
    assert ids.symbol(2, 49081) == "SEC_49081"
    assert ids.symbol("NSE_EQ", 1333) == "NSE_EQ:1333"
    with pytest.raises(UnknownSymbol):
        ids.instrument("RELIANCE")


def test_security_id_overrides_replace_the_defaults() -> None:
    ids = InstrumentMap({"NIFTY": "IDX_I:99", "FINNIFTY": "IDX_I:28"})
    assert ids.instrument("NIFTY") == Instrument("IDX_I", 99)
    assert ids.symbol("IDX_I", 99) == "NIFTY"
    with pytest.raises(UnknownSymbol):
        InstrumentMap({"NIFTY": "13"})


def test_order_update_segments_map_to_rest_segments() -> None:
    assert segment_from_order_update("NSE", "D") == "NSE_FNO"
    assert segment_from_order_update("NSE", "E") == "NSE_EQ"
    assert segment_from_order_update("BSE", "D") == "BSE_FNO"
    assert segment_from_order_update("NSE", "I") == "IDX_I"
