"""The log handler that turns the daemon's own lines into alerts: no trading code knows about alerts.

Installed on the root logger while the alerts subtree runs. For every line it checks the event name
against `core.alerts.ALERT_EVENTS` (a set lookup: the cost on every other line), reads the few that
match with `core.alerts.decide`, and hands the decision to the alerts actor through a bounded queue:
never blocks, never raises into the code that logged (a full queue or an unreadable line is counted).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from actors.alerts.queue import AlertCounters, AlertQueue
from core.alerts import ALERT_EVENTS, AlertRules, Decision, decide
from supervision.store import Store
from telemetry.logs import record_fields

__all__ = ["AlertLogHandler"]


class AlertLogHandler(logging.Handler):
    def __init__(self, rules: AlertRules, deliver: Callable[[Decision], bool], queue: AlertQueue,
                 counters: Store[AlertCounters]) -> None:
        super().__init__(logging.INFO)
        self.rules = rules
        self.deliver = deliver
        self.queue = queue
        self.counters = counters

    def handle(self, record: logging.LogRecord) -> bool:
        # Skips the handler lock for the lines no alert reads (nearly all of them).
        if getattr(record, "event", None) not in ALERT_EVENTS:
            return False
        return bool(super().handle(record))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = record_fields(record)
            line["event"] = record.event  # type: ignore[attr-defined]
            line["message"] = record.getMessage()
            decision = decide(line, record.created, self.rules)
            if decision is None:
                return
            if not self.queue.offer():
                self.counters.bump("dropped")
                return
            if not self.deliver(decision):
                self.queue.done()
                self.counters.bump("dropped")
        except Exception:  # noqa: BLE001 - a line the alerts cannot read must not break the code that logged it
            self.counters.bump("handler_errors")
