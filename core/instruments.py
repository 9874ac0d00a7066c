"""Tradable instruments as Dhan's scrip master describes them (dhan-api.md §5).

An `Instrument` is one row of the master kept by the system: the NSE/BSE indices, and their index
options and futures. Lot and tick sizes change over time (NIFTY's lot went 25, 75, 65), so they are never
hard-coded: they come from the master, refreshed each trading day.

What is here:

* `parse_scrip_master(lines)` streams Dhan's *compact* CSV (header in dhan-api.md §5) and yields the
  indices, index options and index futures of NSE and BSE; every other row (equities, stock derivatives,
  currency, commodities: most of the file) is skipped after looking at two fields, so a 200k-row file
  parses in well under a second of work per 100k kept rows. Pure: it takes any iterable of text lines;
  opening the file or HTTP stream is the adapter's business.
* `InstrumentIndex`: lookups by (segment, id), by `SEC_<id>`, by trading symbol, options of an
  underlying and expiry, expiries ascending, the ATM strike, the expiry a rule picks.
* Order-sizing helpers: `round_to_tick` (limit prices, safe direction), `round_trigger_to_tick` (stop
  triggers), `round_marketable_to_tick` (prices that must fill), `lots_of` (whole lots or a clear error).
* Expiry helpers: `expiry_close_epoch`, `live_expiries`, `choose_expiry` (`nearest | next | monthly`).
  An expiry is over at 15:30 IST on its day (the close of the session it settles in); `now` is always a
  parameter (epoch seconds), never read from a clock.

Naming: Dhan's trading symbol (`NIFTY-Dec2026-24000-CE`) names the *month*, so every weekly contract of
that month and strike shares it with the monthly one. The index resolves such a symbol to the monthly
contract when there is one (what a trader means by it), otherwise to the single contract of that month,
and refuses an ambiguous one naming the candidates. `Instrument.dated_symbol`
(`NIFTY-01Dec2026-24000-CE`) names one contract exactly and is accepted everywhere a symbol is.
"""

from __future__ import annotations

import bisect
import csv
import math
from collections.abc import Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from core.orders import Side

__all__ = [
    "COMPACT_HEADER",
    "EXPIRY_RULES",
    "AmbiguousInstrument",
    "Instrument",
    "InstrumentError",
    "InstrumentIndex",
    "LotSizeError",
    "NoExpiry",
    "ParseReport",
    "ScripMasterError",
    "UnknownInstrument",
    "choose_expiry",
    "compact_row",
    "expiry_close_epoch",
    "live_expiries",
    "lots_of",
    "nearest_strike",
    "on_tick",
    "parse_scrip_master",
    "round_marketable_to_tick",
    "round_to_tick",
    "round_trigger_to_tick",
    "underlying_of",
]

IST = timezone(timedelta(hours=5, minutes=30), "IST")
EXPIRY_CLOSE_HHMM = (15, 30)  # an expiring contract trades until the session closes on its expiry day
EXPIRY_RULES = ("nearest", "next", "monthly")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True, slots=True)
class Instrument:
    """One instrument of the scrip master.

    `segment` is the Dhan exchange segment the order and feed APIs take (IDX_I, NSE_FNO, BSE_FNO, ...);
    `security_id` is unique only within a segment. `expiry` is 'YYYY-MM-DD' (empty for an index),
    `strike` 0.0 and `option_type` "" for anything that is not an option. `tick_size` is in rupees
    (the compact master gives paise: 5.0 there is 0.05 here).
    """

    segment: str
    security_id: str
    instrument: str  # INDEX, OPTIDX, FUTIDX
    trading_symbol: str  # NIFTY-Dec2026-24000-CE, or the index name
    underlying: str  # NIFTY, BANKNIFTY, FINNIFTY, SENSEX, ...
    lot_size: int
    tick_size: float
    expiry: str = ""
    strike: float = 0.0
    option_type: str = ""  # CE | PE | "" (not an option)
    expiry_flag: str = ""  # W weekly | M monthly | "" (no expiry)

    @property
    def symbol(self) -> str:
        """The name the rest of the system uses for it: the index name, or SEC_<security id>."""
        return self.underlying if self.instrument == "INDEX" else f"SEC_{self.security_id}"

    @property
    def is_option(self) -> bool:
        return self.option_type in ("CE", "PE")

    @property
    def exchange(self) -> str:
        """NSE or BSE: which exchange's charges and calendar apply."""
        return "BSE" if self.segment.startswith("BSE") or self.underlying in _BSE_INDICES else "NSE"

    @property
    def dated_symbol(self) -> str:
        """A name for exactly this contract: NIFTY-01Dec2026-24000-CE, NIFTY-29Dec2026-FUT, or the index."""
        if not self.expiry:
            return self.trading_symbol
        day = date.fromisoformat(self.expiry)
        stamp = f"{day.day:02d}{_MONTHS[day.month - 1]}{day.year}"
        if self.is_option:
            return f"{self.underlying}-{stamp}-{_strike_text(self.strike)}-{self.option_type}"
        return f"{self.underlying}-{stamp}-FUT"


