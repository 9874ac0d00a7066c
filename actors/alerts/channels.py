"""Where alerts go: a Telegram bot and/or a webhook, over plain HTTP with a timeout (stdlib urllib).

Telegram: `POST {alerts.telegram_api_url}/bot<token>/sendMessage` with `{"chat_id", "text"}` (the Bot API).
Webhook: `POST {alerts.webhook_url}` with the alert as JSON (`WEBHOOK_SCHEMA`); with a secret configured the
body is signed: `X-Mybot-Signature: sha256=<hex HMAC-SHA256 of the raw body with the secret>` (the
body carries `sent_at`, so a receiver can refuse an old one replayed).

`send` raises `ChannelError`: `retryable` for a network failure, a timeout, a 429 (with the server's
`retry_after`) or a 5xx; not for any other 4xx (the request itself is wrong: retrying repeats it).
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.error
import urllib.request
from typing import Any, Protocol

import orjson

from actors.clock import Clock
from core.alerts import Alert

__all__ = ["WEBHOOK_SCHEMA", "Channel", "ChannelError", "TelegramChannel", "WebhookChannel", "alert_text",
           "signature"]

WEBHOOK_SCHEMA = "mybot.alert/1"
SIGNATURE_HEADER = "X-Mybot-Signature"


class ChannelError(Exception):
    def __init__(self, message: str, retryable: bool, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class Channel(Protocol):
    name: str

    def send(self, alert: Alert, origin: dict[str, Any]) -> None: ...


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def alert_text(alert: Alert, origin: dict[str, Any]) -> str:
    """The message an operator reads on a phone: what, why, where, which incident."""
    lines = [f"[mybot {alert.severity.upper()}] {alert.title}"]
    if alert.text:
        lines.append(alert.text)
    ids = ", ".join(f"{k} {v}" for k, v in alert.fields.items() if k in ("pos_id", "symbol", "code"))
    if ids:
        lines.append(ids)
    where = f"{origin.get('role', '?')} pid {origin.get('pid', '?')} on {origin.get('host', '?')}"
    lines.append(f"{where}; incident {alert.key}" if alert.incident_id else where)
    if alert.suppressed:
        lines.append(f"({alert.suppressed} more alerts were held back by the rate limit: see the log)")
    return "\n".join(lines)


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float, what: str) -> bytes:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - configured URL
            return bytes(response.read())
    except urllib.error.HTTPError as exc:
        status = exc.code
        retry_after = 0.0
        try:
            payload = orjson.loads(exc.read() or b"{}")
            retry_after = float((payload.get("parameters") or {}).get("retry_after") or 0.0)
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            pass
        header = exc.headers.get("Retry-After") if exc.headers else None
        if header and header.strip().isdigit():
            retry_after = max(retry_after, float(header))
        raise ChannelError(f"{what}: HTTP {status}", retryable=status == 429 or status >= 500,
                           retry_after=retry_after) from None
    except (urllib.error.URLError, OSError) as exc:  # refused, reset, timed out, unreachable
        reason = getattr(exc, "reason", exc)
        raise ChannelError(f"{what}: {type(exc).__name__}: {reason}", retryable=True) from None


class TelegramChannel:
    name = "telegram"

    def __init__(self, api_url: str, token: str, chat_id: str, timeout: float) -> None:
        self._url = f"{api_url.rstrip('/')}/bot{token}/sendMessage"
        self.chat_id = chat_id
        self.timeout = timeout

    def send(self, alert: Alert, origin: dict[str, Any]) -> None:
        body = orjson.dumps({"chat_id": self.chat_id, "text": alert_text(alert, origin),
                             "disable_web_page_preview": True})
        answer = _post(self._url, body, {}, self.timeout, "telegram")
        try:
            ok = orjson.loads(answer).get("ok") is True
        except (orjson.JSONDecodeError, AttributeError):
            ok = False
        if not ok:
            raise ChannelError("telegram: the Bot API did not answer ok", retryable=False)


class WebhookChannel:
    name = "webhook"

    def __init__(self, url: str, secret: str, timeout: float, clock: Clock) -> None:
        self.url = url
        self._secret = secret
        self.timeout = timeout
        self._clock = clock

    def send(self, alert: Alert, origin: dict[str, Any]) -> None:
        body = orjson.dumps({
            "schema": WEBHOOK_SCHEMA, "kind": alert.kind, "severity": alert.severity, "title": alert.title,
            "text": alert.text, "subject": alert.subject, "incident_id": alert.key, "at": alert.at,
            "fields": alert.fields, "suppressed": alert.suppressed, "origin": origin,
            "message": alert_text(alert, origin), "sent_at": self._clock.now()}, default=str)
        headers = {"X-Mybot-Alert": alert.kind}
        if self._secret:
            headers[SIGNATURE_HEADER] = signature(self._secret, body)
        _post(self.url, body, headers, self.timeout, "webhook")
