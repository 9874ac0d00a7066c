"""What the operator is told, as pure logic: which log lines raise an alert, and which alerts go out.

`decide(line, at, rules)` reads one log line (its fields as a mapping: `event`, `message`, context) and
returns an `Alert` to send now, a `Delayed` alert (sent after a while unless resolved meanwhile: a
database outage longer than N s), a `Resolved` (the incident ended: a later one of the same subject is
alerted again), or None. `AlertThrottle` decides which alerts go out: one per incident (its
`incident_id`, else kind and subject) within `dedup_seconds`, at most `max_per_minute`, the rest counted
and announced with the next alert that goes out. Times are passed in; nothing here reads a clock.

Alerted (each kind can be switched off by `alerts.kinds`):

| kind | lines | ends with |
|---|---|---|
| KILL_SWITCH | KILL_SWITCH_ENGAGED | KILL_SWITCH_RELEASED |
| LOSS_LIMIT_HALT | TRADING_HALTED | TRADING_RESUMED, RISK_SESSION_ROLLED |
| RECONCILE_INCIDENT | RECONCILE_INCIDENT | RECONCILE_ACKNOWLEDGED |
| ESCALATION | SUPERVISOR_ESCALATED (the root's: the process exits 1 for supervisord to restart it) | - |
| TOKEN | TOKEN_EXPIRING, TOKEN_EXPIRED, BROKER_AUTH_EXPIRED | TOKEN_RENEWED, TOKEN_RELOADED, BROKER_AUTH_RESTORED, BROKER_AUTH_OK |
| EXIT_RETRIES | an exit's N-th order (journal EXIT_SIGNAL) or N-th submit attempt (ORDER_SUBMIT_DEFERRED / FAILED, leg EXIT), OPERATOR_ALERT | TRADE_CLOSED |
| FEED_STALE | FEED_STALE inside the market session | FEED_RESUMED |
| DATABASE_OUTAGE | STORAGE_UNAVAILABLE still unresolved after N s | STORAGE_RECOVERED, STORAGE_AVAILABLE |
| FLATTEN_DONE | FLATTEN_DONE (every position of a flatten ended) | - |
| TRADE_OWNERSHIP | PROJECTION_WRITE_FAILED (a trade's row refused), LEASE_LOST, TRADES_ADOPTED (another process's trades) | PROJECTION_RECOVERED |
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ALERT_EVENTS",
    "Alert",
    "AlertRules",
    "AlertThrottle",
    "Decision",
    "Delayed",
    "Resolved",
    "Verdict",
    "decide",
]

CRITICAL, WARNING, INFO = "critical", "warning", "info"
ANY = "*"  # a Resolved for every subject of its kind


@dataclass(frozen=True)
class Alert:
    kind: str
    subject: str  # what it is about: a symbol, a pos_id, "database", an actor
    title: str
    text: str
    severity: str
    at: float  # when the line that raised it was written (epoch seconds)
    incident_id: str = ""
    fields: dict[str, Any] = field(default_factory=dict)  # the line's ids: pos_id, symbol, correlation_id, ...
    suppressed: int = 0  # alerts the rate limit held back before this one

    @property
    def key(self) -> str:
        """One alert per key: the incident's id, else its kind and subject."""
        return self.incident_id or f"{self.kind}:{self.subject}"


@dataclass(frozen=True)
class Delayed:
    """Send `alert` after `after` seconds unless a Resolved of its kind and subject comes first."""

    alert: Alert
    after: float


@dataclass(frozen=True)
class Resolved:
    kind: str
    subject: str  # ANY: every subject of the kind
    incident_id: str = ""


Decision = Alert | Delayed | Resolved


@dataclass(frozen=True)
class AlertRules:
    kinds: frozenset[str]
    exit_attempts: int = 2
    database_outage_seconds: float = 30.0
    in_session: Callable[[float], bool] = lambda at: True


_IDS = ("pos_id", "symbol", "correlation_id", "order_id", "actor", "code", "reason", "role", "pid")


def _alert(line: Mapping[str, Any], at: float, kind: str, subject: str, title: str, text: str,
           severity: str, *, per_occurrence: bool = False) -> Alert:
    incident = str(line.get("incident_id") or "")
    if not incident and per_occurrence:  # no incident id: every occurrence is its own incident
        incident = f"{kind.lower()}@{at:.3f}:{subject}"
    return Alert(kind, subject, title, text, severity, at, incident,
                 {k: line[k] for k in _IDS if line.get(k) not in (None, "")})


def _exit_order_index(correlation_id: str) -> int:
    """The exit order's index from its correlation id (`...-X` is 0, `...-X2` is 2); -1 if not an exit."""
    _, _, suffix = correlation_id.rpartition("-")
    if not suffix.startswith("X"):
        return -1
    return int(suffix[1:]) if suffix[1:].isdigit() else 0