_BSE_INDICES = frozenset({"SENSEX", "BANKEX", "SENSEX50"})


def _strike_text(strike: float) -> str:
    return str(int(strike)) if float(strike).is_integer() else f"{strike:g}"


# -- errors ------------------------------------------------------------------------------------------------


class InstrumentError(ValueError):
    """A bad symbol, quantity, price or expiry request; the message says what and why."""


class UnknownInstrument(InstrumentError):
    pass


class AmbiguousInstrument(InstrumentError):
    def __init__(self, symbol: str, candidates: Sequence[Instrument]) -> None:
        names = ", ".join(sorted(c.dated_symbol for c in candidates))
        super().__init__(f"{symbol} names {len(candidates)} contracts ({names}); use one of those names")
        self.candidates = tuple(candidates)


class LotSizeError(InstrumentError):
    """A quantity that is not a whole, positive number of lots."""

    def __init__(self, qty: int, lot_size: int, message: str) -> None:
        super().__init__(message)
        self.qty = qty
        self.lot_size = lot_size


class NoExpiry(InstrumentError):
    pass


class ScripMasterError(ValueError):
    """The input is not Dhan's compact scrip master (no header, missing columns)."""


# -- parsing the compact scrip master -------------------------------------------------------------------

COMPACT_HEADER = ("SEM_EXM_EXCH_ID", "SEM_SEGMENT", "SEM_SMST_SECURITY_ID", "SEM_INSTRUMENT_NAME",
                  "SEM_EXPIRY_CODE", "SEM_TRADING_SYMBOL", "SEM_LOT_UNITS", "SEM_CUSTOM_SYMBOL",
                  "SEM_EXPIRY_DATE", "SEM_STRIKE_PRICE", "SEM_OPTION_TYPE", "SEM_TICK_SIZE",
                  "SEM_EXPIRY_FLAG", "SEM_EXCH_INSTRUMENT_TYPE", "SEM_SERIES", "SM_SYMBOL_NAME")
_REQUIRED = ("SEM_EXM_EXCH_ID", "SEM_SEGMENT", "SEM_SMST_SECURITY_ID", "SEM_INSTRUMENT_NAME",
             "SEM_TRADING_SYMBOL", "SEM_LOT_UNITS", "SEM_EXPIRY_DATE", "SEM_STRIKE_PRICE",
             "SEM_OPTION_TYPE", "SEM_TICK_SIZE")
_SEGMENTS = {("NSE", "D"): "NSE_FNO", ("BSE", "D"): "BSE_FNO", ("NSE", "I"): "IDX_I", ("BSE", "I"): "IDX_I"}
_KEPT = frozenset({"INDEX", "OPTIDX", "FUTIDX"})
_DERIVATIVE_SEGMENTS = frozenset({"D", "I"})
MAX_REPORTED_PROBLEMS = 20


