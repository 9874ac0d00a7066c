"""Rate limits as pure arithmetic: the caller passes `now` (monotonic seconds) and decides whether to wait.

Nothing here sleeps or reads a clock, so an actor can ask "may I send now?" and schedule a retry itself,
while a blocking adapter can sleep for exactly the returned time.
"""

from __future__ import annotations

from collections.abc import Hashable

__all__ = ["RateWindow", "TokenBucket"]


class RateWindow:
    """At most one request per `min_interval` seconds for each key (Dhan's option chain: one unique request
    per 3 s). Keys are whatever the caller chooses: (underlying, segment, expiry), or one global key.

    `acquire` books the slot; `touch` moves the slot's start to when the request really finished, so the
    window is measured from the server's side of the exchange, whatever the network latency was.
    """

    def __init__(self, min_interval: float) -> None:
        if min_interval < 0:
            raise ValueError("min_interval must be >= 0")
        self.min_interval = min_interval
        self._next_allowed: dict[Hashable, float] = {}

    def wait_time(self, key: Hashable, now: float) -> float:
        """Seconds until a request for key may be sent (0.0 = now)."""
        return max(0.0, self._next_allowed.get(key, now) - now)

    def longest_wait(self, now: float) -> float:
        """The longest wait over every key held back now (0.0 = every key may go)."""
        return max(0.0, max(self._next_allowed.values(), default=now) - now)

    def acquire(self, key: Hashable, now: float) -> float:
        """Book the slot and return 0.0 if a request may go now; otherwise book nothing, return the wait."""
        wait = self.wait_time(key, now)
        if wait > 0.0:
            return wait
        self._next_allowed[key] = now + self.min_interval
        self._forget_expired(now)
        return 0.0

    def touch(self, key: Hashable, now: float) -> None:
        """The request for key ended at `now`: the next one may start no earlier than now + min_interval."""
        self._next_allowed[key] = max(self._next_allowed.get(key, now), now + self.min_interval)

    def penalize(self, key: Hashable, now: float, seconds: float) -> None:
        """The server refused (429): hold key back for `seconds` from now (never shortens a hold)."""
        self._next_allowed[key] = max(self._next_allowed.get(key, now), now + seconds)

    def _forget_expired(self, now: float) -> None:
        # Unique keys (expiries) come and go; an expired slot carries no information.
        if len(self._next_allowed) > 64:
            for key in [k for k, t in self._next_allowed.items() if t <= now]:
                del self._next_allowed[key]


class TokenBucket:
    """`rate` tokens per second, holding at most `burst`. In any window of T seconds at most
    burst + rate * T requests pass, so burst=1 keeps a 10/s bucket at 10 per second in every window."""

    def __init__(self, rate: float, burst: float = 1.0, *, now: float = 0.0) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._updated = now

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now

    def acquire(self, now: float, tokens: float = 1.0) -> float:
        """Take tokens and return 0.0, or take nothing and return the seconds until they are available."""
        self._refill(now)
        if self._tokens >= tokens:
            self._tokens -= tokens
            return 0.0
        return (tokens - self._tokens) / self.rate

    def available(self, now: float) -> float:
        self._refill(now)
        return self._tokens
