"""NSE trading days and hours: weekends, holidays, and special sessions with their own hours.

The market is open Monday to Friday, 09:15-15:30 IST, except on the exchange's trading holidays; a
special session (Muhurat trading on Diwali, a live session on a Sunday budget day) opens a day on its own
hours, even a weekend or a holiday. Everything takes `now` as epoch seconds; nothing reads a clock.

The holidays file (`calendar.holidays_file`; the shipped one is config/data/nse_holidays.txt), one
entry per line:

    # a comment; blank lines are ignored; text after ' #' on a line is a comment too
    2026-01-26 Republic Day                      a trading holiday (the description is optional)
    2026-02-01 09:15-15:30 Union Budget session  a special session: that day trades only 09:15-15:30
    2026-11-08 18:00-19:15 Muhurat trading       (a session line wins over a holiday line of that day)

`parse_holidays(lines)` reads it and raises CalendarError listing every bad line; `MarketCalendar`
answers the questions. Days are IST calendar days (`datetime.date`, or 'YYYY-MM-DD').

`MarketCalendar.always_open()` is the calendar switched off (`calendar.enabled = false`): every day, the
weekend included, trades 00:00-24:00 IST, so only the risk settings' own window applies (simulations,
tests, watching the sim trade at night).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

__all__ = [
    "CalendarError",
    "MarketCalendar",
    "MarketStatus",
    "Session",
    "parse_holidays",
]

IST = timezone(timedelta(hours=5, minutes=30), "IST")
REGULAR_OPEN = "09:15"
REGULAR_CLOSE = "15:30"
_DAY_MINUTES = 24 * 60
_SEARCH_DAYS = 400  # next_open looks this far ahead; holidays never chain for more than a few days

_LINE = re.compile(r"^(?P<day>\d{4}-\d{2}-\d{2})(?:\s+(?P<open>\d{1,2}:\d{2})-(?P<close>\d{1,2}:\d{2}))?"
                   r"(?:\s+(?P<name>.*))?$")
_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


class CalendarError(ValueError):
    """A holidays file with bad lines; `problems` lists every one ('<source> line N: why')."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Session:
    """A special session: `day` trades from `open` to `close` (HH:MM IST) instead of its usual hours."""

    day: date
    open: str
    close: str
    name: str


@dataclass(frozen=True, slots=True)
class MarketStatus:
    """`state` is "open" or "closed"; `reason` says why in words a trader reads:
    "session", a special session's name, "weekend", "holiday: <name>", "before open", "after hours".
    `next_open` is the epoch of the open of the session in progress or the next one."""

    state: str
    reason: str
    next_open: float | None

    @property
    def is_open(self) -> bool:
        return self.state == "open"


def _minutes(hhmm: str) -> int:
    match = _HHMM.match(hhmm)
    if not match:
        raise ValueError(f"{hhmm!r} is not HH:MM")
    return int(match.group(1)) * 60 + int(match.group(2))


def _as_day(day: date | str) -> date:
    if isinstance(day, date):
        return day
    return date.fromisoformat(day)


def _epoch(day: date, minutes: int) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=IST).timestamp() + minutes * 60


def parse_holidays(lines: Iterable[str], *, source: str = "holidays file",
                   regular_open: str = REGULAR_OPEN, regular_close: str = REGULAR_CLOSE) -> MarketCalendar:
    """A MarketCalendar from the lines of a holidays file, or CalendarError listing every bad line."""
    holidays: dict[date, str] = {}
    sessions: dict[date, Session] = {}
    problems: list[str] = []
    for number, raw in enumerate(lines, start=1):
        text = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not text:
            continue
        where = f"{source} line {number}"
        match = _LINE.match(text)
        if not match:
            problems.append(f"{where}: {text!r} is not 'YYYY-MM-DD description' or "
                            f"'YYYY-MM-DD HH:MM-HH:MM description'")
            continue
        try:
            day = date.fromisoformat(match.group("day"))
        except ValueError:
            problems.append(f"{where}: {match.group('day')} is not a date")
            continue
        name = (match.group("name") or "").strip()
        if match.group("open"):
            try:
                opens, closes = _minutes(match.group("open")), _minutes(match.group("close"))
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
                continue
            if closes <= opens:
                problems.append(f"{where}: the session closes ({match.group('close')}) before it opens "
                                f"({match.group('open')})")
                continue
            if day in sessions:
                problems.append(f"{where}: a second session on {day}")
                continue
            sessions[day] = Session(day, f"{opens // 60:02d}:{opens % 60:02d}", f"{closes // 60:02d}:{closes % 60:02d}",
                                    name or "special session")
        else:
            if day in holidays:
                problems.append(f"{where}: {day} is listed twice")
                continue
            holidays[day] = name or "holiday"
    if problems:
        raise CalendarError(problems)
    return MarketCalendar(holidays, sessions, regular_open=regular_open, regular_close=regular_close)