@dataclass
class ParseReport:
    """What a parse saw: data rows, rows kept, rows skipped as out of scope, rows rejected as malformed.

    `problems` holds the first `MAX_REPORTED_PROBLEMS` rejections as 'line N: why' (line 1 = the header).
    """

    rows: int = 0
    kept: int = 0
    skipped: int = 0
    rejected: int = 0
    problems: list[str] = field(default_factory=list)

    def reject(self, line_no: int, why: str) -> None:
        self.rejected += 1
        if len(self.problems) < MAX_REPORTED_PROBLEMS:
            self.problems.append(f"line {line_no}: {why}")


def parse_scrip_master(lines: Iterable[str], *, underlyings: Container[str] | None = None,
                       report: ParseReport | None = None) -> Iterator[Instrument]:
    """Yield the NSE/BSE indices, index options and index futures of Dhan's compact scrip master.

    `lines` is any iterable of text lines (a file opened with newline='' or not, a decoded HTTP
    stream); leading lines starting with '#' are comments (the shipped snapshot has some; Dhan's file
    has none). `underlyings`, when given, keeps only those (e.g. {"NIFTY", "BANKNIFTY"}).

    A row in scope but malformed (a lot that is not a whole positive number, an option without a strike,
    an expiry that is not a date, ...) is counted in `report` and skipped: one bad row of a 200k-row file
    must not stop the day's refresh. A file without the header's required columns raises
    ScripMasterError naming them.
    """
    report = report if report is not None else ParseReport()
    iterator = iter(lines)
    line_no = 0
    header_line = ""
    for raw in iterator:
        line_no += 1
        stripped = raw.lstrip("\ufeff").strip()
        if stripped and not stripped.startswith("#"):
            header_line = stripped
            break
    if not header_line:
        raise ScripMasterError("the scrip master is empty (no header line)")
    header = [name.strip() for name in next(csv.reader([header_line]))]
    missing = [name for name in _REQUIRED if name not in header]
    if missing:
        raise ScripMasterError("not Dhan's compact scrip master: missing column(s) " + ", ".join(missing))
    col = {name: i for i, name in enumerate(header)}
    i_exch, i_seg, i_name = col["SEM_EXM_EXCH_ID"], col["SEM_SEGMENT"], col["SEM_INSTRUMENT_NAME"]
    prefilter_cut = max(i_exch, i_seg, i_name) + 1  # the first columns never hold quoted commas
    width = len(header)

    for raw in iterator:
        line_no += 1
        line = raw.rstrip("\r\n")
        if not line:
            continue
        report.rows += 1
        head = line.split(",", prefilter_cut)
        if len(head) <= prefilter_cut - 1 or head[i_seg] not in _DERIVATIVE_SEGMENTS or head[i_name] not in _KEPT:
            report.skipped += 1
            continue
        fields = next(csv.reader([line])) if '"' in line else line.split(",")
        if len(fields) < width:
            fields.extend([""] * (width - len(fields)))
        try:
            instrument = _instrument_from(fields, col)
        except _RowError as exc:
            report.reject(line_no, str(exc))
            continue
        if instrument is None or (underlyings is not None and instrument.underlying not in underlyings):
            report.skipped += 1
            continue
        report.kept += 1
        yield instrument


class _RowError(Exception):
    pass


