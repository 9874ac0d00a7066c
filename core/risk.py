"""The pre-entry risk guard: limits, the day's risk state, and the decisions made from them.

Entries are checked against every limit; exits are always allowed (a guard that blocks exits turns a
loss limit into a bigger loss). A breach (daily loss in rupees or percent, consecutive losses) halts
new entries until the next session; an operator's kill switch and a reconciliation hold stay engaged
until someone releases them, whatever the session.

Pure: `now` comes in as epoch seconds; IST times via core.market. The state is a frozen value the
shell persists in bot_state (`to_payload` / `RiskState.from_payload`).

When entries are allowed, and when positions are squared off (`trading_window`): the market calendar
(core.calendar) says when the exchange trades; `risk.session_start`, `risk.session_end` and
`risk.square_off_time` only narrow that, never widen it. They are read as margins inside the REGULAR
session (09:15-15:30): entries from `session_start - 09:15` after the open until `15:30 - session_end`
before the close, square-off `15:30 - square_off_time` before the close. On a regular day that is
literally max(open, session_start) .. min(close, session_end) and square-off at square_off_time; on a
special session the same margins apply to its own hours (with the defaults a Muhurat session 18:00-19:15
takes entries 18:00-19:15 and squares off at 19:00). Times outside the regular session give no margin
(session_start 00:00 = from the open). Without a calendar (`calendar=None`, or the calendar switched off:
`MarketCalendar.always_open()`) every day runs 00:00-24:00 and the three settings apply as written.

Holds from outside the risk state (`EntryHold`: e.g. the Dhan token has expired) deny entries like the
kill switch does, for as long as the hold says so; they are read at every check, never persisted.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any, Protocol

from core.calendar import MarketCalendar
from core.market import IST, hhmm_seconds

__all__ = [
    "SWITCH_FIELDS",
    "SWITCH_GROUPS",
    "Allowed",
    "ClosedOutcome",
    "EntryIntent",
    "LivePosition",
    "Decision",
    "Denied",
    "DenyCode",
    "EntryHold",
    "KillSwitchEngaged",
    "KillSwitchReleased",
    "ReconciliationHoldChanged",
    "RiskEvent",
    "RiskLimits",
    "RiskState",
    "TradingHalted",
    "TradingResumed",
    "TradingWindow",
    "check_entry",
    "check_exit",
    "check_order",
    "DayFigures",
    "day_counters",
    "day_figures",
    "flattens_on",
    "ist_day_start",
    "loss_breach",
    "start_flatten",
    "switch_patch",
    "switches_of",
    "with_shared_switches",
    "with_switches",
    "engage_kill_switch",
    "ist_day",
    "new_risk_state",
    "on_entry_abandoned",
    "on_entry_started",
    "on_trade_closed",
    "release_kill_switch",
    "resume_trading",
    "roll_session",
    "set_reconciliation_hold",
    "square_off_due",
    "trading_window",
    "with_open_positions",
]


class _RiskSettingsLike(Protocol):
    @property
    def trading_enabled(self) -> bool: ...
    @property
    def daily_max_loss(self) -> float: ...
    @property
    def daily_max_loss_pct(self) -> float: ...
    @property
    def capital(self) -> float: ...
    @property
    def consecutive_losses_limit(self) -> int: ...
    @property
    def max_open_positions(self) -> int: ...
    @property
    def session_start(self) -> str: ...
    @property
    def session_end(self) -> str: ...
    @property
    def square_off_time(self) -> str: ...


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """The configured limits (config.settings.RiskSettings). A limit of 0 for the two loss limits
    switches that rule off; max_open_positions 0 means no new entries at all."""

    trading_enabled: bool = True
    daily_max_loss: float = 5000.0
    daily_max_loss_pct: float = 2.0
    capital: float = 500_000.0
    consecutive_losses_limit: int = 3
    max_open_positions: int = 3
    session_start: str = "09:15"
    session_end: str = "15:30"
    square_off_time: str = "15:15"
    max_qty_per_order: int = 1800  # units (NSE's NIFTY freeze quantity); 0 = no limit
    max_notional_per_trade: float = 150_000.0  # ₹, qty x price of one entry; 0 = no limit
    max_exposure: float = 500_000.0  # ₹, open notional across every live position; 0 = no limit
    max_price: float = 200_000.0  # ₹, the highest price an entry may name (a sanity bound)
    mark_to_market: bool = True  # the loss limits count unrealized P&L at the latest marks
    flatten_on_daily_loss: bool = True  # a daily loss breach also exits every position

    @classmethod
    def from_settings(cls, risk: _RiskSettingsLike) -> RiskLimits:
        return cls(**{f.name: getattr(risk, f.name) for f in dataclasses.fields(cls)})

    @property
    def daily_loss_pct_rupees(self) -> float:
        """daily_max_loss_pct of capital, in rupees (0 = rule off)."""
        return self.capital * self.daily_max_loss_pct / 100.0


class DenyCode:
    """Why an entry was denied: stable codes for tests, metrics and the status API."""

    KILL_SWITCH = "KILL_SWITCH"
    RECONCILIATION_HOLD = "RECONCILIATION_HOLD"
    BROKER_AUTH_EXPIRED = "BROKER_AUTH_EXPIRED"  # an EntryHold: the broker's access token is dead
    TRADING_DISABLED = "TRADING_DISABLED"  # by configuration
    TRADING_HALTED = "TRADING_HALTED"  # by a breach earlier in the session
    DAILY_MAX_LOSS = "DAILY_MAX_LOSS"
    DAILY_MAX_LOSS_PCT = "DAILY_MAX_LOSS_PCT"
    CONSECUTIVE_LOSSES = "CONSECUTIVE_LOSSES"
    MARKET_CLOSED = "MARKET_CLOSED"  # the exchange does not trade now (weekend, holiday, after hours)
    OUTSIDE_SESSION = "OUTSIDE_SESSION"  # the exchange trades, but outside risk.session_start..session_end
    AFTER_SQUARE_OFF = "AFTER_SQUARE_OFF"
    MAX_OPEN_POSITIONS = "MAX_OPEN_POSITIONS"
    MAX_QTY_PER_ORDER = "MAX_QTY_PER_ORDER"
    MAX_NOTIONAL = "MAX_NOTIONAL"
    MAX_EXPOSURE = "MAX_EXPOSURE"
    PRICE_OUT_OF_BAND = "PRICE_OUT_OF_BAND"  # a manual price too far from the live quote
    PRICE_OUT_OF_RANGE = "PRICE_OUT_OF_RANGE"  # a price no instrument here trades at


@dataclass(frozen=True, slots=True)
class Allowed:
    allowed: bool = True


@dataclass(frozen=True, slots=True)
class Denied:
    code: str
    reason: str
    allowed: bool = False


Decision = Allowed | Denied

# A hold from outside the risk state: None while entries may go on, else why not (read at every check).
EntryHold = Callable[[], Denied | None]


@dataclass(frozen=True, slots=True)
class RiskState:
    """The day's risk counters and switches (the seed's bot_state)."""

    day: str  # IST date, YYYY-MM-DD, the counters belong to
    trading_enabled: bool = True  # False after a breach, until the next session
    halt_reason: str = ""
    halt_code: str = ""
    realized_pnl: float = 0.0
    consecutive_losses: int = 0
    trades_closed: int = 0
    open_positions: int = 0
    kill_switch_engaged: bool = False
    kill_switch_reason: str = ""
    reconciliation_hold: bool = False
    reconciliation_hold_reason: str = ""
    flattening: str = ""  # why every position is being exited ("" = not flattening); ends with the session
    resumed_at: float = 0.0  # an operator lifted a halt then: losing streaks count from there
    unrealized_pnl: float = 0.0  # of the live positions at the latest marks
    exposure: float = 0.0  # open notional of the live positions and of entries still working, ₹

    @property
    def day_pnl(self) -> float:
        """Mark-to-market: realized (net of charges) plus unrealized."""
        return self.realized_pnl + self.unrealized_pnl

    def to_payload(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> RiskState:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in known})


@dataclass(frozen=True, slots=True)
class RiskEvent:
    at: float


@dataclass(frozen=True, slots=True)
class TradingHalted(RiskEvent):
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class TradingResumed(RiskEvent):
    reason: str


@dataclass(frozen=True, slots=True)
class KillSwitchEngaged(RiskEvent):
    reason: str


@dataclass(frozen=True, slots=True)
class KillSwitchReleased(RiskEvent):
    reason: str


@dataclass(frozen=True, slots=True)
class ReconciliationHoldChanged(RiskEvent):
    engaged: bool
    reason: str


def ist_day(now: float) -> str:
    return datetime.fromtimestamp(now, IST).date().isoformat()


def new_risk_state(now: float) -> RiskState:
    return RiskState(day=ist_day(now))


def _breach(limits: RiskLimits, state: RiskState) -> Denied | None:
    """The loss limit the counters are past, if any (checked on every entry, not only on a close:
    limits may have been tightened since the last trade). The loss is marked to market: realized net of
    charges plus the unrealized P&L of what is still open."""
    loss = -state.day_pnl
    if limits.daily_max_loss > 0 and loss >= limits.daily_max_loss:
        return Denied(DenyCode.DAILY_MAX_LOSS,
                      f"daily loss ₹{loss:,.2f} reached the limit ₹{limits.daily_max_loss:,.2f}")
    pct_limit = limits.daily_loss_pct_rupees
    if pct_limit > 0 and loss >= pct_limit:
        return Denied(DenyCode.DAILY_MAX_LOSS_PCT,
                      f"daily loss ₹{loss:,.2f} reached {limits.daily_max_loss_pct}% of capital "
                      f"₹{limits.capital:,.2f} (₹{pct_limit:,.2f})")
    if state.consecutive_losses >= limits.consecutive_losses_limit:
        return Denied(DenyCode.CONSECUTIVE_LOSSES,
                      f"{state.consecutive_losses} consecutive losing trades "
                      f"(limit {limits.consecutive_losses_limit})")
    return None


_ALWAYS_OPEN = MarketCalendar.always_open()


@dataclass(frozen=True, slots=True)
class TradingWindow:
    """One IST day's trading hours as epochs: the exchange's session, and inside it the risk settings' window
    (module docstring). `name` is "" for a regular session, else the special session's name."""

    day: date
    open: float
    close: float
    entries_from: float
    entries_until: float
    square_off_at: float
    name: str = ""

    def entries_allowed(self, now: float) -> bool:
        return self.entries_from <= now < self.entries_until

    @property
    def square_off_text(self) -> str:
        """'15:15 IST', or on a special session '19:00 IST (Muhurat trading)'."""
        text = f"{_hhmm(self.square_off_at, end=True)} IST"
        return f"{text} ({self.name})" if self.name else text

    def describe(self, start: float, end: float) -> str:
        text = f"{_hhmm(start)}-{_hhmm(end, end=True)} IST"
        return f"{text} ({self.name})" if self.name else text


