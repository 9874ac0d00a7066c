"""Pure rules for what must not leak and who may read: URL passwords, loopback addresses, the read rule.

Passwords hide in connection URLs in two places: the userinfo (`postgresql://user:pw@host/db`,
`redis://:pw@host`) and the query string (`?password=pw`, `?sslpassword=pw`; libpq and redis-py both
accept them there). `mask_url` replaces both with `***` for display; `url_passwords` returns them (raw and
percent-decoded) so the log redaction can learn them. The rules err towards masking too much: an odd URL
may lose its host from the display, never leak its password.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import unquote

__all__ = [
    "MIN_CONTROL_TOKEN_CHARS",
    "READS_REQUIRE_TOKEN_CHOICES",
    "is_loopback_host",
    "mask_url",
    "reads_require_token",
    "url_passwords",
]

MIN_CONTROL_TOKEN_CHARS = 16
READS_REQUIRE_TOKEN_CHOICES = ("auto", "true", "false")

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# A query parameter whose name says it carries a credential (password, sslpassword, passwd, pwd, secret,
# token, ...): its value is masked whatever the scheme.
_SECRET_KEY = re.compile(r"pass|pwd|secret|token", re.IGNORECASE)
_QUERY_PAIR = re.compile(r"(?P<key>[^&;=#]*)=(?P<value>[^&;#]*)")


def _split(url: str) -> tuple[str, str, str, str] | None:
    """(scheme://, userinfo, rest of the authority and path, ?query#fragment); None when not a URL."""
    head = _SCHEME.match(url)
    if head is None:
        return None
    scheme, tail = head.group(0), url[head.end():]
    query_at = tail.find("?")
    before_query = tail if query_at < 0 else tail[:query_at]
    query = "" if query_at < 0 else tail[query_at:]
    # The userinfo ends at the LAST "@" before the query: an unencoded "@" or "/" inside a password then
    # masks more of the URL rather than leaking the password's tail.
    at = before_query.rfind("@")
    if at < 0:
        return scheme, "", before_query, query
    return scheme, before_query[:at], before_query[at:], query


def url_passwords(url: str) -> list[str]:
    """Every password the URL carries, as written and percent-decoded (the forms a log line could show)."""
    parts = _split(url)
    if parts is None:
        return []
    _, userinfo, _, query = parts
    found: list[str] = []
    if ":" in userinfo:
        found.append(userinfo.split(":", 1)[1])
    for pair in _QUERY_PAIR.finditer(query.lstrip("?").split("#", 1)[0]):
        if _SECRET_KEY.search(unquote(pair.group("key"))):
            found.append(pair.group("value"))
    forms: dict[str, None] = {}
    for value in found:
        for form in (value, unquote(value)):
            if form:
                forms[form] = None
    return list(forms)


def mask_url(url: str) -> str:
    """The URL with its passwords replaced by `***` (userinfo password and credential query parameters)."""
    parts = _split(url)
    if parts is None:
        return url
    scheme, userinfo, rest, query = parts
    if ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"

    def masked(pair: re.Match[str]) -> str:
        if _SECRET_KEY.search(unquote(pair.group("key"))):
            return f"{pair.group('key')}=***"
        return pair.group(0)

    return scheme + userinfo + rest + _QUERY_PAIR.sub(masked, query)


def is_loopback_host(host: str) -> bool:
    """True only for addresses that other hosts cannot reach: 127.0.0.0/8, ::1 and `localhost`."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name or an empty string (all interfaces): treat as reachable from outside


def reads_require_token(rule: str, control_host: str) -> bool:
    """Whether the control port's reads (positions, trades, risk, status) need the bearer token.

    `true`: always. `auto` (the default): unless the control port binds a loopback address. `false`: never;
    the configuration refuses it with a non-loopback control host, so reads are never open to the network.
    """
    if rule == "true":
        return True
    if rule == "false":
        return False
    return not is_loopback_host(control_host)
