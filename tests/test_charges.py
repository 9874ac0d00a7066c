"""Specs for core.charges: Indian index-option charges per fill, from a dated rate table (pure)."""

from __future__ import annotations

import pytest

from core.charges import (
    DEFAULT_RATES,
    Charges,
    ChargesError,
    Fill,
    RateTable,
    contract_note,
    fill_charges,
    rate_table_problems,
)
from core.orders import Side


@pytest.fixture
def table() -> RateTable:
    return RateTable()


def test_the_hand_computed_contract_note_for_a_nifty_ce_round_trip(table: RateTable) -> None:
    """Buy 2 lots of 65 NIFTY CE at 120.50, sell them at 131.05, on Tue 15 Dec 2026 (NSE).

    Rates in force that day: brokerage Rs 20/order, STT 0.15% of the sell premium (since 1 Apr 2026),
    NSE transaction 0.03503%, IPFT 0.0005%, SEBI Rs 10/crore (0.0001%), stamp 0.003% of the buy
    premium, GST 18% on brokerage + transaction + IPFT + SEBI. Each amount rounded to the paisa.

    Buy  130 x 120.50 = 15,665.00
      brokerage                               20.00
      STT          (buy side)                  0.00
      transaction  15,665.00 x 0.03503% =  5.4874495 -> 5.49
      IPFT         15,665.00 x 0.0005%  =  0.078325  -> 0.08
      SEBI         15,665.00 x 0.0001%  =  0.015665  -> 0.02
      stamp        15,665.00 x 0.003%   =  0.46995   -> 0.47
      GST          18% x (20 + 5.49 + 0.08 + 0.02) = 18% x 25.59 = 4.6062 -> 4.61
      total        20 + 5.49 + 0.08 + 0.02 + 0.47 + 4.61 = 30.67
    Sell 130 x 131.05 = 17,036.50
      brokerage                               20.00
      STT          17,036.50 x 0.15%    = 25.55475   -> 25.55
      transaction  17,036.50 x 0.03503% =  5.96788595 -> 5.97
      IPFT         17,036.50 x 0.0005%  =  0.0851825 -> 0.09
      SEBI         17,036.50 x 0.0001%  =  0.0170365 -> 0.02
      stamp        (sell side)                 0.00
      GST          18% x (20 + 5.97 + 0.09 + 0.02) = 18% x 26.08 = 4.6944 -> 4.69
      total        20 + 25.55 + 5.97 + 0.09 + 0.02 + 4.69 = 56.32
    Gross  17,036.50 - 15,665.00 = 1,371.50
    Charges 30.67 + 56.32 = 86.99
    Net    1,371.50 - 86.99 = 1,284.51
    """
    buy = fill_charges(table, side=Side.BUY, qty=130, price=120.50, day="2026-12-15", exchange="NSE_FNO")
    assert buy == Charges(brokerage=20.00, stt=0.00, exchange=5.49, ipft=0.08, sebi=0.02, stamp=0.47, gst=4.61)
    assert buy.total == 30.67
    sell = fill_charges(table, side="SELL", qty=130, price=131.05, day="2026-12-15")
    assert sell == Charges(brokerage=20.00, stt=25.55, exchange=5.97, ipft=0.09, sebi=0.02, stamp=0.00, gst=4.69)
    assert sell.total == 56.32

    note = contract_note(table, [Fill(Side.BUY, 130, 120.50, "2026-12-15"),
                                 Fill(Side.SELL, 130, 131.05, "2026-12-15")])
    assert (note.bought, note.sold, note.gross) == (15_665.00, 17_036.50, 1_371.50)
    assert note.charges == Charges(brokerage=40.00, stt=25.55, exchange=11.46, ipft=0.17, sebi=0.04,
                                   stamp=0.47, gst=9.30)
    assert note.charges.total == 86.99
    assert note.net == 1_284.51
    assert note.charges.as_dict()["total"] == 86.99