def _hhmm(epoch: float, *, end: bool = False) -> str:
    """HH:MM IST; the midnight that ends a day is 24:00 when `end`."""
    moment = datetime.fromtimestamp(epoch, IST)
    if end and (moment.hour, moment.minute, moment.second) == (0, 0, 0):
        return "24:00"
    return moment.strftime("%H:%M")


def trading_window(limits: RiskLimits, calendar: MarketCalendar | None, now: float) -> TradingWindow | None:
    """The trading window of the IST day containing `now` (None: the exchange does not trade that day)."""
    cal = calendar if calendar is not None else _ALWAYS_OPEN
    day = cal.day_of(now)
    hours = cal.session(day)
    if hours is None:
        return None
    opens, closes = hours
    regular_open, regular_close = (m * 60 for m in cal.regular_minutes)
    start_margin = max(0, hhmm_seconds(limits.session_start) - regular_open)
    end_margin = max(0, regular_close - hhmm_seconds(limits.session_end))
    square_off_lead = max(0, regular_close - hhmm_seconds(limits.square_off_time))
    special = cal.special_session(day)
    return TradingWindow(day=day, open=opens, close=closes, entries_from=opens + start_margin,
                         entries_until=closes - end_margin, square_off_at=closes - square_off_lead,
                         name=special.name if special is not None else "")


