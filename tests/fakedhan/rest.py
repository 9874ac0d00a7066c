"""The fake Dhan REST API v2 on a real socket (threaded http.server, 127.0.0.1, free port).

Envelopes as Dhan sends them (dhan-api.md §1-2): trading endpoints bare, data endpoints
{"data": ..., "status": "success"}; errors {"errorType","errorCode","errorMessage"} for trading and
{"data": {"805": "Too many requests"}, "status": "failed"} for data. Every request is recorded with its
arrival time; tests can inject failures and delays per path and tune the rate limits.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakedhan.state import FakeDhanState, FakeOrderError

__all__ = ["FakeDhanRest", "Injection", "RecordedRequest"]

DATA_PATHS = ("/marketfeed/", "/optionchain")


@dataclass
class RecordedRequest:
    method: str
    path: str  # without the /v2 prefix, e.g. /orders/external/abc
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str]
    at: float  # time.time() at arrival
    mono: float  # time.monotonic() at arrival
    status: int = 0  # what the fake answered (0 = no answer written yet)


@dataclass
class Injection:
    """One scripted misbehaviour for requests matching method + path ('*' at the end = prefix)."""

    path: str
    method: str | None = None
    times: int = 1
    status: int | None = None  # answer this status instead of handling the request
    body: Any = None  # JSON-able, or bytes sent as they are (b"" = an empty body)
    delay: float = 0.0  # seconds to hold the answer back
    process_first: bool = True  # with delay: act on the request first (the client times out anyway)

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        if self.path.endswith("*"):
            return path.startswith(self.path[:-1])
        return path.rstrip("/") == self.path.rstrip("/")


@dataclass
class _Limits:
    option_chain_window: float = 3.0
    option_chain_key: str = "request"  # or "global"
    orders_per_window: int = 10
    order_window: float = 1.0


@dataclass
class FakeDhanRest:
    state: FakeDhanState
    client_id: str = "1000000001"
    access_token: str = "fake-token"
    limits: _Limits = field(default_factory=_Limits)

    def __post_init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._injections: list[Injection] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._chain_last: dict[Any, float] = {}
        self._order_times: deque[float] = deque()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> FakeDhanRest:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-dhan-rest", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases delayed answers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(2.0)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2"

    # -- scripting -----------------------------------------------------------------------------------------

    def fail(self, path: str, *, method: str | None = None, status: int = 500, body: Any = None,
             times: int = 1) -> Injection:
        """The next `times` matching requests get `status` (with Dhan's body for it) and are not acted on."""
        injection = Injection(path, method, times, status=status, body=body)
        with self._lock:
            self._injections.append(injection)
        return injection

    def delay(self, path: str, seconds: float, *, method: str | None = None, times: int = 1,
              process_first: bool = True) -> Injection:
        """Hold the answer of the next `times` matching requests back by `seconds` (a client timeout)."""
        injection = Injection(path, method, times, delay=seconds, process_first=process_first)
        with self._lock:
            self._injections.append(injection)
        return injection

    def set_option_chain_limit(self, window: float, key: str = "request") -> None:
        self.limits.option_chain_window = window
        self.limits.option_chain_key = key

    def set_order_limit(self, per_window: int, window: float = 1.0) -> None:
        self.limits.orders_per_window = per_window
        self.limits.order_window = window

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        probe = Injection(path, method)
        with self._lock:
            return [r for r in self.requests if probe.matches(r.method, r.path)]

    # -- handling --------------------------------------------------------------------------------------------

    def _take_injection(self, method: str, path: str) -> Injection | None:
        with self._lock:
            for injection in self._injections:
                if injection.times > 0 and injection.matches(method, path):
                    injection.times -= 1
                    return injection
        return None

    def handle(self, method: str, raw_path: str, headers: dict[str, str], raw_body: bytes
               ) -> tuple[RecordedRequest, int, Any, float]:
        """-> (record, status, body, delay_after)"""
        parts = urlsplit(raw_path)
        path = parts.path[3:] if parts.path.startswith("/v2") else parts.path
        try:
            body = json.loads(raw_body) if raw_body else None
        except ValueError:
            body = raw_body.decode(errors="replace")
        record = RecordedRequest(method, path, parse_qs(parts.query), body,
                                 {k.lower(): v for k, v in headers.items()}, time.time(), time.monotonic())
        with self._lock:
            self.requests.append(record)
        data_api = path.startswith(DATA_PATHS)

        injection = self._take_injection(method, path)
        if injection is not None and injection.status is not None:
            answer = injection.body if injection.body is not None else _error_body(injection.status, data_api)
            return record, injection.status, answer, 0.0
        if injection is not None and injection.delay and not injection.process_first:
            self._stopping.wait(injection.delay)
        delay_after = injection.delay if injection is not None and injection.process_first else 0.0

        if record.headers.get("access-token") != self.access_token or \
                record.headers.get("client-id") != self.client_id:
            if data_api:
                return record, 401, {"data": {"808": "Authentication Failed"}, "status": "failed"}, 0.0
            return record, 401, {"errorType": "Invalid_Authentication", "errorCode": "DH-901",
                                 "errorMessage": "Client ID or user generated access token is invalid or expired."}, 0.0
        try:
            status, answer = self._route(method, path, record)
        except FakeOrderError as exc:
            status, answer = exc.status, exc.body()
        return record, status, answer, delay_after

    def _route(self, method: str, path: str, record: RecordedRequest) -> tuple[int, Any]:
        state = self.state
        body = record.body if isinstance(record.body, dict) else {}
        segments = [s for s in path.split("/") if s]
        head = segments[0] if segments else ""

        if head == "orders":
            if method in ("POST", "PUT", "DELETE"):
                limited = self._order_rate_limited(record.mono)
                if limited is not None:
                    return limited
            if method == "POST" and len(segments) == 1:
                order = state.place(body)
                return 200, {"orderId": order.order_id, "orderStatus": "TRANSIT"}
            if method == "GET" and len(segments) == 1:
                return 200, state.order_list()
            if method == "GET" and len(segments) == 3 and segments[1] == "external":
                matches = [o for o in state.orders_with_correlation_id(segments[2]) if o.status != "TRANSIT"]
                if not matches:
                    return 404, {"errorType": "Order_Error", "errorCode": "DH-906",
                                 "errorMessage": "Incorrect request for order and cannot be processed"}
                return 200, matches[-1].as_json(state.client_id)
            if len(segments) == 2:
                order_id = segments[1]
                if method == "GET":
                    found = state.order(order_id)
                    return 200, (found.as_json(state.client_id) if found else [])
                if method == "PUT":
                    order = state.modify(order_id, body)
                    return 200, {"orderId": order.order_id, "orderStatus": "TRANSIT"}
                if method == "DELETE":
                    order = state.cancel(order_id)
                    return 200, {"orderId": order.order_id, "orderStatus": order.status}
        if head == "trades" and method == "GET":
            return 200, state.trade_list(segments[1] if len(segments) > 1 else None)
        if head == "positions" and method == "GET":
            return 200, state.position_list()
        if head == "fundlimit" and method == "GET":
            return 200, {"dhanClientId": state.client_id, "availabelBalance": 98440.0, "sodLimit": 113642.0,
                         "collateralAmount": 0.0, "receiveableAmount": 0.0, "utilizedAmount": 15202.0,
                         "blockedPayoutAmount": 0.0, "withdrawableBalance": 98310.0}
        if head == "killswitch":
            if method == "POST":
                wanted = (record.query.get("killSwitchStatus") or [""])[0].upper()
                if wanted not in ("ACTIVATE", "DEACTIVATE"):
                    raise FakeOrderError(400, "DH-905", "Invalid killSwitchStatus", "Input_Exception")
                state.kill_switch = wanted
                verb = "activated" if wanted == "ACTIVATE" else "deactivated"
                return 200, {"dhanClientId": state.client_id,
                             "killSwitchStatus": f"Kill Switch has been successfully {verb}"}
            return 200, {"dhanClientId": state.client_id, "killSwitchStatus": state.kill_switch}
        if path.rstrip("/") == "/marketfeed/ltp" and method == "POST":
            return self._ltp(body)
        if path.rstrip("/") == "/optionchain/expirylist" and method == "POST":
            key = (int(body.get("UnderlyingScrip", 0)), str(body.get("UnderlyingSeg", "")))
            return 200, {"data": list(state.expiries.get(key, [])), "status": "success"}
        if path.rstrip("/") == "/optionchain" and method == "POST":
            return self._option_chain(body, record.mono)
        if path.startswith(DATA_PATHS):
            return 400, {"data": {"814": "Invalid Request"}, "status": "failed"}
        return 404, {"errorType": "Input_Exception", "errorCode": "DH-905",
                     "errorMessage": f"No such endpoint {method} {path}"}

    def _order_rate_limited(self, now: float) -> tuple[int, Any] | None:
        with self._lock:
            while self._order_times and self._order_times[0] <= now - self.limits.order_window:
                self._order_times.popleft()
            if len(self._order_times) >= self.limits.orders_per_window:
                return 429, {"errorType": "Rate_Limit", "errorCode": "DH-904",
                             "errorMessage": "Too many requests on server from single user breaching rate "
                                             "limits. Try throttling API calls."}
            self._order_times.append(now)
        return None

    def _ltp(self, body: dict[str, Any]) -> tuple[int, Any]:
        data: dict[str, dict[str, Any]] = {}
        for segment, ids in body.items():
            if segment == "dhanClientId" or not isinstance(ids, list):
                continue
            data[segment] = {}
            for sid in ids:
                price = self.state.ltp.get((segment, int(sid)))
                if price is not None:
                    data[segment][str(sid)] = {"last_price": price}
        return 200, {"data": data, "status": "success"}

    def _option_chain(self, body: dict[str, Any], now: float) -> tuple[int, Any]:
        scrip = int(body.get("UnderlyingScrip", 0))
        segment = str(body.get("UnderlyingSeg", ""))
        expiry = str(body.get("Expiry", ""))
        key: Any = "global" if self.limits.option_chain_key == "global" else (scrip, segment, expiry)
        with self._lock:
            last = self._chain_last.get(key)
            if last is not None and now - last < self.limits.option_chain_window:
                return 429, {"data": {"805": "Too many requests. Further requests may result in the user "
                                             "being blocked."}, "status": "failed"}
            self._chain_last[key] = now
        if expiry not in self.state.expiries.get((scrip, segment), []):
            return 400, {"data": {"811": "Invalid Expiry Date"}, "status": "failed"}
        chain = self.state.chains.get((scrip, segment, expiry)) or _generated_chain(
            self.state.ltp.get((segment, scrip), 25000.0), scrip)
        return 200, {"data": chain, "status": "success"}


def _error_body(status: int, data_api: bool) -> dict[str, Any]:
    if data_api:
        code = {429: "805", 401: "807"}.get(status, "800" if status >= 500 else "814")
        text = {"805": "Too many requests", "807": "Access token expired", "800": "Internal Server Error",
                "814": "Invalid Request"}[code]
        return {"data": {code: text}, "status": "failed"}
    if status == 429:
        return {"errorType": "Rate_Limit", "errorCode": "DH-904", "errorMessage": "Too many requests"}
    if status == 401:
        return {"errorType": "Invalid_Authentication", "errorCode": "DH-901",
                "errorMessage": "Client ID or user generated access token is invalid or expired."}
    if status >= 500:
        return {"errorType": "Internal_Server_Error", "errorCode": "DH-908",
                "errorMessage": "Internal server error"}
    return {"errorType": "Input_Exception", "errorCode": "DH-905", "errorMessage": "Bad request"}


def _generated_chain(last_price: float, scrip: int) -> dict[str, Any]:
    step = 100 if scrip == 25 else 50
    atm = round(last_price / step) * step
    oc: dict[str, Any] = {}
    for i in range(-5, 6):
        strike = atm + i * step
        leg = {}
        for side, sign in (("ce", 1), ("pe", -1)):
            intrinsic = max(0.0, sign * (last_price - strike))
            price = round(intrinsic + 80.0, 2)
            leg[side] = {
                "average_price": price, "greeks": {"delta": 0.5 * sign, "theta": -15.1, "gamma": 0.0013,
                                                   "vega": 12.2},
                "implied_volatility": 10.5, "last_price": price, "oi": 100000 + i * 1000,
                "previous_close_price": price + 5, "previous_oi": 90000, "previous_volume": 1000000,
                "security_id": 40000 + (strike // step) * 2 + (0 if side == "ce" else 1),
                "top_ask_price": round(price + 0.05, 2), "top_ask_quantity": 1365,
                "top_bid_price": round(price - 0.05, 2), "top_bid_quantity": 1625, "volume": 5000000,
            }
        oc[f"{strike:.6f}"] = leg
    return {"last_price": last_price, "oc": oc}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeDhanRest
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        record, status, body, delay_after = self.fake.handle(self.command, self.path, dict(self.headers), raw)
        if delay_after:
            self.fake._stopping.wait(delay_after)
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        record.status = status
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            pass  # the client gave up (timeout): exactly what a delay injection is for

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        pass
