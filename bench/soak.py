"""The soak: the real daemon runtime under chaos for a while, then a check that nothing was lost.

    python -m bench.soak --minutes 30 [--seconds S] [--seed N] [--pg-url URL] [--redis-url URL] [--out DIR] [--keep]

What runs: `daemon.runtime.Runtime`, role `all`, the paper broker, PostgreSQL and Redis each reached through a
TCP proxy this runner controls (tests/tcp_proxy.py), the control API on a real waitress socket, and
`feed.source = replay` at full speed (`feed.replay_speed = 0`) over a generated session file (random walks
whose drift changes every 20-60 minutes, 09:15-15:30 IST, a few late ticks that revise their minute). When
the replay reaches the end of the file, the runner writes the next day's session in its place and restarts
the `feed` actor: the session is replayed in a loop, a new trading day each time, so every minute is new.

Settings it sets (everything else is the default): the risk session is open whatever the clock says
(`risk.session_start = 00:00`, `session_end = 24:00`, `square_off_time = 24:00`); the loss limits cannot
halt entries (`risk.daily_max_loss = 1e12`, `daily_max_loss_pct = 100`, `consecutive_losses_limit =
1000000`, `capital = 1e12`) and `risk.max_open_positions = 100`; `strategy.entry_max_candle_age_seconds = 0`
(the replayed candles are old by the wall clock); `option_chain.underlyings = []` (no chain source replays);
`storage.connect_timeout_seconds = 2` (libpq's minimum).

While it runs, in loops timed by a seeded random generator (`--seed`):
- an actor is restarted through `POST /v1/actors/{id}/restart` (bearer token), its id drawn from the
  supervision tree of `GET /v1/status` (leaves and supervisors; all `trade:*` actors count as one draw);
- PostgreSQL is cut for a few seconds now and then (its proxy refuses or blackholes new connections and
  closes the live ones), and so is Redis; each resumes after;
- manual trades are entered (`POST /v1/trades`) and exited (`POST /v1/trades/{pos_id}/exit`), besides
  whatever the strategy does on its own.

At the end: no more chaos (both proxies forward), no new session, every manual trade still open is exited,
a bounded wait until every trade has settled (CLOSED, ended without a position, or POSITION_OPEN with no
order working), no journal waits in memory and no candle waits in the persister; then a clean shutdown, and
the invariants of bench/soak_checks.py. Reported: RSS (VmRSS of this process), threads and open files every
`--sample-seconds`; latency percentiles of manual entry -> POSITION_OPEN, exit -> CLOSED, the control API's
answers and actor restarts (restart call -> the child running again); counts of everything injected.
A human summary goes to stdout, the same as JSON to OUT/soak.json, the runtime's log to OUT/soak.log.
Exit code 0 only when every invariant holds.

Without `--pg-url` / `--redis-url` the local PostgreSQL and Redis the tests use (MYBOT_TEST_PG_URL /
MYBOT_TEST_REDIS_URL, defaults 127.0.0.1, database `test`). The runner creates its own schema (unless the
URL already pins a search_path) and Redis key prefix, and removes both afterwards (unless `--keep`).
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import math
import os
import random
import secrets
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

from bench.common import percentile
from bench.soak_checks import (
    CREATE_SEEN,
    SEEN_TABLE,
    Invariant,
    TradeFacts,
    candle_invariants,
    order_invariants,
    trade_invariants,
)

__all__ = ["SoakOptions", "SoakResult", "main", "run_soak", "write_session"]

DEFAULT_PG_URL = os.environ.get("MYBOT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
DEFAULT_REDIS_URL = os.environ.get("MYBOT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
FIRST_SESSION = datetime(2026, 1, 5, 9, 15)  # IST; day k of the loop is this + k days
BASES = {"NIFTY": 24_000.0, "BANKNIFTY": 52_000.0, "FINNIFTY": 23_000.0}
SEC_BASE = 150.0
MANUAL_LOTS = 1  # of the shipped instrument master's lot size (an index traded itself on paper: 1 unit)
SETTLED_STATES = ("CLOSED", "REJECTED", "CANCELLED", "DENIED", "POSITION_OPEN")
TERMINAL_STATES = frozenset({"CLOSED", "REJECTED", "CANCELLED", "DENIED"})
HTTP_TIMEOUT = 15.0
RESTART_RUNNING_WITHIN = 60.0


def _lot_size(symbol: str) -> int:
    """Units in one lot of `symbol` by the shipped instrument master (1 for an index itself, on paper)."""
    from actors.instruments import snapshot_book

    return snapshot_book().lot_size(symbol) or 1


@dataclass(frozen=True)
class SoakOptions:
    seconds: float
    out: Path
    seed: int = 1
    pg_url: str = DEFAULT_PG_URL
    redis_url: str = DEFAULT_REDIS_URL
    redis_prefix: str = ""  # empty: a fresh soak:<hex>: prefix, removed afterwards
    keep: bool = False  # keep the schema and the Redis keys
    symbols: tuple[str, ...] = ("NIFTY", "BANKNIFTY", "SEC_49081")
    session_minutes: int = 375
    ticks_per_minute: int = 12
    loop_pause: tuple[float, float] = (1.0, 3.0)  # between the end of a session's replay and the next day's
    kill_every: tuple[float, float] = (2.0, 8.0)
    pg_first_cut: tuple[float, float] = (5.0, 15.0)
    pg_cut_every: tuple[float, float] = (20.0, 60.0)
    pg_cut_for: tuple[float, float] = (2.0, 6.0)
    redis_first_cut: tuple[float, float] = (5.0, 15.0)
    redis_cut_every: tuple[float, float] = (20.0, 60.0)
    redis_cut_for: tuple[float, float] = (2.0, 6.0)
    trade_every: tuple[float, float] = (0.3, 1.5)
    manual_open_max: int = 4
    settle_seconds: float = 180.0
    sample_seconds: float = 10.0
    progress: Callable[[str], None] | None = None  # one line now and then (stdout for the CLI)
    command: str = ""  # how it was started, for the report


@dataclass
class SoakResult:
    ok: bool
    invariants: list[Invariant]
    report: dict[str, Any]


# -- the session file ---------------------------------------------------------------------------------------

def _base(symbol: str) -> float:
    return BASES.get(symbol, SEC_BASE)


def write_session(path: Path, day: int, symbols: tuple[str, ...], minutes: int, ticks_per_minute: int,
                  seed: int) -> dict[str, Any]:
    """Day `day` of the loop as a replay file (ts,symbol,ltp,volume), written whole before it replaces `path`.

    Random walks whose drift changes every 20-60 minutes, ticks spread over each minute, the symbols
    interleaved in arrival order; now and then a tick stamped in the minute that has just ended arrives
    right after the next minute's first tick (within the 5 s grace: that minute is revised)."""
    from core.market import IST

    rng = random.Random(f"{seed}:{day}")
    start = (FIRST_SESSION + timedelta(days=day)).replace(tzinfo=IST).timestamp()
    rows: list[tuple[float, float, str, float, int]] = []  # (arrival, stamped ts, symbol, ltp, volume)
    late = 0
    for symbol in symbols:
        base = _base(symbol)
        price, vol = base, base * 0.00015
        drift, change = 0.0, 0
        for minute in range(minutes):
            if minute >= change:
                drift = rng.choice((-1.0, -0.5, 0.0, 0.5, 1.0)) * vol * 0.5
                change = minute + rng.randint(20, 60)
            minute_ts = start + minute * 60
            for k in range(ticks_per_minute):
                price = max(price + drift / ticks_per_minute + rng.gauss(0.0, vol / 3), base * 0.2)
                at = minute_ts + (k + rng.random() * 0.8) * 60.0 / ticks_per_minute
                rows.append((at, at, symbol, round(price, 2), rng.randint(1, 50) * 25))
                if k == 0 and minute and rng.random() < 0.03:
                    rows.append((at + 0.001, minute_ts - 0.5, symbol, round(price, 2), 25))
                    late += 1
    rows.sort(key=lambda row: row[0])
    lines = ["ts,symbol,ltp,volume"]
    lines.extend(f"{_stamp(stamped)},{symbol},{ltp},{volume}" for _, stamped, symbol, ltp, volume in rows)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)  # a replay that has the old file open keeps reading the old file
    return {"day": day, "ticks": len(rows), "late_ticks": late, "first_ts": start,
            "last_ts": max(row[1] for row in rows) if rows else start}


