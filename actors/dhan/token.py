"""The Dhan access token of this process: which one is current, whether it still works, how to get a new one.

`TokenState` is the one place the token lives once the runtime started (a crash-only store: it outlives
the token keeper's restarts, and HTTP threads, the feed thread and the order-update thread read it).
Everything that talks to Dhan registers with it:

  * `DhanClient` (REST: orders, chains, LTP) swaps the `access-token` header of its DhanHTTP;
  * `DhanFeedSource` reads the current token before every connect, and reconnects when it changes;
  * the order-update socket does the same.

A component that sees Dhan refuse the token (401 DH-901 on REST, disconnect 807-809 on the feed) reports it
(`report_rejected`); the token keeper hears of it at once. While the current token is expired or refused,
`entry_hold()` denies entries (BROKER_AUTH_EXPIRED, read by the risk guard at every check) and `health()`
fails naming it; exits are still attempted.

`TokenRenewer` gets a new token, by the two ways Dhan offers (dhan-api.md §6): RenewToken (a web-generated
token, before it expires; the old one stops working) and the PIN + TOTP login. It calls the endpoints with
`requests` rather than the SDK's `DhanLogin`, whose calls have no timeout and log whole response bodies
(tokens included). `SecretFile` writes a new token back where it came from, atomically, mode 0600.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from actors.clock import Clock, SystemClock
from config.settings import Settings
from core.market import to_iso_ist
from core.risk import Denied, DenyCode
from core.token import TokenClaims, TokenError, read_claims, totp_code
from telemetry.logs import get_logger, redact

__all__ = ["ACCESS_TOKEN_FILE", "RenewalFailed", "SecretFile", "TokenRenewer", "TokenState", "find_token_file"]

ACCESS_TOKEN_FILE = "dhan_access_token.txt"
DOCKER_SECRETS = "/run/secrets"

log = get_logger("actors.dhan.token")

TokenListener = Callable[[str], None]


class RenewalFailed(Exception):
    """A way of getting a new token did not work; the message says why (never the token)."""


@dataclass(frozen=True)
class _Current:
    token: str
    claims: TokenClaims | None
    version: int
    rejected: str  # "" or where Dhan refused it ("feed 807", "REST DH-901")


class TokenState:
    """The current token and what is known about it. Thread-safe; listeners are called outside the lock."""

    def __init__(self, client_id: str, token: str, clock: Clock | None = None) -> None:
        self.client_id = client_id
        self._clock: Clock = clock or SystemClock()
        self._lock = threading.Lock()
        redact(token)
        self._current = _Current(token, _claims(token), 0, "")
        self._renewing = ""  # the token a renewal is replacing right now (its refusal is expected)
        self._swap_listeners: list[TokenListener] = []
        self._rejection_listeners: list[TokenListener] = []
        # The keeper's bookkeeping, kept here so a restarted keeper neither warns twice nor forgets an incident.
        self.warned_version = -1
        self.incident = ""  # the BROKER_AUTH_EXPIRED reason while raised ("" = none)
        self.incident_version = -1
        self.next_attempt_at = 0.0
        self.failures = 0
        self.renewals = 0
        self.last_renewal = ""  # "RenewToken at <time>" / "TOTP at <time>"
        self.last_error = ""

    # -- reading ------------------------------------------------------------------------------------------

    def current(self) -> str:
        return self._current.token

    @property
    def version(self) -> int:
        """Bumped by every swap: a component compares it to know its token is out of date."""
        return self._current.version

    def claims(self) -> TokenClaims | None:
        return self._current.claims

    @property
    def renewing(self) -> bool:
        """A renewal of the current token is under way (Dhan may already refuse the old one)."""
        return bool(self._renewing) and self._renewing == self._current.token

    def dead_reason(self, now: float | None = None) -> str:
        """Why the current token cannot work ("" = as far as we know it does)."""
        current = self._current
        at = self._clock.now() if now is None else now
        if current.claims is not None and current.claims.is_expired(at):
            return f"the access token expired at {to_iso_ist(current.claims.expires_at)}"
        if current.rejected:
            return f"the access token was refused by Dhan ({current.rejected})"
        return ""

    def entry_hold(self) -> Denied | None:
        """For the risk guard (core.risk.EntryHold): no entries while the token cannot work."""
        reason = self.dead_reason()
        if not reason:
            return None
        return Denied(DenyCode.BROKER_AUTH_EXPIRED, f"BROKER_AUTH_EXPIRED: {reason}; exits are still attempted")

    def health(self) -> tuple[bool, dict[str, Any]]:
        reason = self.dead_reason()
        detail = self.status()
        if reason:
            detail["error"] = f"BROKER_AUTH_EXPIRED: {reason}"
        return not reason, detail

    def status(self) -> dict[str, Any]:
        current, now = self._current, self._clock.now()
        claims = current.claims
        return {
            "client_id": self.client_id[:2] + "***" if self.client_id else "",
            "expires_at": to_iso_ist(claims.expires_at) if claims else None,
            "seconds_left": round(claims.seconds_left(now), 1) if claims else None,
            "rejected": current.rejected or None,
            "incident": self.incident or None,
            "renewals": self.renewals,
            "last_renewal": self.last_renewal or None,
            "last_error": self.last_error or None,
        }

    # -- listening -------------------------------------------------------------------------------------------

    def subscribe(self, listener: TokenListener) -> Callable[[], None]:
        """`listener(new_token)` after every swap; returns the unsubscribe function."""
        return self._add(self._swap_listeners, listener)

    def on_rejected(self, listener: TokenListener) -> Callable[[], None]:
        """`listener(where)` when a component reports the current token refused."""
        return self._add(self._rejection_listeners, listener)

    def _add(self, listeners: list[TokenListener], listener: TokenListener) -> Callable[[], None]:
        with self._lock:
            listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in listeners:
                    listeners.remove(listener)
        return unsubscribe

    # -- changing ----------------------------------------------------------------------------------------------

    def swap(self, token: str) -> int:
        """Make `token` current (renewed, generated, or reloaded from the file) and tell every listener."""
        redact(token)
        with self._lock:
            self._current = _Current(token, _claims(token), self._current.version + 1, "")
            listeners = list(self._swap_listeners)
            version = self._current.version
            self.incident = ""
        for listener in listeners:
            try:
                listener(token)
            except Exception as exc:  # a listener's bug must not stop the others from swapping
                log.event("TOKEN_LISTENER_FAILED", f"a token listener raised: {exc}", level=40, exc_info=exc)
        return version

    def begin_renewal(self) -> None:
        """The keeper is replacing the current token: Dhan revokes the old one as it answers, so a refusal
        of it now is expected, not news."""
        with self._lock:
            self._renewing = self._current.token

    def end_renewal(self) -> None:
        with self._lock:
            self._renewing = ""

    def report_rejected(self, token: str, where: str) -> None:
        """Dhan refused `token` (DH-901, 807...). Ignored unless it is the current token (a renewal may have
        replaced it meanwhile: the old one is refused by design), or while a renewal is replacing it."""
        with self._lock:
            current = self._current
            if token != current.token or current.rejected or token == self._renewing:
                return
            self._current = _Current(current.token, current.claims, current.version, where)
            listeners = list(self._rejection_listeners)
        log.event("TOKEN_REJECTED", f"Dhan refused the access token ({where})", level=40, where=where)
        for listener in listeners:
            try:
                listener(where)
            except Exception as exc:
                log.event("TOKEN_LISTENER_FAILED", f"a rejection listener raised: {exc}", level=40, exc_info=exc)


def _claims(token: str) -> TokenClaims | None:
    try:
        return read_claims(token)
    except TokenError:
        return None


# -- getting a new token ---------------------------------------------------------------------------------------


class TokenRenewer:
    """Dhan's RenewToken and its PIN + TOTP login, with timeouts; RenewalFailed says why."""

    def __init__(self, settings: Settings, clock: Clock | None = None,
                 session: requests.Session | None = None) -> None:
        dhan = settings.dhan
        self.client_id = dhan.client_id.reveal()
        self.api_base_url = dhan.api_base_url.rstrip("/")
        self.auth_base_url = dhan.auth_base_url.rstrip("/")
        self.timeout = (min(3.0, dhan.request_timeout_seconds), dhan.request_timeout_seconds)
        self.totp_secret_file = dhan.totp_secret_file
        self.pin_file = dhan.pin_file
        self.clock: Clock = clock or SystemClock()
        self.session = session or requests.Session()

    @property
    def can_login(self) -> bool:
        return bool(self.totp_secret_file and self.pin_file)

    def renew(self, token: str) -> str:
        """RenewToken: a new 24 h token for a valid web-generated one (the old one stops working).
        Public clients disagree on GET vs POST: GET first, POST when GET is not allowed."""
        headers = {"access-token": token, "dhanClientId": self.client_id, "client-id": self.client_id,
                   "Accept": "application/json"}
        url = f"{self.api_base_url}/RenewToken"
        response = self._send("RenewToken", "GET", url, headers=headers)
        if response.status_code == 405:
            response = self._send("RenewToken", "POST", url, headers=headers)
        return self._token_from("RenewToken", response)

    def login(self) -> str:
        """PIN + TOTP: a new token, whatever the state of the old one."""
        if not self.can_login:
            raise RenewalFailed("TOTP login: dhan.totp_secret_file and dhan.pin_file are not set")
        try:
            secret = Path(self.totp_secret_file).read_text(encoding="utf-8").strip()
            pin = Path(self.pin_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise RenewalFailed(f"TOTP login: cannot read the secret files ({type(exc).__name__})") from None
        redact(secret, pin)
        try:
            code = totp_code(secret, self.clock.now())
        except TokenError as exc:
            raise RenewalFailed(f"TOTP login: {exc}") from None
        params = {"dhanClientId": self.client_id, "pin": pin, "totp": code}
        response = self._send("TOTP login", "POST", f"{self.auth_base_url}/app/generateAccessToken",
                              params=params, headers={"Accept": "application/json"})
        return self._token_from("TOTP login", response)

    def _send(self, what: str, method: str, url: str, **kwargs: Any) -> requests.Response:
        try:
            return self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise RenewalFailed(f"{what}: {type(exc).__name__}") from None

    @staticmethod
    def _token_from(what: str, response: requests.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200:
            code = ""
            if isinstance(body, Mapping):
                code = str(body.get("errorCode") or body.get("message") or body.get("status") or "")
            raise RenewalFailed(f"{what}: HTTP {response.status_code} {code}".rstrip())
        data = body.get("data") if isinstance(body, Mapping) and isinstance(body.get("data"), Mapping) else body
        token = None
        if isinstance(data, Mapping):
            token = data.get("accessToken") or data.get("token")
        if not isinstance(token, str) or not token.strip():
            raise RenewalFailed(f"{what}: the answer holds no token (expected 'accessToken' or 'token')")
        token = token.strip()
        redact(token)
        try:
            read_claims(token)
        except TokenError as exc:
            raise RenewalFailed(f"{what}: the new token is unreadable ({exc})") from None
        return token


# -- writing it back ---------------------------------------------------------------------------------------------


class SecretFile:
    """The file a token came from: written back atomically (temp file + fsync + rename), mode 0600."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.seen_mtime_ns = self._mtime()

    def _mtime(self) -> int:
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return -1

    def changed(self) -> bool:
        """Whether the file changed since we last read or wrote it (an operator put a new token there)."""
        return self._mtime() != self.seen_mtime_ns

    def read(self) -> str:
        self.seen_mtime_ns = self._mtime()
        return self.path.read_text(encoding="utf-8").strip()

    def write(self, text: str) -> None:
        """Replace the file's content atomically: a crash leaves the old token or the new, never half."""
        folder = self.path.parent
        fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                os.fchmod(handle.fileno(), 0o600)
                handle.write(text + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        with contextlib.suppress(OSError):  # the rename itself must survive a power cut: sync the folder
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self.seen_mtime_ns = self._mtime()


def find_token_file(secrets_dir: str, token: str) -> SecretFile | None:
    """The secrets file the running token was read from (the first of secrets_dir and /run/secrets holding
    exactly this token), or None: it came from the environment or the settings, so there is nowhere to
    write a renewed one back to."""
    for folder in (secrets_dir, DOCKER_SECRETS):
        path = Path(folder) / ACCESS_TOKEN_FILE
        try:
            if path.is_file() and path.read_text(encoding="utf-8").strip() == token:
                return SecretFile(path)
        except (OSError, UnicodeDecodeError):
            continue
    return None
