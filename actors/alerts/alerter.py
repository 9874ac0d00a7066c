"""The alerts actor: takes the decisions the log handler made (core.alerts), throttles them, sends each to
every channel, retries within bounds. Its own thread does the HTTP: a slow or dead channel delays only
alerts, never the code that logged the line (the handler only enqueues, see handler.py).

Retries: a retryable failure is sent again after `retry_initial_seconds` × 2^(attempt-1) (at most 60 s,
at least what a 429 asked for), up to `max_attempts` sends per alert and channel, scheduled on the
scheduler (the actor never sleeps). Everything is counted in `AlertCounters` (`/v1/status` → `alerts`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from actors.alerts.channels import Channel, ChannelError
from actors.alerts.queue import AlertCounters, AlertQueue
from actors.clock import Clock
from core.alerts import Alert, AlertThrottle, Delayed, Resolved, Verdict
from supervision.actor import SupervisedActor, tell_quietly
from supervision.scheduler import Scheduler, Timer
from supervision.store import Store
from supervision.supervisor import ChildLink

__all__ = ["Alerter", "AlerterOptions"]

MAX_RETRY_DELAY = 60.0


@dataclass(frozen=True)
class AlerterOptions:
    dedup_seconds: float
    max_per_minute: int
    max_attempts: int
    retry_initial_seconds: float
    origin: dict[str, Any]  # role, pid, host: who is talking


@dataclass(frozen=True)
class _Retry:
    alert: Alert
    channel: int  # index into the channels
    attempt: int


@dataclass(frozen=True)
class _Due:
    key: str


class Alerter(SupervisedActor):
    def __init__(self, link: ChildLink | None, channels: list[Channel], options: AlerterOptions, queue: AlertQueue,
                 counters: Store[AlertCounters], clock: Clock, scheduler: Scheduler) -> None:
        super().__init__(link)
        self.channels = channels
        self.options = options
        self.queue = queue
        self.counters = counters
        self.clock = clock
        self.scheduler = scheduler
        self.throttle = AlertThrottle(options.dedup_seconds, options.max_per_minute)
        self.delayed: dict[str, tuple[Delayed, Timer]] = {}

    def started(self) -> None:
        self.log.event("ALERTS_STARTED", f"alerts to {', '.join(c.name for c in self.channels)}",
                       channels=[c.name for c in self.channels])

    def release(self) -> None:
        for _, timer in self.delayed.values():
            timer.cancel()
        self.delayed.clear()

    def receive(self, message: Any) -> Any:
        if isinstance(message, Alert | Delayed | Resolved):
            self.queue.done()
            if isinstance(message, Alert):
                self._raise(message)
            elif isinstance(message, Delayed):
                self._delay(message)
            else:
                self._resolve(message)
        elif isinstance(message, _Retry):
            self._send(message.alert, message.channel, message.attempt)
        elif isinstance(message, _Due):
            pending = self.delayed.pop(message.key, None)
            if pending is not None:
                self._raise(pending[0].alert)
        else:
            return super().receive(message)
        return None

    # -- decisions ------------------------------------------------------------------------------------------
    def _raise(self, alert: Alert) -> None:
        verdict = self.throttle.admit(alert, self.clock.monotonic())
        if verdict == Verdict.DUPLICATE:
            self.counters.bump("duplicates")
            return
        if verdict == Verdict.RATE_LIMITED:
            self.counters.bump("rate_limited")
            self.log.event("ALERT_RATE_LIMITED", f"{alert.kind}: {alert.title} (held back)", level=30,
                           alert=alert.kind, incident_id=alert.key)
            return
        self.counters.bump("raised")
        alert = replace(alert, suppressed=self.throttle.take_suppressed())
        for index in range(len(self.channels)):
            self._send(alert, index, 1)

    def _delay(self, delayed: Delayed) -> None:
        key = delayed.alert.key
        if key in self.delayed:
            return  # the same outage again (a retry's line): the first one's clock runs
        ref = self.actor_ref
        timer = self.scheduler.call_later(delayed.after, lambda: tell_quietly(ref, _Due(key)))
        self.delayed[key] = (delayed, timer)
        self.counters.update(lambda c: replace(c, delayed=len(self.delayed)))

    def _resolve(self, resolved: Resolved) -> None:
        for key, (pending, timer) in list(self.delayed.items()):
            alert = pending.alert
            if alert.kind == resolved.kind and (resolved.subject in ("*", alert.subject)):
                timer.cancel()
                del self.delayed[key]
        self.counters.update(lambda c: replace(c, delayed=len(self.delayed)))
        self.throttle.resolve(resolved)

    # -- sending --------------------------------------------------------------------------------------------
    def _send(self, alert: Alert, index: int, attempt: int) -> None:
        channel = self.channels[index]
        try:
            channel.send(alert, self.options.origin)
        except (ChannelError, OSError, ValueError) as exc:  # OSError: a socket failure the channel let through
            retryable = exc.retryable if isinstance(exc, ChannelError) else True
            error = f"{channel.name}: {exc}"[:300]
            self.counters.update(lambda c: replace(c, failures=c.failures + 1, last_error=error))
            if retryable and attempt < self.options.max_attempts:
                delay = min(MAX_RETRY_DELAY, self.options.retry_initial_seconds * 2 ** (attempt - 1))
                delay = max(delay, exc.retry_after if isinstance(exc, ChannelError) else 0.0)
                self.log.event("ALERT_RETRY", f"{channel.name}: {alert.title}: {exc}; retry {attempt + 1} in "
                               f"{delay:.1f} s", level=30, channel=channel.name, alert=alert.kind,
                               incident_id=alert.key, attempt=attempt)
                ref = self.actor_ref
                retry = _Retry(alert, index, attempt + 1)
                self.scheduler.call_later(delay, lambda: tell_quietly(ref, retry))
                return
            self.counters.bump("given_up")
            self.log.event("ALERT_FAILED", f"{channel.name}: {alert.title}: {exc}; gave up after {attempt} "
                           "attempts", level=40, channel=channel.name, alert=alert.kind, incident_id=alert.key,
                           attempt=attempt)
            return
        now = self.clock.now()
        self.counters.update(lambda c: replace(c, sent=c.sent + 1, last_sent_at=now))
        self.log.event("ALERT_SENT", f"{channel.name}: {alert.title}", channel=channel.name, alert=alert.kind,
                       incident_id=alert.key, attempt=attempt)
