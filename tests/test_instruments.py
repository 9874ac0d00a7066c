"""Specs for core.instruments: the compact scrip master parser, the index, ticks, lots and expiries (pure)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from core.instruments import (
    AmbiguousInstrument,
    Instrument,
    InstrumentError,
    InstrumentIndex,
    LotSizeError,
    NoExpiry,
    ParseReport,
    ScripMasterError,
    UnknownInstrument,
    choose_expiry,
    compact_row,
    expiry_close_epoch,
    live_expiries,
    lots_of,
    nearest_strike,
    on_tick,
    parse_scrip_master,
    round_marketable_to_tick,
    round_to_tick,
    round_trigger_to_tick,
    underlying_of,
)
from core.orders import Side

IST = timezone(timedelta(hours=5, minutes=30))
HEADER = ("SEM_EXM_EXCH_ID,SEM_SEGMENT,SEM_SMST_SECURITY_ID,SEM_INSTRUMENT_NAME,SEM_EXPIRY_CODE,"
          "SEM_TRADING_SYMBOL,SEM_LOT_UNITS,SEM_CUSTOM_SYMBOL,SEM_EXPIRY_DATE,SEM_STRIKE_PRICE,"
          "SEM_OPTION_TYPE,SEM_TICK_SIZE,SEM_EXPIRY_FLAG,SEM_EXCH_INSTRUMENT_TYPE,SEM_SERIES,SM_SYMBOL_NAME")

# Rows shaped like Dhan's real file: indices, weekly and monthly index options that share a trading
# symbol, an index future, and the rows a parser must skip (equity, stock option, currency, commodity).
MASTER = "\r\n".join([
    "\ufeff" + HEADER,
    "NSE,E,2885,EQUITY,0,RELIANCE,1.0,Reliance Industries,,-0.01000,XX,5.0000,NA,ES,EQ,RELIANCE INDUSTRIES",
    'NSE,E,1,EQUITY,0,ODD,1.0,"Odd, Name Ltd",,-0.01000,XX,5.0000,NA,ES,EQ,ODD',
    "NSE,I,13,INDEX,0,NIFTY,1.0,Nifty 50,,7.00000,,1.0000,NA,INDEX,X,NIFTY",
    "NSE,I,25,INDEX,0,BANKNIFTY,1.0,Nifty Bank,,7.00000,,1.0000,NA,INDEX,X,BANKNIFTY",
    "BSE,I,51,INDEX,0,SENSEX,1.0,Sensex,,0,,1.0000,NA,INDEX,X,SENSEX",
    "NSE,D,61001,OPTIDX,0,NIFTY-Dec2026-24000-CE,65.0,NIFTY 01 DEC 24000 CALL,2026-12-01 14:30:00,"
    "24000.00000,CE,5.0000,W,OP,,",
    "NSE,D,61002,OPTIDX,0,NIFTY-Dec2026-24000-PE,65.0,NIFTY 01 DEC 24000 PUT,2026-12-01 14:30:00,"
    "24000.00000,PE,5.0000,W,OP,,",
    "NSE,D,61003,OPTIDX,0,NIFTY-Dec2026-24050-CE,65.0,NIFTY 01 DEC 24050 CALL,2026-12-01 14:30:00,"
    "24050.00000,CE,5.0000,W,OP,,",
    "NSE,D,61101,OPTIDX,0,NIFTY-Dec2026-24000-CE,65.0,NIFTY 29 DEC 24000 CALL,2026-12-29 14:30:00,"
    "24000.00000,CE,5.0000,M,OP,,",
    "NSE,D,61102,OPTIDX,0,NIFTY-Dec2026-24000-PE,65.0,NIFTY 29 DEC 24000 PUT,2026-12-29 14:30:00,"
    "24000.00000,PE,5.0000,M,OP,,",
    "NSE,D,61201,OPTIDX,0,NIFTY-Dec2026-24100-CE,65.0,NIFTY 08 DEC 24100 CALL,2026-12-08 14:30:00,"
    "24100.00000,CE,5.0000,W,OP,,",
    "NSE,D,61202,OPTIDX,0,NIFTY-Dec2026-24100-CE,65.0,NIFTY 15 DEC 24100 CALL,2026-12-15 14:30:00,"
    "24100.00000,CE,5.0000,W,OP,,",
    "NSE,D,62001,FUTIDX,0,NIFTY-Dec2026-FUT,65.0,NIFTY DEC FUT,2026-12-29 14:30:00,-0.01000,XX,10.0000,M,FUT,,",
    "NSE,D,63001,OPTIDX,0,BANKNIFTY-Dec2026-52000-CE,30.0,BANKNIFTY 29 DEC 52000 CALL,2026-12-29 14:30:00,"
    "52000.00000,CE,5.0000,M,OP,,",
    "BSE,D,61001,OPTIDX,0,SENSEX-Dec2026-80000-CE,20.0,SENSEX 03 DEC 80000 CALL,2026-12-03 14:30:00,"
    "80000.00000,CE,5.0000,W,OP,,",
    "NSE,D,70001,OPTSTK,0,RELIANCE-Dec2026-1500-CE,500.0,RELIANCE 29 DEC 1500 CALL,2026-12-29 14:30:00,"
    "1500.00000,CE,5.0000,M,OP,,",
    "NSE,C,8001,FUTCUR,0,USDINR-Dec2026-FUT,1000.0,USDINR DEC FUT,2026-12-29 12:30:00,-0.01,XX,0.2500,M,FUT,,",
    "MCX,M,9001,FUTCOM,0,CRUDEOIL-Dec2026-FUT,100.0,CRUDEOIL DEC FUT,2026-12-18 23:30:00,-0.01,XX,100.0,M,FUT,,",
    "NSE,D,64001,OPTIDX,0,NIFTY-Dec2026-24000-CE,sixty,NIFTY BAD LOT,2026-12-22 14:30:00,24000,CE,5.0,W,OP,,",
    "NSE,D,64002,OPTIDX,0,NIFTY-Dec2026-24000-XX,65.0,NIFTY BAD TYPE,2026-12-22 14:30:00,24000,XX,5.0,W,OP,,",
    "",
])


def parsed(text: str = MASTER, **kwargs: object) -> tuple[list[Instrument], ParseReport]:
    report = ParseReport()
    rows = list(parse_scrip_master(text.splitlines(keepends=True), report=report, **kwargs))  # type: ignore[arg-type]
    return rows, report


def ist(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=IST).timestamp()


# -- parsing ---------------------------------------------------------------------------------------------


def test_the_parser_keeps_indices_index_options_and_futures_and_skips_everything_else() -> None:
    rows, report = parsed()
    kinds = sorted({(r.segment, r.instrument) for r in rows})
    assert kinds == [("BSE_FNO", "OPTIDX"), ("IDX_I", "INDEX"), ("NSE_FNO", "FUTIDX"), ("NSE_FNO", "OPTIDX")]
    assert report.rows == 20 and report.kept == len(rows) == 13
    assert report.skipped == 5  # two equities, the stock option, currency, commodity
    assert report.rejected == 2
    assert report.problems == ["line 20: NIFTY-Dec2026-24000-CE: lot size 'sixty' is not a number",
                               "line 21: NIFTY-Dec2026-24000-XX: option type 'XX' is not CE or PE"]


def test_ticks_come_in_paise_and_lots_as_float_strings() -> None:
    rows, _ = parsed()
    weekly = next(r for r in rows if r.security_id == "61001" and r.segment == "NSE_FNO")
    assert weekly == Instrument(segment="NSE_FNO", security_id="61001", instrument="OPTIDX",
                                trading_symbol="NIFTY-Dec2026-24000-CE", underlying="NIFTY", lot_size=65,
                                tick_size=0.05, expiry="2026-12-01", strike=24000.0, option_type="CE",
                                expiry_flag="W")
    future = next(r for r in rows if r.instrument == "FUTIDX")
    assert (future.tick_size, future.lot_size, future.option_type, future.strike) == (0.10, 65, "", 0.0)
    assert future.underlying == "NIFTY" and future.expiry == "2026-12-29"
    nifty = next(r for r in rows if r.instrument == "INDEX" and r.underlying == "NIFTY")
    assert (nifty.segment, nifty.security_id, nifty.symbol, nifty.expiry) == ("IDX_I", "13", "NIFTY", "")
    sensex = next(r for r in rows if r.underlying == "SENSEX" and r.instrument == "INDEX")
    assert sensex.segment == "IDX_I" and sensex.exchange == "BSE"
    bse_option = next(r for r in rows if r.segment == "BSE_FNO")
    assert bse_option.underlying == "SENSEX" and bse_option.exchange == "BSE" and bse_option.lot_size == 20


def test_the_parser_can_keep_only_some_underlyings() -> None:
    rows, report = parsed(underlyings={"BANKNIFTY"})
    assert {r.underlying for r in rows} == {"BANKNIFTY"}
    assert [r.instrument for r in rows] == ["INDEX", "OPTIDX"]
    assert report.kept == 2


def test_a_file_that_is_not_the_compact_master_is_refused_naming_the_missing_columns() -> None:
    with pytest.raises(ScripMasterError, match="SEM_LOT_UNITS, SEM_EXPIRY_DATE"):
        list(parse_scrip_master(["SEM_EXM_EXCH_ID,SEM_SEGMENT,SEM_SMST_SECURITY_ID,SEM_INSTRUMENT_NAME,"
                                 "SEM_TRADING_SYMBOL,SEM_STRIKE_PRICE,SEM_OPTION_TYPE,SEM_TICK_SIZE\n"]))
    with pytest.raises(ScripMasterError, match="empty"):
        list(parse_scrip_master(["# only a comment\n", "\n"]))


def test_columns_are_found_by_name_not_position() -> None:
    shuffled = ("SEM_TRADING_SYMBOL,SEM_INSTRUMENT_NAME,SEM_SEGMENT,SEM_EXM_EXCH_ID,SEM_SMST_SECURITY_ID,"
                "SEM_LOT_UNITS,SEM_EXPIRY_DATE,SEM_STRIKE_PRICE,SEM_OPTION_TYPE,SEM_TICK_SIZE\n"
                "FINNIFTY-Dec2026-24000-PE,OPTIDX,D,NSE,77,60.0,2026-12-29,24000,PE,5\n")
    (row,) = parse_scrip_master(shuffled.splitlines())
    assert (row.underlying, row.lot_size, row.tick_size, row.option_type, row.expiry_flag) == \
        ("FINNIFTY", 60, 0.05, "PE", "")


def test_compact_row_writes_what_the_parser_reads_back() -> None:
    rows, _ = parsed()
    text = "\n".join([HEADER, *(compact_row(r) for r in rows)])
    again, report = parsed(text)
    assert again == rows and report.rejected == 0


def test_the_underlying_comes_from_the_trading_symbol() -> None:
    assert underlying_of("NIFTY-Dec2026-24000-CE") == "NIFTY"
    assert underlying_of("BANKNIFTY-Jan2027-FUT") == "BANKNIFTY"
    assert underlying_of("ODDNAME", "NIFTY") == "NIFTY"
    with pytest.raises(InstrumentError, match="ODDNAME"):
        underlying_of("ODDNAME")


# -- the index -------------------------------------------------------------------------------------------


@pytest.fixture
def index() -> InstrumentIndex:
    return InstrumentIndex(parsed()[0])


def test_lookups_by_segment_and_id_and_by_sec_id(index: InstrumentIndex) -> None:
    assert index.get("NSE_FNO", 61001).expiry == "2026-12-01"  # type: ignore[union-attr]
    assert index.get("BSE_FNO", "61001").underlying == "SENSEX"  # type: ignore[union-attr]
    assert index.get("NSE_FNO", "999") is None
    assert index.resolve("SEC_61001").segment == "NSE_FNO"  # NSE wins an id both exchanges use
    assert index.resolve("BSE_FNO:61001").underlying == "SENSEX"
    assert index.resolve("nifty").security_id == "13"
    assert index.index("BANKNIFTY").security_id == "25"  # type: ignore[union-attr]
    with pytest.raises(UnknownInstrument, match="security id '5'"):
        index.resolve("SEC_5")
    assert index.find("NOPE-Dec2026-1-CE") is None


def test_a_month_symbol_means_the_monthly_contract_and_a_dated_symbol_names_one(index: InstrumentIndex) -> None:
    assert index.resolve("NIFTY-Dec2026-24000-CE").security_id == "61101"  # the monthly (29 Dec)
    assert index.resolve("NIFTY-01Dec2026-24000-CE").security_id == "61001"
    assert index.resolve("nifty-29dec2026-fut").instrument == "FUTIDX"
    assert index.resolve("NIFTY-Dec2026-24050-CE").expiry == "2026-12-01"  # the only one that month
    with pytest.raises(AmbiguousInstrument) as err:
        index.resolve("NIFTY-Dec2026-24100-CE")  # two weeklies, no monthly
    assert "NIFTY-08Dec2026-24100-CE" in str(err.value) and "NIFTY-15Dec2026-24100-CE" in str(err.value)
    assert index.resolve("SEC_61001").dated_symbol == "NIFTY-01Dec2026-24000-CE"


def test_chains_expiries_strikes_and_atm(index: InstrumentIndex) -> None:
    assert index.expiries("NIFTY") == ["2026-12-01", "2026-12-08", "2026-12-15", "2026-12-29"]
    assert index.monthly_expiries("NIFTY") == {"2026-12-29"}
    assert [(o.strike, o.option_type) for o in index.options("NIFTY", "2026-12-01")] == \
        [(24000.0, "CE"), (24000.0, "PE"), (24050.0, "CE")]
    assert index.strikes("NIFTY", "2026-12-01") == [24000.0, 24050.0]
    assert index.atm_strike("NIFTY", "2026-12-01", 24030.0) == 24050.0
    assert index.atm_strike("NIFTY", "2026-12-01", 24025.0) == 24000.0  # a tie takes the lower strike
    assert index.atm_option("NIFTY", "2026-12-01", 24010.0, "PE").security_id == "61002"
    assert index.option("NIFTY", "2026-12-01", 24050, "PE") is None
    with pytest.raises(UnknownInstrument):
        index.atm_option("NIFTY", "2026-12-01", 24060.0, "PE")
    with pytest.raises(NoExpiry):
        index.atm_strike("NIFTY", "2027-01-05", 24000.0)
    assert [f.trading_symbol for f in index.futures("NIFTY")] == ["NIFTY-Dec2026-FUT"]
    assert index.underlyings() == ["BANKNIFTY", "NIFTY", "SENSEX"]


def test_the_index_picks_the_expiry_by_rule_from_the_masters_flags(index: InstrumentIndex) -> None:
    monday = ist(2026, 11, 30, 10, 0)
    assert index.choose_expiry("NIFTY", "nearest", monday) == "2026-12-01"
    assert index.choose_expiry("NIFTY", "next", monday) == "2026-12-08"
    assert index.choose_expiry("NIFTY", "monthly", monday) == "2026-12-29"
    with pytest.raises(NoExpiry):
        index.choose_expiry("FINNIFTY", "nearest", monday)


# -- prices ----------------------------------------------------------------------------------------------


def test_limit_prices_round_in_the_safe_direction() -> None:
    assert round_to_tick(120.53, 0.05, Side.BUY) == 120.50  # never pay more than decided
    assert round_to_tick(131.02, 0.05, "SELL") == 131.05  # never receive less
    assert round_to_tick(120.50, 0.05, Side.BUY) == 120.50 and round_to_tick(120.50, 0.05, "SELL") == 120.50
    assert round_to_tick(0.15, 0.05, "BUY") == 0.15  # 0.15 / 0.05 is 2.9999999999999996 in floats
    assert round_to_tick(24012.4, 0.1, "SELL") == 24012.4
    with pytest.raises(InstrumentError, match="below one tick"):
        round_to_tick(0.03, 0.05, "BUY")
    with pytest.raises(InstrumentError, match="tick size"):
        round_to_tick(100.0, 0.0, "BUY")
    with pytest.raises(InstrumentError, match="side"):
        round_to_tick(100.0, 0.05, "HOLD")


def test_stop_triggers_fire_no_later_and_protective_limits_round_toward_a_fill() -> None:
    assert round_trigger_to_tick(98.72, 0.05, Side.SELL) == 98.75  # long's stop: a tick early, never late
    assert round_trigger_to_tick(98.72, 0.05, Side.BUY) == 98.70  # short's stop, above the market
    assert round_marketable_to_tick(98.72, 0.05, Side.SELL) == 98.70
    assert round_marketable_to_tick(98.72, 0.05, Side.BUY) == 98.75


def test_every_rounded_price_lies_on_the_tick() -> None:
    for cents in range(5, 100_000, 7):
        price = cents / 100
        for side in (Side.BUY, Side.SELL):
            for rounded in (round_to_tick(price, 0.05, side), round_marketable_to_tick(price, 0.05, side)):
                assert on_tick(rounded, 0.05), (price, side, rounded)
                assert abs(rounded - price) < 0.05 + 1e-9
    assert not on_tick(120.52, 0.05) and on_tick(120.55, 0.05)


# -- lots, strikes, expiries ---------------------------------------------------------------------------


def test_quantities_must_be_whole_lots_and_the_error_names_the_lot_size() -> None:
    assert lots_of(130, 65) == 2
    with pytest.raises(LotSizeError, match=r"lot size is 65 \(nearest valid: 65 or 130\)") as err:
        lots_of(100, 65)
    assert (err.value.qty, err.value.lot_size) == (100, 65)
    with pytest.raises(LotSizeError, match=r"nearest valid: 65\)"):
        lots_of(10, 65)
    with pytest.raises(LotSizeError, match="positive"):
        lots_of(0, 65)
    with pytest.raises(LotSizeError, match="whole number"):
        lots_of(65.0, 65)  # type: ignore[arg-type]
    with pytest.raises(InstrumentError, match="lot size"):
        lots_of(65, 0)


def test_nearest_strike_at_the_edges() -> None:
    assert nearest_strike([100.0, 150.0], 10.0) == 100.0
    assert nearest_strike([100.0, 150.0], 1000.0) == 150.0
    assert nearest_strike([100.0, 150.0], 126.0) == 150.0
    with pytest.raises(InstrumentError):
        nearest_strike([], 1.0)


def test_an_expiry_is_over_at_1530_ist_on_its_day() -> None:
    assert expiry_close_epoch("2026-12-01") == ist(2026, 12, 1, 15, 30)
    expiries = ["2026-12-01", "2026-12-08", "2026-12-29"]
    assert live_expiries(expiries, ist(2026, 12, 1, 15, 29)) == expiries
    assert live_expiries(expiries, ist(2026, 12, 1, 15, 30)) == ["2026-12-08", "2026-12-29"]
    with pytest.raises(InstrumentError):
        expiry_close_epoch("01-12-2026")


def test_choose_expiry_nearest_next_and_monthly() -> None:
    listed = ["2026-11-24", "2026-12-01", "2026-12-08", "2026-12-15", "2026-12-22", "2026-12-29",
              "2027-01-25", "2027-02-23"]
    sunday = ist(2026, 11, 29, 12, 0)
    assert choose_expiry(listed, sunday) == "2026-12-01"
    assert choose_expiry(listed, sunday, "next") == "2026-12-08"
    assert choose_expiry(listed, sunday, "monthly") == "2026-12-29"  # the last listed of December
    expiry_day_after_close = ist(2026, 12, 29, 15, 30)
    assert choose_expiry(listed, expiry_day_after_close) == "2027-01-25"
    assert choose_expiry(listed, expiry_day_after_close, "monthly") == "2027-01-25"
    assert choose_expiry(listed, sunday, "monthly", monthly={"2027-01-25"}) == "2027-01-25"
    with pytest.raises(NoExpiry, match="after 2027-02-23"):
        choose_expiry(listed, ist(2027, 2, 1), "next")
    with pytest.raises(NoExpiry, match="over"):
        choose_expiry(listed, ist(2027, 3, 1))
    with pytest.raises(InstrumentError, match="weekly"):
        choose_expiry(listed, sunday, "weekly")
