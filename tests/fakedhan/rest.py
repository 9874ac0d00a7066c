"""The fake Dhan REST API v2 on a real socket (threaded http.server, 127.0.0.1, free port).

Envelopes as Dhan sends them (dhan-api.md §1-2): trading endpoints bare, data endpoints
{"data": ..., "status": "success"}; errors {"errorType","errorCode","errorMessage"} for trading and
{"data": {"805": "Too many requests"}, "status": "failed"} for data. Every request is recorded with its
arrival time; tests can inject failures and delays per path and tune the rate limits.

Besides /v2, the same server answers what lives on Dhan's other hosts:
* the compact scrip master CSV at `scrip_master_path` (public, no token; images.dhan.co in real life);
* `POST /app/generateAccessToken?dhanClientId=&pin=&totp=` (auth.dhan.co): a new token for the right
  client id, PIN and RFC 6238 TOTP (a JSON or form body with those fields is accepted too);
* `GET|POST /v2/RenewToken` with `access-token` and `dhanClientId` (or `client-id`) headers: a new token
  in `token` (or `accessToken`, see `renew_field`); the old one stops working.
An expired or superseded token gets 401 DH-901 on trading APIs and 401 {"807": ...} on data APIs; an
unknown one 401 DH-901 / {"808": ...} as before.
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

from tests.fakedhan.state import FakeDhanState, FakeOrderError, dhan_time
from tests.fakedhan.tokens import FakeTokens

__all__ = ["FakeDhanRest", "Injection", "RawBody", "RecordedRequest"]

DATA_PATHS = ("/marketfeed/", "/optionchain")
SCRIP_MASTER_PATH = "/api-data/api-scrip-master.csv"  # the path on images.dhan.co
AUTH_FAILED = {"errorType": "Invalid_Authentication", "errorCode": "DH-901",
               "errorMessage": "Client ID or user generated access token is invalid or expired."}


@dataclass(frozen=True)
class RawBody:
    """An answer that is not JSON (the scrip master CSV)."""

    data: bytes
    content_type: str = "text/csv"


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
    tokens: FakeTokens | None = None
    scrip_master_path: str = SCRIP_MASTER_PATH
    renew_field: str = "token"  # or "accessToken": public clients disagree on which Dhan sends

    def __post_init__(self) -> None:
        if self.tokens is None:
            self.tokens = FakeTokens(self.client_id, self.access_token)
        self.scrip_master = b""
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

    @property
    def root_url(self) -> str:
        """The server without /v2: where the auth endpoints live (DhanLogin.AUTH_BASE_URL)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def scrip_master_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.scrip_master_path}"

    def set_scrip_master(self, csv_text: str) -> None:
        self.scrip_master = csv_text.encode()

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

        if method == "GET" and parts.path == self.scrip_master_path:
            return record, 200, RawBody(self.scrip_master), delay_after
        if path.rstrip("/") == "/app/generateAccessToken":
            status, answer = self._generate_access_token(method, record)
            return record, status, answer, delay_after
        if path.rstrip("/") == "/RenewToken":
            status, answer = self._renew_token(method, record)
            return record, status, answer, delay_after
        assert self.tokens is not None
        why = self.tokens.check(record.headers.get("access-token"))
        if why is not None or record.headers.get("client-id") != self.client_id:
            if data_api:
                body = {"807": "Access token expired"} if why in ("expired", "revoked") else \
                    {"808": "Authentication Failed"}
                return record, 401, {"data": body, "status": "failed"}, 0.0
            return record, 401, dict(AUTH_FAILED), 0.0
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
                order = matches[-1]
                return 200, order.as_json(state.client_id, state.instrument(order.exchange_segment,
                                                                            order.security_id))
            if len(segments) == 2:
                order_id = segments[1]
                if method == "GET":
                    found = state.order(order_id)
                    return 200, (found.as_json(state.client_id, state.instrument(found.exchange_segment,
                                                                                 found.security_id))
                                 if found else [])
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

    def _renew_token(self, method: str, record: RecordedRequest) -> tuple[int, Any]:
        assert self.tokens is not None
        if method not in ("GET", "POST"):
            return 405, {"errorType": "Input_Exception", "errorCode": "DH-905",
                         "errorMessage": f"{method} not allowed on RenewToken"}
        token = record.headers.get("access-token")
        client = record.headers.get("dhanclientid") or record.headers.get("client-id")
        if self.tokens.check(token) is not None or client != self.client_id:
            return 401, dict(AUTH_FAILED)
        assert token is not None
        new = self.tokens.renew(token)
        expires = self.tokens.expires_at(new) or 0.0
        return 200, {self.renew_field: new, "expiryTime": dhan_time(expires).replace(" ", "T")}

    def _generate_access_token(self, method: str, record: RecordedRequest) -> tuple[int, Any]:
        assert self.tokens is not None
        if method != "POST":
            return 405, {"status": "error", "message": f"{method} not allowed"}
        params = {k: v[0] for k, v in record.query.items() if v}
        if isinstance(record.body, dict):
            params.update({k: str(v) for k, v in record.body.items()})
        elif isinstance(record.body, str):  # a form body
            params.update({k: v[0] for k, v in parse_qs(record.body).items() if v})
        missing = [k for k in ("dhanClientId", "pin", "totp") if not params.get(k)]
        if missing:
            return 400, {"status": "error", "message": "missing " + ", ".join(missing)}
        token = self.tokens.login(params["dhanClientId"], params["pin"], params["totp"])
        if token is None:
            return 401, {"status": "error", "message": "Invalid client id, PIN or TOTP"}
        expires = self.tokens.expires_at(token) or 0.0
        return 200, {"dhanClientId": self.client_id, "dhanClientName": "FAKE TRADER",
                     "dhanClientUcc": "FAKE12345A", "givenPowerOfAttorney": False,
                     "accessToken": token, "expiryTime": dhan_time(expires).replace(" ", "T")}

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
        last_price = self.state.ltp.get((segment, scrip), 25000.0)
        chain = self.state.chains.get((scrip, segment, expiry)) or \
            self.state.chain_from_master(scrip, expiry, last_price) or _generated_chain(last_price, scrip)
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
        content_type = "application/json"
        if isinstance(body, RawBody):
            payload, content_type = body.data, body.content_type
        else:
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        record.status = status
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            pass  # the client gave up (timeout): exactly what a delay injection is for

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        pass
