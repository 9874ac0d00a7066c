"""Charges on Indian index OPTION trades (NSE/BSE F&O), per fill, from a dated rate table.

Per fill, on the premium turnover (qty x price):

| charge | side | base |
|---|---|---|
| brokerage | each executed order (charged on its first fill) | flat rupees |
| STT (securities transaction tax) | sell | premium turnover |
| exchange transaction charges (NSE and BSE differ) | both | premium turnover |
| IPFT (investor protection fund levy; NSE) | both | premium turnover |
| SEBI turnover fee | both | premium turnover (rupees per crore) |
| stamp duty | buy | premium turnover |
| GST | both | brokerage + exchange + IPFT + SEBI |

Every amount is rounded to the paisa (half up) per fill, GST on the rounded amounts it applies to.
Brokers' contract notes add the day's fills per contract and may round STT and stamp duty to the rupee,
so a day's note can differ from the sum of its fills by less than a rupee per contract and charge.
Not modelled: STT on options exercised at expiry (0.15% of intrinsic value since 1 Apr 2026), which an
intraday strategy that squares off before expiry never pays; the clearing charges some brokers add.

Rates change (STT on options: 0.0625% -> 0.1% on 1 Oct 2024 -> 0.15% on 1 Apr 2026), so each rate is a
series of (effective date, value): the value in force on the trade's IST date applies. `DEFAULT_RATES`
holds the series known when this was written, each value with its source; `config` lets a deployment
replace any series (settings `charges.*`). Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

from core.orders import Side

__all__ = [
    "DEFAULT_RATES",
    "RATE_NAMES",
    "ChargeRates",
    "Charges",
    "ChargesError",
    "ContractNote",
    "Fill",
    "RateTable",
    "contract_note",
    "fill_charges",
    "rate_table_problems",
]

# Each series: effective date (IST trade date from which it applies) -> value.
# `_pct` values are percent of premium turnover (0.1 = 0.1 %); `sebi_per_crore` is rupees per crore
# (1e7 rupees) of turnover; `brokerage_per_order` rupees per executed order; `gst_pct` percent.
DEFAULT_RATES: dict[str, dict[str, float]] = {
    # Dhan: flat Rs 20 per executed order for options (dhan.co pricing, as summarised by investking.in
    # "Dhan brokerage charges": "Flat Rs 20 per executed order on Options"). In force on 2024-10-01; when
    # it started is not verified, so the series starts there.
    "brokerage_per_order": {"2024-10-01": 20.0},
    # STT on the sale of an option, on the premium. 0.0625% until 30 Sep 2024, 0.1% from 1 Oct 2024
    # (Finance (No. 2) Act 2024; NSE circular FATAX63809 of 11 Sep 2024, quoted in brokers' notices).
    # 0.15% from 1 Apr 2026 (Union Budget 2026-27 speech of 1 Feb 2026: "STT on options premium ...
    # raised to 0.15% from the present rate of 0.1%"; Finance Act 2026, from 1 April 2026, per
    # finnovate.in "Budget 2026 STT hike" and the budget-day reports of wionews.com and mid-day.com).
    "stt_sell_pct": {"2024-10-01": 0.1, "2026-04-01": 0.15},
    # NSE equity options: Rs 35.03 per lakh of premium, each side, from 1 Oct 2024, the flat fee SEBI's
    # circular of 1 Jul 2024 on MII charges required (NSE circular of 27 Sep 2024, reported by livemint,
    # hindustantimes and businesstoday on 27-28 Sep 2024). No later NSE revision was found.
    "exchange_nse_pct": {"2024-10-01": 0.03503},
    # BSE SENSEX and BANKEX options: Rs 3,250 per crore of premium from 1 Oct 2024 (same reports).
    # (BSE's SENSEX 50 options and stock options pay Rs 500 per crore; not the contracts traded here.)
    "exchange_bse_pct": {"2024-10-01": 0.0325},
    # NSE investor protection fund levy on options: 0.0005% of premium (Share India's F&O pricing page:
    # "Investor Protection Fund Trust Charge: NSE: 0.0005%"; consistent with brokers that quote NSE
    # options at 0.03553% = 0.03503% + 0.0005%). Start date not verified; in force on 2024-10-01.
    "ipft_nse_pct": {"2024-10-01": 0.0005},
    # BSE's equivalent: NOT VERIFIED (no source found); 0 until someone checks a BSE contract note.
    "ipft_bse_pct": {"2024-10-01": 0.0},
    # SEBI turnover fee: Rs 10 per crore (HDFC Sky, ICICI Direct and Share India pricing pages). Start
    # date not verified; in force on 2024-10-01.
    "sebi_per_crore": {"2024-10-01": 10.0},
    # Stamp duty on the buyer of an option: 0.003% of premium, uniform across states from 1 Jul 2020
    # (Indian Stamp Act amended by the Finance Act 2019; nseindia.com "Stamp Duty" page).
    "stamp_buy_pct": {"2020-07-01": 0.003},
    # GST on brokerage and exchange/SEBI/IPFT charges: 18% since GST began on 1 Jul 2017.
    "gst_pct": {"2017-07-01": 18.0},
}
RATE_NAMES = tuple(DEFAULT_RATES)
_PERCENT_NAMES = frozenset(n for n in RATE_NAMES if n.endswith("_pct"))
CRORE = Decimal(10_000_000)
PAISA = Decimal("0.01")


class ChargesError(ValueError):
    """A bad rate table (`problems` lists every one) or a trade date no rate covers."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class ChargeRates:
    """The rates in force on one day (units as in DEFAULT_RATES)."""

    brokerage_per_order: float
    stt_sell_pct: float
    exchange_nse_pct: float
    exchange_bse_pct: float
    ipft_nse_pct: float
    ipft_bse_pct: float
    sebi_per_crore: float
    stamp_buy_pct: float
    gst_pct: float


