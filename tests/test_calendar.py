"""Specs for core.calendar: NSE trading days, hours, holidays and special sessions (pure, `now` given)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from core.calendar import CalendarError, MarketCalendar, parse_holidays

IST = timezone(timedelta(hours=5, minutes=30))

HOLIDAYS = """\
# a comment
2026-11-10 Diwali-Balipratipada
2026-11-24 Prakash Gurpurb Sri Guru Nanak Dev   # trailing comment
2026-12-25 Christmas

2026-11-08 18:00-19:15 Muhurat trading
2026-11-08 Diwali Laxmi Pujan
2026-02-01 09:15-15:30 Union Budget session
2026-12-31 Year-end
2026-12-31 10:00-12:00 Short session
"""


def ist(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=IST).timestamp()


@pytest.fixture
def calendar() -> MarketCalendar:
    return parse_holidays(HOLIDAYS.splitlines())


def test_weekdays_trade_weekends_and_holidays_do_not(calendar: MarketCalendar) -> None:
    assert calendar.is_trading_day(date(2026, 11, 30))  # Monday
    assert not calendar.is_trading_day("2026-11-29")  # Sunday
    assert not calendar.is_trading_day("2026-11-28")  # Saturday
    assert not calendar.is_trading_day("2026-11-24")  # Guru Nanak Jayanti, a Tuesday
    assert calendar.holiday_name("2026-11-24") == "Prakash Gurpurb Sri Guru Nanak Dev"
    assert calendar.is_trading_day("2026-02-01")  # a Sunday with a special session
    assert calendar.is_trading_day("2026-11-08")  # a holiday with a Muhurat session


def test_sessions_are_0915_to_1530_ist_unless_a_special_session_says_otherwise(calendar: MarketCalendar) -> None:
    assert calendar.session("2026-11-30") == (ist(2026, 11, 30, 9, 15), ist(2026, 11, 30, 15, 30))
    assert calendar.session("2026-11-08") == (ist(2026, 11, 8, 18, 0), ist(2026, 11, 8, 19, 15))
    assert calendar.session("2026-12-31") == (ist(2026, 12, 31, 10, 0), ist(2026, 12, 31, 12, 0))
    assert calendar.session("2026-12-25") is None
    assert calendar.special_session("2026-11-08").name == "Muhurat trading"  # type: ignore[union-attr]


def test_is_open_at_the_edges_of_the_session(calendar: MarketCalendar) -> None:
    assert not calendar.is_open(ist(2026, 11, 30, 9, 14))
    assert calendar.is_open(ist(2026, 11, 30, 9, 15))
    assert calendar.is_open(ist(2026, 11, 30, 15, 29))
    assert not calendar.is_open(ist(2026, 11, 30, 15, 30))
    assert calendar.is_open(ist(2026, 11, 8, 18, 30))
    assert not calendar.is_open(ist(2026, 11, 8, 10, 0))


def test_market_status_says_why_it_is_closed(calendar: MarketCalendar) -> None:
    weekend = calendar.market_status(ist(2026, 11, 29, 11, 0))
    assert (weekend.state, weekend.reason, weekend.next_open) == ("closed", "weekend", ist(2026, 11, 30, 9, 15))
    holiday = calendar.market_status(ist(2026, 11, 24, 11, 0))
    assert (holiday.state, holiday.reason) == ("closed", "holiday: Prakash Gurpurb Sri Guru Nanak Dev")
    assert holiday.next_open == ist(2026, 11, 25, 9, 15)
    evening = calendar.market_status(ist(2026, 11, 30, 20, 0))
    assert (evening.reason, evening.next_open) == ("after hours", ist(2026, 12, 1, 9, 15))
    morning = calendar.market_status(ist(2026, 11, 30, 8, 0))
    assert (morning.reason, morning.next_open) == ("before open", ist(2026, 11, 30, 9, 15))
    muhurat_day = calendar.market_status(ist(2026, 11, 8, 11, 0))
    assert muhurat_day.reason == "before open (Muhurat trading 18:00-19:15)"
    muhurat = calendar.market_status(ist(2026, 11, 8, 18, 5))
    assert (muhurat.state, muhurat.reason, muhurat.is_open) == ("open", "Muhurat trading", True)
    open_now = calendar.market_status(ist(2026, 11, 30, 10, 0))
    assert (open_now.state, open_now.reason, open_now.next_open) == ("open", "session", ist(2026, 11, 30, 9, 15))


def test_next_open_skips_a_holiday_after_a_weekend() -> None:
    calendar = parse_holidays(["2027-01-25 a Monday holiday", "2027-01-26 Republic Day"])
    friday_evening = ist(2027, 1, 22, 16, 0)
    assert calendar.next_open(friday_evening) == ist(2027, 1, 27, 9, 15)
    assert calendar.next_trading_day("2027-01-22") == date(2027, 1, 27)
    assert calendar.previous_trading_day("2027-01-27") == date(2027, 1, 22)


def test_an_expiry_on_a_holiday_moves_to_the_previous_trading_day() -> None:
    # NIFTY's January 2027 monthly falls on the last Tuesday, 26 Jan, which is Republic Day
    calendar = parse_holidays(["2027-01-26 Republic Day"])
    assert calendar.previous_trading_day(date(2027, 1, 27)) == date(2027, 1, 25)


def test_the_days_are_ist_days() -> None:
    calendar = MarketCalendar()
    just_after_ist_midnight = datetime(2026, 11, 29, 18, 45, tzinfo=UTC).timestamp()  # 00:15 IST Mon
    assert calendar.day_of(just_after_ist_midnight) == date(2026, 11, 30)
    assert calendar.market_status(just_after_ist_midnight).reason == "before open"


def test_every_bad_line_is_reported_with_its_number() -> None:
    text = ["2026-13-01 no such month", "tomorrow holiday", "2026-11-10 Diwali", "2026-11-10 again",
            "2026-11-08 19:15-18:00 backwards", "2026-11-09 25:00-26:00 bad hours",
            "2026-11-07 10:00-11:00 one", "2026-11-07 12:00-13:00 two"]
    with pytest.raises(CalendarError) as err:
        parse_holidays(text, source="my.txt")
    assert err.value.problems == [
        "my.txt line 1: 2026-13-01 is not a date",
        "my.txt line 2: 'tomorrow holiday' is not 'YYYY-MM-DD description' or 'YYYY-MM-DD HH:MM-HH:MM description'",
        "my.txt line 4: 2026-11-10 is listed twice",
        "my.txt line 5: the session closes (18:00) before it opens (19:15)",
        "my.txt line 6: '25:00' is not HH:MM",
        "my.txt line 8: a second session on 2026-11-07",
    ]


def test_coverage_is_the_years_the_file_mentions(calendar: MarketCalendar) -> None:
    assert calendar.covers("2026-06-01") and not calendar.covers("2027-06-01")
    assert calendar.years == {2026}