def _exit_retries(line: Mapping[str, Any], at: float, event: str, rules: AlertRules) -> Decision | None:
    pos_id = str(line.get("pos_id") or "")
    if not pos_id:
        return None
    if event == "OPERATOR_ALERT":
        return _alert(line, at, "EXIT_RETRIES", pos_id, f"Exit of {pos_id} needs an operator",
                      str(line.get("message", "")), CRITICAL)
    if event == "TRADE_CLOSED":
        return Resolved("EXIT_RETRIES", pos_id)
    if event == "EXIT_SIGNAL" and "to_state" in line:  # the journal's: one per exit order
        orders = _exit_order_index(str(line.get("correlation_id", ""))) + 1
        if orders >= rules.exit_attempts:
            return _alert(line, at, "EXIT_RETRIES", pos_id, f"Exit of {pos_id}: order {orders}",
                          f"{line.get('reason', '')}; the previous exit orders did not close the position",
                          WARNING)
        return None
    if str(line.get("leg", "")) != "EXIT":
        return None
    attempt = line.get("attempt")
    attempts = attempt if isinstance(attempt, int) else 0
    if event == "ORDER_SUBMIT_FAILED" or attempts >= rules.exit_attempts:
        return _alert(line, at, "EXIT_RETRIES", pos_id, f"Exit of {pos_id} retrying (attempt {attempts})",
                      str(line.get("message", "")), CRITICAL if event == "ORDER_SUBMIT_FAILED" else WARNING)
    return None


def decide(line: Mapping[str, Any], at: float, rules: AlertRules) -> Decision | None:
    """What one log line means to the operator (see the module docstring)."""
    event = str(line.get("event", ""))
    kind = _KIND_OF.get(event)
    if kind is None or kind not in rules.kinds:
        return None
    message = str(line.get("message", ""))
    reason = str(line.get("reason") or message)
    if event == "KILL_SWITCH_ENGAGED":
        return _alert(line, at, kind, "kill switch", "Kill switch engaged: no new entries",
                      reason, CRITICAL)
    if event == "KILL_SWITCH_RELEASED":
        return Resolved(kind, "kill switch", str(line.get("incident_id") or ""))
    if event == "TRADING_HALTED":
        return _alert(line, at, kind, "halt", f"Trading halted: {line.get('code') or 'loss limit'}", reason,
                      CRITICAL)
    if event in ("TRADING_RESUMED", "RISK_SESSION_ROLLED"):
        return Resolved(kind, "halt")
    if event == "RECONCILE_INCIDENT":
        subject = f"{line.get('kind', 'DIFFERENCE')}:{line.get('pos_id') or line.get('symbol') or '?'}"
        return _alert(line, at, kind, subject, f"Reconciliation incident: {line.get('kind', 'difference')}",
                      f"{message}; new entries are held until an operator acknowledges it", CRITICAL)
    if event == "RECONCILE_ACKNOWLEDGED":
        return Resolved(kind, ANY)
    if event == "SUPERVISOR_ESCALATED":
        actor = str(line.get("actor") or "root")
        title = ("mybot exits 1 (escalation): supervisord restarts it" if actor == "root"
                 else f"Escalation: the {actor} supervisor gave up and is restarted")
        return _alert(line, at, kind, actor, title, reason, CRITICAL, per_occurrence=True)
    if event == "TOKEN_EXPIRING":
        return _alert(line, at, kind, "expiring", "Dhan token expires soon", message, WARNING)
    if event in ("TOKEN_EXPIRED", "BROKER_AUTH_EXPIRED"):
        return _alert(line, at, kind, "expired", "Dhan token expired: the broker refuses orders", message,
                      CRITICAL)
    if kind == "TOKEN":
        return Resolved(kind, ANY)
    if kind == "EXIT_RETRIES":
        return _exit_retries(line, at, event, rules)
    if event == "FEED_STALE":
        if not rules.in_session(at):
            return None
        symbol = str(line.get("symbol") or ANY)
        return _alert(line, at, kind, symbol, f"Feed stale: {symbol}",
                      f"{message}; no entries on {symbol} while it is stale", WARNING)
    if event == "FEED_RESUMED":
        return Resolved(kind, str(line.get("symbol") or ANY), str(line.get("incident_id") or ""))
    if event == "STORAGE_UNAVAILABLE":
        seconds = rules.database_outage_seconds
        alert = _alert(line, at, kind, "database", f"Database down for more than {seconds:g} s",
                       f"{message}; {line.get('detail', '')}".rstrip("; "), CRITICAL)
        return Delayed(alert, seconds)
    if event in ("STORAGE_RECOVERED", "STORAGE_AVAILABLE"):
        return Resolved(kind, "database", str(line.get("incident_id") or ""))
    if event == "PROJECTION_WRITE_FAILED":
        return _alert(line, at, kind, str(line.get("pos_id") or "?"), "A trade's row is refused by the database",
                      f"{message}; the journal holds every step: check the database log", CRITICAL)
    if event == "PROJECTION_RECOVERED":
        return Resolved(kind, str(line.get("pos_id") or ANY))
    if event == "LEASE_LOST":
        return _alert(line, at, kind, str(line.get("pos_id") or "?"), "Another process took over a trade",
                      f"{message}; this process stopped managing it", CRITICAL, per_occurrence=True)
    if event == "TRADES_ADOPTED":
        return _alert(line, at, kind, "adopted", "Trades of a silent process adopted",
                      f"{message}: {', '.join(map(str, line.get('adopted') or []))}", WARNING, per_occurrence=True)
    if event == "FLATTEN_DONE":
        return _alert(line, at, kind, "flatten", "Flatten done: no open position", reason, INFO,
                      per_occurrence=True)
    return None