def _stamp(ts: float) -> str:
    from core.market import IST

    return datetime.fromtimestamp(ts, IST).isoformat(timespec="milliseconds")


# -- where things live ----------------------------------------------------------------------------------------

def _search_path(url: str) -> str | None:
    """The schema a URL pins with options=-csearch_path=X (the test fixtures' form), if any."""
    options = parse_qs(urlsplit(url).query).get("options", [])
    for option in options:
        for part in option.split():
            if part.startswith("-csearch_path="):
                return part.split("=", 1)[1]
    return None


def _with_search_path(url: str, schema: str) -> str:
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}options={quote(f'-csearch_path={schema}')}"


def _via(url: str, port: int) -> str:
    """The same URL through 127.0.0.1:port (the proxy)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


@contextmanager
def _soak_schema(pg_url: str, keep: bool) -> Iterator[str]:
    """The URL the runtime uses directly (no proxy), pinned to a schema of its own unless it already is."""
    import psycopg

    if _search_path(pg_url) is not None:
        yield pg_url
        return
    schema = f"soak_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield _with_search_path(pg_url, schema)
    finally:
        if not keep:
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextmanager
def _soak_prefix(redis_url: str, prefix: str, keep: bool) -> Iterator[str]:
    import redis

    owned = not prefix
    prefix = prefix or f"soak:{uuid.uuid4().hex[:10]}:"
    try:
        yield prefix
    finally:
        if owned and not keep:
            client = redis.Redis.from_url(redis_url)
            try:
                keys = list(client.scan_iter(match=prefix + "*", count=1000))
                if keys:
                    client.delete(*keys)
            finally:
                client.close()


# -- what the runtime says in its log ---------------------------------------------------------------------------

class LogWatch(logging.Handler):
    """Reads the runtime's JSON-line events as they are logged (nothing is parsed back from text): the trade
    transitions of the manual trades, the end of each replay, journals waiting for the database, incidents,
    and a count of every event. Cheap, and never raises into the thread that logs."""

    KEPT_ERRORS = 200

    def __init__(self, manual_prefix: str) -> None:
        super().__init__(level=logging.DEBUG)
        self.manual_prefix = manual_prefix
        self.changed = threading.Condition()
        self.events: Counter[str] = Counter()
        self.to_states: Counter[str] = Counter()  # transitions into each state, every trade
        self.trades: set[str] = set()  # every pos_id that journaled a step
        self.manual: dict[str, dict[str, float]] = {}  # manual pos_id -> state -> when first reached
        self.deferred: set[str] = set()  # pos_ids whose journal waits in memory
        self.feed_finished = 0
        self.incidents: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.dead_letters: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._take(record)
        except Exception:  # a watcher must never break the code that logs
            pass

    def _take(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None) or "LOG"
        fields = record.__dict__
        with self.changed:
            self.events[event] += 1
            to_state = fields.get("to_state")
            pos_id = fields.get("pos_id")
            if to_state and pos_id:
                self.to_states[to_state] += 1
                self.trades.add(pos_id)
                if pos_id.startswith(self.manual_prefix):
                    self.manual.setdefault(pos_id, {}).setdefault(to_state, record.created)
            if event == "JOURNAL_DEFERRED" and pos_id:
                self.deferred.add(pos_id)
            elif event == "JOURNAL_CAUGHT_UP" and pos_id:
                self.deferred.discard(pos_id)
            elif event in ("ACTOR_STARTED", "ACTOR_RESTARTED") and str(fields.get("child", "")).startswith("trade:"):
                self.deferred.discard(fields["child"][len("trade:"):])  # a new instance holds no unwritten step
            elif event == "DEAD_LETTER" and len(self.dead_letters) < self.KEPT_ERRORS:
                self.dead_letters.append({"at": record.created, "actor": fields.get("actor"),
                                          "message_type": fields.get("message_type"),
                                          "detail": str(fields.get("detail", ""))[:300]})
            elif event == "FEED_FINISHED":
                self.feed_finished += 1
            elif event == "RECONCILE_INCIDENT":
                self.incidents.append({"at": record.created, "message": record.getMessage(),
                                       **{k: fields.get(k) for k in ("kind", "instrument", "pos_id", "detail")}})
            if record.levelno >= logging.ERROR and len(self.errors) < self.KEPT_ERRORS:
                self.errors.append({"at": record.created, "event": event, "logger": record.name,
                                    "message": record.getMessage()[:500]})
            self.changed.notify_all()

    def state_of(self, pos_id: str) -> dict[str, float]:
        with self.changed:
            return dict(self.manual.get(pos_id, {}))

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout)


# -- the control API, over real sockets -------------------------------------------------------------------------

class ControlClient:
    """Calls the control API on a fresh connection each time and keeps every answer time, per endpoint."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self.lock = threading.Lock()
        self.seconds: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[str, Counter[str]] = defaultdict(Counter)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             endpoint: str = "") -> tuple[int, Any, float]:
        """(HTTP status or 0 for a transport error, the decoded body, seconds)."""
        endpoint = endpoint or f"{method} {path}"
        headers = {"Authorization": f"Bearer {self.token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT)
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as exc:
            status, raw = 0, json.dumps({"transport_error": str(exc)}).encode()
        finally:
            conn.close()
        elapsed = time.monotonic() - started
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = raw[:200].decode(errors="replace")
        with self.lock:
            self.seconds[endpoint].append(elapsed)
            self.statuses[endpoint][str(status)] += 1
        return status, decoded, elapsed


def _actor_ids(tree: Any) -> list[str]:
    """Every child id in a /v1/status supervision tree (supervisors and leaves), depth first."""
    ids: list[str] = []

    def walk(node: Any) -> None:
        for child in (node or {}).get("children", []) if isinstance(node, dict) else []:
            if isinstance(child, dict) and child.get("id"):
                ids.append(str(child["id"]))
                walk(child.get("supervisor"))
    walk(tree)
    return ids


# -- the parts of the soak that run beside the runtime ----------------------------------------------------------

@dataclass
class Context:
    options: SoakOptions
    runtime: Any
    client: ControlClient
    watch: LogWatch
    pg_proxy: Any
    redis_proxy: Any
    stop: threading.Event
    started: float  # monotonic
    lock: threading.Lock = field(default_factory=threading.Lock)
    kills: list[dict[str, Any]] = field(default_factory=list)
    cuts: list[dict[str, Any]] = field(default_factory=list)
    loops: list[dict[str, Any]] = field(default_factory=list)
    entries: dict[str, float] = field(default_factory=dict)  # manual pos_id -> when the entry call was made
    exits: dict[str, float] = field(default_factory=dict)  # manual pos_id -> when the (accepted) exit call was made
    refusals: Counter[str] = field(default_factory=Counter)
    thread_errors: list[str] = field(default_factory=list)

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 3)


