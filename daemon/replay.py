"""Deterministic replay (`mybot replay TICKS.csv`): the MDS and trader actors over a tick file, then a report.

The same actors as a live run (role all, in-process bus, paper broker, a fresh SQLite database in the output
directory, no HTTP), with what makes two replays of one file byte-identical:

- One order of decisions. The candle builders of different symbols run on their own threads; the strategy
  decides every candle in one global (ts, symbol) order (`StrategyOptions.merge_symbols`: the configured
  symbols the file mentions), because the book, the trader's risk state and the clock are shared.
- Time is candle time. `CandleClock` is the clock every actor reads: it stands at the close of the candle
  being decided (the tick source's own advances are ignored: it reads ahead of the decisions). The risk
  guard's session checks, order times and fills all see the decision's time; the strategy squares off in
  candle time too.
- The decision gate. After a candle that raised signals, the strategy holds the next candles until the
  trader has settled them (the trade row is open, closed or refused; `TradeSettledGate`), so the executor
  acts on the candle its signal came from -- never a later one -- and the strategy's book learns, at that
  same point, which entries the trader refused.
- Quotes are marks: the paper broker's quote for a symbol is the close of its candle being decided
  (`ReplayMarks`), fills need no latency, and the gate polls the broker itself while it waits.

What is replayed: every symbol the file holds (NIFTY, BANKNIFTY, FINNIFTY, SEC_<id>), whatever
`feed.symbols` says, unless `symbols` (`--symbols`) narrows it; rows of any other symbol are ignored and
counted (`ignored` in the summary, next to `ticks_by_symbol`).

Options as live trades them: given the option chains the live run recorded (`chains`, `--chains FILE`,
written by `mybot run --record FILE` as FILE.chains.jsonl; that sibling file is used by itself when no
`chains` is given), the strategy picks the ATM contract from the chain the live cache held at the candle's
close, and every quote of a `SEC_<id>` contract (fills, exits, marks) is its price in the recorded chains
at that time (actors.sources.chains.RecordedChains). Without chains, index signals trade index points.

Charges (core.charges, the configured `charges.*` rate table) apply to every fill of an option contract
(`SEC_<id>`), computed from the trade's journal by core.fills.trade_charges; index-point trades of a replay
without chains are not real trades and pay none.

Output, in `out_dir`: `signals.jsonl` (every ENTRY_SIGNAL, EXIT_SIGNAL and ENTRY_SKIPPED with its score),
`trades.jsonl` (every position as the trades table ends: prices, qty, gross P&L, charges, net P&L, state),
both sorted by candle time, and `summary.json` (trades, win rate, gross, charges and net P&L, max drawdown,
counts, ticks per symbol, ignored symbols): all three hold no wall-clock value, so two replays of one input
are byte-identical. The run's speed and where it wrote (elapsed, ticks/s, out_dir) go to `timing.json`.
And `replay.log`: the run's JSON-line log, so `mybot review OUT/replay.log` reads a replay as it reads a
live day.

Time in `replay.log`: `ts` is the replay's virtual time (the candle clock every actor reads: the close of
the candle being decided), so the review's day, windows, durations and latencies are in market time;
`wall_ts` is when the line was written (how long the replay itself took). Lines written at one candle
share its `ts` (a replay runs a minute of market in milliseconds): the review keeps their order. The log
is at INFO (whatever the console's level) and, unlike the journals, not byte-identical between two runs
(`wall_ts`, pid, and the interleaving of the actors' threads).
"""

from __future__ import annotations

import logging
import mmap
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from actors.clock import VirtualClock
from actors.market_data.feed import FeedState
from actors.signals.assembly import SignalsHandles
from actors.sources.chains import RecordedChains, chains_path_for
from actors.sources.replay import ReplayFileUnreadable, read_ticks
from config.reference import rate_table
from config.settings import Settings
from core.charges import Charges, RateTable
from core.fills import fills_from_journal, gross_of_fills, trade_charges
from core.market import Candle, minute_start, to_iso_ist
from core.orders import Side
from core.pnl import realized_pnl
from core.signals import EntrySignalRaised, Signal
from daemon.runtime import Runtime, Wiring
from storage.errors import StorageError
from storage.records import TERMINAL_TRADE_STATES, TradeRecord
from storage.repositories import Storage
from supervision.actor import ChildUnavailable
from supervision.supervisor import AskTimeout
from telemetry.logs import JsonFormatter, get_logger

