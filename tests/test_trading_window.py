"""Specs for the market calendar in the risk rules: the exchange's hours, narrowed by the risk settings (pure)."""

from __future__ import annotations

from datetime import datetime

import pytest

from core.calendar import MarketCalendar, parse_holidays
from core.market import IST
from core.risk import (
    Denied,
    DenyCode,
    RiskLimits,
    check_entry,
    new_risk_state,
    square_off_due,
    trading_window,
)

CALENDAR = parse_holidays("""\
2026-11-24 Prakash Gurpurb Sri Guru Nanak Dev
2026-11-08 Diwali Laxmi Pujan
2026-11-08 18:00-19:15 Muhurat trading
2026-02-01 09:15-15:30 Union Budget session
""".splitlines())
DEFAULTS = RiskLimits()  # 09:15-15:30, square-off 15:15


def ist(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=IST).timestamp()


def entry(limits: RiskLimits, at: float, calendar: MarketCalendar | None = CALENDAR) -> str:
    decision = check_entry(limits, new_risk_state(at), at, calendar)
    return decision.code if isinstance(decision, Denied) else "ALLOWED"


def test_a_regular_day_with_the_default_settings_is_the_exchange_session_with_square_off_at_1515() -> None:
    window = trading_window(DEFAULTS, CALENDAR, ist(2026, 11, 30, 12))
    assert window is not None and window.name == ""
    assert (window.open, window.close) == (ist(2026, 11, 30, 9, 15), ist(2026, 11, 30, 15, 30))
    assert (window.entries_from, window.entries_until) == (window.open, window.close)
    assert window.square_off_at == ist(2026, 11, 30, 15, 15)


def test_the_risk_settings_narrow_a_regular_day_and_never_widen_it() -> None:
    narrow = RiskLimits(session_start="10:00", session_end="14:00", square_off_time="14:30")
    window = trading_window(narrow, CALENDAR, ist(2026, 11, 30, 12))
    assert window is not None
    assert (window.entries_from, window.entries_until) == (ist(2026, 11, 30, 10), ist(2026, 11, 30, 14))
    assert window.square_off_at == ist(2026, 11, 30, 14, 30)
    wide = RiskLimits(session_start="00:00", session_end="24:00", square_off_time="24:00")
    window = trading_window(wide, CALENDAR, ist(2026, 11, 30, 12))
    assert window is not None
    assert (window.entries_from, window.entries_until, window.square_off_at) == \
        (ist(2026, 11, 30, 9, 15), ist(2026, 11, 30, 15, 30), ist(2026, 11, 30, 15, 30))
    assert entry(wide, ist(2026, 11, 30, 20)) == DenyCode.MARKET_CLOSED  # an all-day risk window: still closed


def test_a_muhurat_session_trades_at_its_own_hours_with_the_same_margins() -> None:
    window = trading_window(DEFAULTS, CALENDAR, ist(2026, 11, 8, 18, 30))
    assert window is not None and window.name == "Muhurat trading"
    assert (window.entries_from, window.entries_until) == (ist(2026, 11, 8, 18), ist(2026, 11, 8, 19, 15))
    assert window.square_off_at == ist(2026, 11, 8, 19, 0)  # 15 minutes before its close, as 15:15 is
    assert window.square_off_text == "19:00 IST (Muhurat trading)"
    assert entry(DEFAULTS, ist(2026, 11, 8, 18, 30)) == "ALLOWED"  # a Sunday and a holiday, yet open
    assert entry(DEFAULTS, ist(2026, 11, 8, 19, 5)) == DenyCode.AFTER_SQUARE_OFF
    assert entry(DEFAULTS, ist(2026, 11, 8, 12, 0)) == DenyCode.MARKET_CLOSED
    assert square_off_due(DEFAULTS, ist(2026, 11, 8, 19, 0), CALENDAR)
    assert not square_off_due(DEFAULTS, ist(2026, 11, 8, 18, 59), CALENDAR)


@pytest.mark.parametrize(("at", "reason"), [
    pytest.param(ist(2026, 11, 24, 11), "market closed: holiday: Prakash Gurpurb Sri Guru Nanak Dev", id="holiday"),
    pytest.param(ist(2026, 11, 29, 11), "market closed: weekend", id="weekend"),
    pytest.param(ist(2026, 11, 30, 16), "market closed: after hours", id="after hours"),
    pytest.param(ist(2026, 11, 30, 9, 0), "market closed: before open", id="before open"),
])
def test_entries_are_denied_when_the_exchange_is_closed_saying_why(at: float, reason: str) -> None:
    decision = check_entry(DEFAULTS, new_risk_state(at), at, CALENDAR)
    assert isinstance(decision, Denied) and (decision.code, decision.reason) == (DenyCode.MARKET_CLOSED, reason)


def test_no_square_off_on_a_day_the_exchange_does_not_trade() -> None:
    assert not square_off_due(DEFAULTS, ist(2026, 11, 24, 15, 20), CALENDAR)
    assert square_off_due(DEFAULTS, ist(2026, 11, 30, 15, 20), CALENDAR)
    assert square_off_due(DEFAULTS, ist(2026, 11, 30, 23, 59), CALENDAR)  # until midnight, as before


def test_without_a_calendar_or_with_it_switched_off_the_risk_settings_alone_make_the_window() -> None:
    all_day = RiskLimits(session_start="00:00", session_end="24:00", square_off_time="24:00")
    sunday_night = ist(2026, 11, 29, 23, 30)
    for calendar in (None, MarketCalendar.always_open()):
        assert entry(all_day, sunday_night, calendar) == "ALLOWED"
        assert not square_off_due(all_day, sunday_night, calendar)
        assert entry(DEFAULTS, ist(2026, 11, 29, 12), calendar) == "ALLOWED"  # a Sunday: no weekends
        decision = check_entry(DEFAULTS, new_risk_state(sunday_night), sunday_night, calendar)
        assert isinstance(decision, Denied) and decision.reason == "outside the session 09:15-15:30 IST"
    assert MarketCalendar.always_open().market_status(sunday_night).reason == "calendar disabled"


def test_an_entry_hold_denies_entries_and_is_read_at_every_check() -> None:
    held: list[Denied] = [Denied(DenyCode.BROKER_AUTH_EXPIRED, "BROKER_AUTH_EXPIRED: the token expired")]
    at = ist(2026, 11, 30, 11)

    def hold() -> Denied | None:
        return held[0] if held else None

    decision = check_entry(DEFAULTS, new_risk_state(at), at, CALENDAR, holds=(hold,))
    assert isinstance(decision, Denied) and decision.code == DenyCode.BROKER_AUTH_EXPIRED
    held.clear()
    assert check_entry(DEFAULTS, new_risk_state(at), at, CALENDAR, holds=(hold,)).allowed
