"""Which log lines raise alerts, and which alerts go out (core.alerts): pure, no threads."""

from __future__ import annotations

from typing import Any

import pytest

from config.settings import ALERT_KINDS
from core.alerts import ALERT_EVENTS, Alert, AlertRules, AlertThrottle, Delayed, Resolved, Verdict, decide

RULES = AlertRules(kinds=frozenset(ALERT_KINDS), exit_attempts=2, database_outage_seconds=30.0,
                   in_session=lambda at: at >= 1000.0)


def line(event: str, **fields: Any) -> dict[str, Any]:
    return {"event": event, "message": fields.pop("message", event.lower()), **fields}


@pytest.mark.parametrize(("entry", "kind", "subject", "severity"), [
    (line("KILL_SWITCH_ENGAGED", reason="operator: news", incident_id="kill-switch-1"), "KILL_SWITCH",
     "kill switch", "critical"),
    (line("TRADING_HALTED", code="DAILY_MAX_LOSS", reason="lost 5000"), "LOSS_LIMIT_HALT", "halt", "critical"),
    (line("RECONCILE_INCIDENT", kind="BROKER_POSITION_WITHOUT_TRADE", symbol="SEC_1"), "RECONCILE_INCIDENT",
     "BROKER_POSITION_WITHOUT_TRADE:SEC_1", "critical"),
    (line("SUPERVISOR_ESCALATED", actor="root", reason="trading gave up"), "ESCALATION", "root", "critical"),
    (line("TOKEN_EXPIRING", message="Dhan token expires in 2.0 h"), "TOKEN", "expiring", "warning"),
    (line("BROKER_AUTH_EXPIRED"), "TOKEN", "expired", "critical"),
    (line("OPERATOR_ALERT", pos_id="P-1"), "EXIT_RETRIES", "P-1", "critical"),
    (line("ORDER_SUBMIT_DEFERRED", pos_id="P-1", leg="EXIT", attempt=2), "EXIT_RETRIES", "P-1", "warning"),
    (line("ORDER_SUBMIT_FAILED", pos_id="P-1", leg="EXIT", attempt=1), "EXIT_RETRIES", "P-1", "critical"),
    (line("EXIT_SIGNAL", pos_id="P-1", to_state="EXIT_PENDING", correlation_id="P-1-X1"), "EXIT_RETRIES", "P-1",
     "warning"),
    (line("FEED_STALE", symbol="NIFTY"), "FEED_STALE", "NIFTY", "warning"),
    (line("FLATTEN_DONE", reason="FLATTEN: operator"), "FLATTEN_DONE", "flatten", "info"),
])
def test_each_kind_of_incident_raises_its_alert(entry: dict[str, Any], kind: str, subject: str,
                                                 severity: str) -> None:
    alert = decide(entry, 2000.0, RULES)
    assert isinstance(alert, Alert)
    assert (alert.kind, alert.subject, alert.severity) == (kind, subject, severity)
    assert alert.title and alert.at == 2000.0 and entry["event"] in ALERT_EVENTS


@pytest.mark.parametrize("entry", [
    line("ORDER_SUBMIT_DEFERRED", pos_id="P-1", leg="EXIT", attempt=1),  # below exit_attempts
    line("ORDER_SUBMIT_DEFERRED", pos_id="P-1", leg="ENTRY", attempt=5),  # an entry is not an exit
    line("EXIT_SIGNAL", pos_id="P-1", to_state="EXIT_PENDING", correlation_id="P-1-X"),  # the first exit order
    line("EXIT_SIGNAL", pos_id="P-1", reason="EXIT_SCORE"),  # the strategy's line, not the journal's
    line("ORDER_FILLED", pos_id="P-1"),
])
def test_routine_lines_raise_nothing(entry: dict[str, Any]) -> None:
    assert decide(entry, 2000.0, RULES) is None


def test_a_stale_feed_outside_the_session_is_not_alerted() -> None:
    assert decide(line("FEED_STALE", symbol="NIFTY"), 999.0, RULES) is None
    assert isinstance(decide(line("FEED_STALE", symbol="NIFTY"), 1000.0, RULES), Alert)


def test_a_database_outage_is_alerted_only_if_it_lasts() -> None:
    delayed = decide(line("STORAGE_UNAVAILABLE", incident_id="database-outage-1", detail="refused"), 5.0, RULES)
    assert isinstance(delayed, Delayed) and delayed.after == 30.0
    assert delayed.alert.kind == "DATABASE_OUTAGE" and delayed.alert.key == "database-outage-1"
    assert decide(line("STORAGE_RECOVERED"), 9.0, RULES) == Resolved("DATABASE_OUTAGE", "database")