__all__ = ["CandleClock", "ReplayLog", "ReplayMarks", "TradeSettledGate", "file_symbols", "run_replay",
           "trade_charges_row"]

log = get_logger("mybot.replay")

# Entry states after which the trader has acted on an entry signal (it is open, or it will never be).
FINISHED = TERMINAL_TRADE_STATES
ENTRY_SETTLED = frozenset({"POSITION_OPEN", *FINISHED})
GATE_MAX_WAIT_SECONDS = 10.0  # a signal the trader never settles: carry on, and say so in the summary
KIND_ORDER = {"EXIT_SIGNAL": 0, "ENTRY_SIGNAL": 1, "ENTRY_SKIPPED": 2}
REPLAYABLE = re.compile(r"^(NIFTY|BANKNIFTY|FINNIFTY|SEC_\d+)$")  # what feed.symbols accepts
OPTION_CONTRACT = re.compile(r"^SEC_\d+$")  # an F&O contract: charges apply
_SYMBOL_COLUMN = re.compile(rb"^[^,\n]*,([^,\n]*),", re.MULTILINE)


class CandleClock(VirtualClock):
    """The replay's clock: the close of the candle being decided. `advance` (the tick source) is ignored."""

    def advance(self, ts: float) -> None:
        """The tick source reads ahead of the decisions: its time is not the actors' time."""

    def advance_to(self, ts: float) -> None:
        VirtualClock.advance(self, ts)


class ReplayMarks:
    """Quotes for the paper broker: an option contract's price in the recorded chains at the decision's time
    (when chains were given and list it), else the close of the symbol's candle being decided."""

    def __init__(self, chains: RecordedChains | None = None) -> None:
        self._closes: dict[str, float] = {}
        self._chains = chains

    def update(self, candle: Candle) -> None:
        self._closes[candle.symbol] = candle.close

    def quote(self, symbol: str) -> float | None:
        if self._chains is not None:
            price = self._chains.quote(symbol)
            if price is not None:
                return price
        return self._closes.get(symbol)


class TradeSettledGate:
    """Opens once the trader is ready (its start-up reconciliation passed) and has settled every signal
    passed through it: an entry is open or refused, an exit closed (read from the trades table).

    A trade that ended is settled only once its actor is done with it (`live` says it left the book): the
    trades row turns CLOSED when the journal step commits, and the risk guard counts the closed trade's
    P&L (a daily-loss halt) a moment later, in the same actor. The next candle must see the halt."""

    def __init__(self, storage: Callable[[], Storage], ready: Callable[[], bool],
                 poke: Callable[[], object] = lambda: None, max_wait: float = GATE_MAX_WAIT_SECONDS,
                 live: Callable[[str], bool] = lambda pos_id: False) -> None:
        self.storage = storage  # the runtime's, once it started
        self.ready = ready
        self.poke = poke  # advance the paper broker now rather than on its next timer tick
        self.live = live  # is the trade's actor still working on it (in the trade book)
        self.max_wait = max_wait
        self.pending: dict[str, bool] = {}  # pos_id -> is an entry
        self.since = 0.0
        self.timeouts = 0
        self.finished: list[str] = []  # entries settled without a position, for the strategy's book
        self.lock = threading.Lock()

    def passed(self, signals: Sequence[Signal]) -> None:
        with self.lock:
            for signal in signals:
                self.pending[signal.pos_id] = isinstance(signal, EntrySignalRaised)
            self.since = time.monotonic()

    def open(self) -> bool:
        if not self.ready():
            return False
        with self.lock:
            if not self.pending:
                return True
            self.poke()
            for pos_id, entry in list(self.pending.items()):
                state = self._state(pos_id)
                if state in (ENTRY_SETTLED if entry else FINISHED) and not (state in FINISHED and self.live(pos_id)):
                    del self.pending[pos_id]
                    if entry and state != "POSITION_OPEN":
                        self.finished.append(pos_id)
            if not self.pending:
                return True
            if time.monotonic() - self.since > self.max_wait:
                self.timeouts += 1
                log.event("REPLAY_GATE_TIMEOUT", f"the trader did not settle {sorted(self.pending)} in "
                          f"{self.max_wait:g} s; carrying on (this replay may not repeat exactly)", level=30,
                          pos_ids=sorted(self.pending))
                self.pending.clear()
                return True
            return False

    def take_finished(self) -> list[str]:
        with self.lock:
            finished, self.finished = self.finished, []
        return finished

    def _state(self, pos_id: str) -> str | None:
        try:
            record = self.storage().trades.get_trade(pos_id)
        except StorageError:
            return None
        return None if record is None else record.state


