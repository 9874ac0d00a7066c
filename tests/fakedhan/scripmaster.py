"""Compact scrip masters built from a list of instruments: the fake Dhan's, and the shipped snapshot.

Rows are written with `core.instruments.compact_row`, so they read back through the production parser.
Expiries follow NSE's schedule since 1 Sep 2025: NIFTY weekly on Tuesdays; NIFTY, BANKNIFTY and
FINNIFTY monthly on the last Tuesday of the month; an expiry that falls on a trading holiday moves to
the previous trading day (businesstoday.in, 23 Jun 2025, on NSE's circular moving expiries to Tuesday).

Regenerate the shipped snapshot (config/data/instruments_snapshot.csv) with

    python -m tests.fakedhan.scripmaster --snapshot [--today YYYY-MM-DD]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, timedelta
from pathlib import Path

from core.calendar import MarketCalendar, parse_holidays
from core.instruments import COMPACT_HEADER, Instrument, compact_row

__all__ = [
    "INDEX_IDS",
    "LOT_SIZES",
    "SCRIP_UNDERLYINGS",
    "compact_csv",
    "fake_master",
    "index_instruments",
    "nse_expiries",
    "option_series",
    "snapshot_csv",
    "snapshot_instruments",
    "trading_symbol",
]

ROOT = Path(__file__).resolve().parent.parent.parent
SNAPSHOT_PATH = ROOT / "config" / "data" / "instruments_snapshot.csv"
HOLIDAYS_PATH = ROOT / "config" / "data" / "nse_holidays.txt"

INDEX_IDS = {"NIFTY": "13", "BANKNIFTY": "25", "FINNIFTY": "27", "SENSEX": "51"}
SCRIP_UNDERLYINGS = {int(v): k for k, v in INDEX_IDS.items()}
# NSE circular NSE/FAOP/70616 (Oct 2025): NIFTY 75 -> 65, BANKNIFTY 35 -> 30, FINNIFTY 65 -> 60, from
# the January 2026 expiries (reported by financialexpress.com and ndtvprofit.com, 28 Oct 2025).
LOT_SIZES = {"NIFTY": 65, "BANKNIFTY": 30, "FINNIFTY": 60}
STRIKE_STEPS = {"NIFTY": 50, "BANKNIFTY": 100, "FINNIFTY": 50}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
TUESDAY = 1


def trading_symbol(underlying: str, expiry: str, strike: float | None = None, option_type: str = "") -> str:
    """Dhan's month-named symbol: NIFTY-Dec2026-24000-CE, NIFTY-Dec2026-FUT."""
    day = date.fromisoformat(expiry)
    month = f"{_MONTHS[day.month - 1]}{day.year}"
    if strike is None:
        return f"{underlying}-{month}-FUT"
    return f"{underlying}-{month}-{int(strike) if float(strike).is_integer() else strike}-{option_type}"


def index_instruments() -> list[Instrument]:
    return [Instrument(segment="IDX_I", security_id=sid, instrument="INDEX", trading_symbol=name,
                       underlying=name, lot_size=1, tick_size=0.01) for name, sid in INDEX_IDS.items()]


def option_series(underlying: str, expiries: Sequence[tuple[str, str]], strikes: Iterable[float], *,
                  ids: Iterator[int], lot_size: int | None = None, tick_size: float = 0.05,
                  segment: str = "NSE_FNO") -> list[Instrument]:
    """CE and PE at every strike of every (expiry, flag); security ids drawn from `ids`."""
    lot = LOT_SIZES[underlying] if lot_size is None else lot_size
    out = []
    strike_list = [float(s) for s in strikes]
    for expiry, flag in expiries:
        for strike in strike_list:
            for option_type in ("CE", "PE"):
                out.append(Instrument(segment=segment, security_id=str(next(ids)), instrument="OPTIDX",
                                      trading_symbol=trading_symbol(underlying, expiry, strike, option_type),
                                      underlying=underlying, lot_size=lot, tick_size=tick_size, expiry=expiry,
                                      strike=strike, option_type=option_type, expiry_flag=flag))
    return out