def check_entry(limits: RiskLimits, state: RiskState, now: float, calendar: MarketCalendar | None = None,
                holds: Sequence[EntryHold] = (), intent: EntryIntent | None = None) -> Decision:
    """May a new position be opened now (and this order, with `intent`)? The first failing rule is the reason.

    The shell rolls the state (`roll_session`) before asking, so the counters are today's. `calendar`
    None: every day trades 00:00-24:00 (the risk settings alone make the window).
    """
    if state.kill_switch_engaged:
        return Denied(DenyCode.KILL_SWITCH, f"kill switch engaged: {state.kill_switch_reason or 'by operator'}")
    if state.reconciliation_hold:
        return Denied(DenyCode.RECONCILIATION_HOLD,
                      f"reconciliation hold: {state.reconciliation_hold_reason or 'broker and book disagree'}")
    for hold in holds:
        held = hold()
        if held is not None:
            return held
    if not limits.trading_enabled:
        return Denied(DenyCode.TRADING_DISABLED, "trading disabled by configuration (risk.trading_enabled)")
    if not state.trading_enabled:
        return Denied(state.halt_code or DenyCode.TRADING_HALTED,
                      f"trading halted for the session: {state.halt_reason or 'limit breached'}")
    breach = _breach(limits, state)
    if breach is not None:
        return breach
    window = trading_window(limits, calendar, now)
    if window is None or not window.open <= now < window.close:
        status = (calendar or _ALWAYS_OPEN).market_status(now)
        return Denied(DenyCode.MARKET_CLOSED, f"market closed: {status.reason}")
    if not window.entries_allowed(now):
        return Denied(DenyCode.OUTSIDE_SESSION,
                      f"outside the session {window.describe(window.entries_from, window.entries_until)}")
    if now >= window.square_off_at:
        return Denied(DenyCode.AFTER_SQUARE_OFF, f"at or after square-off {window.square_off_text}")
    if state.open_positions >= limits.max_open_positions:
        return Denied(DenyCode.MAX_OPEN_POSITIONS,
                      f"{state.open_positions} open positions (limit {limits.max_open_positions})")
    if intent is not None:
        refused = check_order(limits, intent, state)
        if refused is not None:
            return refused
    return Allowed()


