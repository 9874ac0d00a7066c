"""Tradable instruments as Dhan's scrip master describes them (dhan-api.md §5).

An `Instrument` is one row of the master kept by the system: the NSE/BSE indices, and their index
options and futures. Lot and tick sizes change over time (NIFTY's lot went 25, 75, 65), so they are never
hard-coded: they come from the master, refreshed each trading day.

Pure: no I/O. Loading the CSV, storing the rows and refreshing them are the adapters' business.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Instrument"]


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