def file_symbols(path: Path) -> dict[str, int]:
    """Rows per symbol in a tick file, in order of first appearance (the symbol column, read at C speed by
    one regex over the mapped file; the header line is skipped). Bad rows are counted with their symbol."""
    if path.stat().st_size == 0:
        return {}
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        start = data.find(b"\n") + 1
        if start <= 0:
            return {}
        counts = Counter(_SYMBOL_COLUMN.findall(data, start))
    return {raw.decode("utf-8", "replace").strip(): n for raw, n in counts.items()}


def _choose_symbols(in_file: dict[str, int], wanted: Sequence[str] | None) -> tuple[tuple[str, ...], list[str]]:
    """(symbols to replay, requested symbols the file lacks). Unknown names in `wanted` are bad input."""
    if wanted is not None:
        bad = [w for w in wanted if not REPLAYABLE.match(w)]
        if bad:
            raise ValueError(f"--symbols: {', '.join(bad)} not NIFTY, BANKNIFTY, FINNIFTY or SEC_<id>")
        chosen = tuple(dict.fromkeys(w for w in wanted if w in in_file))
        return chosen, [w for w in dict.fromkeys(wanted) if w not in in_file]
    return tuple(s for s in in_file if REPLAYABLE.match(s)), []


def _poll_paper(broker: Any) -> None:
    poll = getattr(broker, "poll", None)
    if poll is not None:
        poll()


def _first_tick_time(path: Path) -> float:
    for tick in read_ticks(path):
        return tick.ts
    raise ReplayFileUnreadable(f"{path} holds no valid tick")


def _replay_settings(settings: Settings, ticks: Path, db: Path, symbols: tuple[str, ...]) -> Settings:
    return settings.replace(
        feed={"source": "replay", "replay_path": str(ticks), "replay_speed": 0.0, "record_path": "",
              "symbols": list(symbols)},
        storage={"url": f"sqlite:///{db}", "redis_url": ""},
        # Fills at the mark with no latency; the gate polls the paper broker while it waits.
        broker={"kind": "paper", "paper_latency_ms": 0.0, "paper_partial_fills": False},
        option_chain={"underlyings": ()},  # no chain source replays: nothing may call a broker's API
        market_data={"provider": "local"},
        strategy={"entry_max_candle_age_seconds": 0.0},  # candle time is the clock: no candle is old
        # Two replays of one file must decide alike: the loss limits count realized P&L only and a breach
        # halts without flattening (a mark taken when a timer fires, and the tick a flatten meets each
        # position at, depend on thread timing).
        risk={"mark_to_market": False, "flatten_on_daily_loss": False},
        # A replay's kill switches and stale feeds are history, not news: nobody is alerted.
        alerts={"webhook_url": "", "telegram_chat_id": "", "telegram_token": ""},
    )


