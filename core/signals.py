"""Signal decisions: a `Score` and the book of open positions in, entry/exit signal events out. Pure.

Rules (`SignalPolicy.decide`):
- Exit: for an open position on the symbol held in direction d, `score.exit_for(d) >= mds_exit_score_min`
  raises `ExitSignalRaised(reason="EXIT_SCORE")`. Exits are raised whatever the session or feed state:
  the score was computed from real candles, and refusing a protective exit is never the safe side (the
  executor and risk guard decide what can be sent).
- Entry: no open position on the symbol, the market is open, the feed is not stale, the score has a
  direction and `entry_score >= mds_entry_score_min`. `entry_blocker` tells why an entry was not raised,
  for the shell's log line.
- Size: lots = the largest `sizing_tiers` lot count whose threshold is <= entry_score (at least 1: the
  entry threshold is the gate) x the underlying's base lots (`lots_per_underlying[symbol]`, else
  `base_lot`: both count LOTS); units per lot = `lot_size`, the instrument master's lot of the contract
  traded (the caller looks it up for the contract it trades; <= 0 = unknown: no entry); qty = lots x
  units, capped by `max_qty` rounded down to whole lots (less than one lot left -> no entry).
- Instrument: with a Dhan option chain for the index, the ATM strike (nearest to the chain's last_price,
  the lower strike on a tie) whose CE (long) / PE (short) leg has a security_id and a positive premium;
  the trade is a BUY of `SEC_<security_id>` at that premium. Without a usable chain the symbol itself is
  traded (paper broker: BUY long, SELL short) at the candle close, and the signal's `note` says so.
- Exits are followed up (`ExitFollowUp`): an exit asked for a position that is still live
  `exit_reraise_seconds` after the last ask is asked again (the exit may have been lost on the way, or its
  order may sit unfilled); the position's end (it is no longer live, or PositionClosed) ends the follow-up.
- pos_id = f"{symbol}-{YYMMDDHHMM}-{n}" from the IST start of the deciding candle, n counting entries
  raised for that symbol and candle (1 unless the same candle is decided again). No uuids: a replay
  gives byte-identical ids, and a re-decided candle a distinct one. NIFTY/BANKNIFTY/FINNIFTY ids are
  <= 22 characters, so `correlation_id(pos_id, leg)` (<= 25) stays readable.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from core.chains import parse_chain
from core.market import IST, Candle
from core.orders import Side
from core.risk import Denied, DenyCode, RiskLimits, RiskState, check_entry, roll_session
from core.scoring import Score

__all__ = [
    "EXIT_SCORE",
    "EntrySignalRaised",
    "ExitAsked",
    "ExitFollowUp",
    "ExitRepeated",
    "ExitSignalRaised",
    "OptionPick",
    "Signal",
    "SignalConfig",
    "SignalPolicy",
    "lots_for",
    "make_pos_id",
    "EntryGate",
    "OPEN_GATE",
    "pick_atm_option",
    "position_direction",
]

EXIT_SCORE = "EXIT_SCORE"


@dataclass(frozen=True)
class EntrySignalRaised:
    """Open a position: BUY/SELL `qty` of `instrument` because `symbol` scored `score` (seed: ENTRY_SIGNAL)."""

    pos_id: str
    symbol: str  # the scored underlying (NIFTY) or instrument
    instrument: str  # what to trade: SEC_<security id> of the ATM option, or the symbol itself
    side: Side
    qty: int
    score: Score
    candle_ts: int  # start of the 1m candle the decision was made on
    at: float  # decision time (epoch seconds; the candle's close unless the caller passed `now`)
    direction: int = 0  # +1 long the underlying, -1 short
    price: float = 0.0  # expected price of `instrument` (option premium or the candle close)
    lots: int = 0
    strike: float | None = None
    option_type: str = ""  # CE / PE / "" when trading the symbol itself
    note: str = ""
    # This signal's own protective exits, replacing the exits.* defaults (core.protection.ProtectionRules
    # field names, e.g. {"stop_loss_pct": 25.0}); empty = the defaults.
    exits: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ExitSignalRaised:
    """Close position `pos_id` (seed: EXIT_SIGNAL)."""

    pos_id: str
    reason: str
    score: Score
    at: float
    symbol: str = ""
    exit_score: float = 0.0


Signal = EntrySignalRaised | ExitSignalRaised


class SignalConfig(Protocol):
    """What the policy reads from `config.settings.StrategySettings`."""

    @property
    def mds_entry_score_min(self) -> float: ...
    @property
    def mds_exit_score_min(self) -> float: ...
    @property
    def base_lot(self) -> int: ...
    @property
    def lots_per_underlying(self) -> Mapping[str, int]: ...
    @property
    def sizing_tiers(self) -> Mapping[str, float]: ...


@dataclass(frozen=True)
class OptionPick:
    instrument: str  # SEC_<security id>
    security_id: str
    strike: float
    option_type: str  # CE / PE
    premium: float
    underlying_price: float


def make_pos_id(symbol: str, candle_ts: float, n: int = 1) -> str:
    stamp = datetime.fromtimestamp(candle_ts, IST).strftime("%y%m%d%H%M")
    return f"{symbol}-{stamp}-{n}"


def lots_for(entry_score: float, tiers: Mapping[str, float]) -> int:
    """The lot count of the highest tier threshold <= entry_score; 1 when none is reached."""
    lots = 1
    best = -1.0
    for threshold, tier_lots in tiers.items():
        level = float(threshold)
        if level <= entry_score and level > best:
            best, lots = level, max(1, int(tier_lots))
    return lots


def pick_atm_option(chain: Mapping[str, Any] | None, direction: int, fallback_price: float) -> OptionPick | None:
    """The ATM CE (direction > 0) or PE (< 0) with a security id and a premium; None if the chain has none."""
    if not chain or direction == 0:
        return None
    parsed = parse_chain(chain)
    underlying = parsed.underlying_price if parsed.underlying_price is not None else fallback_price
    leg = parsed.atm("CE" if direction > 0 else "PE", underlying)
    if leg is None:
        return None
    return OptionPick(leg.symbol, leg.security_id, leg.strike, leg.option_type, leg.last_price, underlying)


def position_direction(symbol: str, instrument: str, side: Side, underlyings: Collection[str]) -> tuple[str, int]:
    """(underlying, direction) of a trade: +1 when it profits from the underlying rising, -1 otherwise.

    "NIFTY 2026-11-27 24500 PE" bought -> ("NIFTY", -1); a CE sold -> ("NIFTY", -1); an index or equity
    traded itself -> (symbol, +1 for BUY / -1 for SELL)."""
    words = instrument.split()
    sign = 1 if side is Side.BUY else -1
    if len(words) >= 2 and words[-1].upper() in ("CE", "PE") and words[0] in underlyings:
        return words[0], sign * (1 if words[-1].upper() == "CE" else -1)
    return symbol, sign


@dataclass(frozen=True, slots=True)
class EntryGate:
    """Everything besides the score and the book that decides whether an entry may be raised now.

    Built by the shell for one candle; `SignalPolicy.entry_blocker` reads it. The risk part is the risk
    guard's own state and limits: the strategy never sends an entry the guard would refuse, and says why in
    the guard's words."""

    market_open: bool = True  # the candle lies inside the session
    square_off_time: str = ""  # HH:MM IST, for the reason text
    after_square_off: bool = False
    feed_stale: bool = False
    max_open_positions: int = 1_000_000
    candle_age_seconds: float = 0.0  # how long ago (by the clock) the candle closed
    max_candle_age_seconds: float = 0.0  # 0 = no limit
    risk: RiskState | None = None  # the trader's risk state (None: no trader to ask)
    risk_limits: RiskLimits | None = None