def _guarded(ctx: Context, name: str, body: Callable[[], None]) -> threading.Thread:
    def run() -> None:
        try:
            body()
        except Exception as exc:  # a broken chaos thread is a broken soak: say so in the report
            with ctx.lock:
                ctx.thread_errors.append(f"{name}: {type(exc).__name__}: {exc}")
    thread = threading.Thread(target=run, name=f"soak-{name}", daemon=True)
    thread.start()
    return thread


def _killer(ctx: Context, rng: random.Random) -> None:
    """Restart a random actor now and then, through the control API; time until it runs again."""
    low, high = ctx.options.kill_every
    while not ctx.stop.wait(rng.uniform(low, high)):
        status, body, _ = ctx.client.call("GET", "/v1/status")
        tree = body.get("supervision") if status == 200 and isinstance(body, dict) else None
        ids = _actor_ids(tree)
        if not ids:
            with ctx.lock:
                ctx.kills.append({"at": ctx.elapsed(), "id": None, "outcome": f"no tree (status {status})"})
            continue
        trades = [i for i in ids if i.startswith("trade:")]
        draws = [i for i in ids if not i.startswith("trade:")] + (["trade:*"] if trades else [])
        actor_id = rng.choice(draws)
        if actor_id == "trade:*":
            actor_id = rng.choice(trades)
        kill = {"at": ctx.elapsed(), "id": actor_id}
        started = time.monotonic()
        status, body, answered = ctx.client.call("POST", f"/v1/actors/{quote(actor_id, safe='')}/restart",
                                                 endpoint="POST /v1/actors/{id}/restart")
        kill["http"] = status
        kill["answer_seconds"] = round(answered, 4)
        if status == 200:
            found = ctx.runtime.root.find(actor_id) if ctx.runtime.root is not None else None
            if found is not None and found[1].wait_for_state("running", RESTART_RUNNING_WITHIN):
                kill["running_after_seconds"] = round(time.monotonic() - started, 4)
                kill["outcome"] = "running"
            else:
                kill["outcome"] = "gone" if found is None else "not running"
        else:
            kill["outcome"] = "refused"
            kill["answer"] = body
        with ctx.lock:
            ctx.kills.append(kill)


