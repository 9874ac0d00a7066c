"""Falcon middleware that runs before any responder (so before the bearer-token check in a responder).

- `BodyLimit`: a request body over `MAX_BODY_BYTES` (64 KiB) is refused with a JSON 413 before it is read,
  parsed or authenticated. Waitress buffers a chunked body and sets its Content-Length before the app runs
  (and refuses any body of `SERVER_MAX_BODY_BYTES` itself), so the declared length is the whole story.
- `ReadGuard`: on a control port that needs the token for reads, every read but `/v1/health` needs the
  bearer token too (health stays open for supervisors and load balancers; it reveals no trade).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

import falcon

from telemetry.logs import get_logger

__all__ = ["MAX_BODY_BYTES", "OPEN_READ_PATHS", "SERVER_MAX_BODY_BYTES", "BodyLimit", "ReadGuard", "read_guard"]

log = get_logger("mybot.http")

MAX_BODY_BYTES = 64 * 1024
# Waitress's own ceiling (a plain-text 413 before the app sees the request): what a client can make the
# server buffer at all. Between the two limits the app answers the JSON 413.
SERVER_MAX_BODY_BYTES = 1024 * 1024
OPEN_READ_PATHS = frozenset({"/v1/health"})
READ_METHODS = frozenset({"GET", "HEAD"})


class BodyLimit:
    def __init__(self, limit: int = MAX_BODY_BYTES) -> None:
        self.limit = limit

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        length = req.content_length  # a malformed Content-Length is a 400 naming the header
        if length is not None and length > self.limit:
            raise falcon.HTTPContentTooLarge(
                title="request body too large",
                description=f"the body is {length} bytes; at most {self.limit} bytes are accepted")


class ReadGuard:
    """Reads need the bearer token when `required()` says so (checked per request: no restart to change)."""

    def __init__(self, required: Callable[[], bool], token: Callable[[], str]) -> None:
        self.required = required
        self.token = token

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.method not in READ_METHODS or req.path in OPEN_READ_PATHS or not self.required():
            return
        expected = self.token()
        scheme, _, presented = (req.get_header("Authorization") or "").partition(" ")
        if expected and scheme.lower() == "bearer" and hmac.compare_digest(presented.encode(), expected.encode()):
            return  # reads are not state changes: no line per successful read
        log.event("CONTROL_REFUSED", "read without a valid bearer token on a non-loopback control port",
                  level=30, remote=req.remote_addr, user_agent=(req.user_agent or "")[:80], method=req.method,
                  path=req.path)
        raise falcon.HTTPUnauthorized(title="unauthorized",
                                      description="this control port needs a valid bearer token for reads too",
                                      challenges=["Bearer"])


def read_guard(runtime: Any) -> ReadGuard:
    return ReadGuard(runtime.control_reads_require_token, runtime.control_token)