def future(underlying: str, expiry: str, security_id: int, *, tick_size: float = 0.10) -> Instrument:
    return Instrument(segment="NSE_FNO", security_id=str(security_id), instrument="FUTIDX",
                      trading_symbol=trading_symbol(underlying, expiry), underlying=underlying,
                      lot_size=LOT_SIZES[underlying], tick_size=tick_size, expiry=expiry, expiry_flag="M")


def _last_tuesday(year: int, month: int) -> date:
    next_month = date(year + month // 12, month % 12 + 1, 1)
    day = next_month - timedelta(days=1)
    return day - timedelta(days=(day.weekday() - TUESDAY) % 7)


def _on_trading_day(day: date, calendar: MarketCalendar | None) -> date:
    if calendar is None or calendar.is_trading_day(day):
        return day
    return calendar.previous_trading_day(day)


def nse_expiries(today: date, *, weeklies: int, monthlies: int,
                 calendar: MarketCalendar | None = None) -> list[tuple[str, str]]:
    """(expiry, flag) ascending: the next `monthlies` monthly expiries (last Tuesday, M) and the next
    `weeklies` weekly ones (W: the other Tuesdays), each on or after `today`."""
    monthly: list[date] = []
    year, month = today.year, today.month
    while len(monthly) < monthlies:
        day = _on_trading_day(_last_tuesday(year, month), calendar)
        if day >= today:
            monthly.append(day)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    out = {d: "M" for d in monthly}
    monthly_weeks = {_last_tuesday(d.year, d.month) for d in monthly}
    nominal = today + timedelta(days=(TUESDAY - today.weekday()) % 7)
    found = 0
    while found < weeklies:
        if nominal not in monthly_weeks and nominal != _last_tuesday(nominal.year, nominal.month):
            out.setdefault(_on_trading_day(nominal, calendar), "W")  # else a monthly week: not a weekly
            found += 1
        nominal += timedelta(weeks=1)
    return sorted((d.isoformat(), flag) for d, flag in out.items())


def _strikes_around(spot: float, step: int, each_side: int) -> list[float]:
    atm = round(spot / step) * step
    return [float(atm + k * step) for k in range(-each_side, each_side + 1)]


def fake_master(today: date, *, spots: dict[str, float] | None = None, each_side: int = 10) -> list[Instrument]:
    """The fake Dhan's default master: NIFTY (lot 65, tick 0.05; three weeklies and the monthly),
    BANKNIFTY (lot 30) and FINNIFTY (lot 60) monthlies, strikes around the fake's index prices.

    Security ids: NIFTY from 40001, BANKNIFTY from 60001, FINNIFTY from 80001, futures from 90001.
    """
    prices = {"NIFTY": 25642.8, "BANKNIFTY": 52110.35, "FINNIFTY": 23990.1, **(spots or {})}
    rows = index_instruments()
    bases = {"NIFTY": 40001, "BANKNIFTY": 60001, "FINNIFTY": 80001}
    futures = itertools.count(90001)
    for underlying, base in bases.items():
        expiries = nse_expiries(today, weeklies=3 if underlying == "NIFTY" else 0, monthlies=1)
        strikes = _strikes_around(prices[underlying], STRIKE_STEPS[underlying], each_side)
        rows += option_series(underlying, expiries, strikes, ids=itertools.count(base))
        rows.append(future(underlying, [e for e, f in expiries if f == "M"][0], next(futures)))
    return rows


def compact_csv(instruments: Iterable[Instrument], *, comments: Sequence[str] = (), newline: str = "\n") -> str:
    lines = [f"# {c}" if c else "#" for c in comments]
    lines.append(",".join(COMPACT_HEADER))
    lines.extend(compact_row(i) for i in instruments)
    return newline.join(lines) + newline


# -- the shipped snapshot ---------------------------------------------------------------------------------

SNAPSHOT_TODAY = date(2026, 11, 29)
# near-ATM ranges around the sim feed's price ranges (actors/sources/sim.py)
SNAPSHOT_STRIKES = {"NIFTY": (23_500, 26_500), "BANKNIFTY": (50_000, 55_000), "FINNIFTY": (22_500, 25_500)}
# SEC_49081 / SEC_49082 are the sim feed's default option symbols: make them resolve (to the longest
# lived NIFTY 25000 CE / PE in the snapshot) so sim and paper runs find their lot and tick.
SIM_OPTION_IDS = {("NIFTY", 25_000.0, "CE"): "49081", ("NIFTY", 25_000.0, "PE"): "49082"}


def snapshot_instruments(today: date = SNAPSHOT_TODAY, calendar: MarketCalendar | None = None) -> list[Instrument]:
    calendar = calendar or parse_holidays(HOLIDAYS_PATH.read_text().splitlines())
    rows = [i for i in index_instruments() if i.underlying in LOT_SIZES]
    ids = itertools.count(50001)
    futures = itertools.count(59001)
    last_nifty_monthly = ""
    for underlying, (low, high) in SNAPSHOT_STRIKES.items():
        if underlying == "NIFTY":
            expiries = nse_expiries(today, weeklies=5, monthlies=3, calendar=calendar)
            last_nifty_monthly = [e for e, f in expiries if f == "M"][-1]
        else:
            expiries = nse_expiries(today, weeklies=0, monthlies=3, calendar=calendar)
        step = STRIKE_STEPS[underlying]
        series = option_series(underlying, expiries, range(low, high + step, step), ids=ids)
        rows += series
        rows += [future(underlying, e, next(futures)) for e, f in expiries if f == "M"]
    renamed = []
    for row in rows:
        key = (row.underlying, row.strike, row.option_type)
        if row.expiry == last_nifty_monthly and key in SIM_OPTION_IDS:
            row = dataclasses.replace(row, security_id=SIM_OPTION_IDS[key])
        renamed.append(row)
    return renamed


SNAPSHOT_COMMENTS = (
    "Instrument snapshot for sim, paper and replay runs: Dhan's compact scrip master format (dhan-api.md §5).",
    "NOT FOR LIVE TRADING: the security ids are made up (real ones come from Dhan's master, refreshed daily).",
    f"Built for {SNAPSHOT_TODAY.isoformat()} by `python -m tests.fakedhan.scripmaster --snapshot`; the expiries",
    "run out in February 2027: regenerate with --today to move them.",
    "Lot sizes: NIFTY 65, BANKNIFTY 30, FINNIFTY 60 from the January 2026 expiries (NSE circular",
    "NSE/FAOP/70616 of Oct 2025, effective EOD 28 Oct 2025; financialexpress.com and ndtvprofit.com,",
    "28 Oct 2025; share.market's notice quoting the circular). Tick 0.05 (5 paise) for options, 0.10 futures.",
    "Expiries: NIFTY weekly on Tuesdays, NIFTY/BANKNIFTY/FINNIFTY monthly on the last Tuesday, moved to the",
    "previous trading day on a holiday (26 Jan 2027, Republic Day: the January monthly is 25 Jan 2027).",
    "SEC_49081 / SEC_49082 (the sim feed's default option symbols) are the NIFTY 25000 CE / PE of the last",
    "NIFTY monthly listed here.",
)


def snapshot_csv(today: date = SNAPSHOT_TODAY) -> str:
    return compact_csv(snapshot_instruments(today), comments=SNAPSHOT_COMMENTS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--snapshot", action="store_true", help=f"write {SNAPSHOT_PATH}")
    parser.add_argument("--today", type=date.fromisoformat, default=SNAPSHOT_TODAY)
    args = parser.parse_args(argv)
    text = snapshot_csv(args.today) if args.snapshot else compact_csv(fake_master(args.today))
    if args.snapshot:
        SNAPSHOT_PATH.write_text(text)
        print(f"wrote {SNAPSHOT_PATH} ({text.count(chr(10))} lines)")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
