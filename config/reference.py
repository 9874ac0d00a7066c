"""Reference data shipped inside the package (config/data/) and the loaders that read it.

* `nse_holidays.txt`: NSE trading holidays and special sessions (format in core/calendar.py); the default
  of `calendar.holidays_file`.
* `instruments_snapshot.csv`: a small scrip master in Dhan's compact format, near-ATM NIFTY, BANKNIFTY
  and FINNIFTY options with their lot and tick sizes, for sim, paper and replay runs (the live system
  loads Dhan's own master). Its security ids are made up: never send them to Dhan.

The pure parsing lives in core (`core.calendar.parse_holidays`, `core.instruments.parse_scrip_master`);
this module only opens the files.
"""

from __future__ import annotations

from pathlib import Path

from core.calendar import CalendarError, MarketCalendar, parse_holidays
from core.charges import RATE_NAMES, RateTable
from core.instruments import InstrumentIndex, ParseReport, ScripMasterError, parse_scrip_master

__all__ = [
    "DATA_DIR",
    "SHIPPED_HOLIDAYS_FILE",
    "SHIPPED_INSTRUMENTS_FILE",
    "calendar_from_settings",
    "calendar_problems",
    "load_calendar",
    "load_instrument_snapshot",
    "rate_table",
]

DATA_DIR = Path(__file__).resolve().parent / "data"
SHIPPED_HOLIDAYS_FILE = DATA_DIR / "nse_holidays.txt"
SHIPPED_INSTRUMENTS_FILE = DATA_DIR / "instruments_snapshot.csv"


def load_calendar(path: str | Path = SHIPPED_HOLIDAYS_FILE, *, regular_open: str = "09:15",
                  regular_close: str = "15:30") -> MarketCalendar:
    """The market calendar from a holidays file; CalendarError listing every bad line (or the I/O error)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CalendarError([f"{path}: unreadable ({exc.strerror or exc})"]) from None
    except UnicodeDecodeError:
        raise CalendarError([f"{path}: not UTF-8 text"]) from None
    return parse_holidays(text.splitlines(), source=str(path), regular_open=regular_open,
                          regular_close=regular_close)


def calendar_from_settings(calendar: object) -> MarketCalendar:
    """The market calendar the `calendar` settings section asks for (validated at start already):
    the holidays file when `enabled`, else the calendar switched off (every day 00:00-24:00)."""
    if not getattr(calendar, "enabled", True):
        return MarketCalendar.always_open()
    return load_calendar(getattr(calendar, "holidays_file", SHIPPED_HOLIDAYS_FILE))


def calendar_problems(path: str | Path) -> list[str]:
    """Every problem with a holidays file ([] when it loads)."""
    try:
        load_calendar(path)
    except CalendarError as exc:
        return list(exc.problems)
    return []


def load_instrument_snapshot(path: str | Path = SHIPPED_INSTRUMENTS_FILE) -> InstrumentIndex:
    """The shipped (or another) compact scrip master as an InstrumentIndex; every row must parse."""
    report = ParseReport()
    with open(path, encoding="utf-8", newline="") as fh:
        index = InstrumentIndex(parse_scrip_master(fh, report=report))
    if report.rejected:
        raise ScripMasterError(f"{path}: {report.rejected} bad row(s): " + "; ".join(report.problems))
    return index


def rate_table(charges: object) -> RateTable:
    """The charges rate table from the `charges` settings section (validated at start already)."""
    return RateTable({name: getattr(charges, name) for name in RATE_NAMES})
