"""The risk guard's shell: the day's risk state of every trader process on the database, and the switches
they share, carried out from the pure rules (core.risk).

Shared, not per process. Several trader processes may run on one PostgreSQL (README, "Two servers"):
- the switches (kill switch, reconciliation hold, a flatten, a breach halt, an operator's resume) live in
  one document, bot_state["risk"]; each change is merged into it as a group of fields stamped with its
  time, so one process's write never erases another's and the latest change of a switch wins;
- the counters are never kept: they are read from the trades table (every process's trades) when they are
  needed. Daily P&L = trades closed today (whatever day they opened) + partial exits of live ones, net of
  charges, plus the unrealized P&L of the live ones at this process's marks; the losing streak; open
  positions; open notional. A restart therefore needs nothing rebuilt (`load` only reports).

An entry is decided inside `storage.entry_gate()`: one transaction holding the one entry lock of the
database, in which the guard reads what every process holds and the caller journals the new trade's
first step. Two processes racing for the last slot cannot both pass.

Not an actor on purpose: the kill switch, a flatten and the reconciliation hold take effect in memory at
once, even while the database is unreachable or the executor is blocked in a broker call. A switch write
that fails is kept and retried (`flush`, every reconciler pass); until it lands, this process's own change
wins over what it reads. `refresh()` (the timeout monitor calls it every sweep) reads the shared state:
another process's kill switch or flatten reaches this one within a sweep, and a mark-to-market breach
halts (and, with risk.flatten_on_daily_loss, flattens) without waiting for a trade to close.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from actors.clock import Clock
from core.calendar import MarketCalendar
from core.risk import (
    DayFigures,
    Decision,
    Denied,
    EntryHold,
    EntryIntent,
    KillSwitchEngaged,
    KillSwitchReleased,
    ReconciliationHoldChanged,
    RiskEvent,
    RiskLimits,
    RiskState,
    TradingHalted,
    TradingResumed,
    check_entry,
    day_counters,
    engage_kill_switch,
    flattens_on,
    ist_day_start,
    loss_breach,
    new_risk_state,
    on_trade_closed,
    release_kill_switch,
    resume_trading,
    set_reconciliation_hold,
    square_off_due,
    start_flatten,
    switch_patch,
    trading_window,
    with_shared_switches,
    with_switches,
)
from storage.errors import StorageError
from storage.records import LeaseClaim
from storage.repositories import Storage
from telemetry.logs import get_logger, incident_id

__all__ = ["RISK_STATE_KEY", "RiskGuard", "no_marks"]

RISK_STATE_KEY = "risk"

log = get_logger("mybot.risk")

_EVENT_NAMES: dict[type[RiskEvent], str] = {
    TradingHalted: "TRADING_HALTED",
    TradingResumed: "TRADING_RESUMED",
    KillSwitchEngaged: "KILL_SWITCH_ENGAGED",
    KillSwitchReleased: "KILL_SWITCH_RELEASED",
    ReconciliationHoldChanged: "RECONCILIATION_HOLD",
}
# The incident each switch is, for the ids that join its opening and closing lines. An open one's id is a
# field of the shared document ("incident_<KIND>"), so the process that releases a switch another opened
# names the same incident.
_INCIDENTS: dict[type[RiskEvent], tuple[str, bool]] = {
    KillSwitchEngaged: ("KILL_SWITCH", True),
    KillSwitchReleased: ("KILL_SWITCH", False),
    TradingHalted: ("LOSS_LIMIT_HALT", True),
    TradingResumed: ("LOSS_LIMIT_HALT", False),
}
_INCIDENT_KINDS = ("KILL_SWITCH", "LOSS_LIMIT_HALT", "RECONCILE_HOLD")

Marks = Callable[[str], float | None]


def no_marks(symbol: str) -> float | None:
    """No marks: only realized P&L counts (risk.mark_to_market = false)."""
    return None


class RiskGuard:
    def __init__(self, limits: RiskLimits, storage: Storage, clock: Clock, key: str = RISK_STATE_KEY, *,
                 calendar: MarketCalendar | None = None, holds: Sequence[EntryHold] = (),
                 marks: Marks = no_marks) -> None:
        self.limits = limits
        self._storage = storage
        self._clock = clock
        self._key = key
        self.calendar = calendar  # None: every day trades 00:00-24:00 (core.risk.trading_window)
        self._holds = tuple(holds)  # e.g. the Dhan token keeper's BROKER_AUTH_EXPIRED
        self._marks = marks  # the latest price of a symbol, never fetched (unrealized P&L, open notional)
        self._lock = threading.RLock()
        self._state = new_risk_state(clock.now())
        # switch group -> the newest stamped change of it this process made or saw; `_unsaved`: not written yet.
        # Reads compose the shared document with these by stamp, so a read that raced a change never undoes it.
        self._known: dict[str, dict[str, Any]] = {}
        self._unsaved: set[str] = set()
        self._loaded = False
        self._incidents: dict[str, str] = {}  # open incident kind -> its id (KILL_SWITCH, LOSS_LIMIT_HALT, ...)

    # -- start-up ---------------------------------------------------------------------------------------

    def load(self) -> RiskState:
        """Read the shared state once (raises StorageError): entries wait for this (the start-up
        reconciliation calls it). Nothing is rebuilt: the counters are read from the trades every time."""
        now = self._clock.now()
        state, _, _ = self._refresh(now, breach=False)
        self._loaded = True
        self.flush()  # switches an operator threw before the database answered
        decision = check_entry(self.limits, state, now, self.calendar, self._holds)
        log.event("RISK_STATE_LOADED", "risk state loaded", day=state.day, realized_pnl=round(state.realized_pnl, 2),
                  unrealized_pnl=round(state.unrealized_pnl, 2), consecutive_losses=state.consecutive_losses,
                  trades_closed=state.trades_closed, open_positions=state.open_positions,
                  kill_switch=state.kill_switch_engaged, reconciliation_hold=state.reconciliation_hold,
                  trading_enabled=state.trading_enabled,
                  entries=("allowed" if decision.allowed else getattr(decision, "code", "")))
        return state

    @property
    def loaded(self) -> bool:
        return self._loaded

    # -- entries ---------------------------------------------------------------------------------------

    @contextmanager
    def entry(self, now: float, intent: EntryIntent, lease: LeaseClaim | None = None) -> Iterator[Decision]:
        """Decide an entry inside the database's entry gate, from what every process holds now (one round trip
        on PostgreSQL, the new trade's lease claimed with it). The caller journals the trade's first step
        inside the block (it commits with the gate); anything it sends goes out after the block. Raises
        StorageError (nothing decided, nothing written)."""
        with self._storage.entry_gate(self._key, ist_day_start(now), lease) as view:
            state, _, _ = self._compose(view.document, view.figures, now, breach=False)
            yield check_entry(self.limits, state, now, self.calendar, self._holds, intent)

    def recheck_entry(self, now: float, intent: EntryIntent) -> Denied | None:
        """Before an entry is sent again (a deferred resend): would it still be allowed? Every rule applies,
        from the shared state as it is now; the entry itself is already among the live trades, so it is
        taken out of the position count and the open notional. A database that cannot say refuses it."""
        try:
            state, _, _ = self._refresh(now, breach=False)
        except StorageError as exc:
            return Denied("STORAGE", f"risk state unreadable: {exc}")
        mine = intent.qty * (intent.quote or intent.price)
        state = replace(state, open_positions=max(0, state.open_positions - 1),
                        exposure=max(0.0, state.exposure - mine))
        decision = check_entry(self.limits, state, now, self.calendar, self._holds, intent)
        return decision if isinstance(decision, Denied) else None

    def trade_closed(self, net_pnl: float, pos_id: str) -> None:
        """A trade of this process closed (its row is written): the counters are read again and a breach it
        causes halts at once (and may flatten), without waiting for the next refresh. With the database
        unreachable the trade is counted in memory until the next read."""
        now = self._clock.now()
        try:
            state, events, incidents = self._refresh(now, breach=True)
        except StorageError:
            with self._lock:
                self._state, events = on_trade_closed(self.limits, self._state, net_pnl, now)
                state = self._state
                incidents = self._remember_halt(events, now)
        log.event("RISK_TRADE_COUNTED", f"{pos_id}: net P&L {net_pnl:+.2f}", pos_id=pos_id,
                  net_pnl=round(net_pnl, 2), realized_pnl=round(state.realized_pnl, 2),
                  consecutive_losses=state.consecutive_losses)
        self._halted(events, incidents, now, pos_id=pos_id)

    # -- operator switches -------------------------------------------------------------------------------

    def engage_kill_switch(self, reason: str) -> RiskState:
        return self._switch("kill_switch", lambda state, now: engage_kill_switch(state, reason, now))

    def release_kill_switch(self, reason: str) -> RiskState:
        """Release the kill switch; a flatten ends with it (every process sees both)."""
        now = self._clock.now()
        with self._lock:
            flattening = bool(self._state.flattening)
        state = self._switch("kill_switch", lambda state, at: release_kill_switch(state, reason, at))
        if flattening and not state.kill_switch_engaged:
            state = self._switch("flattening", lambda state, at: (replace(state, flattening=""), []), now)
        return state

    def flatten(self, reason: str) -> RiskState:
        """Exit everything and stay halted: the kill switch is engaged and stays so until released."""
        self._start_flatten(reason)
        return self.engage_kill_switch(reason)

    def resume(self, reason: str) -> RiskState:
        """An operator lifts a breach halt within the session (losing streaks count from now)."""
        return self._switch("halt", lambda state, now: resume_trading(state, reason, now), groups=("halt", "resume"))

    def set_reconciliation_hold(self, engaged: bool, reason: str = "") -> bool:
        """True when the hold changed."""
        changed: list[RiskEvent] = []

        def change(state: RiskState, now: float) -> tuple[RiskState, list[RiskEvent]]:
            state, events = set_reconciliation_hold(state, engaged, reason, now)
            changed.extend(events)
            return state, events

        self._switch("reconciliation_hold", change)
        return bool(changed)

    # -- what exits are due --------------------------------------------------------------------------------

    def exit_all_reason(self, now: float) -> str:
        """Why every open position must be exited now ("" = no reason): a flatten, or the square-off time."""
        with self._lock:
            flattening = self._state.flattening
        if flattening:
            return f"FLATTEN: {flattening}"
        if square_off_due(self.limits, now, self.calendar):
            window = trading_window(self.limits, self.calendar, now)
            return f"SQUARE_OFF at {window.square_off_text if window else self.limits.square_off_time + ' IST'}"
        return ""

    def refresh(self) -> RiskState:
        """Read the shared state (another process's switches, every process's trades, this process's marks);
        a mark-to-market breach halts, and may flatten. A database that cannot answer keeps the last state."""
        now = self._clock.now()
        try:
            state, events, incidents = self._refresh(now, breach=True)
        except StorageError as exc:
            log.event("RISK_REFRESH_FAILED", f"shared risk state unreadable (last one kept): {exc}", level=30)
            return self.snapshot()
        self._halted(events, incidents, now)
        return state

    # -- views ---------------------------------------------------------------------------------------------

    def snapshot(self) -> RiskState:
        with self._lock:
            return self._state

    def status(self, realized_today: float | None = None, unrealized: float | None = None) -> dict[str, Any]:
        now = self._clock.now()
        state = self.snapshot()
        decision = check_entry(self.limits, state, now, self.calendar, self._holds)
        limits = self.limits
        with self._lock:
            unsaved = sorted(self._unsaved)
        why = "" if decision.allowed else decision.reason if isinstance(decision, Denied) else ""
        return {
            "trading_enabled": decision.allowed,
            "why": why,
            "deny_code": getattr(decision, "code", None),
            "day": state.day,
            "realized_pnl": round(state.realized_pnl, 2),
            "realized_pnl_book": None if realized_today is None else round(realized_today, 2),
            "unrealized_pnl": round(state.unrealized_pnl if unrealized is None else unrealized, 2),
            "day_pnl": round(state.day_pnl, 2),
            "exposure": round(state.exposure, 2),
            "consecutive_losses": state.consecutive_losses,
            "trades_closed": state.trades_closed,
            "open_positions": state.open_positions,
            "halted_for_session": not state.trading_enabled,
            "halt_code": state.halt_code or None,
            "halt_reason": state.halt_reason or None,
            "kill_switch": {"engaged": state.kill_switch_engaged, "reason": state.kill_switch_reason or None},
            "flattening": state.flattening or None,
            "reconciliation_hold": {"engaged": state.reconciliation_hold,
                                    "reason": state.reconciliation_hold_reason or None},
            "square_off_due": square_off_due(limits, now, self.calendar),
            "unsaved_switches": unsaved,
            "limits": {f.name: getattr(limits, f.name) for f in dataclasses.fields(limits)}
            | {"daily_max_loss_pct_rupees": round(limits.daily_loss_pct_rupees, 2)},
        }

    def flush(self) -> None:
        """Write the switch changes that could not be written (the reconciler calls this every pass)."""
        with self._lock:
            unsaved = {group: self._known[group] for group in self._unsaved}
        for group, patch in unsaved.items():
            self._write(group, patch)

    # -- internals ---------------------------------------------------------------------------------------------

    def _refresh(self, now: float, *, breach: bool) -> tuple[RiskState, list[RiskEvent], list[tuple[str, str, bool]]]:
        """What every process says now, composed with this process's newest switch changes (raises
        StorageError); with `breach`, a marked-to-market breach halts (in the same step: no reader ever
        sees the breach without its halt)."""
        document = self._storage.bot_state.get(self._key) or {}
        figures = self._storage.trades.day_figures(ist_day_start(now))
        return self._compose(document, figures, now, breach=breach)

    def _compose(self, document: dict[str, Any], figures: DayFigures, now: float, *,
                 breach: bool) -> tuple[RiskState, list[RiskEvent], list[tuple[str, str, bool]]]:
        """The state from what was read, with this process's newest switch changes (the current state from
        now on); with `breach`, a breach halts in the same step: no reader sees the breach without its halt."""
        events: list[RiskEvent] = []
        with self._lock:
            previous = self._state
            shared = with_shared_switches(document, self._known.values())
            state = with_switches(new_risk_state(now), shared)
            for kind in _INCIDENT_KINDS:  # open incidents of the shared switches, whoever opened them
                opened = shared.get(f"incident_{kind}")
                if opened:
                    self._incidents[kind] = str(opened)
                elif f"incident_{kind}" in shared:
                    self._incidents.pop(kind, None)
            state = day_counters(state, figures, self._marks)
            if breach:
                state, events = loss_breach(self.limits, state, now)
            self._state = state
            incidents = self._remember_halt(events, now)
        self._log_observed(previous, state)
        return state, events, incidents

    def _remember_halt(self, events: list[RiskEvent], now: float) -> list[tuple[str, str, bool]]:
        """(Under the lock.) A halt just decided becomes this process's newest change of the halt switch,
        with the id of the incident it opens."""
        if not events:
            return []
        incidents = self._incident_ids(events)
        self._known["halt"] = {**switch_patch(self._state, "halt", now), **_incident_fields(incidents)}
        self._unsaved.add("halt")
        return incidents

    def _switch(self, group: str, change: Callable[[RiskState, float], tuple[RiskState, list[RiskEvent]]],
                now: float | None = None, groups: Sequence[str] = ()) -> RiskState:
        """Change a switch in memory at once, then merge it into the shared document."""
        now = self._clock.now() if now is None else now
        with self._lock:
            self._state, events = change(self._state, now)
            state = self._state
            incidents = self._incident_ids(events)
            patches = {name: {**switch_patch(state, name, now), **_incident_fields(incidents)}
                       for name in (groups or (group,))}
            if events or group == "flattening":
                self._known.update(patches)
                self._unsaved.update(patches)
        self._log_events(events, incidents)
        if events or group == "flattening":
            for name, patch in patches.items():
                self._write(name, patch)
        return state

    def _write(self, group: str, patch: dict[str, Any]) -> None:
        if not self._loaded:
            return  # the first read (load) comes first: flush() writes it then
        try:
            self._storage.bot_state.merge(self._key, patch, self._clock.now())
        except StorageError as exc:
            log.event("RISK_PERSIST_FAILED", f"{group} not saved (kept in memory, retried): {exc}", level=30,
                      switch=group)
            return
        with self._lock:
            if self._known.get(group) is patch:
                self._unsaved.discard(group)

    def _halted(self, events: list[RiskEvent], incidents: list[tuple[str, str, bool]], now: float,
                **context: Any) -> None:
        """A breach halt is shared; a daily loss breach flattens too (risk.flatten_on_daily_loss)."""
        if not events:
            return
        with self._lock:
            patch = self._known["halt"]
        self._log_events(events, incidents, **context)
        self._write("halt", patch)
        for event in events:
            if isinstance(event, TradingHalted) and flattens_on(self.limits, event):
                self._start_flatten(f"daily loss limit: {event.reason}", now)
                log.event("FLATTEN_ON_DAILY_LOSS", f"every position is exited: {event.reason}", level=40)

    def _start_flatten(self, reason: str, now: float | None = None) -> None:
        self._switch("flattening", lambda state, at: (start_flatten(state, reason), []), now)

    def _log_observed(self, before: RiskState, after: RiskState) -> None:
        """Switches another process threw, as this one sees them change."""
        if before.day != after.day:
            return
        if after.kill_switch_engaged != before.kill_switch_engaged:
            log.event("KILL_SWITCH_OBSERVED", f"kill switch {'engaged' if after.kill_switch_engaged else 'released'}"
                      f" (shared): {after.kill_switch_reason or '-'}", level=30, engaged=after.kill_switch_engaged)
        if after.flattening and not before.flattening:
            log.event("FLATTEN_OBSERVED", f"flatten (shared): {after.flattening}", level=30)
        if after.trading_enabled != before.trading_enabled and not after.trading_enabled:
            log.event("TRADING_HALT_OBSERVED", f"trading halted (shared): {after.halt_reason}", level=30,
                      code=after.halt_code)

    def _incident_ids(self, events: list[RiskEvent]) -> list[tuple[str, str, bool]]:
        """(kind, id, opens) of the incident each event opens or ends ("" kind: none). Under the lock; the
        ids go to the shared document with the switch's own patch (another process's closing line names
        the incident this one opened)."""
        found: list[tuple[str, str, bool]] = []
        for event in events:
            kind, opens = _INCIDENTS.get(type(event), ("", False))
            if isinstance(event, ReconciliationHoldChanged):
                kind, opens = "RECONCILE_HOLD", event.engaged
            if not kind:
                found.append(("", "", False))
            elif opens:
                # A switch engaged again while engaged is the same incident; a halt is its day's own.
                again = self._incidents.get(kind, "") if kind != "LOSS_LIMIT_HALT" else ""
                self._incidents[kind] = again or incident_id(kind, self._state.day, event.at)
                found.append((kind, self._incidents[kind], True))
            else:
                found.append((kind, self._incidents.pop(kind, ""), False))
        return found

    def _log_events(self, events: list[RiskEvent], incidents: list[tuple[str, str, bool]],
                    **context: Any) -> None:
        for event, (_, incident, _) in zip(events, incidents, strict=True):
            name = _EVENT_NAMES.get(type(event), type(event).__name__)
            fields = {k: v for k, v in dataclasses.asdict(event).items() if k != "at"}
            if incident:
                fields["incident_id"] = incident
            level = 40 if isinstance(event, TradingHalted | KillSwitchEngaged) or (
                isinstance(event, ReconciliationHoldChanged) and event.engaged) else 20
            log.event(name, str(fields.get("reason", name)), level=level, **fields, **context)


def _incident_fields(incidents: list[tuple[str, str, bool]]) -> dict[str, Any]:
    """The shared document's fields for the incidents events opened (their id) or ended (null)."""
    return {f"incident_{kind}": (incident if opens else None) for kind, incident, opens in incidents if kind}