def test_the_rate_in_force_on_the_trade_date_applies(table: RateTable) -> None:
    # the same sale on 31 Mar 2026 paid 0.1% STT: 17,036.50 x 0.1% = 17.0365 -> 17.04
    before = fill_charges(table, side="SELL", qty=130, price=131.05, day="2026-03-31")
    after = fill_charges(table, side="SELL", qty=130, price=131.05, day="2026-04-01")
    assert (before.stt, after.stt) == (17.04, 25.55)
    assert table.rates_on("2026-03-31").stt_sell_pct == 0.1
    assert table.rates_on("2026-04-01").stt_sell_pct == 0.15
    with pytest.raises(ChargesError, match="no brokerage_per_order rate in force on 2024-09-30"):
        table.rates_on("2024-09-30")
    assert str(table.starts()) == "2024-10-01"


def test_bse_options_pay_bses_transaction_rate(table: RateTable) -> None:
    # SENSEX option sold: 20 x 500.00 = 10,000.00; BSE 0.0325% = 3.25; IPFT (BSE) 0; SEBI 0.01;
    # STT 0.15% = 15.00; GST 18% x (20 + 3.25 + 0 + 0.01) = 4.1868 -> 4.19
    sell = fill_charges(table, side="SELL", qty=20, price=500.0, day="2026-12-03", exchange="BSE_FNO")
    assert sell == Charges(brokerage=20.0, stt=15.0, exchange=3.25, ipft=0.0, sebi=0.01, stamp=0.0, gst=4.19)


def test_brokerage_is_per_executed_order_not_per_partial_fill(table: RateTable) -> None:
    first = fill_charges(table, side="BUY", qty=65, price=100.0, day="2026-12-15")
    second = fill_charges(table, side="BUY", qty=65, price=100.0, day="2026-12-15", first_fill_of_order=False)
    assert (first.brokerage, second.brokerage) == (20.0, 0.0)
    # 6,500 x 0.03503% = 2.27695 -> 2.28; IPFT 0.0325 -> 0.03; SEBI 0.0065 -> 0.01; GST 18% x 2.32 = 0.4176
    assert second == Charges(exchange=2.28, ipft=0.03, sebi=0.01, stamp=0.2, gst=0.42)


def test_a_configured_table_replaces_the_defaults(table: RateTable) -> None:
    custom = {**DEFAULT_RATES, "brokerage_per_order": {"2024-10-01": 0.0}, "gst_pct": {"2017-07-01": 0.0}}
    free = fill_charges(RateTable(custom), side="BUY", qty=130, price=120.50, day="2026-12-15")
    assert (free.brokerage, free.gst, free.exchange) == (0.0, 0.0, 5.49)


def test_a_bad_table_is_refused_listing_every_problem() -> None:
    bad = {**DEFAULT_RATES, "stt_sell_pct": {"2026-13-01": 0.15, "2024-10-01": -1.0},
           "gst_pct": {"2017-07-01": 180.0}, "stamp_buy_pct": {}, "surcharge_pct": {"2024-10-01": 1.0}}
    problems = rate_table_problems(bad)
    assert problems == [
        "surcharge_pct: unknown rate (known: brokerage_per_order, stt_sell_pct, exchange_nse_pct, "
        "exchange_bse_pct, ipft_nse_pct, ipft_bse_pct, sebi_per_crore, stamp_buy_pct, gst_pct)",
        "stt_sell_pct: '2026-13-01' is not a YYYY-MM-DD effective date",
        "stt_sell_pct 2024-10-01: -1.0 is negative",
        "stamp_buy_pct: needs at least one 'YYYY-MM-DD' = rate entry",
        "gst_pct 2017-07-01: 180.0 is above 100 percent",
    ]
    with pytest.raises(ChargesError) as err:
        RateTable(bad)
    assert err.value.problems == problems


def test_bad_fills_are_refused(table: RateTable) -> None:
    with pytest.raises(ChargesError, match="quantity"):
        fill_charges(table, side="BUY", qty=0, price=1.0, day="2026-12-15")
    with pytest.raises(ChargesError, match="side"):
        fill_charges(table, side="HOLD", qty=65, price=1.0, day="2026-12-15")
    with pytest.raises(ChargesError, match="exchange"):
        fill_charges(table, side="BUY", qty=65, price=1.0, day="2026-12-15", exchange="MCX")


def test_the_default_table_round_trips_through_its_mapping(table: RateTable) -> None:
    assert table.as_mapping() == DEFAULT_RATES
    assert RateTable(table.as_mapping()).rates_on("2026-12-15") == table.rates_on("2026-12-15")