def test_kinds_switched_off_raise_nothing() -> None:
    rules = AlertRules(kinds=frozenset({"KILL_SWITCH"}))
    assert decide(line("FLATTEN_DONE"), 1.0, rules) is None
    assert isinstance(decide(line("KILL_SWITCH_ENGAGED"), 1.0, rules), Alert)


def test_ends_of_incidents_resolve_their_kind() -> None:
    assert decide(line("KILL_SWITCH_RELEASED", incident_id="k1"), 1.0, RULES) == Resolved("KILL_SWITCH",
                                                                                          "kill switch", "k1")
    assert decide(line("FEED_RESUMED", symbol="NIFTY"), 1.0, RULES) == Resolved("FEED_STALE", "NIFTY")
    assert decide(line("RECONCILE_ACKNOWLEDGED"), 1.0, RULES) == Resolved("RECONCILE_INCIDENT", "*")
    assert decide(line("TRADE_CLOSED", pos_id="P-1"), 1.0, RULES) == Resolved("EXIT_RETRIES", "P-1")
    assert decide(line("RISK_SESSION_ROLLED"), 1.0, RULES) == Resolved("LOSS_LIMIT_HALT", "halt")


def test_one_alert_per_incident_until_it_ends() -> None:
    throttle = AlertThrottle(dedup_seconds=3600.0, max_per_minute=10)
    stale = decide(line("FEED_STALE", symbol="NIFTY", incident_id="feed-stale-1"), 2000.0, RULES)
    assert isinstance(stale, Alert)
    assert throttle.admit(stale, 0.0) == Verdict.SEND
    assert throttle.admit(stale, 1.0) == Verdict.DUPLICATE  # the same incident's line again
    throttle.resolve(Resolved("FEED_STALE", "NIFTY"))
    again = decide(line("FEED_STALE", symbol="NIFTY", incident_id="feed-stale-2"), 2100.0, RULES)
    assert isinstance(again, Alert) and throttle.admit(again, 2.0) == Verdict.SEND
    assert throttle.admit(again, 3601.0 + 2.0) == Verdict.SEND  # forgotten after dedup_seconds


def test_lines_without_an_incident_id_are_one_incident_per_kind_and_subject() -> None:
    throttle = AlertThrottle(dedup_seconds=3600.0, max_per_minute=10)
    first = decide(line("TOKEN_EXPIRING"), 1.0, RULES)
    second = decide(line("TOKEN_EXPIRING"), 60.0, RULES)
    expired = decide(line("TOKEN_EXPIRED"), 120.0, RULES)
    assert isinstance(first, Alert) and isinstance(second, Alert) and isinstance(expired, Alert)
    assert [throttle.admit(a, t) for a, t in ((first, 0.0), (second, 1.0), (expired, 2.0))] == [
        Verdict.SEND, Verdict.DUPLICATE, Verdict.SEND]


def test_every_escalation_and_every_flatten_is_its_own_incident() -> None:
    throttle = AlertThrottle(dedup_seconds=3600.0, max_per_minute=10)
    one = decide(line("SUPERVISOR_ESCALATED", actor="trading"), 1.0, RULES)
    two = decide(line("SUPERVISOR_ESCALATED", actor="trading"), 50.0, RULES)
    assert isinstance(one, Alert) and isinstance(two, Alert) and one.key != two.key
    assert throttle.admit(one, 0.0) == throttle.admit(two, 1.0) == Verdict.SEND


def test_the_rate_limit_counts_what_it_held_back() -> None:
    throttle = AlertThrottle(dedup_seconds=3600.0, max_per_minute=2)
    alerts = [Alert("KILL_SWITCH", "kill switch", "t", "", "critical", 0.0, f"k{n}") for n in range(4)]
    verdicts = [throttle.admit(alert, 10.0 + n) for n, alert in enumerate(alerts)]
    assert verdicts == [Verdict.SEND, Verdict.SEND, Verdict.RATE_LIMITED, Verdict.RATE_LIMITED]
    assert throttle.take_suppressed() == 2 and throttle.take_suppressed() == 0
    late = Alert("KILL_SWITCH", "kill switch", "t", "", "critical", 0.0, "k9")
    assert throttle.admit(late, 70.5) == Verdict.SEND  # a minute after the first: room again
    assert throttle.admit(alerts[2], 71.0) == Verdict.DUPLICATE  # held back, not re-sent as new


def test_a_token_the_operator_wrote_into_the_file_ends_the_token_incident() -> None:
    assert decide(line("TOKEN_RELOADED"), 1.0, RULES) == Resolved("TOKEN", "*")