def check_exit(limits: RiskLimits, state: RiskState, now: float) -> Decision:
    """Exits are always allowed: kill switch, halts and holds exist to reduce risk, never to trap it."""
    return Allowed()


def square_off_due(limits: RiskLimits, now: float, calendar: MarketCalendar | None = None) -> bool:
    """Open intraday positions must be closed: from the day's square-off time (`trading_window`) until
    midnight IST; never on a day the exchange does not trade."""
    window = trading_window(limits, calendar, now)
    return window is not None and now >= window.square_off_at


def on_entry_started(state: RiskState) -> RiskState:
    """An entry was allowed and sent: it counts against max_open_positions from now (so two signals
    racing for the last slot cannot both pass)."""
    return replace(state, open_positions=state.open_positions + 1)


def on_entry_abandoned(state: RiskState) -> RiskState:
    """The entry ended with no position (rejected, cancelled unfilled): free its slot."""
    return replace(state, open_positions=max(0, state.open_positions - 1))


def with_open_positions(state: RiskState, count: int) -> RiskState:
    """Set the count from the trades actually open (restart, reconciliation): the book wins over counters."""
    return replace(state, open_positions=max(0, count))


def on_trade_closed(limits: RiskLimits, state: RiskState, pnl: float,
                    at: float = 0.0) -> tuple[RiskState, list[RiskEvent]]:
    """Count a closed trade's P&L; a breach halts new entries for the rest of the session."""
    losses = state.consecutive_losses + 1 if pnl < 0 else (0 if pnl > 0 else state.consecutive_losses)
    updated = replace(state, realized_pnl=state.realized_pnl + pnl, consecutive_losses=losses,
                      trades_closed=state.trades_closed + 1, open_positions=max(0, state.open_positions - 1))
    if not updated.trading_enabled:
        return updated, []
    breach = _breach(limits, updated)
    if breach is None:
        return updated, []
    halted = replace(updated, trading_enabled=False, halt_reason=breach.reason, halt_code=breach.code)
    return halted, [TradingHalted(at=at, code=breach.code, reason=breach.reason)]


