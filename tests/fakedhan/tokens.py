"""The fake Dhan's access tokens: which are valid, renewal, TOTP login. Thread-safe.

Dhan's tokens are JWTs with `exp` and `dhanClientId` (dhan-api.md §6). The fake mints unsigned test JWTs
(`alg: none`), honours `exp`, and invalidates a token when it is renewed or revoked. A token that is not a
JWT (the fixed test token most tests use) never expires. Listeners hear about every token that stops
being valid, so the websockets can drop the connections that used it (the feed with disconnect 807).

TOTP is RFC 6238 (HMAC-SHA1, 30 s steps, 6 digits, base32 secret), the scheme authenticator apps use
for Dhan's API login; `totp(secret, at)` computes the code a client must send.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import struct
import threading
import time
from collections.abc import Callable

from core.token import TokenError, read_claims

__all__ = ["FakeTokens", "TokenListener", "totp", "unsigned_jwt"]

TokenListener = Callable[[str, str], None]  # (token, why: "expired" | "revoked")
_serial = itertools.count(1)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unsigned_jwt(client_id: str, expires_at: float, issued_at: float | None = None) -> str:
    """A JWT shaped like Dhan's (claims as seen in real tokens), signed with nothing."""
    header = {"typ": "JWT", "alg": "none"}
    payload = {"iss": "dhan", "partnerId": "", "exp": int(expires_at),
               "iat": int(issued_at if issued_at is not None else time.time()),
               "tokenConsumerType": "SELF", "webhookUrl": "", "dhanClientId": client_id,
               "jti": next(_serial)}  # two tokens minted in the same second still differ
    return ".".join([_b64(json.dumps(header).encode()), _b64(json.dumps(payload).encode()), ""])


def totp(secret_b32: str, at: float, *, step: int = 30, digits: int = 6) -> str:
    """The RFC 6238 code for `secret_b32` at epoch `at` (HOTP over the 30 s counter, RFC 4226 truncation)."""
    key = base64.b32decode(secret_b32.upper() + "=" * (-len(secret_b32) % 8))
    counter = struct.pack(">Q", int(at // step))
    digest = hmac.new(key, counter, hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    code = (struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF) % (10 ** digits)
    return str(code).zfill(digits)


class FakeTokens:
    """Valid tokens and their expiry; renew, revoke, expire; TOTP login."""

    def __init__(self, client_id: str, initial: str, *, lifetime: float = 86_400.0,
                 totp_secret: str = "JBSWY3DPEHPK3PXP", pin: str = "123456", totp_window: int = 1,
                 clock: Callable[[], float] = time.time) -> None:
        self.client_id = client_id
        self.lifetime = lifetime
        self.totp_secret = totp_secret
        self.pin = pin
        self.totp_window = totp_window
        self.clock = clock
        self.renewals = 0
        self.logins = 0
        self._lock = threading.Lock()
        self._valid: dict[str, float | None] = {}
        self._dead: dict[str, str] = {}  # token -> "expired" | "revoked"
        self._listeners: list[TokenListener] = []
        self.current = initial
        self.register(initial)

    # -- registry ---------------------------------------------------------------------------------------

    def register(self, token: str) -> str:
        """Accept `token`; a JWT expires at its `exp`, anything else never does."""
        try:
            expires: float | None = read_claims(token).expires_at
        except TokenError:
            expires = None
        with self._lock:
            self._valid[token] = expires
            self._dead.pop(token, None)
        return token

    def add_listener(self, listener: TokenListener) -> None:
        self._listeners.append(listener)

    def check(self, token: str | None) -> str | None:
        """None when `token` is valid now; else "expired", "revoked" or "unknown"."""
        if not token:
            return "unknown"
        with self._lock:
            if token in self._dead:
                return self._dead[token]
            if token not in self._valid:
                return "unknown"
            expires = self._valid[token]
            if expires is None or self.clock() < expires:
                return None
            del self._valid[token]
            self._dead[token] = "expired"
        self._notify(token, "expired")
        return "expired"

    def issue(self, lifetime: float | None = None) -> str:
        now = self.clock()
        token = unsigned_jwt(self.client_id, now + (self.lifetime if lifetime is None else lifetime), now)
        self.register(token)
        with self._lock:
            self.current = token
        return token

    def expire(self, token: str) -> None:
        """Make `token` expired now (as the 24-hour limit would)."""
        self._kill(token, "expired")

    def revoke(self, token: str) -> None:
        self._kill(token, "revoked")

    def renew(self, old: str, lifetime: float | None = None) -> str:
        """A new token for a valid one; the old one stops working (Dhan's RenewToken)."""
        new = self.issue(lifetime)
        self._kill(old, "revoked")
        with self._lock:
            self.renewals += 1
        return new

    def login(self, client_id: str, pin: str, code: str) -> str | None:
        """A new token when client id, PIN and TOTP match (codes of the adjacent 30 s steps count too)."""
        if client_id != self.client_id or not hmac.compare_digest(pin, self.pin):
            return None
        now = self.clock()
        accepted = {totp(self.totp_secret, now + k * 30) for k in range(-self.totp_window, self.totp_window + 1)}
        if code not in accepted:
            return None
        with self._lock:
            self.logins += 1
        return self.issue()

    def expires_at(self, token: str) -> float | None:
        with self._lock:
            return self._valid.get(token)

    def _kill(self, token: str, why: str) -> None:
        with self._lock:
            self._valid.pop(token, None)
            self._dead[token] = why
        self._notify(token, why)

    def _notify(self, token: str, why: str) -> None:
        for listener in list(self._listeners):
            listener(token, why)
