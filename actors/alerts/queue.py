"""The bound between the code that logs and the alerts actor, and the counters an operator reads."""

from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ["AlertCounters", "AlertQueue"]


@dataclass(frozen=True)
class AlertCounters:
    raised: int = 0  # alerts that went out to the channels (one per incident)
    sent: int = 0  # successful sends (an alert to two channels counts two)
    failures: int = 0  # failed sends, retries included
    given_up: int = 0  # sends abandoned after max_attempts or a permanent refusal
    dropped: int = 0  # decisions not queued: the queue was full (or the actor stopped)
    duplicates: int = 0  # alerts for an incident already alerted
    rate_limited: int = 0  # held back by max_per_minute (announced with the next alert)
    handler_errors: int = 0  # log lines the handler could not read (never raised to the logging code)
    delayed: int = 0  # alerts waiting to see whether their incident lasts (database outage)
    last_error: str = ""
    last_sent_at: float = 0.0


class AlertQueue:
    """How many decisions wait in the alerts actor's mailbox: `offer` refuses past `size` (never blocks)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._waiting = 0

    def offer(self) -> bool:
        with self._lock:
            if self._waiting >= self.size:
                return False
            self._waiting += 1
            return True

    def done(self) -> None:
        with self._lock:
            self._waiting = max(0, self._waiting - 1)

    @property
    def waiting(self) -> int:
        return self._waiting
