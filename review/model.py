"""What a review finds: incidents, trade stories, the day at a glance; plain data with a JSON form.

Times are epoch seconds inside; the JSON form renders them as IST ISO-8601 with milliseconds
(the schema is in review/README.md and `review.schema`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.market import IST
from review.window import Window

__all__ = ["SCHEMA_ID", "Incident", "Order", "PricePoint", "PriceSeries", "Process", "Review", "Step",
           "Summary", "TradeStory", "iso"]

SCHEMA_ID = "mybot.review/1"


def iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, IST).isoformat(timespec="milliseconds")


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass
class Process:
    """One run of one process: from its RUNTIME_STARTING (or its first line) to its last line."""

    id: str  # "<stream>#<run>"
    stream: str
    run: int
    first: float | None = None
    last: float | None = None
    started: float | None = None  # RUNTIME_STARTED
    stopped: float | None = None  # RUNTIME_STOPPED
    exit_code: int | None = None
    pid: int | None = None
    role: str = ""
    end: str = "running at end of log"  # or "stopped (exit N)", "killed (no RUNTIME_STOPPED line)"

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "stream": self.stream, "run": self.run, "pid": self.pid, "role": self.role,
                "first": iso(self.first), "last": iso(self.last), "started": iso(self.started),
                "stopped": iso(self.stopped), "exit_code": self.exit_code, "end": self.end}


@dataclass
class Incident:
    kind: str
    key: str  # what it is about, to match its end: an actor, a symbol, "database", ...
    start: float | None  # None: it began before the log (or the window) does
    end: float | None = None  # None: still going at the end of the log
    process: str = ""  # the Process.id it happened in ("" for a day-wide state: kill switch, halts)
    actor: str = ""
    symbol: str = ""
    pos_ids: list[str] = field(default_factory=list)
    detail: str = ""
    ended_by: str = ""  # the event that ended it, or "process ended"
    count: int = 1  # lines folded into it: crashes before the restart, outage retries, exit attempts
    details: dict[str, Any] = field(default_factory=dict)
    instant: bool = False  # a moment, not a period (a dead letter)
    id: str = ""

    @property
    def duration(self) -> float | None:
        if self.instant:
            return 0.0
        if self.start is None or self.end is None:
            return None
        return max(0.0, self.end - self.start)

    @property
    def ongoing(self) -> bool:
        return self.end is None and not self.instant

    def affect(self, pos_id: str) -> None:
        if pos_id and pos_id not in self.pos_ids:
            self.pos_ids.append(pos_id)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "start": iso(self.start), "end": iso(self.end),
                "duration_seconds": _seconds(self.duration), "ongoing": self.ongoing,
                "ended_by": self.ended_by, "process": self.process, "actor": self.actor, "symbol": self.symbol,
                "pos_ids": list(self.pos_ids), "detail": self.detail, "count": self.count,
                "details": dict(self.details)}


@dataclass
class Step:
    """One log line of a trade's story."""

    at: float
    event: str
    source: str  # the logger's last part (StrategyActor, TradeActor, ...) or "journal" for trade_events lines
    text: str
    process: str
    fields: dict[str, Any] = field(default_factory=dict)
    since_previous: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {"at": iso(self.at), "event": self.event, "source": self.source, "text": self.text,
                "process": self.process, "since_previous_seconds": _seconds(self.since_previous),
                "fields": dict(self.fields)}


@dataclass
class Order:
    order_id: str
    leg: str
    correlation_id: str = ""
    qty: int | None = None
    price: float | None = None
    placed_at: float | None = None
    filled_qty: int = 0
    avg_price: float | None = None
    status: str = "PLACED"  # PLACED, PARTIALLY_FILLED, FILLED, CANCELLED, REJECTED, TIMED_OUT
    fills: list[tuple[float, int, float]] = field(default_factory=list)  # (at, cumulative qty, avg price)

    def as_json(self) -> dict[str, Any]:
        return {"order_id": self.order_id, "leg": self.leg, "correlation_id": self.correlation_id,
                "qty": self.qty, "price": self.price, "placed_at": iso(self.placed_at),
                "filled_qty": self.filled_qty, "avg_price": self.avg_price, "status": self.status,
                "fills": [{"at": iso(at), "filled_qty": qty, "avg_price": price} for at, qty, price in self.fills]}


