"""Our symbols <-> Dhan instruments (exchange segment + security id).

NIFTY / BANKNIFTY / FINNIFTY are index instruments (segment IDX_I); SEC_<id> is an NSE F&O contract.
Index ids come from Dhan's scrip master and can be overridden by `dhan.security_ids`
({"NIFTY": "IDX_I:13"}); option ids change every series, which is why options travel as SEC_<id>.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple

__all__ = [
    "FEED_SEGMENT_CODES",
    "Instrument",
    "InstrumentMap",
    "UnknownSymbol",
    "segment_from_order_update",
]

# The market-feed binary header carries the segment as a number (dhan-api.md §3).
FEED_SEGMENT_CODES: dict[str, int] = {
    "IDX_I": 0, "NSE_EQ": 1, "NSE_FNO": 2, "NSE_CURRENCY": 3, "BSE_EQ": 4, "MCX_COMM": 5,
    "BSE_CURRENCY": 7, "BSE_FNO": 8,
}
_SEGMENT_BY_CODE = {code: name for name, code in FEED_SEGMENT_CODES.items()}

DEFAULT_INSTRUMENTS: dict[str, tuple[str, int]] = {
    "NIFTY": ("IDX_I", 13),
    "BANKNIFTY": ("IDX_I", 25),
    "FINNIFTY": ("IDX_I", 27),
}

_SEC = re.compile(r"^SEC_(\d+)$")
_REF = re.compile(r"^([A-Z_]+):(\d+)$")


class UnknownSymbol(ValueError):
    """The symbol has no Dhan instrument (not an index we know, not SEC_<id>, no override)."""


class Instrument(NamedTuple):
    segment: str  # IDX_I, NSE_FNO, ...
    security_id: int

    @property
    def feed_segment(self) -> int:
        return FEED_SEGMENT_CODES[self.segment]


class InstrumentMap:
    """Both directions of the mapping, built once from the defaults and `dhan.security_ids` overrides."""

    def __init__(self, overrides: Mapping[str, str] | None = None) -> None:
        self._by_symbol: dict[str, Instrument] = {
            symbol: Instrument(segment, sid) for symbol, (segment, sid) in DEFAULT_INSTRUMENTS.items()}
        for symbol, ref in (overrides or {}).items():
            match = _REF.match(ref.strip())
            if match is None or match.group(1) not in FEED_SEGMENT_CODES:
                raise UnknownSymbol(f"dhan.security_ids.{symbol}: {ref!r} is not SEGMENT:id")
            self._by_symbol[symbol] = Instrument(match.group(1), int(match.group(2)))
        self._by_instrument = {inst: symbol for symbol, inst in self._by_symbol.items()}

    def instrument(self, symbol: str) -> Instrument:
        known = self._by_symbol.get(symbol)
        if known is not None:
            return known
        match = _SEC.match(symbol)
        if match is None:
            raise UnknownSymbol(f"no Dhan instrument for symbol {symbol!r}")
        return Instrument("NSE_FNO", int(match.group(1)))

    def symbol(self, segment: str | int, security_id: int | str) -> str:
        """The symbol for a Dhan instrument; segment as a name (NSE_FNO) or a feed code (2)."""
        name = _SEGMENT_BY_CODE.get(segment, str(segment)) if isinstance(segment, int) else segment
        sid = int(security_id)
        known = self._by_instrument.get(Instrument(name, sid))
        if known is not None:
            return known
        if name == "NSE_FNO":
            return f"SEC_{sid}"
        return f"{name}:{sid}"  # not one of ours; keeps positions we do not trade recognisable


def segment_from_order_update(exchange: str, segment: str) -> str:
    """The order-update socket says Exchange "NSE" + Segment "D"; the REST API says NSE_FNO."""
    table = {("NSE", "E"): "NSE_EQ", ("NSE", "D"): "NSE_FNO", ("NSE", "C"): "NSE_CURRENCY",
             ("BSE", "E"): "BSE_EQ", ("BSE", "D"): "BSE_FNO", ("BSE", "C"): "BSE_CURRENCY",
             ("MCX", "M"): "MCX_COMM"}
    if segment == "I":
        return "IDX_I"
    return table.get((exchange.upper(), segment.upper()), "NSE_FNO")