def _fresh_database(db: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.remove(f"{db}{suffix}")
        except FileNotFoundError:
            pass


class ReplayLog:
    """`replay.log` for the time of a replay: JSON lines at `level` stamped with the virtual clock (see the
    module docstring); the handlers already configured keep the level they had."""

    def __init__(self, path: Path, clock: VirtualClock, level: int = logging.INFO) -> None:
        self.handler = logging.FileHandler(path, mode="w", encoding="utf-8")
        self.handler.setFormatter(JsonFormatter(time_source=clock.now))
        self.handler.setLevel(level)
        root = logging.getLogger()
        self.root_level = root.level
        self.quieted = [h for h in root.handlers if h.level == logging.NOTSET]
        for handler in self.quieted:
            handler.setLevel(self.root_level)
        root.setLevel(min(self.root_level, level))
        root.addHandler(self.handler)

    def close(self) -> None:
        root = logging.getLogger()
        root.removeHandler(self.handler)
        self.handler.close()
        root.setLevel(self.root_level)
        for handler in self.quieted:
            handler.setLevel(logging.NOTSET)


def run_replay(settings: Settings, ticks_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
               candles_only: bool = False, timeout: float = 3600.0, symbols: Sequence[str] | None = None,
               chains_path: str | os.PathLike[str] | None = None, write_log: bool = True) -> dict[str, Any]:
    """Replay `ticks_path` through the actors; write signals.jsonl, trades.jsonl, summary.json,
    timing.json and (write_log) replay.log; return the summary with the timing.

    symbols: replay only these (default: every replayable symbol in the file). chains_path: the recorded
    option chains (default: the file's sibling FILE.chains.jsonl when it exists).
    candles_only: the MDS actors alone (ticks -> candles -> store and bus), the benchmark's baseline.
    Raises ReplayFileUnreadable for a missing/empty file (or chains file), ValueError for symbols that are
    not symbols, TimeoutError if the pipeline does not drain.
    """
    from actors.market_data.assembly import MarketDataOptions
    from actors.signals.strategy import StrategyOptions

    ticks = Path(ticks_path)
    out = Path(out_dir)
    clock = CandleClock(minute_start(_first_tick_time(ticks)))
    in_file = file_symbols(ticks)
    replayed, missing = _choose_symbols(in_file, symbols)
    if not replayed:
        raise ValueError(f"{ticks}: none of the symbols {'asked for' if symbols is not None else 'in it'} can be "
                         f"replayed (found: {', '.join(in_file) or 'none'})")
    chains = _recorded_chains(ticks, chains_path, clock)
    out.mkdir(parents=True, exist_ok=True)
    db = out / "replay.db"
    _fresh_database(db)
    replay_settings = _replay_settings(settings, ticks, db, replayed)
    marks = ReplayMarks(chains)
    records: list[dict[str, Any]] = []
    records_lock = threading.Lock()

    def on_signal(record: dict[str, Any]) -> None:
        with records_lock:
            records.append(record)

    def on_candle(candle: Candle) -> None:
        clock.advance_to(candle.ts + candle.timeframe)
        marks.update(candle)

    trading = not candles_only

    def trader() -> Any:
        assert runtime.trading is not None
        return runtime.trading

    gate = TradeSettledGate(lambda: runtime.storage, lambda: trader().ready.is_set(),
                            lambda: _poll_paper(trader().broker),
                            live=lambda pos_id: pos_id in trader().book) if trading else None
    strategy = StrategyOptions(signal_listeners=(on_signal,), candle_hooks=(on_candle,), sync_positions=False,
                               merge_symbols=replayed, gate=gate)
    # The paper broker's quotes are the marks (each symbol's candle being decided, or a contract's recorded
    # chain price then), not the feed's last tick; the strategy reads the recorded chains at candle time.
    wiring = Wiring(subtrees=frozenset({"market_data"} if candles_only else {"market_data", "trading", "signals"}),
                    market_data=MarketDataOptions(), strategy=strategy, quotes=marks.quote, chains=chains)
    runtime = Runtime(replay_settings, "all", clock=clock, wiring=wiring, serve_http=False)
    replay_log = ReplayLog(out / "replay.log", clock) if write_log else None
    started = time.monotonic()
    try:
        runtime.start()
        try:
            assert runtime.market_data is not None
            _drain(runtime, runtime.market_data.feed_state, runtime.signals, deadline=started + timeout)
            elapsed = time.monotonic() - started
            rates = rate_table(replay_settings.charges)
            trades = [] if candles_only else _trade_rows(runtime.storage, records, marks, rates)
        finally:
            runtime.shutdown()
        feed = runtime.market_data.feed_state if runtime.market_data is not None else None
        ticks_replayed = feed.ticks if feed is not None else 0
        summary = _summary(records, trades, trading, candles_only)
        ignored = dict(feed.unknown_by_symbol) if feed is not None else {}
        summary.update({
            "ticks": ticks_replayed, "bad_rows": (feed.source_status.get("bad_rows", 0) if feed else 0),
            "ticks_by_symbol": dict(sorted((feed.ticks_by_symbol if feed else {}).items())),
            "ignored": {"ticks": sum(ignored.values()), "symbols": dict(sorted(ignored.items())),
                        "missing": missing},
            "chains": None if chains is None else {"file": chains.path.name, "snapshots": chains.snapshots,
                                                   "underlyings": list(chains.underlyings),
                                                   "bad_lines": chains.bad_lines},
            "candles": strategy.stats.get("candles", 0) + strategy.stats.get("history", 0),
            "gate_timeouts": gate.timeouts if gate is not None else 0})
        timing = {"elapsed_seconds": round(elapsed, 3),
                  "ticks_per_second": round(ticks_replayed / elapsed, 1) if elapsed > 0 else None,
                  "out_dir": str(out)}
        _write_jsonl(out / "signals.jsonl", sorted(records, key=_signal_key))
        _write_jsonl(out / "trades.jsonl", trades)
        for name, body in (("summary.json", summary), ("timing.json", timing)):
            (out / name).write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
        log.event("REPLAY_FINISHED", f"replayed {ticks_replayed} ticks in {elapsed:.2f} s", **{
            k: summary[k] for k in ("trades", "entries", "exits", "gross_pnl", "charges", "net_pnl", "ticks")},
            elapsed_seconds=timing["elapsed_seconds"])
        return {**summary, **timing}
    finally:
        if replay_log is not None:
            replay_log.close()


def _recorded_chains(ticks: Path, chains_path: str | os.PathLike[str] | None,
                     clock: CandleClock) -> RecordedChains | None:
    """The chains given, else the tick file's sibling recording if there is one, else None."""
    path = Path(chains_path) if chains_path is not None else chains_path_for(ticks)
    if chains_path is None and not path.is_file():
        return None
    try:
        return RecordedChains(path, clock)
    except OSError as exc:
        raise ReplayFileUnreadable(f"chains file {path}: {exc.strerror or exc}") from None


def _drain(runtime: Runtime, feed: FeedState, signals: SignalsHandles | None, deadline: float) -> None:
    """Wait for the end of the file, then for every stage to have handled what the one before it sent."""
    assert runtime.root is not None
    while not feed.finished_event.wait(0.2):
        if runtime.escalation:
            raise RuntimeError(f"replay aborted: {runtime.escalation}")
        if time.monotonic() > deadline:
            raise TimeoutError("the replay feed did not finish in time")
    from actors.market_data.messages import CloseCandles, PublishValue

    # The feed told every builder to close its last candle before it set `finished_event`; an ask behind
    # that tell returns once it was handled. Then the same through the publisher (the bus is synchronous).
    for symbol in sorted(feed.last_arrival):
        _ask(runtime, f"candles:{symbol}", CloseCandles("replay drained"), deadline)
    _ask(runtime, "publisher", PublishValue("replay:drained", {}), deadline)
    if signals is None:
        return
    from actors.signals.messages import Drain, InputEnded

    signals.strategy.tell(InputEnded())
    try:
        signals.strategy.ask(Drain(), timeout=max(0.1, deadline - time.monotonic()))
    except (ChildUnavailable, AskTimeout) as exc:
        raise TimeoutError(f"the strategy did not drain: {exc}") from exc
    if not signals.options.idle.wait(max(0.0, deadline - time.monotonic())):
        raise TimeoutError("the strategy did not finish deciding in time")


def _ask(runtime: Runtime, actor_id: str, message: Any, deadline: float) -> Any:
    assert runtime.root is not None
    found = runtime.root.find(actor_id)
    if found is None:
        return None
    _, handle = found
    waiting = threading.Event()
    while not handle.alive:  # a dynamic child the feed just asked for may still be starting
        if time.monotonic() > deadline:
            raise TimeoutError(f"{actor_id} did not start")
        waiting.wait(0.005)
    try:
        return handle.ask(message, timeout=max(0.1, deadline - time.monotonic()))
    except (ChildUnavailable, AskTimeout) as exc:
        raise TimeoutError(f"{actor_id} did not drain: {exc}") from exc


def _trade_rows(storage: Storage, records: list[dict[str, Any]], marks: ReplayMarks,
                rates: RateTable) -> list[dict[str, Any]]:
    entry_candle = {r["pos_id"]: r["candle_ts"] for r in records if r["kind"] == "ENTRY_SIGNAL"}
    exit_candle = {r["pos_id"]: r["candle_ts"] for r in records if r["kind"] == "EXIT_SIGNAL"}
    rows = []
    for trade in storage.trades.list_trades():
        row = _trade_row(trade, entry_candle.get(trade.pos_id), exit_candle.get(trade.pos_id), marks)
        journal = [(e.event, e.payload) for e in storage.trades.events(trade.pos_id)]
        row.update(trade_charges_row(trade.symbol, journal, rates))
        rows.append(row)
    return sorted(rows, key=lambda r: (r["entry_candle_ts"] or 0, r["pos_id"]))


def trade_charges_row(traded: str, journal: Sequence[tuple[str, Any]], rates: RateTable) -> dict[str, Any]:
    """A trade's gross P&L (sold - bought, once its fills close it), charges and net, from its journal.
    Charges apply to option contracts (`SEC_<id>`) only; an index-point trade pays none."""
    fills = fills_from_journal(journal)
    bought = sum(f.qty for f in fills if str(f.side) == Side.BUY.value)
    sold = sum(f.qty for f in fills if str(f.side) == Side.SELL.value)
    charges = trade_charges(rates, journal) if OPTION_CONTRACT.match(traded) else Charges()
    flat = bool(fills) and bought == sold
    gross = round(gross_of_fills(fills), 4) if flat else None
    return {"gross_pnl": gross, "charges": round(charges.total, 2), "charges_detail": charges.as_dict(),
            "net_pnl": round(gross - charges.total, 4) if gross is not None else None}


def _trade_row(trade: TradeRecord, entry_ts: int | None, exit_ts: int | None,
               marks: ReplayMarks) -> dict[str, Any]:
    unrealized = None
    if trade.state not in FINISHED and trade.entry_price is not None and trade.filled_qty:
        mark = marks.quote(trade.symbol)  # what is traded (instrument is its description)
        if mark is not None:
            unrealized = round(realized_pnl(Side(trade.side), trade.filled_qty, trade.entry_price, mark), 4)
    return {
        "pos_id": trade.pos_id, "symbol": trade.symbol, "instrument": trade.instrument, "side": trade.side,
        "qty": trade.qty, "filled_qty": trade.filled_qty, "state": trade.state,
        "entry_candle_ts": entry_ts, "entry_candle_time": to_iso_ist(entry_ts) if entry_ts else None,
        "exit_candle_ts": exit_ts, "exit_candle_time": to_iso_ist(exit_ts) if exit_ts else None,
        "entry_price": trade.entry_price, "exit_price": trade.exit_price,
        "entry_time": to_iso_ist(trade.entry_time) if trade.entry_time else None,
        "exit_time": to_iso_ist(trade.exit_time) if trade.exit_time else None,
        "fees": trade.fees, "unrealized_pnl": unrealized,
        "realized_pnl": None if trade.realized_pnl is None else round(trade.realized_pnl, 4),
        "opened_day": trade.opened_day,
    }


def _signal_key(record: dict[str, Any]) -> tuple[Any, ...]:
    return record["candle_ts"], record["symbol"], KIND_ORDER.get(record["kind"], 9), record.get("pos_id", "")


def _summary(records: list[dict[str, Any]], trades: list[dict[str, Any]], trading: bool,
             candles_only: bool) -> dict[str, Any]:
    """Counts, win rate and drawdown on NET P&L (after charges) of the closed trades."""
    closed = [t for t in trades if t["state"] == "CLOSED" and t["net_pnl"] is not None]
    closed.sort(key=lambda t: (t["exit_candle_ts"] or 0, t["exit_time"] or "", t["pos_id"]))
    equity = peak = drawdown = 0.0
    for trade in closed:
        equity += trade["net_pnl"]
        peak = max(peak, equity)
        drawdown = max(drawdown, peak - equity)
    wins = sum(1 for t in closed if t["net_pnl"] > 0)
    gross = sum(t["gross_pnl"] for t in closed)
    charges = sum(t["charges"] for t in closed)
    closed_ids = {t["pos_id"] for t in closed}
    open_charges = sum(t["charges"] for t in trades if t["pos_id"] not in closed_ids)
    return {
        "mode": "candles_only" if candles_only else ("paper" if trading else "signals_only"),
        "entries": sum(1 for r in records if r["kind"] == "ENTRY_SIGNAL"),
        "exits": sum(1 for r in records if r["kind"] == "EXIT_SIGNAL"),
        "skipped": sum(1 for r in records if r["kind"] == "ENTRY_SKIPPED"),
        "trades": len(closed),
        "open_positions": sum(1 for t in trades if t["state"] not in FINISHED),
        "refused": sum(1 for t in trades if t["state"] in ("REJECTED", "CANCELLED", "DENIED")),
        "wins": wins, "losses": len(closed) - wins,
        "win_rate": round(wins / len(closed), 4) if closed else None,
        "gross_pnl": round(gross, 2), "charges": round(charges, 2), "net_pnl": round(equity, 2),
        "charges_open_positions": round(open_charges, 2),
        "pnl": round(equity, 2),  # = net_pnl
        "unrealized_pnl": round(float(sum(t["unrealized_pnl"] or 0.0 for t in trades)), 2),
        "max_drawdown": round(drawdown, 2),
    }


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "wb") as fh:
        for row in rows:
            fh.write(orjson.dumps(row, option=orjson.OPT_SORT_KEYS))
            fh.write(b"\n")