def roll_session(state: RiskState, now: float) -> RiskState:
    """On a new IST day: fresh counters, breach halts lifted, a flatten over. The kill switch and a
    reconciliation hold are an operator's decisions and survive; open positions are carried (the book
    says so)."""
    day = ist_day(now)
    if day <= state.day:
        return state
    return RiskState(day=day, open_positions=state.open_positions,
                     kill_switch_engaged=state.kill_switch_engaged, kill_switch_reason=state.kill_switch_reason,
                     reconciliation_hold=state.reconciliation_hold,
                     reconciliation_hold_reason=state.reconciliation_hold_reason)


def resume_trading(state: RiskState, reason: str, at: float = 0.0) -> tuple[RiskState, list[RiskEvent]]:
    """An operator lifts a breach halt within the session (the counters stay as they are)."""
    if state.trading_enabled:
        return state, []
    return (replace(state, trading_enabled=True, halt_reason="", halt_code="", consecutive_losses=0,
                    resumed_at=at), [TradingResumed(at=at, reason=reason)])


def engage_kill_switch(state: RiskState, reason: str, at: float = 0.0) -> tuple[RiskState, list[RiskEvent]]:
    if state.kill_switch_engaged:
        return state, []
    return (replace(state, kill_switch_engaged=True, kill_switch_reason=reason),
            [KillSwitchEngaged(at=at, reason=reason)])


def release_kill_switch(state: RiskState, reason: str, at: float = 0.0) -> tuple[RiskState, list[RiskEvent]]:
    if not state.kill_switch_engaged:
        return state, []
    return (replace(state, kill_switch_engaged=False, kill_switch_reason=""),
            [KillSwitchReleased(at=at, reason=reason)])


def set_reconciliation_hold(state: RiskState, engaged: bool, reason: str = "",
                            at: float = 0.0) -> tuple[RiskState, list[RiskEvent]]:
    if state.reconciliation_hold == engaged:
        return state, []
    return (replace(state, reconciliation_hold=engaged, reconciliation_hold_reason=reason if engaged else ""),
            [ReconciliationHoldChanged(at=at, engaged=engaged, reason=reason)])


# ---------------------------------------------------------------------------- the order itself


@dataclass(frozen=True, slots=True)
class EntryIntent:
    """The order an entry would send: `price` as given (0: none, the quote prices it), `quote` the live one
    (None: none known). A manual price is held to `band_pct` of the quote; a strategy's price comes from
    a chain that may be seconds old, so only the absolute range applies to it."""

    symbol: str
    qty: int
    price: float = 0.0
    quote: float | None = None
    band_pct: float = 1.0
    manual: bool = False


def check_order(limits: RiskLimits, intent: EntryIntent, state: RiskState) -> Denied | None:
    """The limits on one entry order: its size, its price and what it adds to the open notional."""
    if limits.max_qty_per_order > 0 and intent.qty > limits.max_qty_per_order:
        return Denied(DenyCode.MAX_QTY_PER_ORDER,
                      f"qty {intent.qty} is over the limit of {limits.max_qty_per_order} units per order")
    price = intent.price
    if price and not (0.0 < price <= limits.max_price and math.isfinite(price)):
        return Denied(DenyCode.PRICE_OUT_OF_RANGE,
                      f"price {price:g} is outside 0..{limits.max_price:g} (risk.max_price)")
    quote = intent.quote if intent.quote is not None and intent.quote > 0 else None
    if intent.manual and price and quote is not None:
        off_pct = abs(price - quote) / quote * 100.0
        if off_pct > intent.band_pct:
            return Denied(DenyCode.PRICE_OUT_OF_BAND,
                          f"price {price:g} is {off_pct:.2f}% from the live quote {quote:g} "
                          f"(band {intent.band_pct:g}%)")
    reference = quote if quote is not None else price
    notional = intent.qty * reference
    if limits.max_notional_per_trade > 0 and notional > limits.max_notional_per_trade:
        return Denied(DenyCode.MAX_NOTIONAL, f"notional ₹{notional:,.2f} is over the limit "
                                             f"₹{limits.max_notional_per_trade:,.2f} per trade")
    if limits.max_exposure > 0 and state.exposure + notional > limits.max_exposure:
        return Denied(DenyCode.MAX_EXPOSURE,
                      f"open notional ₹{state.exposure:,.2f} + ₹{notional:,.2f} is over the limit "
                      f"₹{limits.max_exposure:,.2f}")
    return None


