"""Specs for core.token: a Dhan JWT's expiry and client id, read without verifying the signature."""

from __future__ import annotations

import base64
import json

import pytest

from core.token import TokenClaims, TokenError, read_claims, seconds_to_expiry


def b64(obj: object) -> str:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwt(payload: object, header: object | None = None) -> str:
    return ".".join([b64(header or {"typ": "JWT", "alg": "HS512"}), b64(payload), "c2lnbmF0dXJl"])


def test_the_expiry_and_client_id_are_read_from_the_payload() -> None:
    token = jwt({"iss": "dhan", "partnerId": "", "exp": 1_798_000_000, "iat": 1_797_913_600,
                 "tokenConsumerType": "SELF", "webhookUrl": "", "dhanClientId": "1000000001"})
    assert read_claims(token) == TokenClaims(expires_at=1_798_000_000.0, client_id="1000000001",
                                             issued_at=1_797_913_600.0)
    assert seconds_to_expiry(token, 1_797_996_400) == 3_600.0
    assert seconds_to_expiry(token, 1_798_000_060) == -60.0
    assert read_claims(token).is_expired(1_798_000_000) and not read_claims(token).is_expired(1_797_999_999)


def test_padding_and_surrounding_whitespace_do_not_matter() -> None:
    # payload lengths that need one and two '=' of padding in base64
    for payload in ({"exp": 1}, {"exp": 12}, {"exp": 123}):
        assert read_claims("  " + jwt(payload) + "\n").expires_at == float(payload["exp"])
    assert read_claims(jwt({"exp": 5})).client_id == ""


@pytest.mark.parametrize(("token", "message"), [
    ("", "empty"),
    ("not-a-jwt", "3 dot-separated parts, found 1"),
    ("a.b", "found 2"),
    (f"{b64({'alg': 'none'})}.%%%.sig", "payload is not base64url"),
    (f"{b64({'alg': 'none'})}.{b64(b'not json')}.sig", "payload is not JSON"),
    (f"{b64(b'[]')}.{b64({'exp': 1})}.sig", "header is not a JSON object"),
    (jwt([1, 2]), "payload is not a JSON object"),
    (jwt({"dhanClientId": "1"}), "no 'exp'"),
    (jwt({"exp": "tomorrow"}), "'exp' is not a number"),
    (jwt({"exp": True}), "'exp' is not a number"),
])
def test_a_malformed_token_gets_a_clear_error_that_does_not_echo_it(token: str, message: str) -> None:
    with pytest.raises(TokenError, match=message) as err:
        read_claims(token)
    if len(token) > 8:
        assert token not in str(err.value)