def _cutter(ctx: Context, rng: random.Random) -> None:
    """Cut PostgreSQL now and then, and Redis now and then, each for a few seconds; always resume."""
    o = ctx.options
    now = time.monotonic()
    plans: dict[str, dict[str, Any]] = {
        "postgresql": {"proxy": ctx.pg_proxy, "next": now + rng.uniform(*o.pg_first_cut), "every": o.pg_cut_every,
                       "for": o.pg_cut_for, "until": None},
        "redis": {"proxy": ctx.redis_proxy, "next": now + rng.uniform(*o.redis_first_cut),
                  "every": o.redis_cut_every, "for": o.redis_cut_for, "until": None},
    }
    try:
        while True:
            due = min(min(p["next"], p["until"] or math.inf) for p in plans.values())
            if ctx.stop.wait(max(0.0, due - time.monotonic())):
                return
            now = time.monotonic()
            for name, plan in plans.items():
                if plan["until"] is not None and now >= plan["until"]:
                    plan["proxy"].resume()
                    plan["until"] = None
                    plan["next"] = now + rng.uniform(*plan["every"])
                    with ctx.lock:
                        ctx.cuts[plan["index"]]["resumed_at"] = ctx.elapsed()
                elif plan["until"] is None and now >= plan["next"]:
                    mode: Literal["blackhole", "refuse"] = rng.choice(("refuse", "blackhole"))
                    seconds = rng.uniform(*plan["for"])
                    plan["proxy"].stop_accepting_and_cut(mode)
                    plan["until"] = now + seconds
                    with ctx.lock:
                        plan["index"] = len(ctx.cuts)
                        ctx.cuts.append({"what": name, "mode": mode, "at": ctx.elapsed(),
                                         "seconds": round(seconds, 3)})
    finally:
        for plan in plans.values():
            plan["proxy"].resume()


def _trader(ctx: Context, rng: random.Random, prefix: str) -> None:
    """Manual entries and exits through the API, a few positions at a time."""
    o = ctx.options
    symbols = list(o.symbols)
    number = 0
    while not ctx.stop.wait(rng.uniform(*o.trade_every)):
        with ctx.lock:
            entries, exits = dict(ctx.entries), set(ctx.exits)
        opened, pending = [], 0
        for pos_id in entries:
            states = ctx.watch.state_of(pos_id)
            if TERMINAL_STATES & states.keys():
                continue
            if pos_id in exits:
                continue
            if "POSITION_OPEN" in states:
                opened.append(pos_id)
            else:
                pending += 1
        if len(opened) + pending < o.manual_open_max and (not opened or rng.random() < 0.5):
            number += 1
            pos_id = f"{prefix}{number:05d}"
            symbol = rng.choice(symbols)
            body = {"pos_id": pos_id, "symbol": symbol, "side": rng.choice(("BUY", "SELL")),
                    "qty": MANUAL_LOTS * _lot_size(symbol), "reason": "soak"}
            sent = time.time()
            status, answer, _ = ctx.client.call("POST", "/v1/trades", body, endpoint="POST /v1/trades")
            if status == 202:
                with ctx.lock:
                    ctx.entries[pos_id] = sent
            else:
                with ctx.lock:
                    ctx.refusals[f"entry {status} {_why(answer, pos_id)}"] += 1
        elif opened:
            pos_id = rng.choice(opened)
            _exit(ctx, pos_id)


def _exit(ctx: Context, pos_id: str) -> int:
    sent = time.time()
    status, answer, _ = ctx.client.call("POST", f"/v1/trades/{pos_id}/exit", {"reason": "soak"},
                                        endpoint="POST /v1/trades/{id}/exit")
    with ctx.lock:
        if status == 202:
            ctx.exits.setdefault(pos_id, sent)
        else:
            ctx.refusals[f"exit {status} {_why(answer, pos_id)}"] += 1
    return status


def _why(answer: Any, pos_id: str = "") -> str:
    """A refusal's reason, shortened, with the pos_id taken out (so refusals count by reason)."""
    if isinstance(answer, dict):
        text = str(answer.get("code") or answer.get("title") or answer.get("error") or "")
        detail = str(answer.get("reason") or answer.get("detail") or "")
        if pos_id:
            detail = detail.replace(pos_id, "<pos_id>")
        return f"{text}: {detail}"[:100] if detail else text[:100]
    return ""


def _looper(ctx: Context, rng: random.Random, session_path: Path, first: dict[str, Any]) -> None:
    """When the replay has reached the end of the session, the next day's session replaces the file and the
    feed is restarted: the session replays in a loop."""
    o = ctx.options
    current = first
    loop_started = time.monotonic()
    seen = 0
    market = ctx.runtime.market_data
    while not ctx.stop.is_set():
        last = seen
        if not ctx.watch.wait(lambda: ctx.watch.feed_finished > last or ctx.stop.is_set(), 1.0):  # noqa: B023
            continue
        if ctx.stop.is_set():
            return
        seen = ctx.watch.feed_finished
        status = market.feed_state.live_source_status()
        event_time = status.get("event_time") or 0.0
        if not status.get("finished") or event_time < current["last_ts"] - 0.01:  # stamps are in milliseconds
            continue  # the end of an older replay (a feed restarted by the chaos)
        with ctx.lock:
            ctx.loops.append({"day": current["day"], "ticks": current["ticks"], "late_ticks": current["late_ticks"],
                              "replay_seconds": round(time.monotonic() - loop_started, 3)})
        if ctx.stop.wait(rng.uniform(*o.loop_pause)):
            return
        current = write_session(session_path, current["day"] + 1, o.symbols, o.session_minutes,
                                o.ticks_per_minute, o.seed)
        loop_started = time.monotonic()
        while not ctx.stop.is_set():
            try:
                ctx.runtime.restart_actor("feed")
                break
            except Exception:  # the ingest subtree may be restarting itself right now
                ctx.stop.wait(0.5)


