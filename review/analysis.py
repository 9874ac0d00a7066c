"""One pass over the merged log lines: incidents, each trade's story, the day at a glance.

`Reviewer.consume(records)` takes (ts, stream, line) in time order and keeps only what the review needs
(open incidents, the lines of each trade, closed candles of traded symbols); `Reviewer.finish()`
builds the `Review`. Pure: no I/O, no clock. The vocabulary it reads is the daemon's (README, Logs).

Linking. A line belongs to a trade by its `pos_id`; failing that by a `correlation_id` or `order_id`
another line of the trade carried (or a correlation id of the form `<pos_id>-E` / `-X<n>`); a crash or
dead letter of actor `trade:<pos_id>` belongs to that trade. A process is a run of one stream (a log
and its rotations): a RUNTIME_STARTING line after lines with no RUNTIME_STOPPED means the previous run
was killed; a line with another `pid` (the daemon stamps pid and role on every line) is another process
even when its start line is missing.

Incident ids: a line's own `incident_id` names its incident, and a closing line that carries one ends
the open incident with that id (the key match is the fallback for logs written before the ids).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.orders import Leg, correlation_id
from review.model import (
    Incident,
    Order,
    PricePoint,
    PriceSeries,
    Process,
    Review,
    Step,
    Summary,
    TradeStory,
)
from review.sources import Record
from review.window import Window

__all__ = ["INCIDENT_KINDS", "Reviewer", "epoch"]

# Every incident kind, with what opens and what ends it (the review's documentation shows this table).
INCIDENT_KINDS: dict[str, str] = {
    "PROCESS_RESTART": "a process ended and started again: killed (no RUNTIME_STOPPED), or exit N; "
                       "from its last line to the next RUNTIME_STARTED",
    "ESCALATION": "SUPERVISOR_ESCALATED / RUNTIME_ESCALATED until the subtree restarts (ACTOR_RESTARTED) or "
                  "the process stops (RUNTIME_STOPPED)",
    "ACTOR_CRASH": "ACTOR_CRASHED until ACTOR_RESTARTED (or ACTOR_STOPPED: not restarted); repeated crashes "
                   "before the restart are counted",
    "ACTOR_RESTART": "an operator's restart: ACTOR_RESTART_REQUESTED until ACTOR_RESTARTED",
    "DEAD_LETTER": "the message that crashed an actor (DEAD_LETTER), a moment",
    "FEED_STALE": "FEED_STALE until FEED_RESUMED for the symbol (or FEED_FINISHED)",
    "DATABASE_OUTAGE": "STORAGE_UNAVAILABLE until STORAGE_RECOVERED / STORAGE_AVAILABLE",
    "REDIS_OUTAGE": "BUS_DEGRADED until BUS_RESTORED (publishing), BUS_LISTENER_ERROR until "
                    "BUS_LISTENER_RECOVERED (subscribing)",
    "MDS_OUTAGE": "MDS_UNAVAILABLE until MDS_AVAILABLE (a trader without its market data service)",
    "ORDER_TIMEOUT": "ORDER_TIMEOUT until the order ends (ORDER_CANCELLED, ORDER_REJECTED or its last fill)",
    "ORDER_SLIPPAGE": "ORDER_SLIPPAGE until the position is closed (TRADE_CLOSED)",
    "KILL_SWITCH": "KILL_SWITCH_ENGAGED until KILL_SWITCH_RELEASED (FLATTEN's positions are affected)",
    "LOSS_LIMIT_HALT": "TRADING_HALTED (daily loss, consecutive losses) until TRADING_RESUMED or the next "
                       "session (RISK_SESSION_ROLLED)",
    "RECONCILE_INCIDENT": "RECONCILE_INCIDENT until RECONCILE_ACKNOWLEDGED",
    "RECONCILE_HOLD": "RECONCILIATION_HOLD engaged for another reason (e.g. an unreadable journal) until "
                      "released",
    "TOKEN_EXPIRY": "TOKEN_EXPIRING / BROKER_AUTH_EXPIRED until TOKEN_RENEWED / TOKEN_RELOADED",
    "EXIT_RETRIES": "an exit that needed more than one exit order or submit retries: from the first "
                    "EXIT_SIGNAL to TRADE_CLOSED (OPERATOR_ALERT when the attempts ran out)",
}

# Events with no handler that still ended a day-wide incident in other names (accepted when present).
TOKEN_START_EVENTS = ("TOKEN_EXPIRING", "TOKEN_EXPIRED", "BROKER_AUTH_EXPIRED")
TOKEN_END_EVENTS = ("TOKEN_RENEWED", "TOKEN_RELOADED", "BROKER_AUTH_RESTORED", "BROKER_AUTH_OK")

MAX_LINES_PER_TRADE = 5_000
MAX_PENDING = 20_000
MAX_CANDLES_PER_SYMBOL = 2_000
_HIDDEN_FIELDS = frozenset({"ts", "level", "logger", "event", "message", "pos_id", "exception"})
_PROCESS_LOCAL = -1  # (see _scope) incidents keyed by stream index end with their process
_DAY_WIDE = -2
_CORRELATION = re.compile(r"^(?P<pos>.+)-(?P<leg>[EX])(?P<attempt>\d*)$")
_TERMINAL_STATES = frozenset({"CLOSED", "REJECTED", "CANCELLED", "DENIED"})
_ACK_WHO = re.compile(r"acknowledged by (?P<who>.+?); hold")

# Exit orders per trade whose hashed correlation ids are derived (exits retry without a limit).
_DERIVED_ATTEMPTS = 64


def _ids(incident: Incident) -> list[str]:
    """The incident's id and the ids later lines of it carried (the same incident seen by another process)."""
    return [incident.id, *incident.details.get("also_ids", [])]


def _labels(streams: list[str]) -> list[str]:
    """Streams by file name when the names tell them apart (they label processes), else by path."""
    names = [os.path.basename(stream) or stream for stream in streams]
    return names if len(set(names)) == len(names) else list(streams)


