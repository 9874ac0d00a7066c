"""dhanhq failure dicts -> the project's typed broker errors, translated once, here.

The SDK never raises on HTTP errors. It returns {'status': 'failure', 'remarks': ..., 'data': ''} where
remarks is (1) a dict of error_code/error_type/error_message -- all None for Data-API errors, whose body is
{"data": {"805": "..."}, "status": "failed"}; (2) a JSON-parse error string; (3) str(exception) for a
transport failure. It also hides the HTTP status. `actors.dhan.client` therefore installs a capturing
requests session on the SDK's DhanHTTP (see `client.CapturingSession`) and hands us a `Transport`: the
status, raw body and exception of the exchange. With it nothing is guessed from strings; without it
(a bare dict) we fall back to reading remarks.

Classification is by what the caller should do:
  TemporaryBrokerError  retry later: 429 (DH-904 / 805 -> RateLimited), 5xx, DH-908/909, 800, network
  AmbiguousSubmitError  a place whose outcome is unknown (timeout after sending, 5xx, unreadable 2xx):
                        look the order up by correlationId; never resend blindly
  PermanentBrokerError  DH-901/902/903/905/906 (but "in Transit" is temporary), 804, 806-814;
                        DhanAuthError for token/client problems, InvalidExpiry for 811
  OrderNotFound         404 (DH-906 on /orders/external while unknown or still in TRANSIT)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from actors.brokers.base import (
    AmbiguousSubmitError,
    BrokerError,
    OrderNotFound,
    PermanentBrokerError,
    TemporaryBrokerError,
)

__all__ = [
    "AuthRefusedNotPlaced",
    "DhanAuthError",
    "InvalidExpiry",
    "RateLimited",
    "Transport",
    "error_from_response",
    "unwrap",
]


class RateLimited(TemporaryBrokerError):
    """Too many requests (429 DH-904 / 805, or our own window refused to send): try after retry_after s."""

    def __init__(self, message: str, code: str = "", retry_after: float = 1.0) -> None:
        super().__init__(message, code)
        self.retry_after = retry_after


class DhanAuthError(PermanentBrokerError):
    """Token expired/invalid or wrong client id (DH-901, 807-810): an operator must renew the token."""


class AuthRefusedNotPlaced(TemporaryBrokerError):
    """An order call Dhan refused for the token (401 DH-901): it never reached the exchange. Temporary on
    purpose: the token keeper renews the token, and the exit (or the entry, if the risk guard still allows
    it) is submitted again then, instead of being given up as rejected."""

    def __init__(self, message: str, code: str = "", retry_after: float = 5.0) -> None:
        super().__init__(message, code)
        self.retry_after = retry_after


class InvalidExpiry(PermanentBrokerError):
    """Option chain asked for an expiry Dhan does not list (811)."""


@dataclass(frozen=True)
class Transport:
    """What the wire showed for one SDK call: HTTP status and body, or the exception that replaced them."""

    status: int | None = None
    body: bytes = b""
    exception: BaseException | None = None

    @property
    def may_have_reached_server(self) -> bool:
        """False only when the request certainly never left: connection refused / connect timeout."""
        if self.exception is None:
            return True
        return not _never_sent(self.exception)


AUTH_CODES = frozenset({"DH-901", "807", "808", "809", "810"})
RATE_LIMIT_CODES = frozenset({"DH-904", "805"})
SERVER_CODES = frozenset({"DH-908", "DH-909", "800"})
PERMANENT_CODES = frozenset({"DH-902", "DH-903", "DH-905", "DH-906", "DH-907", "DH-910", "DH-911",
                             "804", "806", "811", "812", "813", "814"})


def unwrap(response: Mapping[str, Any], transport: Transport | None = None, *, submit: bool = False,
           operation: str = "") -> Any:
    """The body Dhan sent on success; otherwise raise the translated error."""
    if response.get("status") == "success":
        return response.get("data")
    raise error_from_response(response, transport, submit=submit, operation=operation)


def error_from_response(response: Mapping[str, Any], transport: Transport | None = None, *,
                        submit: bool = False, operation: str = "") -> BrokerError:
    """Translate one SDK failure dict (plus what the wire showed, if captured) into a typed error."""
    where = f"{operation}: " if operation else ""
    remarks = response.get("remarks")

    if transport is not None and transport.exception is not None:
        exc = transport.exception
        message = f"{where}{type(exc).__name__}: {exc}"
        if submit and transport.may_have_reached_server:
            return AmbiguousSubmitError(message, "TIMEOUT" if _is_timeout(exc) else "NETWORK")
        return TemporaryBrokerError(message, "TIMEOUT" if _is_timeout(exc) else "NETWORK")

    status = transport.status if transport is not None else None
    code, text = _code_and_message(remarks, transport.body if transport is not None else b"")
    message = f"{where}{code or status or 'error'} {text}".strip()

    if status is not None and 200 <= status <= 299:
        # A 2xx the SDK could not parse: the server acted, we cannot tell how.
        if submit:
            return AmbiguousSubmitError(f"{where}unreadable {status} reply: {remarks}", "UNREADABLE")
        return TemporaryBrokerError(f"{where}unreadable {status} reply: {remarks}", "UNREADABLE")
    if code in RATE_LIMIT_CODES or status == 429:
        return RateLimited(message, code or "429")
    if code in AUTH_CODES:
        return DhanAuthError(message, code)
    if code == "811":
        return InvalidExpiry(message, code)
    if status == 404:
        return OrderNotFound(message, code or "404")
    if code == "DH-906" and "transit" in text.lower():
        # Cancel/modify while the order is still on its way to the exchange: ask again shortly.
        return TemporaryBrokerError(message, code)
    if code in SERVER_CODES or (status is not None and status >= 500):
        if submit:
            return AmbiguousSubmitError(message, code or str(status))
        return TemporaryBrokerError(message, code or str(status))
    if code in PERMANENT_CODES or (status is not None and 400 <= status < 500):
        return PermanentBrokerError(message, code or str(status))

    if transport is None and isinstance(remarks, str):
        # No capture: a string remark is a transport failure or an unreadable body. Either way the
        # request may have been acted on.
        if submit:
            return AmbiguousSubmitError(f"{where}{remarks}", "NETWORK")
        return TemporaryBrokerError(f"{where}{remarks}", "NETWORK")
    # Unknown shape (e.g. a Data-API error seen without its body): bounded retries are the safe default.
    if submit:
        return AmbiguousSubmitError(message, code)
    return TemporaryBrokerError(message, code)


def _code_and_message(remarks: Any, body: bytes) -> tuple[str, str]:
    if isinstance(remarks, Mapping) and remarks.get("error_code"):
        return str(remarks["error_code"]), str(remarks.get("error_message") or "")
    parsed: Any = None
    if body:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
    if isinstance(parsed, Mapping):
        if parsed.get("errorCode"):
            return str(parsed["errorCode"]), str(parsed.get("errorMessage") or "")
        data = parsed.get("data")
        if isinstance(data, Mapping) and data:
            # Data-API error: {"data": {"805": "Too many requests"}, "status": "failed"}
            key, value = next(iter(data.items()))
            return str(key), str(value)
    if isinstance(remarks, str):
        return "", remarks
    return "", ""


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, (requests.Timeout, TimeoutError))


def _never_sent(exc: BaseException) -> bool:
    if isinstance(exc, requests.ConnectTimeout):
        return True
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError):
            return True
        if type(current).__name__ in ("NewConnectionError", "NameResolutionError"):
            return True
        nxt = current.__cause__ or current.__context__
        if nxt is None and current.args and isinstance(current.args[0], BaseException):
            nxt = current.args[0]
        if nxt is None:
            reason = getattr(current, "reason", None)
            nxt = reason if isinstance(reason, BaseException) else None
        current = nxt
    return False