# ------------------------------------------------------------- what every process shares and counts

# The switches every trader process on one database shares (bot_state["risk"]), in groups: a change of
# one is merged into the document as its group's fields plus `<group>_changed_at`, so one process's write
# never erases another's and, per group, the latest change wins.
SWITCH_GROUPS: dict[str, tuple[str, ...]] = {
    "kill_switch": ("kill_switch_engaged", "kill_switch_reason"),
    "reconciliation_hold": ("reconciliation_hold", "reconciliation_hold_reason"),
    "flattening": ("flattening", "flattening_day"),
    "halt": ("halted_day", "halt_code", "halt_reason"),
    "resume": ("resumed_at",),
}
SWITCH_FIELDS = tuple(name for fields in SWITCH_GROUPS.values() for name in fields)


def switches_of(state: RiskState) -> dict[str, Any]:
    """The state's switches as the shared document holds them (a halt and a flatten name their day)."""
    return {"kill_switch_engaged": state.kill_switch_engaged, "kill_switch_reason": state.kill_switch_reason,
            "reconciliation_hold": state.reconciliation_hold,
            "reconciliation_hold_reason": state.reconciliation_hold_reason,
            "flattening": state.flattening, "flattening_day": state.day if state.flattening else "",
            "halted_day": "" if state.trading_enabled else state.day, "halt_code": state.halt_code,
            "halt_reason": state.halt_reason, "resumed_at": state.resumed_at}


def with_switches(state: RiskState, document: Mapping[str, Any]) -> RiskState:
    """`state` with the shared document's switches; a halt or a flatten of another day is over."""
    halted = document.get("halted_day") == state.day
    flattening = str(document.get("flattening") or "") if document.get("flattening_day") == state.day else ""
    return replace(state, kill_switch_engaged=bool(document.get("kill_switch_engaged", False)),
                   kill_switch_reason=str(document.get("kill_switch_reason") or ""),
                   reconciliation_hold=bool(document.get("reconciliation_hold", False)),
                   reconciliation_hold_reason=str(document.get("reconciliation_hold_reason") or ""),
                   flattening=flattening, trading_enabled=not halted,
                   halt_code=str(document.get("halt_code") or "") if halted else "",
                   halt_reason=str(document.get("halt_reason") or "") if halted else "",
                   resumed_at=float(document.get("resumed_at") or 0.0))


def switch_patch(state: RiskState, group: str, at: float) -> dict[str, Any]:
    """What merging a change of `group` writes: its fields as `state` has them, stamped with `at`."""
    fields = switches_of(state)
    return {name: fields[name] for name in SWITCH_GROUPS[group]} | {f"{group}_changed_at": at}


