"""What a Dhan access token says about itself: its expiry and client id, read WITHOUT verifying it.

A Dhan access token is a JWT (`header.payload.signature`, each base64url without padding) whose payload
carries `exp` (epoch seconds) and `dhanClientId` (dhan-api.md §6). We only need to know when to renew
it and whether it belongs to the configured client; Dhan checks the signature on every call, so we
neither can nor need to. Nothing here proves a token genuine: never use it to decide trust.

Also pure, for the token keeper (actors/dhan/token_keeper.py): `token_phase` says where a token stands in
its life (valid, expiring: warn, renew due, expired), and `totp_code` computes the RFC 6238 code Dhan's
PIN + TOTP login wants (HMAC-SHA1, 30-second steps, 6 digits, base32 secret: what authenticator apps use).

Pure: `now` is a parameter. Errors never echo the token itself (it is a secret), only what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

__all__ = ["TokenClaims", "TokenError", "TokenPhase", "read_claims", "seconds_to_expiry", "token_phase",
           "totp_code"]


class TokenError(ValueError):
    """The token is not a readable JWT, or lacks a usable `exp`."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """`expires_at` is epoch seconds; `client_id` is "" when the token does not name one."""

    expires_at: float
    client_id: str
    issued_at: float | None = None

    def seconds_left(self, now: float) -> float:
        """Seconds until expiry (negative once expired)."""
        return self.expires_at - now

    def is_expired(self, now: float) -> bool:
        return now >= self.expires_at


def _segment(text: str, what: str) -> Any:
    padded = text + "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise TokenError(f"the token's {what} is not base64url") from None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise TokenError(f"the token's {what} is not JSON") from None


def _epoch(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TokenError(f"the token's {name!r} is not a number of epoch seconds")
    return float(value)


def read_claims(token: str) -> TokenClaims:
    """The expiry and client id of a Dhan JWT; TokenError saying what is malformed."""
    if not isinstance(token, str) or not token.strip():
        raise TokenError("the token is empty")
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise TokenError(f"the token is not a JWT (expected 3 dot-separated parts, found {len(parts)})")
    header = _segment(parts[0], "header")
    if not isinstance(header, dict):
        raise TokenError("the token's header is not a JSON object")
    payload = _segment(parts[1], "payload")
    if not isinstance(payload, dict):
        raise TokenError("the token's payload is not a JSON object")
    if "exp" not in payload:
        raise TokenError("the token has no 'exp' (expiry) claim")
    expires_at = _epoch(payload["exp"], "exp")
    issued_at = _epoch(payload["iat"], "iat") if "iat" in payload else None
    client = payload.get("dhanClientId", "")
    return TokenClaims(expires_at=expires_at, client_id=str(client) if client is not None else "",
                       issued_at=issued_at)


def seconds_to_expiry(token: str, now: float) -> float:
    """Seconds from `now` until the token expires (negative once it has)."""
    return read_claims(token).seconds_left(now)


class TokenPhase:
    """Where a token stands (token_phase); plain strings, for logs and status."""

    VALID = "valid"  # nothing to do
    EXPIRING = "expiring"  # within the warning lead: log TOKEN_EXPIRING once
    RENEW_DUE = "renew_due"  # within the renewal lead (and the warning's): renew now
    EXPIRED = "expired"  # past `exp`: only a fresh login (TOTP) or an operator helps
    UNKNOWN = "unknown"  # not a readable JWT: its expiry is unknown (a rejection still tells)


def token_phase(claims: TokenClaims | None, now: float, *, warn_before: float, renew_before: float) -> str:
    """The phase of a token whose claims are `claims` (None: unreadable) at `now`."""
    if claims is None:
        return TokenPhase.UNKNOWN
    left = claims.seconds_left(now)
    if left <= 0:
        return TokenPhase.EXPIRED
    if left <= renew_before:
        return TokenPhase.RENEW_DUE
    if left <= warn_before:
        return TokenPhase.EXPIRING
    return TokenPhase.VALID


def totp_code(secret_b32: str, at: float, *, step: int = 30, digits: int = 6) -> str:
    """RFC 6238 TOTP for a base32 secret at epoch `at` (spaces and lower case in the secret are accepted)."""
    cleaned = "".join(secret_b32.split()).upper()
    if not cleaned:
        raise TokenError("the TOTP secret is empty")
    try:
        key = base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))
    except (binascii.Error, ValueError):
        raise TokenError("the TOTP secret is not base32") from None
    digest = hmac.new(key, struct.pack(">Q", int(at // step)), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    code = (struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF) % (10 ** digits)
    return str(code).zfill(digits)