class MarketCalendar:
    """Trading days and hours. Immutable once built."""

    def __init__(self, holidays: Mapping[date, str] | None = None,
                 sessions: Mapping[date, Session] | None = None, *,
                 regular_open: str = REGULAR_OPEN, regular_close: str = REGULAR_CLOSE) -> None:
        self._holidays = dict(holidays or {})
        self._sessions = dict(sessions or {})
        self._open = _minutes(regular_open)
        self._close = _minutes(regular_close)
        if self._close <= self._open:
            raise ValueError(f"regular close {regular_close} is not after open {regular_open}")
        self.years = frozenset(d.year for d in (*self._holidays, *self._sessions))
        self._always = False

    @classmethod
    def always_open(cls) -> MarketCalendar:
        """The calendar switched off: every day trades 00:00-24:00 IST, no holidays, no weekends."""
        calendar = cls()
        calendar._open, calendar._close = 0, _DAY_MINUTES
        calendar._always = True
        return calendar

    @property
    def enabled(self) -> bool:
        """False for `always_open()` (the calendar switched off)."""
        return not self._always

    @property
    def regular_minutes(self) -> tuple[int, int]:
        """The regular session as minutes of the IST day: (555, 930) for 09:15-15:30; (0, 1440) switched off."""
        return self._open, self._close

    # -- days ----------------------------------------------------------------------------------------

    @staticmethod
    def day_of(now: float) -> date:
        """The IST calendar day containing `now`."""
        return datetime.fromtimestamp(now, IST).date()

    def holiday_name(self, day: date | str) -> str | None:
        return self._holidays.get(_as_day(day))

    def special_session(self, day: date | str) -> Session | None:
        return self._sessions.get(_as_day(day))

    def covers(self, day: date | str) -> bool:
        """Whether the holidays file lists anything for that year (beyond it, only weekends are known)."""
        return self._always or _as_day(day).year in self.years

    def is_trading_day(self, day: date | str) -> bool:
        d = _as_day(day)
        if self._always or d in self._sessions:
            return True
        return d.weekday() < 5 and d not in self._holidays

    def session(self, day: date | str) -> tuple[float, float] | None:
        """(open, close) epochs of that day's session, or None when it does not trade."""
        d = _as_day(day)
        special = self._sessions.get(d)
        if special is not None:
            return _epoch(d, _minutes(special.open)), _epoch(d, _minutes(special.close))
        if not self.is_trading_day(d):
            return None
        return _epoch(d, self._open), _epoch(d, self._close)

    def next_trading_day(self, day: date | str) -> date:
        """The first trading day strictly after `day`."""
        d = _as_day(day)
        for _ in range(_SEARCH_DAYS):
            d += timedelta(days=1)
            if self.is_trading_day(d):
                return d
        raise ValueError(f"no trading day within {_SEARCH_DAYS} days after {day}")  # pragma: no cover

    def previous_trading_day(self, day: date | str) -> date:
        """The last trading day strictly before `day` (an expiry falling on a holiday moves there)."""
        d = _as_day(day)
        for _ in range(_SEARCH_DAYS):
            d -= timedelta(days=1)
            if self.is_trading_day(d):
                return d
        raise ValueError(f"no trading day within {_SEARCH_DAYS} days before {day}")  # pragma: no cover

    # -- instants --------------------------------------------------------------------------------------

    def is_open(self, now: float) -> bool:
        hours = self.session(self.day_of(now))
        return hours is not None and hours[0] <= now < hours[1]

    def next_open(self, now: float) -> float | None:
        """The open of the session in progress at `now`, else of the next one (None past the search)."""
        d = self.day_of(now)
        for _ in range(_SEARCH_DAYS):
            hours = self.session(d)
            if hours is not None and now < hours[1]:
                return hours[0]
            d += timedelta(days=1)
        return None  # pragma: no cover

    def market_status(self, now: float) -> MarketStatus:
        d = self.day_of(now)
        hours = self.session(d)
        next_open = self.next_open(now)
        special = self._sessions.get(d)
        label = f"{special.name} {special.open}-{special.close}" if special else ""
        if hours is None:
            holiday = self._holidays.get(d)
            reason = f"holiday: {holiday}" if holiday else "weekend"
            return MarketStatus("closed", reason, next_open)
        if hours[0] <= now < hours[1]:
            reason = special.name if special else "calendar disabled" if self._always else "session"
            return MarketStatus("open", reason, next_open)
        reason = "before open" if now < hours[0] else "after hours"
        return MarketStatus("closed", f"{reason} ({label})" if label else reason, next_open)