def epoch(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


@dataclass
class _Run:
    process: Process
    stream: int
    first_ts: str | None = None
    last_ts: str | None = None
    starting_ts: str | None = None
    escalated: bool = False
    pid: Any = None  # the `pid` its lines carry, when they carry one


@dataclass
class _TradeLines:
    lines: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # (ts, process id, line)
    dropped: int = 0

    def add(self, ts: str, process: str, entry: dict[str, Any]) -> None:
        if len(self.lines) < MAX_LINES_PER_TRADE:
            self.lines.append((ts, process, entry))
        else:
            self.dropped += 1


class Reviewer:
    def __init__(self, streams: list[str]) -> None:
        self._streams = _labels(streams)
        self._runs: list[list[_Run]] = [[_Run(Process(f"{name}#1", name, 1), k)]
                                        for k, name in enumerate(self._streams)]
        self._current: list[_Run] = [runs[0] for runs in self._runs]
        self._open: dict[tuple[int, str, str], Incident] = {}
        self._incidents: list[Incident] = []
        self._trades: dict[str, _TradeLines] = {}
        self._by_correlation: dict[str, str] = {}
        self._by_order: dict[str, str] = {}
        self._pending: list[tuple[str, str, dict[str, Any]]] = []
        self._denied: Counter[str] = Counter()
        self._skipped = 0
        self._candles: dict[str, list[tuple[float, float]]] = {}  # symbol -> (candle start, close)
        self._flattened: list[tuple[str, list[str]]] = []
        self.lines = 0
        self._handlers: dict[str, Callable[[str, int, dict[str, Any]], None]] = {
            "RUNTIME_STARTING": self._runtime_starting,
            "RUNTIME_STARTED": self._runtime_started,
            "RUNTIME_STOPPED": self._runtime_stopped,
            "RUNTIME_ESCALATED": self._runtime_escalated,
            "SUPERVISOR_ESCALATED": self._supervisor_escalated,
            "ACTOR_CRASHED": self._actor_crashed,
            "ACTOR_RESTART_SCHEDULED": self._actor_restart_scheduled,
            "ACTOR_RESTART_REQUESTED": self._actor_restart_requested,
            "ACTOR_RESTARTED": self._actor_restarted,
            "ACTOR_STOPPED": self._actor_stopped,
            "DEAD_LETTER": self._dead_letter,
            "FEED_STALE": self._feed_stale,
            "FEED_RESUMED": self._feed_resumed,
            "FEED_FINISHED": self._feed_finished,
            "STORAGE_UNAVAILABLE": self._opener("DATABASE_OUTAGE", "database", _PROCESS_LOCAL),
            "STORAGE_RECOVERED": self._closer("DATABASE_OUTAGE", "database", _PROCESS_LOCAL, create=True),
            "STORAGE_AVAILABLE": self._closer("DATABASE_OUTAGE", "database", _PROCESS_LOCAL),
            "BUS_DEGRADED": self._opener("REDIS_OUTAGE", "publish", _PROCESS_LOCAL),
            "BUS_RESTORED": self._closer("REDIS_OUTAGE", "publish", _PROCESS_LOCAL, create=True),
            "BUS_LISTENER_ERROR": self._opener("REDIS_OUTAGE", "subscribe", _PROCESS_LOCAL),
            "BUS_LISTENER_RECOVERED": self._closer("REDIS_OUTAGE", "subscribe", _PROCESS_LOCAL, create=True),
            "MDS_UNAVAILABLE": self._opener("MDS_OUTAGE", "mds", _PROCESS_LOCAL),
            "MDS_AVAILABLE": self._closer("MDS_OUTAGE", "mds", _PROCESS_LOCAL),
            "KILL_SWITCH_ENGAGED": self._opener("KILL_SWITCH", "kill switch", _DAY_WIDE),
            "KILL_SWITCH_RELEASED": self._closer("KILL_SWITCH", "kill switch", _DAY_WIDE, create=True),
            "FLATTEN": self._flatten,
            "TRADING_HALTED": self._opener("LOSS_LIMIT_HALT", "halt", _DAY_WIDE),
            "TRADING_RESUMED": self._closer("LOSS_LIMIT_HALT", "halt", _DAY_WIDE, create=True),
            "RISK_SESSION_ROLLED": self._session_rolled,
            "RISK_STATE_LOADED": self._risk_state_loaded,
            "RECONCILE_INCIDENT": self._reconcile_incident,
            "RECONCILE_ACKNOWLEDGED": self._reconcile_acknowledged,
            "RECONCILIATION_HOLD": self._reconciliation_hold,
            "ENTRY_DENIED": self._entry_denied,
            "ENTRY_SKIPPED": self._entry_skipped,
            "CANDLE_CLOSED": self._candle_closed,
        }
        for name in TOKEN_START_EVENTS:
            self._handlers[name] = self._opener("TOKEN_EXPIRY", "token", _DAY_WIDE)
        for name in TOKEN_END_EVENTS:
            self._handlers[name] = self._closer("TOKEN_EXPIRY", "token", _DAY_WIDE)

    # -- the pass ------------------------------------------------------------------------------------------
    def consume(self, records: Iterable[Record]) -> None:
        handlers = self._handlers
        current = self._current
        link = self._link
        lines = 0
        for ts, k, entry in records:
            lines += 1
            run = current[k]
            if run.first_ts is None:
                run.first_ts = ts
            event = entry.get("event")
            pid = entry.get("pid")
            if pid is not None and pid != run.pid and event != "RUNTIME_STARTING":
                run = self._pid_seen(ts, k, pid, entry)
            handler = handlers.get(event)  # type: ignore[arg-type]
            if handler is not None:
                handler(ts, k, entry)
                run = current[k]  # RUNTIME_STARTING begins a new run
            if "pos_id" in entry or "correlation_id" in entry or "order_id" in entry:
                link(ts, run.process.id, entry)
            run.last_ts = ts
        self.lines += lines

    def _link(self, ts: str, process: str, entry: dict[str, Any]) -> None:
        pos_id = entry.get("pos_id")
        corr = entry.get("correlation_id")
        order = entry.get("order_id")
        if not pos_id or type(pos_id) is not str:
            pos_id = (self._by_correlation.get(corr) if corr else None) or (
                self._by_order.get(order) if order else None)
            if pos_id is None:
                if len(self._pending) < MAX_PENDING:
                    self._pending.append((ts, process, entry))
                return
        self._trade(pos_id).add(ts, process, entry)
        if corr and type(corr) is str:
            self._by_correlation[corr] = pos_id
        if order and type(order) is str:
            self._by_order[order] = pos_id

    def _trade(self, pos_id: str) -> _TradeLines:
        trade = self._trades.get(pos_id)
        if trade is None:
            trade = self._trades[pos_id] = _TradeLines()
        return trade

    # -- incidents: opening and closing ------------------------------------------------------------------
    def _scope(self, scope: int, k: int) -> int:
        return k if scope == _PROCESS_LOCAL else scope

    def _open_incident(self, kind: str, key: str, scope: int, ts: str | None, k: int, entry: dict[str, Any],
                       **attrs: Any) -> Incident:
        slot = (self._scope(scope, k), kind, key)
        incident = self._open.get(slot)
        if incident is not None:
            incident.count += 1
            seen = entry.get("incident_id")
            if seen and seen != incident.id:  # another process saw the same incident again, under its own id
                aliases = incident.details.setdefault("also_ids", [])
                if seen not in aliases:
                    aliases.append(str(seen))
            return incident
        incident = Incident(kind, key, None if ts is None else epoch(ts),
                            process=self._current[k].process.id if scope == _PROCESS_LOCAL else "",
                            detail=str(entry.get("message", "")), **attrs)
        incident.details["stream"] = self._streams[k]
        if entry.get("incident_id"):
            incident.id = str(entry["incident_id"])
        pos_id = entry.get("pos_id")
        if isinstance(pos_id, str):
            incident.affect(pos_id)
        self._open[slot] = incident
        self._incidents.append(incident)
        return incident

    def _close_incident(self, kind: str, key: str, scope: int, ts: str, k: int, ended_by: str,
                        entry: dict[str, Any] | None = None, create: bool = False) -> Incident | None:
        slot = (self._scope(scope, k), kind, key)
        wanted = entry.get("incident_id") if entry is not None else None
        if wanted and (slot not in self._open or wanted not in _ids(self._open[slot])):
            slot = next((s for s, i in self._open.items() if wanted in _ids(i) and s[1] == kind), slot)
        incident = self._open.pop(slot, None)
        if incident is None:
            if not create or entry is None:
                return None
            # Its start is before the log (or the window): show the end anyway.
            incident = self._open_incident(kind, key, scope, None, k, entry)
            self._open.pop((self._scope(scope, k), kind, key), None)
        incident.end = epoch(ts)
        incident.ended_by = ended_by
        return incident

    def _opener(self, kind: str, key: str, scope: int) -> Callable[[str, int, dict[str, Any]], None]:
        def handler(ts: str, k: int, entry: dict[str, Any]) -> None:
            incident = self._open_incident(kind, key, scope, ts, k, entry)
            for name in ("code", "reason", "detail", "attempt", "error"):
                if name in entry and name not in incident.details:
                    incident.details[name] = entry[name]
        return handler

    def _closer(self, kind: str, key: str, scope: int, create: bool = False
                ) -> Callable[[str, int, dict[str, Any]], None]:
        def handler(ts: str, k: int, entry: dict[str, Any]) -> None:
            self._close_incident(kind, key, scope, ts, k, str(entry.get("event")), entry, create=create)
        return handler

    # -- processes -----------------------------------------------------------------------------------------
    def _runtime_starting(self, ts: str, k: int, entry: dict[str, Any]) -> None:
        run = self._current[k]
        if run.last_ts is None:  # the stream's first line: the run it begins is the current one
            run.starting_ts = ts
            run.process.role = str(entry.get("role", "")) or run.process.role
            return
        previous = run.process
        for slot in [s for s in self._open if s[0] == k]:
            incident = self._open.pop(slot)
            incident.end = epoch(run.last_ts)
            incident.ended_by = "process ended"
        if previous.stopped is not None:
            cause = f"stopped (exit {previous.exit_code})"
        else:
            cause = "killed (no RUNTIME_STOPPED line)"
        previous.end = cause
        number = previous.run + 1
        fresh = _Run(Process(f"{self._streams[k]}#{number}", self._streams[k], number), k, first_ts=ts,
                     starting_ts=ts)
        fresh.process.role = str(entry.get("role", ""))
        self._runs[k].append(fresh)
        self._current[k] = fresh
        incident = self._open_incident("PROCESS_RESTART", "process", _PROCESS_LOCAL, run.last_ts, k,
                                       {"message": f"{previous.id} {cause}; {fresh.process.id} starting"})
        incident.process = previous.id
        incident.details.update(previous=previous.id, next=fresh.process.id, cause=cause,
                                exit_code=previous.exit_code)

    def _pid_seen(self, ts: str, k: int, pid: Any, entry: dict[str, Any]) -> _Run:
        """Lines that carry `pid`: another pid in the same log is another process, even when its
        RUNTIME_STARTING line is missing (rotated away, or before the window)."""
        run = self._current[k]
        if run.pid is not None and run.last_ts is not None:
            self._runtime_starting(ts, k, {"message": f"pid {pid} after pid {run.pid}"})
            self._close_incident("PROCESS_RESTART", "process", _PROCESS_LOCAL, ts, k, f"first line of pid {pid}")
            run = self._current[k]
        run.pid = pid
        if isinstance(pid, int) and run.process.pid is None:
            run.process.pid = pid
        role = entry.get("role")
        if isinstance(role, str) and role and not run.process.role:
            run.process.role = role
        return run

    def _runtime_started(self, ts: str, k: int, entry: dict[str, Any]) -> None:
        run = self._current[k]
        process = run.process
        process.started = epoch(ts)
        pid = entry.get("pid")
        process.pid = pid if isinstance(pid, int) else process.pid
        run.pid = pid if pid is not None else run.pid
        process.role = str(entry.get("role", "")) or process.role
        incident = self._close_incident("PROCESS_RESTART", "process", _PROCESS_LOCAL, ts, k, "RUNTIME_STARTED")
        if incident is not None:
            incident.details["pid"] = process.pid

    def _runtime_stopped(self, ts: str, k: int, entry: dict[str, Any]) -> None:
        process = self._current[k].process
        process.stopped = epoch(ts)
        code = entry.get("exit_code")
        process.exit_code = code if isinstance(code, int) else None
        process.end = f"stopped (exit {process.exit_code})"
        for slot in [s for s in self._open if s[0] == k and s[1] == "ESCALATION"]:
            incident = self._open.pop(slot)
            incident.end = epoch(ts)
            incident.ended_by = f"RUNTIME_STOPPED (exit {process.exit_code})"

    def _supervisor_escalated(self, ts: str, k: int, entry: dict[str, Any]) -> None:
        actor = str(entry.get("actor") or "root")
        incident = self._open_incident("ESCALATION", actor, _PROCESS_LOCAL, ts, k, entry, actor=actor)
        incident.details.setdefault("reason", entry.get("reason", ""))

    def _runtime_escalated(self, ts: str, k: int, entry: dict[str, Any]) -> None:
        self._current[k].escalated = True
        escalations = [i for s, i in self._open.items() if s[0] == k and s[1] == "ESCALATION"]
        if not escalations:
            escalations = [self._open_incident("ESCALATION", "runtime", _PROCESS_LOCAL, ts, k, entry,
                                               actor="runtime")]
        for incident in escalations:
            incident.details["process_exit"] = True

    # -- actors --------------------------------------------------------------------------------------------
    def _link_actor(self, ts: str, k: int, entry: dict[str, Any], actor: str, incident: Incident) -> None:
        if actor.startswith("trade:"):
            pos_id = actor[len("trade:"):]
            incident.affect(pos_id)
            if "pos_id" not in entry:
                self._trade(pos_id).add(ts, self._current[k].process.id, entry)
        elif actor.startswith("candles:"):
            incident.symbol = actor[len("candles:"):]

    def _actor_crashed(self, ts: str, k: int, entry: dict[str, Any]) -> None:
        actor = str(entry.get("actor") or "?")
        incident = self._open_incident("ACTOR_CRASH", actor, _PROCESS_LOCAL, ts, k, entry, actor=actor)
        incident.details.setdefault("phase", entry.get("phase", ""))
        incident.details.setdefault("errors", []).append(str(entry.get("message", "")))
        self._link_actor(ts, k, entry, actor, incident)

    def _actor_restart_scheduled(self, ts: str, k: int, entry: dict[str, Any]) -> None:
        incident = self._open.get((k, "ACTOR_CRASH", str(entry.get("child"))))
        if incident is not None:
            incident.details["backoff_seconds"] = entry.get("delay_seconds")

    def _actor_restart_requested(self, ts: str, k: int, entry: dict[str, Any]) -> None:
        child = str(entry.get("child") or "?")
        self._open_incident("ACTOR_RESTART", child, _PROCESS_LOCAL, ts, k, entry, actor=child)

    def _actor_restarted(self, ts: str, k: int, entry: dict[str, Any]) -> None:
        child = str(entry.get("child") or "?")
        closed = None
        for kind in ("ACTOR_CRASH", "ACTOR_RESTART", "ESCALATION"):
            closed = self._close_incident(kind, child, _PROCESS_LOCAL, ts, k, "ACTOR_RESTARTED", entry) or closed
        if closed is None:  # restarted with a crashed sibling (rest_for_one): part of the latest crash
            process = self._current[k].process.id
            for incident in reversed(self._incidents):
                if incident.kind == "ACTOR_CRASH" and incident.process == process:
                    incident.details.setdefault("also_restarted", []).append(child)
                    break

    def _actor_stopped(self, ts: str, k: int, entry: dict[str, Any]) -> None:
        child = str(entry.get("child") or "?")
        self._close_incident("ACTOR_CRASH", child, _PROCESS_LOCAL, ts, k, "ACTOR_STOPPED (not restarted)", entry)

    def _dead_letter(self, ts: str, k: int, entry: dict[str, Any]) -> None:
        actor = str(entry.get("actor") or "?")
        incident = Incident("DEAD_LETTER", actor, epoch(ts), epoch(ts), process=self._current[k].process.id,
                            actor=actor, detail=str(entry.get("message", "")), instant=True,
                            details={"message_type": entry.get("message_type", ""),
                                     "message": entry.get("detail", ""), "stream": self._streams[k]})
        if entry.get("crash_incident_id"):
            incident.details["crash_incident"] = entry["crash_incident_id"]
        self._incidents.append(incident)
        self._link_actor(ts, k, entry, actor, incident)

    # -- market data -----------------------------------------------------------------------------------------
    def _feed_stale(self, ts: str, k: int, entry: dict[str, Any]) -> None:
        symbol = str(entry.get("symbol") or "*")
        incident = self._open_incident("FEED_STALE", symbol, _PROCESS_LOCAL, ts, k, entry, symbol=symbol)
        incident.details.setdefault("age_seconds_at_start", entry.get("age_seconds"))

    def _feed_resumed(self, ts: str, k: int, entry: dict[str, Any]) -> None:
        symbol = str(entry.get("symbol") or "*")
        incident = self._close_incident("FEED_STALE", symbol, _PROCESS_LOCAL, ts, k, "FEED_RESUMED", entry,
                                        create=True)
        if incident is not None:
            incident.symbol = symbol

    def _feed_finished(self, ts: str, k: int, entry: dict[str, Any]) -> None:
        for slot in [s for s in self._open if s[0] == k and s[1] == "FEED_STALE"]:
            self._close_incident("FEED_STALE", slot[2], _PROCESS_LOCAL, ts, k, "FEED_FINISHED")

    def _candle_closed(self, ts: str, k: int, entry: dict[str, Any]) -> None:
        symbol, close = entry.get("symbol"), entry.get("close")
        if not isinstance(symbol, str) or not isinstance(close, int | float):
            return
        at = entry.get("candle_ts", entry.get("ts_epoch"))
        points = self._candles.get(symbol)
        if points is None:
            points = self._candles[symbol] = []
        if len(points) < MAX_CANDLES_PER_SYMBOL:  # plain tuples: a busy day has 75k of these, most unused
            points.append((at if isinstance(at, int | float) else epoch(ts), close))

    # -- risk, reconciliation ----------------------------------------------------------------------------------
    def _flatten(self, ts: str, k: int, entry: dict[str, Any]) -> None:
        positions = [p for p in entry.get("positions") or [] if isinstance(p, str)]
        incident = self._open.get((_DAY_WIDE, "KILL_SWITCH", "kill switch"))
        if incident is not None:
            for pos_id in positions:
                incident.affect(pos_id)
            incident.details["flattened"] = positions

    def _session_rolled(self, ts: str, k: int, entry: dict[str, Any]) -> None:
        self._close_incident("LOSS_LIMIT_HALT", "halt", _DAY_WIDE, ts, k, "RISK_SESSION_ROLLED (new session)")

    def _risk_state_loaded(self, ts: str, k: int, entry: dict[str, Any]) -> None:
        """A process starting with the switch already on: it began before this log (or window)."""
        if entry.get("kill_switch") is True and (_DAY_WIDE, "KILL_SWITCH", "kill switch") not in self._open:
            self._open_incident("KILL_SWITCH", "kill switch", _DAY_WIDE, None, k,
                                {"message": "engaged before the reviewed lines (RISK_STATE_LOADED)"})
        if entry.get("trading_enabled") is False and (_DAY_WIDE, "LOSS_LIMIT_HALT", "halt") not in self._open:
            self._open_incident("LOSS_LIMIT_HALT", "halt", _DAY_WIDE, None, k,
                                {"message": "halted before the reviewed lines (RISK_STATE_LOADED)"})

    def _reconcile_incident(self, ts: str, k: int, entry: dict[str, Any]) -> None:
        what = str(entry.get("kind", "DIFFERENCE"))
        subject = str(entry.get("pos_id") or entry.get("symbol") or "?")
        incident = self._open_incident("RECONCILE_INCIDENT", f"{what}:{subject}", _DAY_WIDE, ts, k, entry,
                                       symbol=str(entry.get("symbol") or entry.get("traded_symbol") or ""))
        for name in ("kind", "broker_qty", "book_qty", "difference"):
            if name in entry:
                incident.details[name] = entry[name]

    def _reconcile_acknowledged(self, ts: str, k: int, entry: dict[str, Any]) -> None:
        who = entry.get("who")
        if not who:
            match = _ACK_WHO.search(str(entry.get("message", "")))
            who = match["who"] if match else ""
        named = entry.get("incident_ids")
        ids = {str(i) for i in named} if isinstance(named, list) and named else None
        for slot in [s for s in self._open if s[1] in ("RECONCILE_INCIDENT", "RECONCILE_HOLD")]:
            if ids is not None and slot[1] == "RECONCILE_INCIDENT" and not ids & set(_ids(self._open[slot])):
                continue  # the acknowledgement names what it accepted: not this one (seen after it)
            incident = self._close_incident(slot[1], slot[2], _DAY_WIDE, ts, k, "RECONCILE_ACKNOWLEDGED")
            if incident is not None:
                incident.details["acknowledged_by"] = who
        # The acknowledgement releases the hold first (its own line, a moment before): same act.
        now = epoch(ts)
        for incident in reversed(self._incidents[-50:]):
            if incident.kind == "RECONCILE_HOLD" and incident.end is not None and now - incident.end <= 1.0:
                incident.details["acknowledged_by"] = who
                incident.ended_by = "RECONCILE_ACKNOWLEDGED"

    def _reconciliation_hold(self, ts: str, k: int, entry: dict[str, Any]) -> None:
        reason = str(entry.get("reason", ""))
        if entry.get("engaged") is True:
            if not reason.startswith("reconciliation:"):  # those are RECONCILE_INCIDENTs already
                self._open_incident("RECONCILE_HOLD", "hold", _DAY_WIDE, ts, k, entry)
        elif entry.get("engaged") is False:
            self._close_incident("RECONCILE_HOLD", "hold", _DAY_WIDE, ts, k, "RECONCILIATION_HOLD released")

    # -- entries -----------------------------------------------------------------------------------------------
    def _entry_denied(self, ts: str, k: int, entry: dict[str, Any]) -> None:
        code = entry.get("code")
        if not code:
            reason = str(entry.get("reason", ""))
            code = reason.split(":", 1)[0] if ":" in reason else (reason or "UNKNOWN")
        self._denied[str(code)] += 1

    def _entry_skipped(self, ts: str, k: int, entry: dict[str, Any]) -> None:
        self._skipped += 1

    # -- the end -------------------------------------------------------------------------------------------------
    def finish(self, files: list[dict[str, Any]], window: Window, pos_id: str | None = None) -> Review:
        self._resolve_pending()
        processes = self._processes()
        stories = {p: _story(p, t) for p, t in sorted(self._trades.items(),
                                                      key=lambda kv: kv[1].lines[0][0] if kv[1].lines else "")
                   if t.lines}
        stories = {p: s for p, s in stories.items() if _is_trade(s)}
        incidents = self._incidents + _trade_incidents(stories.values())
        self._affected(incidents, stories)
        _number(incidents)
        for story in stories.values():
            story.incidents = [i.id for i in incidents if story.pos_id in i.pos_ids]
            _restart_steps(story, incidents)
        if pos_id is not None:
            stories = {p: s for p, s in stories.items() if p == pos_id}
            incidents = [i for i in incidents if pos_id in i.pos_ids]
        trades = list(stories.values())
        summary, equity = _summarize(trades, incidents, self._denied if pos_id is None else Counter(
            {str((s.verdict or {}).get("code", "")): 1 for s in trades if s.state == "DENIED"}),
            self._skipped if pos_id is None else 0)
        firsts = [p.first for p in processes if p.first is not None]
        lasts = [p.last for p in processes if p.last is not None]
        summary.first = min(firsts) if firsts else None
        summary.last = max(lasts) if lasts else None
        return Review(window=window, files=files, processes=processes, summary=summary, incidents=incidents,
                      trades=trades, equity=equity, prices=self._prices(trades), lines=self.lines)

    def _resolve_pending(self) -> None:
        derived: dict[str, str] = {}
        for known in self._trades:
            for leg in (Leg.ENTRY, Leg.EXIT):
                for attempt in range(_DERIVED_ATTEMPTS):
                    derived[correlation_id(known, leg, attempt)] = known
        for ts, process, entry in self._pending:
            corr, order = entry.get("correlation_id"), entry.get("order_id")
            pos_id: str | None = (self._by_correlation.get(corr) if isinstance(corr, str) else None) or (
                self._by_order.get(order) if isinstance(order, str) else None) or (
                derived.get(corr) if isinstance(corr, str) else None)
            if pos_id is None and isinstance(corr, str):
                match = _CORRELATION.match(corr)
                if match and match["pos"] in self._trades:
                    pos_id = match["pos"]
            if pos_id is not None:
                self._trades[pos_id].add(ts, process, entry)
        for trade in self._trades.values():
            trade.lines.sort(key=lambda line: line[0])  # stable: same-ts lines keep their log order

    def _processes(self) -> list[Process]:
        processes = []
        for runs in self._runs:
            for run in runs:
                if run.first_ts is None:
                    continue
                run.process.first = epoch(run.first_ts)
                run.process.last = epoch(run.last_ts or run.first_ts)
                processes.append(run.process)
        return processes

    def _affected(self, incidents: list[Incident], stories: dict[str, TradeStory]) -> None:
        """Trades an incident touched: open on the stale symbol, or living in the process that restarted."""
        spans = [(s, s.steps[0].at, (s.closed_at if s.closed_at is not None else s.steps[-1].at))
                 for s in stories.values() if s.steps]
        for incident in incidents:
            if incident.kind == "FEED_STALE" and incident.start is not None:
                end = incident.end if incident.end is not None else float("inf")
                for story, first, last in spans:
                    if incident.symbol in (story.symbol, story.underlying) and first <= end and last >= incident.start:
                        incident.affect(story.pos_id)
            elif incident.kind == "PROCESS_RESTART":
                before, after = incident.details.get("previous"), incident.details.get("next")
                for story, _, _ in spans:
                    if before in story.processes and after in story.processes:
                        incident.affect(story.pos_id)

    def _prices(self, trades: list[TradeStory]) -> list[PriceSeries]:
        series: dict[str, PriceSeries] = {}
        for story in trades:
            if not story.symbol or story.state == "DENIED":
                continue
            chart = series.get(story.symbol)
            if chart is None:
                candles = self._candles.get(story.symbol)
                chart = series[story.symbol] = PriceSeries(story.symbol, "candles" if candles else "fills",
                                                           [PricePoint(float(at), float(close))
                                                            for at, close in sorted(candles or [])])
            for order in story.orders:
                if chart.source == "fills":
                    if order.placed_at is not None and order.price:
                        chart.points.append(PricePoint(order.placed_at, order.price))
                    chart.points.extend(PricePoint(at, price) for at, _, price in order.fills if price)
                if order.fills:
                    at, _, price = order.fills[-1]
                    chart.marks.append({"at": at, "price": price, "pos_id": story.pos_id,
                                        "kind": "entry" if order.leg == "ENTRY" else "exit"})
        for chart in series.values():
            chart.points.sort(key=lambda p: p.at)
            chart.marks.sort(key=lambda m: m["at"])
        return list(series.values())


# -- trade stories ------------------------------------------------------------------------------------------------
def _source(entry: dict[str, Any]) -> str:
    if "seq" in entry and "to_state" in entry:
        return "journal"
    return str(entry.get("logger", "")).rsplit(".", 1)[-1]


def _is_trade(story: TradeStory) -> bool:
    """Lines with a pos_id that never became a trade (a duplicate pos_id refused) are not trades."""
    return bool(story.state or story.signal or story.verdict or story.orders)


def _story(pos_id: str, trade: _TradeLines) -> TradeStory:
    story = TradeStory(pos_id, dropped_steps=trade.dropped)
    orders: dict[str, Order] = {}
    previous: float | None = None
    signal_at = journal_signal_at = entry_placed_at = entry_filled_at = exit_requested_at = exit_filled_at = None
    entry_source = ""
    for ts, process, entry in trade.lines:
        at = epoch(ts)
        event = str(entry.get("event", ""))
        source = _source(entry)
        fields = {k: v for k, v in entry.items() if k not in _HIDDEN_FIELDS}
        story.steps.append(Step(at, event, source, str(entry.get("message", "")), process, fields,
                                None if previous is None else at - previous))
        previous = at
        if process not in story.processes:
            story.processes.append(process)
        journal = source == "journal"
        if journal and entry.get("to_state"):
            story.state = str(entry["to_state"])
        leg = str(entry.get("leg", ""))
        order_id = str(entry.get("order_id") or "")
        if event == "ENTRY_SIGNAL":
            if journal:
                journal_signal_at = journal_signal_at or at
                story.symbol = str(entry.get("symbol", story.symbol))
                story.side = str(entry.get("side", story.side))
                story.qty = entry.get("qty", story.qty)
                entry_source = str(entry.get("source", ""))
            else:
                signal_at = signal_at or at
                story.underlying = str(entry.get("symbol", ""))
                story.instrument = _instrument(entry) or story.instrument
                story.side = story.side or str(entry.get("side", ""))
                story.qty = story.qty if story.qty is not None else entry.get("qty")
                raw_score = entry.get("score")
                score: dict[str, Any] = raw_score if isinstance(raw_score, dict) else {}
                story.signal = {"at": at, "candle_ts": entry.get("candle_ts"),
                                "candle_time": entry.get("candle_time"), "close": entry.get("close"),
                                "symbol": story.underlying, "direction": entry.get("direction"),
                                "entry_score": score.get("entry_score"), "score": score.get("score"),
                                "components": score.get("components", {}), "decision_id": entry.get("decision_id"),
                                "signal_at": entry.get("at")}
        elif event == "ENTRY_REQUESTED":
            story.verdict = {"allowed": True, "at": at, "limit_price": entry.get("limit_price")}
        elif event == "ENTRY_DENIED":
            story.verdict = {"allowed": False, "at": at, "code": entry.get("code", ""),
                             "reason": entry.get("reason", entry.get("message", ""))}
        elif event == "ORDER_PLACED" and journal:
            order = orders.get(order_id)
            if order is None:
                order = orders[order_id] = Order(order_id, leg)
                story.orders.append(order)
            order.correlation_id = str(entry.get("correlation_id", ""))
            order.qty, order.price, order.placed_at = entry.get("qty"), entry.get("price"), at
            if leg == "ENTRY" and entry_placed_at is None:
                entry_placed_at = at
        elif event == "ORDER_FILLED" and journal:
            order = orders.get(order_id)
            if order is None:
                order = orders[order_id] = Order(order_id, leg)
                story.orders.append(order)
            qty, price = entry.get("filled_qty"), entry.get("avg_price")
            if isinstance(qty, int) and isinstance(price, int | float):
                order.filled_qty, order.avg_price = qty, float(price)
                order.fills.append((at, qty, float(price)))
            full = entry.get("event_type") == "OrderFilled" or str(entry.get("to_state")) in (
                "POSITION_OPEN", "CLOSED")
            order.status = "FILLED" if full else "PARTIALLY_FILLED"
            if leg == "ENTRY":
                story.entry_price = order.avg_price
                story.opened_at = story.opened_at or at
                if full:
                    entry_filled_at = entry_filled_at or at
            else:
                story.exit_price = order.avg_price
                if full:
                    exit_filled_at = at
        elif event == "ORDER_TIMEOUT" and journal:
            order = orders.get(order_id)
            if order is not None:
                order.status = "TIMED_OUT"
        elif event == "ORDER_CANCELLED" and journal:
            order = orders.get(order_id)
            if order is not None:
                order.status = "CANCELLED" if not order.filled_qty else "PARTIALLY_FILLED_CANCELLED"
        elif event == "ORDER_REJECTED" and journal:
            order = orders.get(order_id) if order_id else None
            if order is None:
                order = Order(order_id, leg)
                story.orders.append(order)
                if order_id:
                    orders[order_id] = order
            order.status = "REJECTED"
        elif event == "EXIT_SIGNAL" and journal:
            exit_requested_at = exit_requested_at or at
            story.exit_reason = story.exit_reason or str(entry.get("reason", ""))
        elif event == "TRADE_CLOSED":
            story.closed_at = at
            story.exit_reason = str(entry.get("exit_reason", story.exit_reason))
            for name, value in (("entry_price", entry.get("avg_entry_price")),
                                ("exit_price", entry.get("avg_exit_price")),
                                ("opened_at", entry.get("opened_at"))):
                if isinstance(value, int | float) and value:  # the trade's own figures win over the fills'
                    setattr(story, name, float(value))
            pnl = entry.get("realized_pnl")
            if isinstance(pnl, int | float):
                story.realized_pnl = float(pnl)
                charges = entry.get("charges", entry.get("fees"))
                story.charges = float(charges) if isinstance(charges, int | float) else None
                net = entry.get("net_pnl")
                story.net_pnl = float(net) if isinstance(net, int | float) else story.realized_pnl - (
                    story.charges or 0.0)
            story.symbol = story.symbol or str(entry.get("symbol", ""))
    signal_start = signal_at if signal_at is not None else journal_signal_at
    story.latencies = {
        "candle_close_to_signal": _between(story.signal.get("signal_at") if story.signal else None, signal_at),
        "signal_to_placed": _between(signal_start, entry_placed_at),
        "placed_to_filled": _between(entry_placed_at, entry_filled_at),
        "exit_requested_to_filled": _between(exit_requested_at, exit_filled_at or story.closed_at),
        "signal_to_closed": _between(signal_start, story.closed_at),
    }
    story.missing = _missing(story, signal_at, journal_signal_at, entry_source, entry_placed_at, entry_filled_at,
                             exit_requested_at, exit_filled_at)
    return story


def _instrument(signal: dict[str, Any]) -> str:
    """'NIFTY 24500 CE' from the strategy's signal (its `instrument` is the security id traded)."""
    strike, option_type = signal.get("strike"), signal.get("option_type")
    if isinstance(strike, int | float) and option_type:
        return f"{signal.get('symbol', '')} {strike:g} {option_type}"
    instrument = signal.get("instrument")
    return str(instrument) if instrument and instrument != signal.get("pos_id") else ""


def _between(start: Any, end: float | None) -> float | None:
    if not isinstance(start, int | float) or end is None:
        return None
    return end - float(start)


_AFTER_ENTRY_FILL = frozenset({"POSITION_OPEN", "EXIT_PENDING", "EXIT_ORDER_PLACED", "EXIT_PARTIALLY_FILLED",
                               "EXIT_CANCEL_PENDING", "CLOSED"})
_AFTER_EXIT_ORDER = frozenset({"EXIT_ORDER_PLACED", "EXIT_PARTIALLY_FILLED", "EXIT_CANCEL_PENDING", "CLOSED"})


def _missing(story: TradeStory, signal_at: float | None, journal_signal_at: float | None, entry_source: str,
             entry_placed_at: float | None, entry_filled_at: float | None, exit_requested_at: float | None,
             exit_filled_at: float | None) -> list[str]:
    """The steps the trade's final state implies that no line shows (the story is complete without them)."""
    state = story.state
    missing = []
    if journal_signal_at is None:
        missing.append("ENTRY_SIGNAL (journal)")
    if signal_at is None and entry_source.startswith("strategy"):
        missing.append("ENTRY_SIGNAL (strategy: candle and score)")
    if story.verdict is None:
        missing.append("risk verdict (ENTRY_REQUESTED / ENTRY_DENIED)")
    if state in ("DENIED", ""):
        return missing
    if entry_placed_at is None and state not in ("REJECTED", "ENTRY_PENDING", "SIGNAL_GENERATED"):
        missing.append("ORDER_PLACED (entry)")
    if state in _AFTER_ENTRY_FILL and entry_filled_at is None:
        missing.append("ORDER_FILLED (entry)")
    if state in _AFTER_ENTRY_FILL - {"POSITION_OPEN"} and exit_requested_at is None:
        missing.append("EXIT_SIGNAL")
    if state in _AFTER_EXIT_ORDER and not any(o.leg == "EXIT" and o.placed_at for o in story.orders):
        missing.append("ORDER_PLACED (exit)")
    if state == "CLOSED":
        if exit_filled_at is None:
            missing.append("ORDER_FILLED (exit)")
        if story.closed_at is None:
            missing.append("TRADE_CLOSED")
    return missing


def _restart_steps(story: TradeStory, incidents: list[Incident]) -> None:
    """A process restart in the middle of a trade is a step of its story."""
    added = False
    for incident in incidents:
        if incident.kind == "PROCESS_RESTART" and story.pos_id in incident.pos_ids and incident.start is not None:
            story.steps.append(Step(incident.start, "PROCESS_RESTART", "review",
                                    f"{incident.details.get('previous')} {incident.details.get('cause')}; "
                                    f"{incident.details.get('next')} took over "
                                    f"(down {incident.duration if incident.duration is not None else '?'} s)",
                                    str(incident.details.get("previous", "")), {"incident": incident.id}))
            added = True
    if added:
        story.steps.sort(key=lambda s: s.at)
        previous = None
        for step in story.steps:
            step.since_previous = None if previous is None else step.at - previous
            previous = step.at


def _trade_incidents(stories: Iterable[TradeStory]) -> list[Incident]:
    found: list[Incident] = []
    for story in stories:
        exit_requests = [s for s in story.steps if s.event == "EXIT_SIGNAL" and s.source == "journal"]
        submit_retries = [s for s in story.steps if s.event in (
            "ORDER_SUBMIT_DEFERRED", "ORDER_SUBMIT_AMBIGUOUS", "ORDER_SUBMIT_FAILED")
            and _is_exit_correlation(str(s.fields.get("correlation_id", "")))]
        alerts = [s for s in story.steps if s.event == "OPERATOR_ALERT"]
        for index, step in enumerate(story.steps):
            if step.source != "journal" or step.event not in ("ORDER_TIMEOUT", "ORDER_SLIPPAGE"):
                continue
            incident = Incident(step.event, f"{story.pos_id}:{step.fields.get('order_id', '')}", step.at,
                                process=step.process, symbol=story.symbol, pos_ids=[story.pos_id],
                                detail=step.text, details={k: step.fields[k] for k in (
                                    "order_id", "leg", "correlation_id", "expected", "actual", "pct", "limit_pct")
                                    if k in step.fields})
            if step.event == "ORDER_TIMEOUT":
                order_id = step.fields.get("order_id")
                for later in story.steps[index + 1:]:
                    if later.source == "journal" and later.fields.get("order_id") == order_id and (
                            later.event in ("ORDER_CANCELLED", "ORDER_REJECTED") or (
                            later.event == "ORDER_FILLED" and later.fields.get("event_type") == "OrderFilled")):
                        incident.end, incident.ended_by = later.at, later.event
                        break
            elif story.closed_at is not None:
                incident.end, incident.ended_by = story.closed_at, "TRADE_CLOSED"
            found.append(incident)
        if len(exit_requests) > 1 or submit_retries or alerts:
            incident = Incident("EXIT_RETRIES", story.pos_id, exit_requests[0].at if exit_requests else (
                (submit_retries or alerts)[0].at), process=exit_requests[0].process if exit_requests else "",
                symbol=story.symbol, pos_ids=[story.pos_id], count=max(1, len(exit_requests)),
                detail=f"{len(exit_requests)} exit requests, {len(submit_retries)} submit retries",
                details={"exit_requests": [s.fields.get("reason", "") for s in exit_requests],
                         "rejections": [s.fields.get("reason", "") for s in story.steps
                                        if s.event == "ORDER_REJECTED" and s.fields.get("leg") == "EXIT"],
                         "submit_retries": len(submit_retries),
                         "operator_alerts": [s.text for s in alerts]})
            if story.closed_at is not None:
                incident.end, incident.ended_by = story.closed_at, "TRADE_CLOSED"
            found.append(incident)
    return found


def _is_exit_correlation(corr: str) -> bool:
    match = _CORRELATION.match(corr)
    return bool(match and match["leg"] == "X")


def _number(incidents: list[Incident]) -> None:
    """Sort by start and give each an id that stays the same for the same incident whatever the window."""
    incidents.sort(key=lambda i: (i.start if i.start is not None else float("-inf"), i.kind, i.key))
    seen: Counter[str] = Counter()
    for incident in incidents:
        if incident.id:
            continue
        basis = f"{incident.kind}|{incident.key}|{incident.details.get('stream', '')}|{incident.start}"
        digest = hashlib.sha1(basis.encode()).hexdigest()[:8]
        seen[digest] += 1
        incident.id = f"inc-{digest}" + (f"-{seen[digest]}" if seen[digest] > 1 else "")


def _summarize(trades: list[TradeStory], incidents: list[Incident], denied: Counter[str], skipped: int
               ) -> tuple[Summary, list[tuple[float, str, float, float]]]:
    summary = Summary(entries_denied=dict(sorted(denied.items())), entries_skipped=skipped,
                      incidents=dict(sorted(Counter(i.kind for i in incidents).items())))
    closed = sorted((t for t in trades if t.state == "CLOSED" and t.net_pnl is not None),
                    key=lambda t: t.closed_at or 0.0)
    summary.signals = len(trades)
    summary.closed = len(closed)
    summary.denied = sum(1 for t in trades if t.state == "DENIED")
    summary.rejected = sum(1 for t in trades if t.state == "REJECTED")
    summary.cancelled = sum(1 for t in trades if t.state == "CANCELLED")
    summary.open = sum(1 for t in trades if t.state not in _TERMINAL_STATES)
    equity: list[tuple[float, str, float, float]] = []
    total = peak = 0.0
    for trade in closed:
        net = trade.net_pnl or 0.0
        summary.gross_pnl += trade.realized_pnl or 0.0
        summary.charges += trade.charges or 0.0
        summary.charges_logged = summary.charges_logged or trade.charges is not None
        summary.wins += net > 0
        summary.losses += net < 0
        total += net
        peak = max(peak, total)
        summary.max_drawdown = max(summary.max_drawdown, peak - total)
        equity.append((trade.closed_at or 0.0, trade.pos_id, net, total))
    summary.net_pnl = total
    return summary, equity
