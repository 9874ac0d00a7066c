"""DhanClient: the real dhanhq 2.3.0 SDK, pointed at settings.dhan.api_base_url, with typed errors.

How the HTTP status is captured: the SDK's DhanHTTP keeps a public `session` attribute (a
requests.Session) and calls `session.get/post/put/delete`, all of which go through `Session.request`.
We replace that session with `CapturingSession`, whose `request` records -- per thread -- the status and
raw body of the response, or the exception that replaced it, then hands everything back to the SDK
unchanged. After each SDK call `DhanClient.call` reads that record and `errors.unwrap` translates the
SDK's failure dict with it. The SDK keeps doing all the request building and parsing.

Option chain and expiry list calls pass through a `RateWindow` (one unique request per
option_chain.min_interval_seconds, keyed per (underlying, expiry) or globally). The client never waits:
when the window is closed it raises `RateLimited(retry_after)` without sending, and after a 429 it holds
the key back with a doubling penalty. The poller actor schedules its retry from retry_after.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any

import requests
from dhanhq import DhanContext, dhanhq

from actors.brokers.base import BrokerError, PermanentBrokerError
from actors.clock import Clock, SystemClock
from actors.dhan.errors import DhanAuthError, RateLimited, Transport, unwrap
from actors.dhan.ids import Instrument, InstrumentMap, UnknownSymbol
from actors.dhan.token import TokenState
from config.settings import Settings
from core.ratelimit import RateWindow
from telemetry.logs import get_logger, redact

__all__ = ["CapturingSession", "DhanClient"]

_log = get_logger("actors.dhan.client")

QUOTE_MIN_INTERVAL = 1.0  # Dhan market quote: 1 request per second
PENALTY_CAP_SECONDS = 60.0


class CapturingSession(requests.Session):
    """A requests.Session that remembers, per thread, what the last request it made saw on the wire."""

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        self._local.last = None
        try:
            response = super().request(method, url, *args, **kwargs)
        except Exception as exc:
            self._local.last = Transport(exception=exc)
            raise
        self._local.last = Transport(status=response.status_code, body=response.content)
        return response

    def reset(self) -> None:
        self._local.last = None

    def last(self) -> Transport | None:
        return getattr(self._local, "last", None)


class DhanClient:
    """Data calls (expiry list, option chain, LTP) and the shared SDK handle the broker uses.

    `option_chain_min_interval` overrides option_chain.min_interval_seconds (whose floor is Dhan's 3 s);
    it exists so tests can run the same logic with a shorter window.

    With a `TokenState` the client takes the token from it, swaps it into the SDK's headers whenever it
    changes (`set_token`), and reports a token Dhan refuses (DH-901 / 807-810) so the keeper hears at once.
    """

    def __init__(self, settings: Settings, *, clock: Clock | None = None,
                 instruments: InstrumentMap | None = None,
                 option_chain_min_interval: float | None = None, token: TokenState | None = None) -> None:
        dhan = settings.dhan
        client_id = dhan.client_id.reveal()
        token_value = token.current() if token is not None else dhan.access_token.reveal()
        redact(token_value)
        self.clock: Clock = clock or SystemClock()
        self.instruments = instruments or InstrumentMap(dhan.security_ids)
        self.context = DhanContext(client_id, token_value)
        http = self.context.get_dhan_http()
        http.base_url = dhan.api_base_url.rstrip("/")
        timeout = dhan.request_timeout_seconds
        http.timeout = (min(timeout, 3.0), timeout)  # (connect, read): requests accepts the pair
        http.session.close()
        self._session = CapturingSession()
        http.session = self._session
        self.sdk = dhanhq(self.context)
        interval = (settings.option_chain.min_interval_seconds if option_chain_min_interval is None
                    else option_chain_min_interval)
        self._chain_window = RateWindow(interval)
        self._chain_penalty_streak: dict[Hashable, int] = {}
        self._global_key = settings.option_chain.rate_key == "global"
        self._quote_window = RateWindow(QUOTE_MIN_INTERVAL)
        self._lock = threading.Lock()
        self._token_state = token
        self._unsubscribe = token.subscribe(self.set_token) if token is not None else None

    def set_token(self, token: str) -> None:
        """Use `token` from the next request on (the headers dict is replaced whole, never edited under a
        request being built on another thread)."""
        redact(token)
        http = self.context.get_dhan_http()
        self.context.access_token = token
        http.access_token = token
        http.header = {**http.header, "access-token": token}

    # -- the one place SDK results become values or typed errors -------------------------------------

    def call(self, operation: str, method: Callable[..., Any], *args: Any, submit: bool = False,
             **kwargs: Any) -> Any:
        """Run one SDK method and return the body Dhan sent, or raise the translated BrokerError."""
        self._session.reset()
        token_used = self.context.access_token
        response = method(*args, **kwargs)
        if not isinstance(response, Mapping):
            raise PermanentBrokerError(f"{operation}: unexpected SDK result {type(response).__name__}")
        try:
            return unwrap(response, self._session.last(), submit=submit, operation=operation)
        except DhanAuthError as exc:
            if self._token_state is not None:
                self._token_state.report_rejected(token_used, f"REST {operation}: {exc.code or 'auth'}")
            raise

    # -- data APIs ------------------------------------------------------------------------------------

    def expiry_list(self, symbol: str) -> list[str]:
        inst = self.instruments.instrument(symbol)
        body = self._windowed(("expirylist", inst.segment, inst.security_id), f"expiry list {symbol}",
                              self.sdk.expiry_list, inst.security_id, inst.segment)
        data = _data_of(body)
        return [str(e) for e in data] if isinstance(data, list) else []

    def option_chain(self, symbol: str, expiry: str) -> dict[str, Any]:
        """The chain as Dhan sent it: {"last_price": ..., "oc": {"25650.000000": {"ce": {...}, "pe": {...}}}}."""
        inst = self.instruments.instrument(symbol)
        body = self._windowed(("optionchain", inst.segment, inst.security_id, expiry),
                              f"option chain {symbol} {expiry}",
                              self.sdk.option_chain, inst.security_id, inst.segment, expiry)
        data = _data_of(body)
        return data if isinstance(data, dict) else {}

    def option_chain_wait(self, symbol: str, expiry: str) -> float:
        """Seconds until option_chain(symbol, expiry) may be sent (0.0 = now)."""
        inst = self.instruments.instrument(symbol)
        with self._lock:
            return self._chain_window.wait_time(
                self._key(("optionchain", inst.segment, inst.security_id, expiry)), self.clock.monotonic())

    def ltp(self, symbols: Iterable[str]) -> dict[str, float]:
        """Last traded prices of all symbols in one request (Dhan allows 1 quote request per second)."""
        wanted: dict[Instrument, str] = {self.instruments.instrument(s): s for s in symbols}
        if not wanted:
            return {}
        with self._lock:
            wait = self._quote_window.acquire("quote", self.clock.monotonic())
        if wait > 0:
            raise RateLimited(f"ltp: next quote request allowed in {wait:.2f} s", "LOCAL", wait)
        securities: dict[str, list[int]] = {}
        for inst in wanted:
            securities.setdefault(inst.segment, []).append(inst.security_id)
        try:
            body = self.call("ltp", self.sdk.ticker_data, securities)
        finally:
            with self._lock:
                self._quote_window.touch("quote", self.clock.monotonic())
        prices: dict[str, float] = {}
        data = _data_of(body)
        if isinstance(data, Mapping):
            for segment, by_id in data.items():
                if not isinstance(by_id, Mapping):
                    continue
                for sid, quote in by_id.items():
                    symbol = wanted.get(Instrument(str(segment), int(sid)))
                    if symbol is not None and isinstance(quote, Mapping) and "last_price" in quote:
                        prices[symbol] = float(quote["last_price"])
        return prices

    def ltp_of(self, symbol: str) -> float | None:
        """One symbol's REST LTP for the trading side's quote book: None when the 1 request/s quote budget
        is spent (it never waits for it) or the call fails; the failure is logged."""
        try:
            return self.ltp([symbol]).get(symbol)
        except RateLimited:
            return None
        except (BrokerError, UnknownSymbol) as exc:
            _log.event("QUOTE_FETCH_FAILED", f"REST LTP of {symbol} failed: {exc}", level=30, symbol=symbol,
                       code=getattr(exc, "code", ""))
            return None

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._session.close()

    # -- the option-chain window ----------------------------------------------------------------------

    def _key(self, key: tuple[Any, ...]) -> Hashable:
        return "global" if self._global_key else key

    def _windowed(self, raw_key: tuple[Any, ...], operation: str, method: Callable[..., Any],
                  *args: Any) -> Any:
        key = self._key(raw_key)
        with self._lock:
            wait = self._chain_window.acquire(key, self.clock.monotonic())
        if wait > 0:
            raise RateLimited(f"{operation}: next request allowed in {wait:.2f} s", "LOCAL", wait)
        try:
            body = self.call(operation, method, *args)
        except RateLimited as exc:
            with self._lock:
                streak = self._chain_penalty_streak.get(key, 0) + 1
                self._chain_penalty_streak[key] = streak
                penalty = min(PENALTY_CAP_SECONDS, self._chain_window.min_interval * 2 ** streak)
                self._chain_window.penalize(key, self.clock.monotonic(), penalty)
            _log.event("OPTION_CHAIN_RATE_LIMITED", f"{operation}: Dhan answered 429, holding back",
                       code=exc.code, retry_after=round(penalty, 3))
            raise RateLimited(str(exc), exc.code, penalty) from exc
        finally:
            with self._lock:
                self._chain_window.touch(key, self.clock.monotonic())
        with self._lock:
            self._chain_penalty_streak.pop(key, None)
        return body


def _data_of(body: Any) -> Any:
    """Data APIs wrap their answer: {"data": ..., "status": "success"}."""
    if isinstance(body, Mapping) and "data" in body:
        return body["data"]
    return body