def _instrument_from(fields: list[str], col: dict[str, int]) -> Instrument | None:
    exchange = fields[col["SEM_EXM_EXCH_ID"]].strip()
    segment = _SEGMENTS.get((exchange, fields[col["SEM_SEGMENT"]].strip()))
    if segment is None:
        return None  # e.g. MCX rows filed under D
    kind = fields[col["SEM_INSTRUMENT_NAME"]].strip()
    security_id = fields[col["SEM_SMST_SECURITY_ID"]].strip()
    if not security_id.isdigit():
        raise _RowError(f"security id {security_id!r} is not a number")
    trading_symbol = fields[col["SEM_TRADING_SYMBOL"]].strip()
    if not trading_symbol:
        raise _RowError(f"{segment}:{security_id} has no trading symbol")
    symbol_name = fields[col["SM_SYMBOL_NAME"]].strip() if "SM_SYMBOL_NAME" in col else ""
    flag = fields[col["SEM_EXPIRY_FLAG"]].strip().upper() if "SEM_EXPIRY_FLAG" in col else ""
    tick = _number(fields[col["SEM_TICK_SIZE"]], "tick size", trading_symbol) / 100.0  # paise -> rupees
    if kind == "INDEX":
        return Instrument(segment=segment, security_id=security_id, instrument=kind,
                          trading_symbol=trading_symbol, underlying=trading_symbol,
                          lot_size=max(1, _lot(fields[col["SEM_LOT_UNITS"]], trading_symbol, allow_zero=True)),
                          tick_size=round(max(tick, 0.0), 6))
    if tick <= 0:
        raise _RowError(f"{trading_symbol}: tick size {fields[col['SEM_TICK_SIZE']]!r} is not positive")
    lot = _lot(fields[col["SEM_LOT_UNITS"]], trading_symbol, allow_zero=False)
    expiry = _expiry(fields[col["SEM_EXPIRY_DATE"]], trading_symbol)
    option_type, strike = "", 0.0
    if kind == "OPTIDX":
        option_type = fields[col["SEM_OPTION_TYPE"]].strip().upper()
        if option_type not in ("CE", "PE"):
            raise _RowError(f"{trading_symbol}: option type {option_type!r} is not CE or PE")
        strike = _number(fields[col["SEM_STRIKE_PRICE"]], "strike", trading_symbol)
        if strike <= 0:
            raise _RowError(f"{trading_symbol}: strike {strike:g} is not positive")
    try:
        underlying = underlying_of(trading_symbol, symbol_name)
    except InstrumentError as exc:
        raise _RowError(str(exc)) from None
    return Instrument(segment=segment, security_id=security_id, instrument=kind, trading_symbol=trading_symbol,
                      underlying=underlying, lot_size=lot, tick_size=round(tick, 6), expiry=expiry,
                      strike=strike, option_type=option_type, expiry_flag=flag if flag in ("W", "M") else "")