def rate_table_problems(series: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Everything wrong with a rate table, as 'name: why' (empty when it is usable)."""
    problems: list[str] = []
    for name in series:
        if name not in DEFAULT_RATES:
            problems.append(f"{name}: unknown rate (known: {', '.join(RATE_NAMES)})")
    for name in RATE_NAMES:
        entries = series.get(name)
        if not entries:
            problems.append(f"{name}: needs at least one 'YYYY-MM-DD' = rate entry")
            continue
        for day, value in entries.items():
            try:
                date.fromisoformat(str(day))
            except ValueError:
                problems.append(f"{name}: {day!r} is not a YYYY-MM-DD effective date")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                problems.append(f"{name} {day}: {value!r} is not a number")
            elif value < 0:
                problems.append(f"{name} {day}: {value!r} is negative")
            elif name in _PERCENT_NAMES and value > 100:
                problems.append(f"{name} {day}: {value!r} is above 100 percent")
    return problems


class RateTable:
    """Dated series of rates; `rates_on(day)` gives those in force on an IST trade date."""

    def __init__(self, series: Mapping[str, Mapping[str, float]] | None = None) -> None:
        source = DEFAULT_RATES if series is None else series
        problems = rate_table_problems(source)
        if problems:
            raise ChargesError(problems)
        self._series: dict[str, list[tuple[date, float]]] = {
            name: sorted((date.fromisoformat(str(day)), float(value)) for day, value in source[name].items())
            for name in RATE_NAMES}

    def as_mapping(self) -> dict[str, dict[str, float]]:
        return {name: {day.isoformat(): value for day, value in entries} for name, entries in self._series.items()}

    def starts(self) -> date:
        """The first date on which every rate is known."""
        return max(entries[0][0] for entries in self._series.values())

    def rates_on(self, day: date | str) -> ChargeRates:
        when = day if isinstance(day, date) else date.fromisoformat(day)
        values: dict[str, float] = {}
        for name, entries in self._series.items():
            in_force = [value for start, value in entries if start <= when]
            if not in_force:
                raise ChargesError([f"no {name} rate in force on {when} (the table starts {entries[0][0]})"])
            values[name] = in_force[-1]
        return ChargeRates(**values)


@dataclass(frozen=True, slots=True)
class Charges:
    """What one fill (or a sum of fills) costs beyond the premium, in rupees."""

    brokerage: float = 0.0
    stt: float = 0.0
    exchange: float = 0.0
    ipft: float = 0.0
    sebi: float = 0.0
    stamp: float = 0.0
    gst: float = 0.0

    @property
    def total(self) -> float:
        return float(sum(Decimal(str(getattr(self, f.name))) for f in fields(self)))

    def __add__(self, other: Charges) -> Charges:
        return Charges(**{f.name: float(Decimal(str(getattr(self, f.name))) + Decimal(str(getattr(other, f.name))))
                          for f in fields(self)})

    def as_dict(self) -> dict[str, float]:
        return {**{f.name: getattr(self, f.name) for f in fields(self)}, "total": self.total}


def _paise(value: Decimal) -> Decimal:
    return value.quantize(PAISA, rounding=ROUND_HALF_UP)


def _exchange_of(exchange: str) -> str:
    upper = exchange.upper()
    if upper.startswith("BSE"):
        return "BSE"
    if upper.startswith("NSE"):
        return "NSE"
    raise ChargesError([f"exchange {exchange!r} is not NSE or BSE"])


def fill_charges(rates: RateTable | ChargeRates, *, side: Side | str, qty: int, price: float,
                 day: date | str, exchange: str = "NSE", first_fill_of_order: bool = True) -> Charges:
    """The charges of one option fill of `qty` units at `price` on IST date `day`.

    `exchange` is NSE or BSE (a segment such as NSE_FNO is accepted). Brokerage is per executed
    order: pass `first_fill_of_order=False` for the second and later partial fills of one order.
    """
    try:
        buy = Side(str(side).upper()) is Side.BUY
    except ValueError:
        raise ChargesError([f"side {side!r} is not BUY or SELL"]) from None
    if isinstance(qty, bool) or not isinstance(qty, int) or qty <= 0:
        raise ChargesError([f"quantity {qty!r} must be a positive whole number"])
    if not math.isfinite(price) or price < 0:
        raise ChargesError([f"price {price!r} must be a non-negative number"])
    r = rates.rates_on(day) if isinstance(rates, RateTable) else rates
    venue = _exchange_of(exchange)
    turnover = Decimal(str(price)) * qty

    def pct(rate: float) -> Decimal:
        return _paise(turnover * Decimal(str(rate)) / 100)

    brokerage = _paise(Decimal(str(r.brokerage_per_order))) if first_fill_of_order else Decimal(0)
    stt = Decimal(0) if buy else pct(r.stt_sell_pct)
    exchange_fee = pct(r.exchange_nse_pct if venue == "NSE" else r.exchange_bse_pct)
    ipft = pct(r.ipft_nse_pct if venue == "NSE" else r.ipft_bse_pct)
    sebi = _paise(turnover * Decimal(str(r.sebi_per_crore)) / CRORE)
    stamp = pct(r.stamp_buy_pct) if buy else Decimal(0)
    gst = _paise((brokerage + exchange_fee + ipft + sebi) * Decimal(str(r.gst_pct)) / 100)
    return Charges(brokerage=float(brokerage), stt=float(stt), exchange=float(exchange_fee), ipft=float(ipft),
                   sebi=float(sebi), stamp=float(stamp), gst=float(gst))


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution, for a contract note: `day` is the IST trade date ('YYYY-MM-DD')."""

    side: Side | str
    qty: int
    price: float
    day: str
    exchange: str = "NSE"
    first_fill_of_order: bool = True


@dataclass(frozen=True, slots=True)
class ContractNote:
    """Fills added up: premium bought and sold, gross P&L (sold - bought), charges, net."""

    bought: float
    sold: float
    charges: Charges

    @property
    def gross(self) -> float:
        return float(Decimal(str(self.sold)) - Decimal(str(self.bought)))

    @property
    def net(self) -> float:
        return float(Decimal(str(self.gross)) - Decimal(str(self.charges.total)))


def contract_note(rates: RateTable, fills: Iterable[Fill]) -> ContractNote:
    """The note for a set of fills; `gross` is a P&L only when the fills close every position."""
    bought = sold = Decimal(0)
    total = Charges()
    for fill in fills:
        total = total + fill_charges(rates, side=fill.side, qty=fill.qty, price=fill.price, day=fill.day,
                                     exchange=fill.exchange, first_fill_of_order=fill.first_fill_of_order)
        value = Decimal(str(fill.price)) * fill.qty
        if Side(str(fill.side).upper()) is Side.BUY:
            bought += value
        else:
            sold += value
    return ContractNote(bought=float(bought), sold=float(sold), charges=total)