class SeenCandles:
    """Every candle the builders emit (closed or revised), written to PostgreSQL directly (no proxy) in
    batches: the check compares it with the `candles` table where both are stored."""

    def __init__(self, direct_url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(direct_url, autocommit=True)
        self.conn.execute(CREATE_SEEN)
        self.lock = threading.Lock()
        self.pending: list[tuple[int, str, int, int, float, bool]] = []
        self.seq = 0
        self.written = 0
        self.failures = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="soak-seen-candles", daemon=True)
        self.thread.start()

    def on_candles(self, symbol: str, closed: list[Any], revised: list[Any]) -> None:
        """The candle builders' listener (MarketDataOptions.candle_listeners): called in the builder."""
        with self.lock:
            for candles, is_close in ((closed, True), (revised, False)):
                for candle in candles:
                    self.seq += 1
                    self.pending.append((self.seq, symbol, int(candle.ts), int(candle.revision),
                                         float(candle.close), is_close))

    def _run(self) -> None:
        import psycopg

        while not self.stop.wait(0.5):
            try:
                self.flush()
            except psycopg.Error:  # kept for the next flush (this connection does not go through a proxy)
                self.failures += 1

    def flush(self) -> None:
        with self.lock:
            batch, self.pending = self.pending, []
        if not batch:
            return
        try:
            with self.conn.cursor() as cursor, cursor.copy(
                    f"COPY {SEEN_TABLE} (seq, symbol, ts, revision, close, closed) FROM STDIN") as copy:
                for row in batch:
                    copy.write_row(row)
        except BaseException:
            with self.lock:
                self.pending[:0] = batch
            raise
        self.written += len(batch)

    def close(self) -> None:
        if self.conn.closed:
            return
        self.stop.set()
        self.thread.join(timeout=10.0)
        self.flush()
        self.conn.close()


def _memory() -> dict[str, float]:
    """VmRSS of this process (MB), its threads and open files: /proc, nothing else."""
    rss = math.nan
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss = round(int(line.split()[1]) / 1024, 1)
                break
    return {"rss_mb": rss, "threads": threading.active_count(), "open_files": len(os.listdir("/proc/self/fd"))}


def _ms(samples: list[float]) -> dict[str, Any]:
    if not samples:
        return {"n": 0}
    ms = [s * 1000.0 for s in samples]
    return {"n": len(ms), "p50_ms": round(percentile(ms, 50), 2), "p95_ms": round(percentile(ms, 95), 2),
            "p99_ms": round(percentile(ms, 99), 2), "max_ms": round(max(ms), 2)}


def _settings(options: SoakOptions, pg_url: str, redis_url: str, prefix: str, session_path: Path,
              token: str) -> Any:
    from config.settings import load_settings

    overrides: dict[str, Any] = {
        "storage": {"url": pg_url, "redis_url": redis_url, "redis_prefix": prefix, "connect_timeout_seconds": 2.0},
        "feed": {"source": "replay", "replay_path": str(session_path), "replay_speed": 0.0,
                 "symbols": list(options.symbols), "record_path": ""},
        "option_chain": {"underlyings": []},
        "broker": {"kind": "paper"},
        "http": {"mds_port": 0, "control_port": 0},
        "risk": {"session_start": "00:00", "session_end": "24:00", "square_off_time": "24:00",
                 "daily_max_loss": 1e12, "daily_max_loss_pct": 100.0, "consecutive_losses_limit": 1_000_000,
                 "capital": 1e12, "max_open_positions": 100, "max_notional_per_trade": 0.0, "max_exposure": 0.0},
        "calendar": {"enabled": False},  # any day, any hour
        "strategy": {"entry_max_candle_age_seconds": 0.0},
        "log": {"level": "INFO"},
    }
    return load_settings(env={"MYBOT_CONTROL_TOKEN": token}, overrides=overrides)


def _wind_down(ctx: Context, threads: list[threading.Thread], direct_url: str) -> dict[str, Any]:
    """No more chaos or sessions; exit the manual trades still open; wait (bounded) until everything settled:
    every trade CLOSED, ended without a position or POSITION_OPEN, every manual trade ended, no journal step
    waiting in memory, no candle waiting in the persister, and /v1/health's checks passing."""
    import psycopg

    ctx.stop.set()
    for thread in threads:
        thread.join(timeout=RESTART_RUNNING_WITHIN + HTTP_TIMEOUT)
    ctx.pg_proxy.resume()
    ctx.redis_proxy.resume()
    started = time.monotonic()
    deadline = started + ctx.options.settle_seconds
    unsettled: list[Any] = []
    pause = threading.Event()  # never set: the pause between two looks at the database
    with psycopg.connect(direct_url, autocommit=True) as conn:
        while True:
            with ctx.lock:
                entries, exits = dict(ctx.entries), dict(ctx.exits)
            to_exit = [p for p in entries if p not in exits and not TERMINAL_STATES & ctx.watch.state_of(p).keys()]
            for pos_id in to_exit:
                if "POSITION_OPEN" in ctx.watch.state_of(pos_id):
                    _exit(ctx, pos_id)
            try:
                unsettled = conn.execute(
                    "SELECT pos_id, state FROM trades WHERE state <> ALL(%s) ORDER BY pos_id",
                    (list(SETTLED_STATES),)).fetchall()
                exiting = conn.execute(
                    "SELECT pos_id, state FROM trades WHERE pos_id = ANY(%s) AND state NOT IN "
                    "('CLOSED', 'REJECTED', 'CANCELLED', 'DENIED')", (list(entries),)).fetchall()
            except psycopg.Error as exc:
                unsettled, exiting = [("?", f"query failed: {exc}")], []
            buffered = persister_buffered(ctx.runtime)
            with ctx.watch.changed:
                deferred = sorted(ctx.watch.deferred)
            healthy, checks = ctx.runtime.health()  # a reconciliation pass clears an outage's error
            done = not unsettled and not exiting and not deferred and buffered == 0 and healthy
            if done or time.monotonic() > deadline:
                break
            pause.wait(0.25)
    return {"seconds": round(time.monotonic() - started, 3), "settled": done,
            "unsettled": [list(row) for row in unsettled[:20]], "manual_not_closed": [list(r) for r in exiting[:20]],
            "journals_deferred": deferred[:20], "candles_buffered": buffered,
            "failing_health_checks": sorted(name for name, check in checks.items() if not check.get("ok"))}


def persister_buffered(runtime: Any) -> int:
    status = runtime.status()
    persistence = status.get("persistence") or {}
    return int(persistence.get("buffered", 0))


