"""The risk guard's shell: the day's RiskState behind a lock, persisted in bot_state, logged on change.

The rules are pure (core.risk); this object holds the one current RiskState of the process and
carries out what the rules decide. It is not an actor on purpose: the kill switch, a flatten and the
reconciliation hold must take effect at once even while the executor is blocked in a broker call, and
check-then-count (`check_entry` + `on_entry_started`) must be atomic against them. Every method is short
(in-memory, plus one bot_state write on a change) and thread-safe.

Persistence: bot_state["risk"] after every change of a switch or a closed trade (the open-position
counter, which the book rebuilds, is saved by the reconciler's periodic `flush`). A failed write is logged and retried on the next
change or `flush()`; the guard keeps deciding from memory (refusing entries because the database blinked
would be safe, but losing the kill switch would not: it lives here first). On `load()` the switches come
from bot_state and the day's counters are recomputed from the `trades` rows (the book wins over
counters: a crash between a close and its accounting loses nothing).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from actors.clock import Clock
from core.calendar import MarketCalendar
from core.risk import (
    Allowed,
    Decision,
    Denied,
    EntryHold,
    KillSwitchEngaged,
    KillSwitchReleased,
    ReconciliationHoldChanged,
    RiskEvent,
    RiskLimits,
    RiskState,
    TradingHalted,
    TradingResumed,
    check_entry,
    engage_kill_switch,
    ist_day,
    new_risk_state,
    on_entry_abandoned,
    on_entry_started,
    on_trade_closed,
    release_kill_switch,
    roll_session,
    set_reconciliation_hold,
    square_off_due,
    trading_window,
    with_open_positions,
)
from storage.errors import StorageError
from storage.repositories import Storage
from telemetry.logs import get_logger, incident_id

__all__ = ["RISK_STATE_KEY", "RiskGuard"]

RISK_STATE_KEY = "risk"

log = get_logger("mybot.risk")

_EVENT_NAMES: dict[type[RiskEvent], str] = {
    TradingHalted: "TRADING_HALTED",
    TradingResumed: "TRADING_RESUMED",
    KillSwitchEngaged: "KILL_SWITCH_ENGAGED",
    KillSwitchReleased: "KILL_SWITCH_RELEASED",
    ReconciliationHoldChanged: "RECONCILIATION_HOLD",
}
# The incident each switch is, for the ids that join its opening and closing lines (across restarts:
# the open ones are saved with the state, under "incidents").
_INCIDENTS: dict[type[RiskEvent], tuple[str, bool]] = {
    KillSwitchEngaged: ("KILL_SWITCH", True),
    KillSwitchReleased: ("KILL_SWITCH", False),
    TradingHalted: ("LOSS_LIMIT_HALT", True),
    TradingResumed: ("LOSS_LIMIT_HALT", False),
}


class RiskGuard:
    def __init__(self, limits: RiskLimits, storage: Storage, clock: Clock, key: str = RISK_STATE_KEY, *,
                 calendar: MarketCalendar | None = None, holds: Sequence[EntryHold] = ()) -> None:
        self.limits = limits
        self._storage = storage
        self._clock = clock
        self._key = key
        self.calendar = calendar  # None: every day trades 00:00-24:00 (core.risk.trading_window)
        self._holds = tuple(holds)  # e.g. the Dhan token keeper's BROKER_AUTH_EXPIRED
        self._lock = threading.RLock()
        self._state = new_risk_state(clock.now())
        self._dirty = False
        self._loaded = False
        self._flattening = ""  # why every position is being exited ("" = not flattening)
        self._incidents: dict[str, str] = {}  # open incident kind -> its id (KILL_SWITCH, LOSS_LIMIT_HALT, ...)

    # -- start-up ---------------------------------------------------------------------------------------

    def load(self) -> RiskState:
        """Switches from bot_state, today's counters from the trades table. Raises StorageError."""
        now = self._clock.now()
        stored = self._storage.bot_state.get(self._key)
        today = ist_day(now)
        closed = [t for t in self._storage.trades.list_trades(state="CLOSED", day=today)]
        closed.sort(key=lambda t: (t.exit_time or 0.0, t.pos_id))
        realized = sum(t.realized_pnl or 0.0 for t in closed)
        losses = 0
        for trade in closed:
            pnl = trade.realized_pnl or 0.0
            losses = losses + 1 if pnl < 0 else (0 if pnl > 0 else losses)
        with self._lock:
            state = RiskState.from_payload(stored) if stored else new_risk_state(now)
            saved = stored.get("incidents") if stored else None
            if isinstance(saved, dict):
                self._incidents = {**{str(k): str(v) for k, v in saved.items()}, **self._incidents}
            state = roll_session(state, now)
            if state.day == today:
                state = replace(state, realized_pnl=realized, consecutive_losses=losses, trades_closed=len(closed))
            early = self._state  # switches an operator threw before the stored state was read win
            if early.kill_switch_engaged and not state.kill_switch_engaged:
                state = replace(state, kill_switch_engaged=True, kill_switch_reason=early.kill_switch_reason)
            if early.reconciliation_hold and not state.reconciliation_hold:
                state = replace(state, reconciliation_hold=True,
                                reconciliation_hold_reason=early.reconciliation_hold_reason)
            self._state = state
            self._loaded = True
            self._dirty = True
            self._persist(now)
            decision = check_entry(self.limits, state, now, self.calendar, self._holds)
        log.event("RISK_STATE_LOADED", "risk state loaded", day=state.day, realized_pnl=round(realized, 2),
                  consecutive_losses=losses, trades_closed=len(closed),
                  kill_switch=state.kill_switch_engaged, reconciliation_hold=state.reconciliation_hold,
                  trading_enabled=state.trading_enabled,
                  entries=("allowed" if decision.allowed else getattr(decision, "code", "")))
        return state

    @property
    def loaded(self) -> bool:
        return self._loaded

    # -- entries ---------------------------------------------------------------------------------------

    def try_enter(self, now: float) -> Decision:
        """check_entry, and when allowed count the entry as open at once (atomic against other callers)."""
        with self._lock:
            self._roll(now)
            decision = check_entry(self.limits, self._state, now, self.calendar, self._holds)
            if isinstance(decision, Allowed):
                self._state = on_entry_started(self._state)
                self._dirty = True  # a counter the book can rebuild: saved by the next flush, not here
            return decision

    def recheck_entry(self, now: float) -> Denied | None:
        """Before an entry already counted as open is sent again (a deferred resend): would it still be
        allowed? Every rule applies but the position count, which already includes this entry."""
        with self._lock:
            self._roll(now)
            state = with_open_positions(self._state, max(0, self._state.open_positions - 1))
            decision = check_entry(self.limits, state, now, self.calendar, self._holds)
        return decision if isinstance(decision, Denied) else None

    def entry_abandoned(self) -> None:
        """An allowed entry ended with no position (rejected, cancelled, refused, a duplicate)."""
        with self._lock:
            self._state = on_entry_abandoned(self._state)
            self._dirty = True

    def trade_closed(self, pnl: float, pos_id: str) -> None:
        now = self._clock.now()
        with self._lock:
            self._roll(now)
            self._state, events = on_trade_closed(self.limits, self._state, pnl, now)
            self._changed(now)
            state = self._state
        log.event("RISK_TRADE_COUNTED", f"{pos_id}: P&L {pnl:+.2f}", pos_id=pos_id, pnl=round(pnl, 2),
                  realized_pnl=round(state.realized_pnl, 2), consecutive_losses=state.consecutive_losses)
        self._log_events(events, pos_id=pos_id)

    def sync_open_positions(self, count: int) -> None:
        with self._lock:
            if self._state.open_positions != count:
                self._state = with_open_positions(self._state, count)
                self._dirty = True

    # -- operator switches -------------------------------------------------------------------------------

    def engage_kill_switch(self, reason: str) -> RiskState:
        now = self._clock.now()
        with self._lock:
            self._state, events = engage_kill_switch(self._state, reason, now)
            self._changed(now)
            state = self._state
        self._log_events(events)
        return state

    def release_kill_switch(self, reason: str) -> RiskState:
        now = self._clock.now()
        with self._lock:
            self._state, events = release_kill_switch(self._state, reason, now)
            if events and self._flattening:
                self._flattening = ""
            self._changed(now)
            state = self._state
        self._log_events(events)
        return state

    def flatten(self, reason: str) -> RiskState:
        """Exit everything and stay halted: the kill switch is engaged and stays so until released."""
        with self._lock:
            self._flattening = reason
            return self.engage_kill_switch(reason)

    def set_reconciliation_hold(self, engaged: bool, reason: str = "") -> bool:
        """True when the hold changed."""
        now = self._clock.now()
        with self._lock:
            self._state, events = set_reconciliation_hold(self._state, engaged, reason, now)
            self._changed(now)
        self._log_events(events)
        return bool(events)

    # -- what exits are due --------------------------------------------------------------------------------

    def exit_all_reason(self, now: float) -> str:
        """Why every open position must be exited now ("" = no reason): a flatten, or the square-off time."""
        if self._flattening:
            return f"FLATTEN: {self._flattening}"
        if square_off_due(self.limits, now, self.calendar):
            window = trading_window(self.limits, self.calendar, now)
            return f"SQUARE_OFF at {window.square_off_text if window else self.limits.square_off_time + ' IST'}"
        return ""

    # -- views ---------------------------------------------------------------------------------------------

    def snapshot(self) -> RiskState:
        with self._lock:
            self._roll(self._clock.now())
            return self._state

    def status(self, realized_today: float | None = None, unrealized: float | None = None) -> dict[str, Any]:
        now = self._clock.now()
        with self._lock:
            self._roll(now)
            state = self._state
            decision = check_entry(self.limits, state, now, self.calendar, self._holds)
            flattening = self._flattening
        limits = self.limits
        why = "" if decision.allowed else decision.reason if isinstance(decision, Denied) else ""
        return {
            "trading_enabled": decision.allowed,
            "why": why,
            "deny_code": getattr(decision, "code", None),
            "day": state.day,
            "realized_pnl": round(state.realized_pnl, 2),
            "realized_pnl_book": None if realized_today is None else round(realized_today, 2),
            "unrealized_pnl": None if unrealized is None else round(unrealized, 2),
            "consecutive_losses": state.consecutive_losses,
            "trades_closed": state.trades_closed,
            "open_positions": state.open_positions,
            "halted_for_session": not state.trading_enabled,
            "halt_code": state.halt_code or None,
            "halt_reason": state.halt_reason or None,
            "kill_switch": {"engaged": state.kill_switch_engaged, "reason": state.kill_switch_reason or None},
            "flattening": flattening or None,
            "reconciliation_hold": {"engaged": state.reconciliation_hold,
                                    "reason": state.reconciliation_hold_reason or None},
            "square_off_due": square_off_due(limits, now, self.calendar),
            "limits": {
                "trading_enabled": limits.trading_enabled, "daily_max_loss": limits.daily_max_loss,
                "daily_max_loss_pct": limits.daily_max_loss_pct, "capital": limits.capital,
                "daily_max_loss_pct_rupees": round(limits.daily_loss_pct_rupees, 2),
                "consecutive_losses_limit": limits.consecutive_losses_limit,
                "max_open_positions": limits.max_open_positions, "session_start": limits.session_start,
                "session_end": limits.session_end, "square_off_time": limits.square_off_time,
            },
        }

    def flush(self) -> None:
        """Retry a failed bot_state write (the reconciler calls this every pass)."""
        with self._lock:
            self._roll(self._clock.now())
            if self._dirty:
                self._persist(self._clock.now())

    # -- internals (under the lock) ---------------------------------------------------------------------------

    def _roll(self, now: float) -> None:
        rolled = roll_session(self._state, now)
        if rolled is not self._state:
            ended = self._incidents.pop("LOSS_LIMIT_HALT", "") if rolled.trading_enabled else ""
            halt: dict[str, Any] = {"incident_id": ended} if ended else {}  # the halt this roll ends
            log.event("RISK_SESSION_ROLLED", f"new session {rolled.day}: counters reset", day=rolled.day,
                      previous_day=self._state.day, kill_switch=rolled.kill_switch_engaged,
                      reconciliation_hold=rolled.reconciliation_hold, **halt)
            self._state = rolled
            self._changed(now)

    def _changed(self, now: float) -> None:
        self._dirty = True
        self._persist(now)

    def _persist(self, now: float) -> None:
        if not self._loaded:
            return  # nothing to overwrite the stored switches with until they have been read
        try:
            self._storage.bot_state.put(self._key, {**self._state.to_payload(), "incidents": dict(self._incidents)},
                                        now)
        except StorageError as exc:
            log.event("RISK_PERSIST_FAILED", f"risk state not saved (kept in memory, retried): {exc}", level=30)
            return
        self._dirty = False

    def _incident_of(self, event: RiskEvent) -> str:
        """The id of the incident this event opens or ends (saved with the state while open)."""
        kind, opens = _INCIDENTS.get(type(event), ("", False))
        if isinstance(event, ReconciliationHoldChanged):
            kind, opens = "RECONCILE_HOLD", event.engaged
        if not kind:
            return ""
        with self._lock:
            if opens:
                found = self._incidents.get(kind)
                if found:
                    return found
                self._incidents[kind] = incident_id(kind, self._state.day, event.at)
                self._changed(event.at)
                return self._incidents[kind]
            found = self._incidents.pop(kind, "")
            if found:
                self._changed(event.at)
            return found

    def _log_events(self, events: list[RiskEvent], **context: Any) -> None:
        for event in events:
            name = _EVENT_NAMES.get(type(event), type(event).__name__)
            fields = {k: v for k, v in dataclasses.asdict(event).items() if k != "at"}
            incident = self._incident_of(event)
            if incident:
                fields["incident_id"] = incident
            level = 40 if isinstance(event, TradingHalted | KillSwitchEngaged) or (
                isinstance(event, ReconciliationHoldChanged) and event.engaged) else 20
            log.event(name, str(fields.get("reason", name)), level=level, **fields, **context)