def with_shared_switches(document: Mapping[str, Any], unsaved: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The shared document with this process's changes that are not written yet on top, each where it is
    newer than what the document holds for its group."""
    merged = dict(document)
    for patch in unsaved:
        stamp = next(key for key in patch if key.endswith("_changed_at"))
        if float(patch[stamp]) >= float(merged.get(stamp) or 0.0):
            merged.update(patch)
    return merged


@dataclass(frozen=True, slots=True)
class ClosedOutcome:
    """A trade closed today (by any process): when, and its P&L net of charges."""

    closed_at: float
    pos_id: str
    net_pnl: float


@dataclass(frozen=True, slots=True)
class LivePosition:
    """What live trades hold (one trade, or the sum of a symbol and side's): units open at their average price,
    entry units still to fill at their limit, and what partial exits realized, less every charge paid."""

    pos_id: str  # "" for a sum
    symbol: str
    side: str  # BUY | SELL, of the entry
    open_qty: int
    avg_price: float
    working_qty: int = 0  # entry units still to fill
    working_price: float = 0.0
    realized_net: float = 0.0  # partial exits, less every charge paid so far (the entry's too)


@dataclass(frozen=True, slots=True)
class DayFigures:
    """What every process's trades say today (the trades table, aggregated by the database): the trades
    closed today and their P&L net of charges, the newest non-zero outcomes of today as (closed_at, net P&L),
    newest first (the losing streak), the live trades, and what they hold per symbol and side."""

    trades_closed: int = 0
    realized_net_closed: float = 0.0
    recent_outcomes: tuple[tuple[float, float], ...] = ()
    live_trades: int = 0
    positions: tuple[LivePosition, ...] = ()


def day_figures(closed: Sequence[ClosedOutcome], live: Sequence[LivePosition]) -> DayFigures:
    """The figures of explicit trades (what the storage query computes; for tests and small books)."""
    recent = [(c.closed_at, c.net_pnl) for c in sorted(closed, key=lambda c: (c.closed_at, c.pos_id), reverse=True)
              if c.net_pnl != 0]
    return DayFigures(trades_closed=len(closed), realized_net_closed=sum(c.net_pnl for c in closed),
                      recent_outcomes=tuple(recent), live_trades=len(live), positions=tuple(live))


def day_counters(state: RiskState, figures: DayFigures, marks: Callable[[str], float | None]) -> RiskState:
    """The day's counters from what every process's trades say: realized net of charges (closed today,
    whatever day they opened, plus the partial exits of live trades), the losing streak since the last
    operator resume, open positions, mark-to-market and open notional."""
    realized = figures.realized_net_closed + sum(p.realized_net for p in figures.positions)
    streak = 0
    for closed_at, outcome in figures.recent_outcomes:
        if outcome >= 0 or closed_at <= state.resumed_at:  # a win, or an operator's resume, ends the streak
            break
        streak += 1
    unrealized = exposure = 0.0
    for position in figures.positions:
        mark = marks(position.symbol)
        if position.open_qty and mark is not None and mark > 0:
            direction = 1.0 if position.side == "BUY" else -1.0
            unrealized += direction * (mark - position.avg_price) * position.open_qty
        exposure += position.open_qty * (mark if mark is not None and mark > 0 else position.avg_price)
        exposure += position.working_qty * position.working_price
    return replace(state, realized_pnl=realized, consecutive_losses=streak, trades_closed=figures.trades_closed,
                   open_positions=figures.live_trades, unrealized_pnl=unrealized, exposure=exposure)


def loss_breach(limits: RiskLimits, state: RiskState, at: float) -> tuple[RiskState, list[RiskEvent]]:
    """Halt for the session when the marked-to-market counters are past a limit (checked as marks move,
    not only when a trade closes)."""
    if not state.trading_enabled:
        return state, []
    breach = _breach(limits, state)
    if breach is None:
        return state, []
    halted = replace(state, trading_enabled=False, halt_reason=breach.reason, halt_code=breach.code)
    return halted, [TradingHalted(at=at, code=breach.code, reason=breach.reason)]


def flattens_on(limits: RiskLimits, event: RiskEvent) -> bool:
    """A daily loss breach exits every position too (risk.flatten_on_daily_loss); a losing streak only halts."""
    return (limits.flatten_on_daily_loss and isinstance(event, TradingHalted)
            and event.code in (DenyCode.DAILY_MAX_LOSS, DenyCode.DAILY_MAX_LOSS_PCT))


def start_flatten(state: RiskState, reason: str) -> RiskState:
    return replace(state, flattening=reason)


def ist_day_start(now: float) -> float:
    """Epoch seconds of the IST midnight that began the day of `now`."""
    moment = datetime.fromtimestamp(now, IST)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
