"""The time window of a review: --day (an IST date), --since and --until (ISO, or HH:MM on --day)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from core.market import IST

__all__ = ["Window", "make_window", "ts_text"]

_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")


@dataclass(frozen=True, slots=True)
class Window:
    """[since, until) in epoch seconds (None = open); `day` is the IST date asked for, if any."""

    day: str | None = None
    since: float | None = None
    until: float | None = None

    @property
    def since_text(self) -> str:
        return ts_text(self.since) if self.since is not None else ""

    @property
    def until_text(self) -> str:
        return ts_text(self.until) if self.until is not None else ""

    def as_json(self) -> dict[str, str | None]:
        return {"day": self.day, "since": _iso(self.since), "until": _iso(self.until)}

    def narrower_than_day(self) -> bool:
        """Whether --since/--until cut into the day (or there is no day): worth showing."""
        if self.day is None:
            return self.since is not None or self.until is not None
        start = datetime.fromisoformat(f"{self.day}T00:00:00+05:30").timestamp()
        return self.since != start or self.until != start + 86_400


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, IST).isoformat(timespec="milliseconds")


def ts_text(epoch: float) -> str:
    """Epoch seconds in the logger's own `ts` format (UTC, milliseconds), which sorts as time."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def _parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--day: {text!r} is not a date (YYYY-MM-DD)") from None


def _parse_moment(name: str, text: str, day: date | None) -> float:
    clock = _CLOCK.match(text)
    if clock:
        if day is None:
            raise ValueError(f"--{name}: {text!r} is a time of day; give --day too (or a full ISO time)")
        hour, minute, second = int(clock[1]), int(clock[2]), int(clock[3] or 0)
        if hour > 24 or minute > 59 or second > 59 or (hour == 24 and (minute or second)):
            raise ValueError(f"--{name}: {text!r} is not a time of day (HH:MM)")
        midnight = datetime(day.year, day.month, day.day, tzinfo=IST)
        return (midnight + timedelta(hours=hour, minutes=minute, seconds=second)).timestamp()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--{name}: {text!r} is neither HH:MM nor an ISO-8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=IST)  # the operator's clock, as everywhere in mybot
    return parsed.timestamp()


def make_window(day: str | None = None, since: str | None = None, until: str | None = None) -> Window:
    """Parse the filters; raise ValueError naming the bad one. A naive ISO time is IST."""
    the_day = _parse_day(day) if day else None
    start = end = None
    if the_day is not None:
        start = datetime(the_day.year, the_day.month, the_day.day, tzinfo=IST).timestamp()
        end = start + 86_400
    if since:
        moment = _parse_moment("since", since, the_day)
        start = moment if start is None else max(start, moment)
    if until:
        moment = _parse_moment("until", until, the_day)
        end = moment if end is None else min(end, moment)
    if start is not None and end is not None and start >= end:
        raise ValueError("--since/--until: the window is empty (since is not before until"
                         + (" within --day" if the_day else "") + ")")
    return Window(the_day.isoformat() if the_day else None, start, end)