def _trade_facts(direct_url: str) -> tuple[list[TradeFacts], dict[str, tuple[str, str]]]:
    """Every trade as its row and its journal (rebuilt through core.trade) tell it; the orders table's
    correlation_id -> (pos_id, leg)."""
    import psycopg

    from core.trade import PositionAdopted, event_from_payload, rebuild
    from storage.opening import open_storage

    storage = open_storage(direct_url)
    facts: list[TradeFacts] = []
    try:
        for row in storage.trades.list_trades():
            error, state, entry, exit_, adopted = "", "?", 0, 0, False
            try:
                events = [event_from_payload(r.event, r.payload) for r in storage.trades.events(row.pos_id)]
                adopted = any(isinstance(e, PositionAdopted) for e in events)
                context = rebuild(events)
                state, entry, exit_ = context.state.value, context.entry_filled_qty, context.exit_filled_qty
            except Exception as exc:  # an unreadable journal is a finding, reported with the trade
                error = f"{type(exc).__name__}: {exc}"
            facts.append(TradeFacts(
                pos_id=row.pos_id, instrument=row.instrument, side=row.side, row_state=row.state,
                row_entry_filled=row.filled_qty, row_exit_filled=int(row.detail.get("exit_filled_qty") or 0),
                journal_state=state, journal_entry_filled=entry, journal_exit_filled=exit_, adopted=adopted,
                journal_error=error))
    finally:
        storage.close()
    with psycopg.connect(direct_url, autocommit=True) as conn:
        known = {cid: (pos_id, leg) for cid, pos_id, leg in
                 conn.execute("SELECT correlation_id, pos_id, leg FROM orders").fetchall()}
    return facts, known


def _runtime_invariants(ctx: Context, settle: dict[str, Any], health: tuple[bool, dict[str, Any]],
                        shutdown: dict[str, Any]) -> list[Invariant]:
    runtime = ctx.runtime
    restarts = [k for k in ctx.kills if k.get("outcome") == "running"]
    up = Invariant(
        "runtime_stayed_up", runtime.escalation is None and shutdown["exit_code"] == 0 and shutdown["clean"]
        and not ctx.thread_errors,
        f"escalation: {runtime.escalation or 'none'}; shutdown in {shutdown['seconds']} s, exit code "
        f"{shutdown['exit_code']}{'' if shutdown['clean'] else ', not clean'}; {len(restarts)} restarts ran",
        {"escalation": runtime.escalation, **shutdown, "soak_thread_errors": ctx.thread_errors})
    ok, checks = health
    settled = Invariant(
        "settled_and_healthy_at_end", settle["settled"] and ok,
        f"settled in {settle['seconds']} s: {settle['settled']}; /v1/health {'200' if ok else '503'}",
        {"settle": settle, "health": checks})
    lost = []
    for pos_id, sent in sorted(ctx.exits.items()):
        states = ctx.watch.state_of(pos_id)
        if "CLOSED" not in states:
            lost.append({"pos_id": pos_id, "exit_accepted_at": sent, "states_reached": sorted(states, key=lambda state: states[state])})
    exits = Invariant(
        "accepted_exits_closed", not lost,
        f"{len(ctx.exits)} exits accepted by the API (202): {len(ctx.exits) - len(lost)} reached CLOSED"
        + (f", {len(lost)} never did" if lost else ""),
        {"not_closed": lost[:20], "dead_letters": ctx.watch.dead_letters[:20]})
    return [up, settled, exits]