_KIND_OF: dict[str, str] = {
    "KILL_SWITCH_ENGAGED": "KILL_SWITCH", "KILL_SWITCH_RELEASED": "KILL_SWITCH",
    "TRADING_HALTED": "LOSS_LIMIT_HALT", "TRADING_RESUMED": "LOSS_LIMIT_HALT",
    "RISK_SESSION_ROLLED": "LOSS_LIMIT_HALT",
    "RECONCILE_INCIDENT": "RECONCILE_INCIDENT", "RECONCILE_ACKNOWLEDGED": "RECONCILE_INCIDENT",
    "SUPERVISOR_ESCALATED": "ESCALATION",
    "TOKEN_EXPIRING": "TOKEN", "TOKEN_EXPIRED": "TOKEN", "BROKER_AUTH_EXPIRED": "TOKEN",
    "TOKEN_RENEWED": "TOKEN", "TOKEN_RELOADED": "TOKEN", "BROKER_AUTH_RESTORED": "TOKEN", "BROKER_AUTH_OK": "TOKEN",
    "OPERATOR_ALERT": "EXIT_RETRIES", "ORDER_SUBMIT_DEFERRED": "EXIT_RETRIES", "ORDER_SUBMIT_FAILED": "EXIT_RETRIES",
    "EXIT_SIGNAL": "EXIT_RETRIES", "TRADE_CLOSED": "EXIT_RETRIES",
    "FEED_STALE": "FEED_STALE", "FEED_RESUMED": "FEED_STALE",
    "STORAGE_UNAVAILABLE": "DATABASE_OUTAGE", "STORAGE_RECOVERED": "DATABASE_OUTAGE",
    "STORAGE_AVAILABLE": "DATABASE_OUTAGE",
    "FLATTEN_DONE": "FLATTEN_DONE",
    "PROJECTION_WRITE_FAILED": "TRADE_OWNERSHIP", "PROJECTION_RECOVERED": "TRADE_OWNERSHIP",
    "LEASE_LOST": "TRADE_OWNERSHIP", "TRADES_ADOPTED": "TRADE_OWNERSHIP",
}
ALERT_EVENTS = frozenset(_KIND_OF)  # a log handler looks at these lines only


class Verdict:
    SEND = "send"
    DUPLICATE = "duplicate"
    RATE_LIMITED = "rate_limited"


class AlertThrottle:
    """One alert per incident within `dedup_seconds`; at most `max_per_minute` sent in any 60 s."""

    MAX_KEYS = 10_000

    def __init__(self, dedup_seconds: float, max_per_minute: int) -> None:
        self.dedup_seconds = dedup_seconds
        self.max_per_minute = max_per_minute
        self._seen: OrderedDict[str, tuple[str, str, float]] = OrderedDict()  # key -> (kind, subject, when)
        self._sent: deque[float] = deque()
        self.suppressed = 0  # held back by the rate limit since the last alert that went out

    def admit(self, alert: Alert, now: float) -> str:
        """SEND (and remember it), DUPLICATE (this incident was alerted) or RATE_LIMITED (counted)."""
        self._expire(now)
        if alert.key in self._seen:
            return Verdict.DUPLICATE
        while self._sent and now - self._sent[0] >= 60.0:
            self._sent.popleft()
        if len(self._sent) >= self.max_per_minute:
            self.suppressed += 1
            self._remember(alert, now)  # not re-sent later as new: the count says it happened
            return Verdict.RATE_LIMITED
        self._sent.append(now)
        self._remember(alert, now)
        return Verdict.SEND

    def take_suppressed(self) -> int:
        count, self.suppressed = self.suppressed, 0
        return count

    def resolve(self, resolved: Resolved) -> int:
        """The incident ended: a later one with the same kind and subject is alerted again. How many keys."""
        gone = [key for key, (kind, subject, _) in self._seen.items()
                if kind == resolved.kind and (resolved.subject == ANY or subject == resolved.subject
                                              or (resolved.incident_id and key == resolved.incident_id))]
        for key in gone:
            del self._seen[key]
        return len(gone)

    def _remember(self, alert: Alert, now: float) -> None:
        self._seen[alert.key] = (alert.kind, alert.subject, now)
        self._seen.move_to_end(alert.key)
        while len(self._seen) > self.MAX_KEYS:
            self._seen.popitem(last=False)

    def _expire(self, now: float) -> None:
        while self._seen:
            key, (_, _, when) = next(iter(self._seen.items()))
            if now - when < self.dedup_seconds:
                break
            del self._seen[key]