def _number(text: str, what: str, symbol: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _RowError(f"{symbol}: {what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise _RowError(f"{symbol}: {what} {text!r} is not a number")
    return value


def _lot(text: str, symbol: str, *, allow_zero: bool) -> int:
    value = _number(text, "lot size", symbol)
    if not value.is_integer() or value < 0 or (value == 0 and not allow_zero):
        raise _RowError(f"{symbol}: lot size {text!r} is not a whole positive number")
    return int(value)


def _expiry(text: str, symbol: str) -> str:
    day = text.strip()[:10]
    try:
        date.fromisoformat(day)
    except ValueError:
        raise _RowError(f"{symbol}: expiry {text.strip()!r} is not a date") from None
    return day


def underlying_of(trading_symbol: str, symbol_name: str = "") -> str:
    """The underlying of a derivative: NIFTY for NIFTY-Dec2026-24000-CE or NIFTY-Dec2026-FUT.

    Dhan leaves SM_SYMBOL_NAME blank on index derivative rows, so the trading symbol is the source; the
    symbol name is the fallback for a symbol of another shape.
    """
    parts = trading_symbol.split("-")
    if len(parts) >= 4 and parts[-1] in ("CE", "PE"):
        return "-".join(parts[:-3])
    if len(parts) >= 3 and parts[-1] == "FUT":
        return "-".join(parts[:-2])
    if symbol_name:
        return symbol_name
    raise InstrumentError(f"cannot tell the underlying of {trading_symbol!r}")


def compact_row(instrument: Instrument) -> str:
    """The instrument as one line of the compact CSV (no newline), as Dhan writes it (tick in paise).

    Used to write the shipped snapshot and the fake Dhan's master; `parse_scrip_master` reads it back
    to an equal Instrument.
    """
    exchange = instrument.exchange
    segment_letter = "I" if instrument.segment == "IDX_I" else "D"
    if instrument.instrument == "INDEX":
        expiry_date, strike, option_type, custom = "", "0.00000", "XX", instrument.trading_symbol
    else:
        day = date.fromisoformat(instrument.expiry)
        expiry_date = f"{instrument.expiry} 14:30:00"
        stamp = f"{day.day:02d} {_MONTHS[day.month - 1].upper()}"
        if instrument.is_option:
            strike, option_type = f"{instrument.strike:.5f}", instrument.option_type
            kind = "CALL" if option_type == "CE" else "PUT"
            custom = f"{instrument.underlying} {stamp} {_strike_text(instrument.strike)} {kind}"
        else:
            strike, option_type, custom = "-0.01000", "XX", f"{instrument.underlying} {stamp} FUT"
    fields = [exchange, segment_letter, instrument.security_id, instrument.instrument, "0",
              instrument.trading_symbol, f"{instrument.lot_size:.1f}", custom, expiry_date, strike,
              option_type, f"{instrument.tick_size * 100:.4f}", instrument.expiry_flag or "NA",
              "OP" if instrument.is_option else "FUT" if instrument.instrument == "FUTIDX" else "INDEX",
              "NA", instrument.underlying if instrument.instrument == "INDEX" else ""]
    return ",".join(fields)


# -- the index ----------------------------------------------------------------------------------------------

_SEC_PREFERENCE = ("NSE_FNO", "BSE_FNO", "IDX_I")


class InstrumentIndex:
    """The kept instruments with the lookups the trading code needs. Built once, then read-only.

    A later row with the same (segment, security id) replaces the earlier one (`duplicates` counts them).
    """

    def __init__(self, instruments: Iterable[Instrument]) -> None:
        by_key: dict[tuple[str, str], Instrument] = {}
        duplicates = 0
        for instrument in instruments:
            key = (instrument.segment, instrument.security_id)
            if key in by_key:
                duplicates += 1
            by_key[key] = instrument
        self.duplicates = duplicates
        self._by_key = by_key
        self._by_id: dict[str, list[Instrument]] = {}
        self._by_trading_symbol: dict[str, list[Instrument]] = {}
        self._by_dated: dict[str, Instrument] = {}
        self._indices: dict[str, Instrument] = {}
        chains: dict[tuple[str, str], list[Instrument]] = {}
        futures: dict[str, list[Instrument]] = {}
        monthly: dict[str, set[str]] = {}
        for instrument in by_key.values():
            self._by_id.setdefault(instrument.security_id, []).append(instrument)
            if instrument.instrument == "INDEX":
                # NSE's index wins a name clash: the NSE option chains are the ones keyed by it
                if instrument.underlying not in self._indices or instrument.exchange == "NSE":
                    self._indices[instrument.underlying] = instrument
                continue
            self._by_trading_symbol.setdefault(instrument.trading_symbol.upper(), []).append(instrument)
            self._by_dated[instrument.dated_symbol.upper()] = instrument
            if instrument.is_option:
                chains.setdefault((instrument.underlying, instrument.expiry), []).append(instrument)
                if instrument.expiry_flag == "M":
                    monthly.setdefault(instrument.underlying, set()).add(instrument.expiry)
            else:
                futures.setdefault(instrument.underlying, []).append(instrument)
        for ids in self._by_id.values():
            ids.sort(key=lambda i: _SEC_PREFERENCE.index(i.segment) if i.segment in _SEC_PREFERENCE else 99)
        self._chains = {key: sorted(items, key=lambda i: (i.strike, i.option_type))
                        for key, items in chains.items()}
        self._strikes = {key: sorted({i.strike for i in items}) for key, items in self._chains.items()}
        self._contracts = {(i.underlying, i.expiry, round(i.strike, 4), i.option_type): i
                           for items in self._chains.values() for i in items}
        expiries: dict[str, set[str]] = {}
        for underlying, expiry in self._chains:
            expiries.setdefault(underlying, set()).add(expiry)
        self._expiries = {u: sorted(days) for u, days in expiries.items()}
        self._monthly = monthly
        self._futures = {u: sorted(items, key=lambda i: i.expiry) for u, items in futures.items()}

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[Instrument]:
        return iter(self._by_key.values())

    # -- by name ----------------------------------------------------------------------------------------

    def get(self, segment: str, security_id: str | int) -> Instrument | None:
        return self._by_key.get((segment, str(security_id)))

    def index(self, underlying: str) -> Instrument | None:
        """The index row of an underlying (NIFTY -> IDX_I 13)."""
        return self._indices.get(underlying.upper())

    def find(self, symbol: str) -> Instrument | None:
        """Like `resolve`, but None for an unknown symbol (an ambiguous one still raises)."""
        try:
            return self.resolve(symbol)
        except UnknownInstrument:
            return None

    def resolve(self, symbol: str) -> Instrument:
        """The instrument a user-facing name denotes. Accepted, case-insensitively:

        * `SEC_<id>`: security ids are unique only per segment; when an id exists in several, NSE_FNO
          wins, then BSE_FNO, then IDX_I (the rest of the system trades NSE index options by SEC_<id>);
        * `SEGMENT:<id>` (`NSE_FNO:49081`, the form of `dhan.security_ids`): exactly that one;
        * an index name (`NIFTY`);
        * a dated symbol (`NIFTY-01Dec2026-24000-CE`, `NIFTY-29Dec2026-FUT`): exactly that contract;
        * Dhan's trading symbol (`NIFTY-Dec2026-24000-CE`): see the module docstring.
        """
        text = symbol.strip()
        upper = text.upper()
        if upper.startswith("SEC_"):
            candidates = self._by_id.get(text[4:], [])
            if candidates:
                return candidates[0]
            raise UnknownInstrument(f"no instrument with security id {text[4:]!r} in the scrip master")
        if ":" in text:
            segment, _, security_id = text.partition(":")
            found = self.get(segment.strip().upper(), security_id.strip())
            if found is None:
                raise UnknownInstrument(f"no instrument {text!r} in the scrip master")
            return found
        if upper in self._indices:
            return self._indices[upper]
        if upper in self._by_dated:
            return self._by_dated[upper]
        candidates = self._by_trading_symbol.get(upper, [])
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            monthly = [c for c in candidates if c.expiry_flag == "M"]
            if len(monthly) == 1:
                return monthly[0]
            raise AmbiguousInstrument(text, candidates)
        raise UnknownInstrument(f"no instrument named {text!r} in the scrip master")

    # -- chains -----------------------------------------------------------------------------------------

    def underlyings(self) -> list[str]:
        return sorted(self._expiries)

    def expiries(self, underlying: str) -> list[str]:
        """Option expiries of an underlying, ascending ('YYYY-MM-DD'), past ones included."""
        return list(self._expiries.get(underlying.upper(), []))

    def monthly_expiries(self, underlying: str) -> set[str]:
        """The expiries the master flags monthly (SEM_EXPIRY_FLAG = M)."""
        return set(self._monthly.get(underlying.upper(), set()))

    def options(self, underlying: str, expiry: str) -> list[Instrument]:
        """Every option of one expiry, by strike, CE before PE."""
        return list(self._chains.get((underlying.upper(), expiry), []))

    def strikes(self, underlying: str, expiry: str) -> list[float]:
        return list(self._strikes.get((underlying.upper(), expiry), []))

    def option(self, underlying: str, expiry: str, strike: float, option_type: str) -> Instrument | None:
        return self._contracts.get((underlying.upper(), expiry, round(strike, 4), option_type.upper()))

    def atm_strike(self, underlying: str, expiry: str, price: float) -> float:
        strikes = self._strikes.get((underlying.upper(), expiry))
        if not strikes:
            raise NoExpiry(f"no {underlying} options expiring {expiry} in the scrip master")
        return nearest_strike(strikes, price)

    def atm_option(self, underlying: str, expiry: str, price: float, option_type: str) -> Instrument:
        """The option of that type at the strike nearest `price` (CE for a long view, PE for a short)."""
        strike = self.atm_strike(underlying, expiry, price)
        found = self.option(underlying, expiry, strike, option_type)
        if found is None:
            raise UnknownInstrument(f"no {underlying} {_strike_text(strike)} {option_type} expiring {expiry}")
        return found

    def choose_expiry(self, underlying: str, rule: str, now: float) -> str:
        """The expiry `rule` picks among this underlying's option expiries (see `choose_expiry`)."""
        expiries = self._expiries.get(underlying.upper())
        if not expiries:
            raise NoExpiry(f"no {underlying} options in the scrip master")
        monthly = self._monthly.get(underlying.upper())
        return choose_expiry(expiries, now, rule, monthly=monthly or None)

    def futures(self, underlying: str) -> list[Instrument]:
        """Index futures of an underlying, nearest expiry first."""
        return list(self._futures.get(underlying.upper(), []))


# -- prices, quantities, strikes ------------------------------------------------------------------------


def _side(side: Side | str) -> Side:
    try:
        return Side(str(side).upper())
    except ValueError:
        raise InstrumentError(f"side {side!r} is not BUY or SELL") from None


def _decimals(tick: float) -> int:
    text = repr(tick)
    if "e" in text or "E" in text:
        return 10
    return max(2, len(text.partition(".")[2]))


def _check_price(price: float, tick: float) -> None:
    if not math.isfinite(tick) or tick <= 0:
        raise InstrumentError(f"tick size {tick!r} must be a positive number")
    if not math.isfinite(price) or price <= 0:
        raise InstrumentError(f"price {price!r} must be a positive number")


_EPS = 1e-7  # a ten-millionth of a tick: float noise in price / tick, never a real price difference


def _down(price: float, tick: float) -> float:
    steps = math.floor(price / tick + _EPS)
    if steps < 1:
        raise InstrumentError(f"price {price:g} is below one tick ({tick:g})")
    return round(steps * tick, _decimals(tick))


def _up(price: float, tick: float) -> float:
    return round(math.ceil(price / tick - _EPS) * tick, _decimals(tick))


def round_to_tick(price: float, tick: float, side: Side | str) -> float:
    """A LIMIT price on the exchange's tick grid, rounded in the SAFE direction: BUY down, SELL up.

    Safe means never a worse price than the one computed: a buy limit of 120.53 on a 0.05 tick becomes
    120.50 (we never agree to pay more than we decided to), a sell limit of 131.02 becomes 131.05 (we
    never agree to receive less). The computed price already carries whatever protection band or
    slippage allowance the caller chose; rounding must not silently widen it. The cost is that the
    order is at most one tick less marketable; for a price that must fill regardless, use
    `round_marketable_to_tick`.
    """
    _check_price(price, tick)
    return _down(price, tick) if _side(side) is Side.BUY else _up(price, tick)


def round_trigger_to_tick(trigger: float, tick: float, side: Side | str) -> float:
    """A stop-loss TRIGGER price on the grid, rounded so the stop fires no later than computed.

    `side` is the stop order's side. A SELL stop protects a long position and sits below the market:
    rounding it UP (toward the market) fires it at the computed level or a tick earlier, never after the
    loss we accepted. A BUY stop protects a short and sits above the market: rounding it DOWN. This is
    numerically the same direction as `round_to_tick` (SELL up, BUY down), for a different reason; the
    separate name keeps the reason next to the call.
    """
    _check_price(trigger, tick)
    return _up(trigger, tick) if _side(side) is Side.SELL else _down(trigger, tick)


def round_marketable_to_tick(price: float, tick: float, side: Side | str) -> float:
    """A price that must fill, rounded toward the market: BUY up, SELL down.

    For the limit price of a stop-loss order (a protective exit that does not fill is worse than one
    that fills a tick lower) and for exits chasing a moving market. Never use it for an entry.
    """
    _check_price(price, tick)
    return _up(price, tick) if _side(side) is Side.BUY else _down(price, tick)


def on_tick(price: float, tick: float) -> bool:
    """True when `price` lies on the tick grid (within float noise)."""
    if tick <= 0:
        return False
    steps = price / tick
    return abs(steps - round(steps)) < 1e-6


def lots_of(qty: int, lot_size: int) -> int:
    """How many lots `qty` units make; a LotSizeError naming the lot size unless it is whole and positive.

    Exchanges accept F&O orders only in whole lots; the error suggests the nearest valid quantities.
    """
    if isinstance(lot_size, bool) or not isinstance(lot_size, int) or lot_size <= 0:
        raise InstrumentError(f"lot size {lot_size!r} must be a positive whole number")
    if isinstance(qty, bool) or not isinstance(qty, int):
        raise LotSizeError(0, lot_size, f"quantity {qty!r} must be a whole number of units "
                                        f"(a multiple of the lot size {lot_size})")
    if qty <= 0:
        raise LotSizeError(qty, lot_size, f"quantity {qty} must be positive (a multiple of the lot size "
                                          f"{lot_size})")
    lots, rest = divmod(qty, lot_size)
    if rest:
        below, above = lots * lot_size, (lots + 1) * lot_size
        nearest = f"{below} or {above}" if below else f"{above}"
        raise LotSizeError(qty, lot_size, f"quantity {qty} is not a whole number of lots: the lot size is "
                                          f"{lot_size} (nearest valid: {nearest})")
    return lots


def nearest_strike(strikes: Sequence[float], price: float) -> float:
    """The strike nearest `price` in an ascending list; a tie (price exactly between two) takes the lower."""
    if not strikes:
        raise InstrumentError("no strikes to choose from")
    at = bisect.bisect_left(strikes, price)
    if at == 0:
        return strikes[0]
    if at == len(strikes):
        return strikes[-1]
    below, above = strikes[at - 1], strikes[at]
    return above if above - price < price - below else below


# -- expiries --------------------------------------------------------------------------------------------


def expiry_close_epoch(expiry: str) -> int:
    """Epoch seconds of 15:30 IST on the expiry day: from then on the contract is over."""
    try:
        day = date.fromisoformat(expiry)
    except ValueError:
        raise InstrumentError(f"expiry {expiry!r} is not a YYYY-MM-DD date") from None
    close = datetime(day.year, day.month, day.day, *EXPIRY_CLOSE_HHMM, tzinfo=IST)
    return int(close.timestamp())


def live_expiries(expiries: Iterable[str], now: float) -> list[str]:
    """The expiries not yet over at `now`, ascending."""
    return sorted(e for e in set(expiries) if expiry_close_epoch(e) > now)


def _inferred_monthly(expiries: Sequence[str]) -> set[str]:
    last_of_month: dict[str, str] = {}
    for expiry in sorted(expiries):
        last_of_month[expiry[:7]] = expiry
    return set(last_of_month.values())


def choose_expiry(expiries: Iterable[str], now: float, rule: str = "nearest", *,
                  monthly: Container[str] | None = None) -> str:
    """The expiry a trader means by `rule`, among those not over at `now` (epoch seconds).

    * `nearest`: the first expiry not yet past (on expiry day it is today's, until 15:30 IST);
    * `next`: the one after it;
    * `monthly`: the nearest monthly expiry. `monthly` names them (the master's expiry flag); without
      it, the last listed expiry of each calendar month counts as that month's monthly (NSE lists
      monthlies months ahead and weeklies only weeks ahead, so the last listed one of a month is its
      monthly).
    """
    if rule not in EXPIRY_RULES:
        raise InstrumentError(f"expiry rule {rule!r} is not one of {', '.join(EXPIRY_RULES)}")
    listed = sorted(set(expiries))
    live = live_expiries(listed, now)
    if not live:
        raise NoExpiry("every listed expiry is over" if listed else "no expiries listed")
    if rule == "nearest":
        return live[0]
    if rule == "next":
        if len(live) < 2:
            raise NoExpiry(f"no expiry after {live[0]}")
        return live[1]
    months = monthly if monthly is not None else _inferred_monthly(listed)
    for expiry in live:
        if expiry in months:
            return expiry
    raise NoExpiry("no monthly expiry among " + ", ".join(live))
