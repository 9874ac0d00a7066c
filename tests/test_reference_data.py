"""Specs for the shipped reference data (config/data) and the `charges` / `calendar` settings."""

from __future__ import annotations

import configparser
import fnmatch
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from config.reference import (
    DATA_DIR,
    SHIPPED_HOLIDAYS_FILE,
    SHIPPED_INSTRUMENTS_FILE,
    load_calendar,
    load_instrument_snapshot,
    rate_table,
)
from config.settings import ConfigError, Settings, load_settings
from core.calendar import CalendarError
from core.charges import DEFAULT_RATES, RATE_NAMES, RateTable, fill_charges
from tests.fakedhan.scripmaster import snapshot_csv

ROOT = Path(__file__).resolve().parent.parent
IST = timezone(timedelta(hours=5, minutes=30))


def ist(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=IST).timestamp()


# -- the holidays file ---------------------------------------------------------------------------------


def test_the_shipped_holidays_cover_2026_and_provisionally_2027() -> None:
    calendar = load_calendar()
    assert calendar.years == {2026, 2027}
    assert calendar.holiday_name("2026-11-24") == "Prakash Gurpurb Sri Guru Nanak Dev"
    assert calendar.holiday_name("2026-01-15") == "Municipal Corporation Election - Maharashtra"
    assert not calendar.is_trading_day("2026-12-25") and calendar.is_trading_day("2026-12-24")
    assert calendar.session("2026-02-01") == (ist(2026, 2, 1, 9, 15), ist(2026, 2, 1, 15, 30))  # budget Sunday
    assert not calendar.is_trading_day("2027-01-26")
    weekday_holidays_2026 = [d for d in (date(2026, 1, 1) + timedelta(days=n) for n in range(365))
                             if d.weekday() < 5 and calendar.holiday_name(d)]
    assert len(weekday_holidays_2026) == 16  # NSE's 15 plus the 15 Jan election holiday
    text = SHIPPED_HOLIDAYS_FILE.read_text()
    assert "PROVISIONAL" in text and "2026-12-31" in text  # 2027 says when to re-check it


def test_on_the_holiday_today_the_market_is_closed_with_its_name() -> None:
    status = load_calendar().market_status(ist(2026, 11, 24, 11, 0))
    assert (status.state, status.reason, status.next_open) == \
        ("closed", "holiday: Prakash Gurpurb Sri Guru Nanak Dev", ist(2026, 11, 25, 9, 15))


# -- the instrument snapshot -----------------------------------------------------------------------------


def test_the_snapshot_has_near_atm_index_options_with_current_lots_and_ticks() -> None:
    index = load_instrument_snapshot()
    for underlying, lot in (("NIFTY", 65), ("BANKNIFTY", 30), ("FINNIFTY", 60)):
        options = [i for i in index if i.underlying == underlying and i.is_option]
        assert {(i.lot_size, i.tick_size) for i in options} == {(lot, 0.05)}, underlying
        assert index.index(underlying) is not None
    assert index.expiries("NIFTY") == ["2026-12-01", "2026-12-08", "2026-12-15", "2026-12-22", "2026-12-29",
                                       "2027-01-05", "2027-01-25", "2027-02-23"]
    assert index.expiries("BANKNIFTY") == index.expiries("FINNIFTY") == ["2026-12-29", "2027-01-25", "2027-02-23"]
    assert index.monthly_expiries("NIFTY") == {"2026-12-29", "2027-01-25", "2027-02-23"}
    sunday = ist(2026, 11, 29, 12, 0)
    assert index.choose_expiry("NIFTY", "nearest", sunday) == "2026-12-01"
    assert index.choose_expiry("BANKNIFTY", "nearest", sunday) == "2026-12-29"
    assert index.resolve("NIFTY-Dec2026-24000-CE").expiry == "2026-12-29"  # the month name means the monthly
    assert index.atm_option("NIFTY", "2026-12-01", 25_012.0, "CE").strike == 25_000.0
    assert index.atm_strike("BANKNIFTY", "2026-12-29", 52_149.0) == 52_100.0
    sim_ce, sim_pe = index.resolve("SEC_49081"), index.resolve("SEC_49082")
    assert (sim_ce.underlying, sim_ce.strike, sim_ce.option_type, sim_ce.expiry) == ("NIFTY", 25_000.0, "CE", "2027-02-23")
    assert (sim_pe.option_type, sim_pe.lot_size) == ("PE", 65)