OPEN_GATE = EntryGate()

# Rules the gate applies in candle time; the guard applies them again, in clock time, at the entry.
_GATED_IN_CANDLE_TIME = frozenset({DenyCode.OUTSIDE_SESSION, DenyCode.AFTER_SQUARE_OFF,
                                   DenyCode.MAX_OPEN_POSITIONS})


class SignalPolicy:
    """Turns scores into entry/exit signals (module docstring). Holds only the per-candle pos_id counter."""

    def __init__(self, settings: SignalConfig) -> None:
        self.entry_min = float(settings.mds_entry_score_min)
        self.exit_min = float(settings.mds_exit_score_min)
        self.base_lot = int(settings.base_lot)  # lots, not units
        self.lots_per_underlying = {str(k): int(v) for k, v in settings.lots_per_underlying.items()}
        self.tiers = {str(k): float(v) for k, v in settings.sizing_tiers.items()}
        for threshold in self.tiers:
            float(threshold)  # a bad tier key is bad config: fail at construction, not mid-session
        self._entries: dict[str, tuple[int, int]] = {}  # symbol -> (candle ts, entries raised on it)

    def entry_blocker(self, symbol: str, score: Score, open_positions: Mapping[str, tuple[str, int]],
                      gate: EntryGate, at: float) -> str | None:
        """Why no entry would be raised at `at` (None: it would; sizing may still refuse). The whole gate."""
        if symbol in open_positions:
            return "position already open"
        if not gate.market_open:
            return "market closed"
        if gate.feed_stale:
            return "feed stale"
        if score.direction == 0:
            return "no direction"
        if score.entry_score < self.entry_min:
            return f"entry_score {score.entry_score:.4f} < {self.entry_min}"
        if gate.after_square_off:
            return f"at or after square-off {gate.square_off_time} IST"
        if len(open_positions) >= gate.max_open_positions:
            return f"{len(open_positions)} open positions (limit {gate.max_open_positions})"
        if gate.risk is not None and gate.risk_limits is not None:
            decision = check_entry(gate.risk_limits, roll_session(gate.risk, at), at)
            if isinstance(decision, Denied) and decision.code not in _GATED_IN_CANDLE_TIME:
                return decision.reason
        if 0 < gate.max_candle_age_seconds < gate.candle_age_seconds:
            return (f"candle closed {gate.candle_age_seconds:.0f} s ago "
                    f"(limit {gate.max_candle_age_seconds:g} s)")
        return None

    def decide(self, symbol: str, score: Score, candle: Candle,
               open_positions: Mapping[str, tuple[str, int]], gate: EntryGate,
               option_chain: Mapping[str, Any] | None, lot_size: int, max_qty: int | None = None,
               now: float | None = None) -> list[Signal]:
        at = float(candle.ts + candle.timeframe) if now is None else now
        position = open_positions.get(symbol)
        if position is not None:
            pos_id, held = position
            exit_value = score.exit_for(held)
            if exit_value >= self.exit_min:
                return [ExitSignalRaised(pos_id, EXIT_SCORE, score, at, symbol, exit_value)]
            return []
        if self.entry_blocker(symbol, score, open_positions, gate, at) is not None:
            return []
        if lot_size <= 0:
            return []  # the lot size of what would be traded is unknown: never guess a quantity
        units = lot_size
        lots = lots_for(score.entry_score, self.tiers) * self.base_lots(symbol)
        if max_qty is not None:
            lots = min(lots, max_qty // units)
        if lots < 1:
            return []
        direction = score.direction
        pick = pick_atm_option(option_chain, direction, candle.close)
        if pick is not None:
            instrument, side, price = pick.instrument, Side.BUY, pick.premium
            strike: float | None = pick.strike
            option_type = pick.option_type
            note = f"ATM {pick.option_type} {pick.strike:g} of {symbol} at {pick.underlying_price:g}"
        else:
            instrument, side, price = symbol, (Side.BUY if direction > 0 else Side.SELL), candle.close
            strike, option_type = None, ""
            note = ("no option chain: trading the symbol itself" if not option_chain
                    else "option chain has no usable ATM leg: trading the symbol itself")
        return [EntrySignalRaised(
            pos_id=make_pos_id(symbol, candle.ts, self._next_entry_number(symbol, candle.ts)),
            symbol=symbol, instrument=instrument, side=side, qty=lots * units, score=score,
            candle_ts=candle.ts, at=at, direction=direction, price=price, lots=lots, strike=strike,
            option_type=option_type, note=note)]

    def base_lots(self, underlying: str) -> int:
        """Lots per entry before the tiers: `lots_per_underlying`, else `base_lot`."""
        return max(1, self.lots_per_underlying.get(underlying, self.base_lot))

    def _next_entry_number(self, symbol: str, candle_ts: int) -> int:
        last = self._entries.get(symbol)
        n = last[1] + 1 if last is not None and last[0] == candle_ts else 1
        self._entries[symbol] = (candle_ts, n)
        return n


@dataclass(frozen=True, slots=True)
class ExitAsked:
    """An exit the strategy raised for a position it has not yet seen close (times are the caller's clock)."""

    signal: ExitSignalRaised  # the last one sent
    first_at: float
    last_at: float
    attempts: int = 1


@dataclass(frozen=True, slots=True)
class ExitRepeated:
    """Raise this exit again: attempt `attempt`, `waited` seconds after the first ask (seed: EXIT_SIGNAL)."""

    signal: ExitSignalRaised
    attempt: int
    waited: float
    since_last: float


@dataclass(frozen=True)
class ExitFollowUp:
    """Exits asked for positions that stay live are asked again, every `reraise_seconds`, until they end.

    The exit may never have reached the trade (dropped while the trading side restarted), or its order may
    sit unfilled while the trade waits: asking again costs nothing (the trade ignores an exit while one is
    working or being retried) and a lost one is recovered. `ask` records each exit the strategy raises;
    `due` takes the trader's live pos_ids and the time: an exit whose position is no longer live is done,
    one still live whose last ask is at least reraise_seconds old is returned to be raised again (and
    counts as asked then). `close` ends one at once (the trader said so).

    A value: every change returns a new one (the shell keeps it in a crash-only Store, so the follow-up
    outlives a restart of the strategy)."""

    reraise_seconds: float
    asked: Mapping[str, ExitAsked] = field(default_factory=dict)  # pos_id -> its asks; never changed in place

    def __post_init__(self) -> None:
        if not self.reraise_seconds > 0:
            raise ValueError(f"reraise_seconds must be positive, got {self.reraise_seconds!r}")

    def ask(self, signal: ExitSignalRaised, now: float) -> ExitFollowUp:
        """The strategy raised `signal` at `now`; a new decision to exit an asked position is one more attempt."""
        previous = self.asked.get(signal.pos_id)
        record = (ExitAsked(signal, now, now) if previous is None
                  else ExitAsked(signal, previous.first_at, now, previous.attempts + 1))
        return replace(self, asked={**self.asked, signal.pos_id: record})

    def close(self, pos_id: str) -> ExitFollowUp:
        """The position ended: no more asks."""
        if pos_id not in self.asked:
            return self
        return replace(self, asked={k: v for k, v in self.asked.items() if k != pos_id})

    def retain(self, live: Collection[str]) -> ExitFollowUp:
        """Only the exits whose position is still live."""
        if all(pos_id in live for pos_id in self.asked):
            return self
        return replace(self, asked={k: v for k, v in self.asked.items() if k in live})

    def due(self, live: Collection[str], now: float) -> tuple[ExitFollowUp, list[ExitRepeated]]:
        """The follow-up after `now`, and the exits to raise again now (in pos_id order), given the pos_ids
        live now."""
        kept = self.retain(live)
        asked = dict(kept.asked)
        repeats: list[ExitRepeated] = []
        for pos_id, record in sorted(kept.asked.items()):
            since_last = now - record.last_at
            if since_last < self.reraise_seconds:
                continue
            signal = replace(record.signal, at=now)
            asked[pos_id] = ExitAsked(signal, record.first_at, now, record.attempts + 1)
            repeats.append(ExitRepeated(signal, record.attempts + 1, now - record.first_at, since_last))
        return (replace(kept, asked=asked) if repeats else kept), repeats

    def pending(self) -> list[ExitAsked]:
        return [self.asked[pos_id] for pos_id in sorted(self.asked)]

    def __contains__(self, pos_id: object) -> bool:
        return pos_id in self.asked

    def __len__(self) -> int:
        return len(self.asked)