def run_soak(options: SoakOptions) -> SoakResult:
    """Run the soak (see the module docstring); the invariants and the report (also written to OUT)."""
    from actors.market_data.assembly import MarketDataOptions
    from daemon.runtime import Runtime, Wiring
    from telemetry.logs import configure_logging
    from tests.tcp_proxy import TcpProxy

    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(24)
    log_file = open(out / "soak.log", "w")  # noqa: SIM115 - closed in the finally below
    configure_logging("INFO", stream=log_file)
    watch = LogWatch(f"soak{options.seed}-")
    logging.getLogger().addHandler(watch)
    try:
        with _soak_schema(options.pg_url, options.keep) as direct_url, \
                _soak_prefix(options.redis_url, options.redis_prefix, options.keep) as prefix, \
                TcpProxy(*_host_port(options.pg_url, 5432)) as pg_proxy, \
                TcpProxy(*_host_port(options.redis_url, 6379)) as redis_proxy:
            session_path = out / "session.csv"
            first = write_session(session_path, 0, options.symbols, options.session_minutes,
                                  options.ticks_per_minute, options.seed)
            seen = SeenCandles(direct_url)
            settings = _settings(options, _via(direct_url, pg_proxy.port), _via(options.redis_url, redis_proxy.port),
                                 prefix, session_path, token)
            runtime = Runtime(settings, "all", wiring=Wiring(market_data=MarketDataOptions(
                candle_listeners=(seen.on_candles,))))
            memory = [{"t": 0.0, **_memory()}]
            try:
                runtime.start()
                ctx = Context(options, runtime, ControlClient(runtime.servers[-1].port, token), watch, pg_proxy,
                              redis_proxy, threading.Event(), time.monotonic())
                invariants, report = _soak(ctx, seen, memory, direct_url, session_path, first)
            finally:
                runtime.shutdown()  # does nothing when the soak already stopped it
                seen.close()
    finally:
        logging.getLogger().removeHandler(watch)
        configure_logging("WARNING")
        log_file.close()
    ok = bool(invariants) and all(i.ok for i in invariants)
    report["ok"] = ok
    report["invariants"] = [i.as_json() for i in invariants]
    (out / "soak.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return SoakResult(ok, invariants, report)


def _soak(ctx: Context, seen: SeenCandles, memory: list[dict[str, Any]], direct_url: str, session_path: Path,
          first: dict[str, Any]) -> tuple[list[Invariant], dict[str, Any]]:
    """The chaos for `options.seconds`, the settling, the clean stop, the checks."""
    import psycopg

    options, runtime, watch = ctx.options, ctx.runtime, ctx.watch
    say = options.progress or (lambda line: None)
    rng = random.Random(options.seed)
    started_wall = time.time()
    say(f"soak: {options.seconds:g} s, seed {options.seed}, control API {runtime.servers[-1].url}, "
        f"log {options.out / 'soak.log'}")
    if runtime.trading is None or not runtime.trading.ready.wait(60.0):
        ctx.thread_errors.append("trading never became ready (start-up reconciliation)")
    threads = [
        _guarded(ctx, "looper", lambda: _looper(ctx, random.Random(rng.random()), session_path, first)),
        _guarded(ctx, "killer", lambda: _killer(ctx, random.Random(rng.random()))),
        _guarded(ctx, "cutter", lambda: _cutter(ctx, random.Random(rng.random()))),
        _guarded(ctx, "trader", lambda: _trader(ctx, random.Random(rng.random()), watch.manual_prefix)),
    ]
    try:
        deadline = ctx.started + options.seconds
        acknowledged = 0
        next_line = time.monotonic() + 60.0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or runtime.escalation:
                break
            ctx.stop.wait(min(options.sample_seconds, remaining))
            status, _, _ = ctx.client.call("GET", "/v1/health")
            memory.append({"t": ctx.elapsed(), **_memory(), "health": status})
            if len(watch.incidents) > acknowledged:
                # What an operator does once the incident is written down: it stays in the report.
                acknowledged = len(watch.incidents)
                ctx.client.call("POST", "/v1/control/reconcile/ack", {"reason": "soak"})
            if time.monotonic() >= next_line:
                next_line += 60.0
                say(_progress(ctx, memory[-1]))
        say(f"soak: chaos over after {ctx.elapsed()} s; settling")
        settle = _wind_down(ctx, threads, direct_url)
    finally:
        ctx.stop.set()
    memory.append({"t": ctx.elapsed(), **_memory()})
    health = runtime.health()
    stopping = time.monotonic()
    runtime.shutdown()
    shutdown = {"seconds": round(time.monotonic() - stopping, 3), "exit_code": runtime.exit_code,
                "clean": not watch.events["SHUTDOWN_TIMEOUT"] and not watch.events["SHUTDOWN_HOOK_FAILED"]}
    seen.close()
    broker = runtime.trading.broker
    orders, positions = broker.orders(), broker.positions()  # the paper book outlives the runtime
    facts, known = _trade_facts(direct_url)
    invariants: list[Invariant] = []
    with psycopg.connect(direct_url, autocommit=True) as conn:
        invariants.extend(candle_invariants(conn))
    invariants.extend(trade_invariants(facts, orders, positions, known))
    invariants.append(order_invariants(facts, orders, known))
    invariants.extend(_runtime_invariants(ctx, settle, health, shutdown))
    report = _report(ctx, options, memory, settle, shutdown, facts, orders, seen.written, started_wall)
    return invariants, report


def _progress(ctx: Context, sample: dict[str, Any]) -> str:
    with ctx.lock:
        kills, cuts, loops, entries, exits = len(ctx.kills), len(ctx.cuts), len(ctx.loops), len(ctx.entries), len(ctx.exits)
    return (f"soak: t={ctx.elapsed():.0f}s rss={sample['rss_mb']} MB threads={sample['threads']} "
            f"sessions={loops} restarts={kills} cuts={cuts} manual entries={entries} exits={exits} "
            f"health={sample.get('health')}")


def _report(ctx: Context, options: SoakOptions, memory: list[dict[str, Any]], settle: dict[str, Any],
            shutdown: dict[str, Any], facts: list[TradeFacts], orders: list[Any], candles_emitted: int,
            started_wall: float) -> dict[str, Any]:
    watch = ctx.watch
    entry_latency, exit_latency = [], []
    manual_outcomes: Counter[str] = Counter()
    for pos_id, sent in ctx.entries.items():
        states = watch.state_of(pos_id)
        if "POSITION_OPEN" in states:
            entry_latency.append(states["POSITION_OPEN"] - sent)
        final = next((s for s in ("CLOSED", "REJECTED", "CANCELLED", "DENIED") if s in states), "open")
        manual_outcomes[final] += 1
    for pos_id, sent in ctx.exits.items():
        states = watch.state_of(pos_id)
        if "CLOSED" in states:
            exit_latency.append(states["CLOSED"] - sent)
    restarts = [k["running_after_seconds"] for k in ctx.kills if "running_after_seconds" in k]
    rss = [m["rss_mb"] for m in memory]
    by_kind = Counter(("trade:*" if str(k.get("id")).startswith("trade:") else str(k.get("id"))) for k in ctx.kills)
    strategy_trades = [f for f in facts if not f.pos_id.startswith(watch.manual_prefix)]
    return {
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(options).items()
                    if k not in ("progress", "command")},
        "command": options.command or None,
        "started_at": datetime.fromtimestamp(started_wall).isoformat(timespec="seconds"),
        "elapsed_seconds": ctx.elapsed(),
        "memory": {"rss_start_mb": rss[0], "rss_peak_mb": max(rss), "rss_end_mb": rss[-1],
                   "threads_start": memory[0]["threads"], "threads_end": memory[-1]["threads"],
                   "open_files_start": memory[0]["open_files"], "open_files_end": memory[-1]["open_files"],
                   "samples": memory},
        "latency": {
            "manual_entry_to_position_open": _ms(entry_latency),
            "exit_to_closed": _ms(exit_latency),
            "actor_restart_to_running": _ms(restarts),
            "control_api": {endpoint: {**_ms(samples), "statuses": dict(ctx.client.statuses[endpoint])}
                            for endpoint, samples in sorted(ctx.client.seconds.items())},
        },
        "counts": {
            "sessions_replayed": len(ctx.loops),
            "ticks_replayed": sum(loop["ticks"] for loop in ctx.loops),
            "candles_emitted": candles_emitted,
            "actor_restarts": len(ctx.kills), "actor_restarts_by_id": dict(by_kind.most_common()),
            "restart_outcomes": dict(Counter(str(k.get("outcome")) for k in ctx.kills)),
            "postgresql_cuts": sum(1 for c in ctx.cuts if c["what"] == "postgresql"),
            "redis_cuts": sum(1 for c in ctx.cuts if c["what"] == "redis"),
            "cut_seconds": round(sum(c["seconds"] for c in ctx.cuts), 1),
            "manual_entries_accepted": len(ctx.entries), "manual_exits_accepted": len(ctx.exits),
            "manual_outcomes": dict(manual_outcomes), "refusals": dict(ctx.refusals.most_common()),
            "strategy_trades": len(strategy_trades),
            "strategy_trade_states": dict(Counter(f.row_state for f in strategy_trades)),
            "broker_orders": len(orders),
            "reconcile_incidents": len(watch.incidents),
            "events": {k: watch.events[k] for k in sorted(watch.events) if k in NOTABLE_EVENTS},
            "trade_transitions_into": dict(sorted(watch.to_states.items())),
        },
        "reconcile_incidents": watch.incidents[:50],
        "errors_logged": watch.errors[:50],
        "dead_letters": watch.dead_letters[:50],
        "cuts": ctx.cuts,
        "restarts": ctx.kills[-200:],
        "sessions": ctx.loops[-50:],
        "settle": settle,
        "shutdown": shutdown,
    }