@dataclass
class TradeStory:
    pos_id: str
    symbol: str = ""  # what was traded (SEC_<id> for an option)
    underlying: str = ""  # the symbol whose candles made the signal
    instrument: str = ""
    side: str = ""
    qty: int | None = None
    state: str = ""  # the last journaled state
    opened_at: float | None = None
    closed_at: float | None = None
    entry_price: float | None = None
    exit_price: float | None = None
    exit_reason: str = ""
    realized_pnl: float | None = None
    charges: float | None = None  # None: the log does not carry them (net = gross)
    net_pnl: float | None = None
    signal: dict[str, Any] | None = None
    verdict: dict[str, Any] | None = None
    orders: list[Order] = field(default_factory=list)
    latencies: dict[str, float | None] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # story steps not found in the log
    processes: list[str] = field(default_factory=list)
    incidents: list[str] = field(default_factory=list)
    dropped_steps: int = 0

    @property
    def complete(self) -> bool:
        return not self.missing

    def as_json(self) -> dict[str, Any]:
        return {"pos_id": self.pos_id, "symbol": self.symbol, "underlying": self.underlying,
                "instrument": self.instrument, "side": self.side, "qty": self.qty, "state": self.state,
                "opened_at": iso(self.opened_at), "closed_at": iso(self.closed_at),
                "entry_price": self.entry_price, "exit_price": self.exit_price, "exit_reason": self.exit_reason,
                "realized_pnl": self.realized_pnl, "charges": self.charges, "net_pnl": self.net_pnl,
                "signal": self.signal, "verdict": self.verdict, "orders": [o.as_json() for o in self.orders],
                "latencies_seconds": {k: _seconds(v) for k, v in self.latencies.items()},
                "complete": self.complete, "missing": list(self.missing), "processes": list(self.processes),
                "incidents": list(self.incidents), "dropped_steps": self.dropped_steps,
                "steps": [s.as_json() for s in self.steps]}


@dataclass
class Summary:
    first: float | None = None
    last: float | None = None
    signals: int = 0
    closed: int = 0
    open: int = 0
    denied: int = 0
    rejected: int = 0
    cancelled: int = 0
    gross_pnl: float = 0.0
    charges: float = 0.0
    charges_logged: bool = False
    net_pnl: float = 0.0
    wins: int = 0
    losses: int = 0
    max_drawdown: float = 0.0
    entries_denied: dict[str, int] = field(default_factory=dict)
    entries_skipped: int = 0
    incidents: dict[str, int] = field(default_factory=dict)

    @property
    def win_rate(self) -> float | None:
        return None if not self.closed else self.wins / self.closed

    def as_json(self) -> dict[str, Any]:
        return {"first": iso(self.first), "last": iso(self.last),
                "trades": {"signals": self.signals, "closed": self.closed, "open": self.open,
                           "denied": self.denied, "rejected": self.rejected, "cancelled": self.cancelled},
                "gross_pnl": round(self.gross_pnl, 2), "charges": round(self.charges, 2),
                "charges_logged": self.charges_logged, "net_pnl": round(self.net_pnl, 2),
                "wins": self.wins, "losses": self.losses,
                "win_rate": None if self.win_rate is None else round(self.win_rate, 4),
                "max_drawdown": round(self.max_drawdown, 2), "entries_denied": dict(self.entries_denied),
                "entries_skipped": self.entries_skipped, "incidents": dict(self.incidents)}


@dataclass
class PricePoint:
    at: float
    price: float


@dataclass
class PriceSeries:
    symbol: str
    source: str  # "candles" (CANDLE_CLOSED lines) or "fills" (order and fill prices)
    points: list[PricePoint] = field(default_factory=list)
    marks: list[dict[str, Any]] = field(default_factory=list)  # {"at", "price", "kind": entry|exit, "pos_id"}

    def as_json(self) -> dict[str, Any]:
        return {"symbol": self.symbol, "source": self.source,
                "points": [[iso(p.at), p.price] for p in self.points],
                "marks": [{**m, "at": iso(m["at"])} for m in self.marks]}


@dataclass
class Review:
    window: Window
    files: list[dict[str, Any]]
    processes: list[Process]
    summary: Summary
    incidents: list[Incident]
    trades: list[TradeStory]
    equity: list[tuple[float, str, float, float]]  # (at, pos_id, net pnl, cumulative)
    prices: list[PriceSeries]
    lines: int = 0

    @property
    def garbled(self) -> int:
        return sum(int(f["garbled"]) for f in self.files)

    def as_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_ID,
            "window": self.window.as_json(),
            "inputs": {"lines": self.lines, "garbled": self.garbled,
                       "salvaged": sum(int(f["salvaged"]) for f in self.files),
                       "outside_window": sum(int(f["outside_window"]) for f in self.files),
                       "files": [dict(f) for f in self.files]},
            "processes": [p.as_json() for p in self.processes],
            "summary": self.summary.as_json(),
            "incidents": [i.as_json() for i in self.incidents],
            "trades": [t.as_json() for t in self.trades],
            "equity": [{"at": iso(at), "pos_id": pos_id, "pnl": round(pnl, 2), "equity": round(total, 2)}
                       for at, pos_id, pnl, total in self.equity],
            "prices": [p.as_json() for p in self.prices],
        }
