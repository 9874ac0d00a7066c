"""The one reader of Dhan option-chain payloads (dhan-api.md §1, POST /optionchain).

A payload arrives in three wrappings: Dhan's raw body `{"data": {"last_price", "oc"}, "status"}`, the
SDK's wrapper around it (`{"status", "remarks", "data": <raw body>}`), or the inner object itself (what
the poller stores). `parse_chain` accepts all three and returns an immutable `OptionChain`; nothing else
in the system looks inside a payload. Strike keys are strings with six decimals ("25650.000000"); a leg
without a security id or with a non-positive price is kept out (it cannot be traded or marked).

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["OptionChain", "OptionLeg", "parse_chain"]


@dataclass(frozen=True, slots=True)
class OptionLeg:
    strike: float
    option_type: str  # CE | PE
    security_id: str
    last_price: float
    bid: float = 0.0
    ask: float = 0.0

    @property
    def symbol(self) -> str:
        return f"SEC_{self.security_id}"


@dataclass(frozen=True, slots=True)
class OptionChain:
    underlying_price: float | None
    legs: tuple[OptionLeg, ...] = ()
    _by_symbol: dict[str, OptionLeg] = field(default_factory=dict, repr=False, compare=False)

    @property
    def strikes(self) -> tuple[float, ...]:
        return tuple(sorted({leg.strike for leg in self.legs}))

    def leg(self, symbol: str) -> OptionLeg | None:
        """The leg traded as `symbol` (SEC_<security id>)."""
        return self._by_symbol.get(symbol)

    def prices(self) -> dict[str, float]:
        """SEC_<security id> -> last price of every leg."""
        return {symbol: leg.last_price for symbol, leg in self._by_symbol.items()}

    def atm(self, option_type: str, fallback_price: float) -> OptionLeg | None:
        """The `option_type` leg whose strike is nearest the underlying (the lower strike on a tie)."""
        underlying = self.underlying_price if self.underlying_price is not None else fallback_price
        candidates = [leg for leg in self.legs if leg.option_type == option_type]
        if not candidates:
            return None
        return min(candidates, key=lambda leg: (abs(leg.strike - underlying), leg.strike))


def _body(payload: Any) -> Mapping[str, Any] | None:
    node = payload
    for _ in range(3):
        if not isinstance(node, Mapping):
            return None
        if isinstance(node.get("oc"), Mapping):
            return node
        node = node.get("data")
    return None


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if number == number and number not in (float("inf"), float("-inf")) else 0.0


def parse_chain(payload: Any) -> OptionChain:
    """Every tradable leg of the payload (an empty chain when it is not an option chain)."""
    body = _body(payload)
    if body is None:
        return OptionChain(None)
    legs: list[OptionLeg] = []
    for key, sides in body["oc"].items():
        strike = _number(key)
        if strike <= 0 or not isinstance(sides, Mapping):
            continue
        for option_type in ("CE", "PE"):
            leg = sides.get(option_type.lower())
            if not isinstance(leg, Mapping):
                continue
            security_id = leg.get("security_id")
            price = _number(leg.get("last_price"))
            if security_id in (None, "", 0) or price <= 0:
                continue
            legs.append(OptionLeg(strike, option_type, str(security_id), price,
                                  _number(leg.get("top_bid_price")), _number(leg.get("top_ask_price"))))
    legs.sort(key=lambda leg: (leg.strike, leg.option_type))
    underlying = _number(body.get("last_price"))
    return OptionChain(underlying if underlying > 0 else None, tuple(legs), {leg.symbol: leg for leg in legs})