def test_the_snapshot_is_what_its_generator_writes() -> None:
    assert SHIPPED_INSTRUMENTS_FILE.read_text() == snapshot_csv()


def test_the_data_files_ship_as_package_data() -> None:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    patterns = [p.strip() for p in parser["options.package_data"]["config"].replace("\n", ",").split(",") if p.strip()]
    shipped = sorted(p.relative_to(DATA_DIR.parent).as_posix() for p in DATA_DIR.iterdir())
    assert shipped == ["data/instruments_snapshot.csv", "data/nse_holidays.txt"]
    for name in shipped:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name


# -- settings: charges ------------------------------------------------------------------------------------


def test_the_charges_settings_default_to_the_sourced_rates() -> None:
    settings = Settings()
    assert {name: getattr(settings.charges, name) for name in RATE_NAMES} == DEFAULT_RATES
    assert rate_table(settings.charges).as_mapping() == RateTable().as_mapping()


def test_a_charges_series_can_be_replaced_from_toml_and_env(tmp_path: Path) -> None:
    config = tmp_path / "mybot.toml"
    config.write_text('[charges]\nbrokerage_per_order = {2024-10-01 = 0.0}\n'
                      '[charges.stt_sell_pct]\n"2024-10-01" = 0.1\n"2026-04-01" = 0.15\n"2027-04-01" = 0.2\n')
    settings = load_settings(config, env={"MYBOT_CHARGES_GST_PCT": "2017-07-01=18,2027-01-01=20"})
    table = rate_table(settings.charges)
    assert table.rates_on("2027-05-01").stt_sell_pct == 0.2 and table.rates_on("2027-03-31").stt_sell_pct == 0.15
    assert table.rates_on("2027-01-01").gst_pct == 20.0
    free = fill_charges(table, side="BUY", qty=65, price=100.0, day="2026-12-15")
    assert free.brokerage == 0.0


def test_a_bad_charges_table_is_refused_at_start_listing_every_problem(tmp_path: Path) -> None:
    config = tmp_path / "mybot.toml"
    config.write_text('[charges]\nstt_sell_pct = {"2026-13-01" = 0.15}\ngst_pct = {"2017-07-01" = 180}\n'
                      'stamp_buy_pct = {}\nsebi_per_crore = {"2024-10-01" = "ten"}\n')
    with pytest.raises(ConfigError) as err:
        load_settings(config, env={})
    problems = err.value.problems
    assert "charges.stt_sell_pct: '2026-13-01' is not a YYYY-MM-DD effective date" in problems
    assert "charges.gst_pct 2017-07-01: 180.0 is above 100 percent" in problems
    assert "charges.stamp_buy_pct: needs at least one 'YYYY-MM-DD' = rate entry" in problems
    assert any(p.startswith("charges.sebi_per_crore: expected a number") for p in problems), problems


# -- settings: calendar ----------------------------------------------------------------------------------


def test_the_holidays_file_defaults_to_the_shipped_one_and_can_be_replaced(tmp_path: Path) -> None:
    assert Path(Settings().calendar.holidays_file) == SHIPPED_HOLIDAYS_FILE
    own = tmp_path / "holidays.txt"
    own.write_text("# mine\n2026-12-24 Office party\n")
    settings = load_settings(env={"MYBOT_CALENDAR_HOLIDAYS_FILE": str(own)})
    calendar = load_calendar(settings.calendar.holidays_file)
    assert calendar.holiday_name("2026-12-24") == "Office party" and calendar.is_trading_day("2026-12-25")


def test_a_bad_holidays_file_is_refused_at_start_with_its_line_numbers(tmp_path: Path) -> None:
    bad = tmp_path / "holidays.txt"
    bad.write_text("2026-12-24 fine\n2026-02-30 no such day\n2026-12-31 16:00-15:00 backwards\n")
    with pytest.raises(ConfigError) as err:
        load_settings(env={"MYBOT_CALENDAR_HOLIDAYS_FILE": str(bad)})
    assert err.value.problems == [f"calendar.holidays_file: {bad} line 2: 2026-02-30 is not a date",
                                  f"calendar.holidays_file: {bad} line 3: the session closes (15:00) "
                                  f"before it opens (16:00)"]
    with pytest.raises(ConfigError, match="unreadable"):
        load_settings(env={"MYBOT_CALENDAR_HOLIDAYS_FILE": str(tmp_path / "missing.txt")})
    with pytest.raises(CalendarError, match="unreadable"):
        load_calendar(tmp_path / "missing.txt")