NOTABLE_EVENTS = frozenset({
    "ACTOR_CRASHED", "ACTOR_RESTART_REQUESTED", "ACTOR_STOP_TIMEOUT", "DEAD_LETTER", "SUPERVISOR_ESCALATED",
    "TELL_DROPPED", "JOURNAL_DEFERRED", "JOURNAL_CAUGHT_UP", "PLACEMENT_WITHOUT_DATABASE", "CANDLE_PERSIST_DEFERRED",
    "CANDLE_PERSIST_RESUMED", "CANDLE_BUFFER_OVERFLOW", "CANDLE_REVISED", "LATE_TICK_DROPPED", "BUS_DEGRADED",
    "BUS_RESTORED", "STORAGE_UNAVAILABLE", "RECONCILE_INCIDENT", "RECONCILE_MISSED_FILL", "ORDER_TIMEOUT",
    "ORDER_SLIPPAGE", "ORDER_REJECTED", "ENTRY_DENIED", "ENTRY_SIGNAL", "EXIT_SIGNAL", "TRADE_RECOVERING",
    "TRADE_RECOVERY_DEFERRED", "TRADE_JOURNAL_UNREADABLE", "TRADE_ROW_STALE", "EXIT_RETRY_SCHEDULED",
    "OPERATOR_ALERT", "ORDER_SUBMIT_AMBIGUOUS", "FEED_FINISHED", "SHUTDOWN_TIMEOUT", "TIMER_CALLBACK_FAILED",
    "RISK_PERSIST_FAILED", "BUS_HANDLER_FAILED", "EXIT_SIGNAL_UNMATCHED",
})


# -- the report for a human ---------------------------------------------------------------------------------------

def summary_text(result: SoakResult) -> str:
    r = result.report
    lines = [f"soak {'PASSED' if result.ok else 'FAILED'} after {r.get('elapsed_seconds')} s "
             f"(seed {r.get('options', {}).get('seed')})"]
    m = r.get("memory", {})
    if m:
        lines.append(f"  RSS start {m['rss_start_mb']} MB, peak {m['rss_peak_mb']} MB, end {m['rss_end_mb']} MB; "
                     f"threads {m['threads_start']} -> {m['threads_end']}; open files "
                     f"{m['open_files_start']} -> {m['open_files_end']}")
    c = r.get("counts", {})
    if c:
        lines.append(f"  {c['sessions_replayed']} sessions replayed ({c['ticks_replayed']} ticks, "
                     f"{c['candles_emitted']} candles emitted); {c['actor_restarts']} actor restarts; "
                     f"{c['postgresql_cuts']} PostgreSQL cuts, {c['redis_cuts']} Redis cuts ({c['cut_seconds']} s)")
        lines.append(f"  manual: {c['manual_entries_accepted']} entries, {c['manual_exits_accepted']} exits accepted, "
                     f"outcomes {c['manual_outcomes']}; refused {c['refusals']}; strategy trades "
                     f"{c['strategy_trades']} {c['strategy_trade_states']}; {c['broker_orders']} broker orders; "
                     f"{c['reconcile_incidents']} reconcile incidents")
    lat = r.get("latency", {})
    for name in ("manual_entry_to_position_open", "exit_to_closed", "actor_restart_to_running"):
        if name in lat:
            lines.append(f"  {name}: {_fmt(lat[name])}")
    for endpoint, figures in lat.get("control_api", {}).items():
        lines.append(f"  {endpoint}: {_fmt(figures)} {figures.get('statuses')}")
    for invariant in result.invariants:
        lines.append(f"  [{'PASS' if invariant.ok else 'FAIL'}] {invariant.name}: {invariant.summary}")
        if not invariant.ok:
            lines.append("         " + json.dumps(invariant.evidence, default=str)[:2000])
    return "\n".join(lines)


def _fmt(figures: dict[str, Any]) -> str:
    if not figures.get("n"):
        return "n=0"
    return (f"n={figures['n']} p50 {figures['p50_ms']} ms, p95 {figures['p95_ms']} ms, "
            f"p99 {figures['p99_ms']} ms, max {figures['max_ms']} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long the chaos runs (default 30)")
    parser.add_argument("--seconds", type=float, default=None, help="the same in seconds (overrides --minutes)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--out", type=Path, default=Path("var/soak"))
    parser.add_argument("--keep", action="store_true", help="keep the schema and the Redis keys afterwards")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else args.minutes * 60.0
    options = SoakOptions(seconds=seconds, out=args.out, seed=args.seed, pg_url=args.pg_url,
                          redis_url=args.redis_url, keep=args.keep, progress=lambda line: print(line, flush=True),
                          command=" ".join(["python -m bench.soak", *(argv if argv is not None else sys.argv[1:])]))
    result = run_soak(options)
    print(summary_text(result), flush=True)
    print(f"report: {args.out / 'soak.json'}", flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
