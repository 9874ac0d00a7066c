"""The strategy (role trader / all): closed 1-minute candles in, ENTRY_SIGNAL / EXIT_SIGNAL to the executor out.

    signals (one_for_one)
      ├─ strategy      StrategyActor: ScoreEngine + SignalPolicy (core), thin
      └─ mds-client    only with market_data.provider = mds in role trader (actors.signals.mds_client)

Where candles come from (each symbol's CANDLE_CLOSED stream, in order; revisions are ignored):
- role all, or trader with provider local: the bus, `candles:<symbol>` (in role all the in-process bus,
  delivered by the MDS publisher). The subscription is made at assembly and the actor's handle is
  registered before the tree starts, so candles published while the actor is still starting are buffered,
  not lost. The first live candle of a symbol pulls its warm-up history from storage (the candles stored
  before it), so history and live never overlap, whatever the start-up timing.
- provider mds: the MDS client actor (HTTP after each minute, Redis push when configured); its first
  fetch is the warm-up history.
History candles are scored (the engine needs ~35 candles of every timeframe) but never traded on.

The decision for a candle is made at its close (`at = ts + 60`), in candle time, so a replay of any day
decides the same way: no entry outside risk.session_start-session_end (or at/after risk.square_off_time),
none while the feed is stale (FEED_STALE on `feed:status`), none beyond risk.max_open_positions, none while
the trader's risk guard refuses every entry (halt, kill switch, reconciliation hold), none on a candle
older than strategy.entry_max_candle_age_seconds by the clock (a catch-up after an outage). Exits are
raised whatever the session or feed state; positions still held at square-off are exited on the first
candle at/after it. Sizing is the policy's (entry-score tiers), capped so an option's premium x qty stays
within risk.capital.

Open positions: the strategy's own book, from the signals it raised; in live runs it is also reconciled
with the trader's live trades (at most once a second: trades the executor closed, denied or opened by
other means), so a restarted strategy knows what is open. Replays keep the signal-only book
(`sync_positions=False`), corrected only at the decision gate (entries the trader refused), and decide the
candles of all symbols in one (ts, symbol) order (`merge_symbols`): see actors/replay.py.

Every signal is one JSON log line (ENTRY_SIGNAL, EXIT_SIGNAL, or ENTRY_SKIPPED with its reason when a
qualifying score could not be acted on) carrying the score and its components.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from actors.clock import Clock
from actors.market_data.publisher import candle_from_message
from config.settings import Settings
from core.market import Candle, hhmm_seconds, ist_seconds_of_day, to_iso_ist
from core.orders import Side
from core.scoring import Score, ScoreEngine
from core.signals import EntrySignalRaised, ExitSignalRaised, Signal, SignalPolicy, pick_atm_option
from daemon.runtime import HealthCheck, Part, RuntimeContext
from storage.bus import Bus, Subscription
from storage.errors import StorageError
from storage.records import TERMINAL_TRADE_STATES
from storage.repositories import Storage
from supervision.actor import SupervisedActor
from supervision.scheduler import Scheduler
from supervision.supervisor import ChildHandle, ChildLink, ChildSpec, supervisor_spec
from telemetry.logs import get_logger

__all__ = [
    "CandlesClosed",
    "DecisionGate",
    "Drain",
    "FeedStatusChanged",
    "InputEnded",
    "PositionClosed",
    "RecordingExecutor",
    "SignalTarget",
    "StrategyActor",
    "StrategyParts",
    "assemble_strategy",
    "signal_record",
]

MINUTE = 60
HISTORY_LOOKBACK_SECONDS = 10 * 86_400  # how far back the warm-up looks for `history_minutes` stored candles
GATE_POLL_SECONDS = 0.001
POSITION_SYNC_GRACE_SECONDS = 30.0  # an entry just raised may not be in the trader's book yet
SQUARE_OFF = "SQUARE_OFF"
LIVE_STATES_EXCLUDED = TERMINAL_TRADE_STATES | {"DENIED"}

log = get_logger("mybot.strategy")


# -- messages ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CandlesClosed:
    """Closed 1-minute candles of one symbol, oldest first. history: warm-up only (scored, not traded)."""

    symbol: str
    candles: tuple[Candle, ...]
    history: bool = False


@dataclass(frozen=True)
class FeedStatusChanged:
    event: str  # FEED_STALE | FEED_RESUMED | FEED_FINISHED
    symbol: str  # "*" = every symbol
    at: float


@dataclass(frozen=True)
class PositionClosed:
    """The executor's outcome for a position the strategy opened (closed, denied, rejected)."""

    pos_id: str
    reason: str = ""


@dataclass(frozen=True)
class Drain:
    """Ask: answered once every message told before it was handled; returns the strategy's counters."""


@dataclass(frozen=True)
class InputEnded:
    """Replays: every candle has been delivered (the merge may release what it still holds)."""


@dataclass(frozen=True)
class ResumeDecisions:
    """Timer: the decision gate may have opened (replays hold candles until the trader settled)."""


# -- collaborators --------------------------------------------------------------------------------------------
class SignalTarget(Protocol):
    """Where signals go: the executor's ChildHandle (it takes EntrySignalRaised / ExitSignalRaised)."""

    def tell(self, message: Any) -> bool: ...


class DecisionGate(Protocol):
    """Replays only: hold the next candle's decision until the trader has settled the signals just sent."""

    def passed(self, signals: Sequence[Signal]) -> None: ...

    def open(self) -> bool: ...

    def take_finished(self) -> list[str]:
        """pos_ids of entries the trader settled without a position (denied, rejected): no longer held."""


class MarketView(Protocol):
    def option_chain(self, symbol: str) -> Mapping[str, Any] | None: ...


class RecordingExecutor:
    """Stands in for the executor when none is assembled (tests, a strategy-only run): records signals."""

    def __init__(self) -> None:
        self.signals: list[Signal] = []
        self._cond = threading.Condition()

    def tell(self, message: Any) -> bool:
        with self._cond:
            self.signals.append(message)
            self._cond.notify_all()
        return True

    def wait_for(self, predicate: Callable[[list[Signal]], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.signals), timeout)


@dataclass
class StrategyParts:
    """What the runtime, the replay runner and tests share with the strategy assembly (ctx.extras["strategy"])."""

    executor: SignalTarget | None = None  # default: the trader's executor, else a RecordingExecutor
    signal_listeners: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)
    candle_hooks: list[Callable[[Candle], None]] = field(default_factory=list)  # before each live decision
    gate: DecisionGate | None = None
    # Replays: decide the candles of these symbols in one global (ts, symbol) order, whatever order their
    # builders deliver them in (the book, the trader's risk state and the clock are shared across symbols).
    merge_symbols: tuple[str, ...] = ()
    sync_positions: bool = True
    recorder: RecordingExecutor | None = None
    handle: ChildHandle | None = None
    idle: threading.Event = field(default_factory=threading.Event)  # no candle held back by the gate
    stats: dict[str, Any] = field(default_factory=dict)
    market: Any = None  # the MarketView used for option chains
    mds_client: Any = None  # (MdsHttpClient, MdsMarketView, MdsClientState) in client mode


def signal_record(kind: str, symbol: str, candle: Candle, score: Score | None, signal: Signal | None = None,
                  reason: str = "") -> dict[str, Any]:
    """One signal as plain, deterministic data (candle time, never the wall clock): log lines, signals.jsonl."""
    record: dict[str, Any] = {"kind": kind, "symbol": symbol, "candle_ts": candle.ts,
                              "candle_time": to_iso_ist(candle.ts), "close": candle.close,
                              "at": candle.ts + candle.timeframe}
    if isinstance(signal, EntrySignalRaised):
        record.update(pos_id=signal.pos_id, instrument=signal.instrument, side=signal.side.value, qty=signal.qty,
                      lots=signal.lots, price=signal.price, direction=signal.direction, strike=signal.strike,
                      option_type=signal.option_type, note=signal.note, at=signal.at)
    elif isinstance(signal, ExitSignalRaised):
        record.update(pos_id=signal.pos_id, reason=signal.reason, exit_score=round(signal.exit_score, 4),
                      at=signal.at)
    if reason:
        record["reason"] = reason
    if score is not None:
        record["score"] = score.as_json()
    return record


# -- the actor ------------------------------------------------------------------------------------------------
class StrategyActor(SupervisedActor):
    def __init__(self, link: ChildLink | None, settings: Settings, executor: SignalTarget, market: MarketView | None,
                 clock: Clock, scheduler: Scheduler, parts: StrategyParts,
                 history: Callable[[str, int], list[Candle]] | None = None,
                 positions: Callable[[], dict[str, tuple[str, int]] | None] | None = None,
                 risk: Callable[[float], str | None] | None = None) -> None:
        super().__init__(link)
        self.settings = settings
        self.executor = executor
        self.market = market
        self.clock = clock
        self.scheduler = scheduler
        self.parts = parts
        self.history = history  # (symbol, before_ts) -> stored candles before it (role all / local)
        # Live trades of the trader, pos_id -> (underlying, direction); None: the signal-only book (replays).
        self.positions = positions if parts.sync_positions else None
        self.risk = risk  # at -> why the trader's risk guard would refuse any entry now (None: it would not)
        risk = settings.risk
        self.session = (hhmm_seconds(risk.session_start), hhmm_seconds(risk.session_end))
        self.square_off = hhmm_seconds(risk.square_off_time)
        self.max_open = risk.max_open_positions
        self.capital = risk.capital
        self.max_age = settings.strategy.entry_max_candle_age_seconds
        self.entry_min = settings.strategy.mds_entry_score_min
        self.engine = ScoreEngine(settings.strategy)
        self.policy = SignalPolicy(settings.strategy)
        self.last_ts: dict[str, int] = {}
        self.warmed: set[str] = set()
        self.book: dict[str, tuple[str, int]] = {}  # symbol -> (pos_id, direction)
        self.raised: dict[str, float] = {}  # pos_id -> monotonic time its entry was raised (sync grace)
        self.exited: set[str] = set()  # pos_ids we asked to exit (not re-added by a sync while closing)
        self.stale: set[str] = set()
        self.held_back: deque[Candle] = deque()
        self.last_score: dict[str, Score] = {}
        self.last_candle: dict[str, Candle] = {}
        self.merge = {sym: deque[Candle]() for sym in parts.merge_symbols} if parts.merge_symbols else None
        self.merge_last: dict[str, int] = {}
        self.input_ended = False
        self.paused = False
        self.resume_scheduled = False
        self.last_sync = 0.0
        self.stats = parts.stats
        for key in ("candles", "history", "duplicates", "scores", "entries", "exits", "skipped"):
            self.stats.setdefault(key, 0)

    def started(self) -> None:
        self.parts.idle.set()
        self._sync_positions(force=True)
        self.log.event("STRATEGY_STARTED", f"strategy on {len(self.settings.feed.symbols)} symbols",
                       entry_score_min=self.entry_min, exit_score_min=self.settings.strategy.mds_exit_score_min,
                       timeframes=list(self.engine.timeframes), open_positions=len(self.book))

    def receive(self, message: Any) -> Any:
        if isinstance(message, CandlesClosed):
            if message.history:
                self._warm(message.symbol, message.candles)
            elif self.merge is not None:
                self._merge(message.symbol, message.candles)
            else:
                for candle in message.candles:
                    self._arrived(candle)
        elif isinstance(message, InputEnded):
            self.input_ended = True
            self._release_merged()
        elif isinstance(message, FeedStatusChanged):
            self._feed_status(message)
        elif isinstance(message, ResumeDecisions):
            self._resume()
        elif isinstance(message, PositionClosed):
            self._forget(message.pos_id, message.reason or "closed by the trader")
        elif isinstance(message, Drain):
            return self.status()
        else:
            return super().receive(message)
        return None

    def status(self) -> dict[str, Any]:
        return {**self.stats, "open_positions": {s: p for s, (p, _) in sorted(self.book.items())},
                "stale": sorted(self.stale), "held_back": len(self.held_back), "paused": self.paused,
                "warm": sorted(s for s in self.last_ts if self.engine.warm(s))}

    # -- candles ----------------------------------------------------------------------------------------------
    def _warm(self, symbol: str, candles: Sequence[Candle]) -> None:
        fed = 0
        for candle in candles:
            if self._fresh(candle):
                self.engine.on_candle(candle)
                fed += 1
        self.warmed.add(symbol)
        self.stats["history"] += fed
        self.log.event("STRATEGY_WARMED", f"{symbol}: {fed} stored candles scored before the first live one",
                       symbol=symbol, candles=fed, warm=self.engine.warm(symbol))

    def _fresh(self, candle: Candle) -> bool:
        """In order and not seen before (a duplicate or an older minute is dropped: indicators can't go back)."""
        last = self.last_ts.get(candle.symbol)
        if last is not None and candle.ts <= last:
            self.stats["duplicates"] += 1
            return False
        self.last_ts[candle.symbol] = candle.ts
        return True

    def _merge(self, symbol: str, candles: Sequence[Candle]) -> None:
        assert self.merge is not None
        queue = self.merge.setdefault(symbol, deque())
        for candle in candles:
            if candle.ts > self.merge_last.get(symbol, -1):
                queue.append(candle)
                self.merge_last[symbol] = candle.ts
        self._release_merged()

    def _release_merged(self) -> None:
        """Hand on the oldest held candle while no symbol can still deliver an older one (a symbol's next
        candle comes after its last one; one that delivered none yet may deliver anything)."""
        assert self.merge is not None
        while True:
            heads = [(q[0].ts, sym) for sym, q in self.merge.items() if q]
            if not heads:
                return
            ts, symbol = min(heads)
            if not self.input_ended:
                for other, queue in self.merge.items():
                    if queue or other == symbol:
                        continue
                    last = self.merge_last.get(other)
                    if last is None or (last + MINUTE, other) < (ts, symbol):
                        return
            self._arrived(self.merge[symbol].popleft())

    def _arrived(self, candle: Candle) -> None:
        if self.paused or self.held_back or not self._gate_open():
            self.held_back.append(candle)
            if not self.paused:
                self._pause()
            return
        self._decide(candle)

    def _gate_open(self) -> bool:
        gate = self.parts.gate
        if gate is None:
            return True
        if not gate.open():
            return False
        for pos_id in gate.take_finished():
            self._forget(pos_id, "the trader did not open it")
        return True

    def _decide(self, candle: Candle) -> None:
        symbol = candle.symbol
        if symbol not in self.warmed:
            self._warm(symbol, self.history(symbol, candle.ts) if self.history is not None else [])
        if not self._fresh(candle):
            return
        self.stats["candles"] += 1
        for hook in self.parts.candle_hooks:
            hook(candle)
        self._sync_positions()
        position = self.book.get(symbol)
        score = self.engine.on_candle(candle, position[1] if position else 0)
        if score is None:
            return
        self.stats["scores"] += 1
        self.last_score[symbol] = score
        self.last_candle[symbol] = candle
        if self.book and ist_seconds_of_day(candle.ts) + candle.timeframe >= self.square_off:
            signals = self._square_off(candle)
        else:
            signals = self._signals(candle, score, position)
            for signal in signals:
                self._send(candle, score, signal)
        if signals and self.parts.gate is not None:
            self.parts.gate.passed(signals)
            if not self._gate_open():
                self._pause()

    def _square_off(self, candle: Candle) -> list[Signal]:
        """Positions still held when a candle closes at/after risk.square_off_time: exit them all, now, in
        candle time (the executor's own sweep does the same on its clock; here it is repeatable)."""
        at = float(candle.ts + candle.timeframe)
        signals: list[Signal] = []
        for symbol, (pos_id, held) in sorted(self.book.items()):
            score = self.last_score.get(symbol, self.last_score[candle.symbol])
            signal = ExitSignalRaised(pos_id, SQUARE_OFF, score, at, symbol, score.exit_for(held))
            self._send(self.last_candle.get(symbol, candle), score, signal)  # described by its own last candle
            signals.append(signal)
        return signals

    def _signals(self, candle: Candle, score: Score, position: tuple[str, int] | None) -> list[Signal]:
        symbol = candle.symbol
        feed_stale = symbol in self.stale or "*" in self.stale
        if position is not None:
            return self.policy.decide(symbol, score, candle, self.book, True, feed_stale, None, 0)
        at = candle.ts + candle.timeframe
        market_open = self._in_session(candle)
        reason = self.policy.entry_blocker(symbol, score, self.book, market_open, feed_stale)
        if reason is None:
            reason = self._extra_blocker(candle, at)
        if reason is not None:
            if score.direction != 0 and score.entry_score >= self.entry_min:
                self._skipped(candle, score, reason)  # a qualifying score we could not act on: say why
            return []
        chain = self.market.option_chain(symbol) if self.market is not None else None
        max_qty = None
        pick = pick_atm_option(chain, score.direction, candle.close)
        if pick is not None and self.capital > 0:
            max_qty = int(self.capital // pick.premium)  # the premium paid must fit in the capital
        signals = self.policy.decide(symbol, score, candle, self.book, True, False, chain, 0, max_qty)
        if not signals:
            self._skipped(candle, score, f"size: less than one lot within capital {self.capital:g}")
        return signals

    def _in_session(self, candle: Candle) -> bool:
        start_of_day = ist_seconds_of_day(candle.ts)
        return self.session[0] <= start_of_day and start_of_day + candle.timeframe <= self.session[1]

    def _extra_blocker(self, candle: Candle, at: float) -> str | None:
        if ist_seconds_of_day(candle.ts) + candle.timeframe >= self.square_off:
            return f"at or after square-off {self.settings.risk.square_off_time} IST"
        if len(self.book) >= self.max_open:
            return f"{len(self.book)} open positions (limit {self.max_open})"
        refusal = self.risk(at) if self.risk is not None else None
        if refusal:
            return refusal
        if self.max_age > 0:
            age = self.clock.now() - at
            if age > self.max_age:
                return f"candle closed {age:.0f} s ago (limit {self.max_age:g} s)"
        return None

    def _send(self, candle: Candle, score: Score, signal: Signal) -> None:
        if isinstance(signal, EntrySignalRaised):
            kind = "ENTRY_SIGNAL"
            self.book[signal.symbol] = (signal.pos_id, signal.direction)
            self.raised[signal.pos_id] = time.monotonic()
            self.stats["entries"] += 1
            message = (f"{signal.side.value} {signal.qty} {signal.instrument} ({signal.lots} lot(s)): "
                       f"{signal.symbol} entry_score {score.entry_score:.3f}, direction {signal.direction:+d}")
        else:
            kind = "EXIT_SIGNAL"
            self.book.pop(signal.symbol or candle.symbol, None)
            self.exited.add(signal.pos_id)
            self.stats["exits"] += 1
            message = f"exit {signal.pos_id}: {signal.reason} {signal.exit_score:.3f}"
        record = signal_record(kind, candle.symbol, candle, score, signal)
        self.log.event(kind, message, **{k: v for k, v in record.items() if k != "kind"})
        for listener in self.parts.signal_listeners:
            listener(record)
        if not self.executor.tell(signal):
            self.log.event("SIGNAL_UNDELIVERED", f"the executor is stopped: {kind} {signal.pos_id} dropped",
                           level=40, pos_id=signal.pos_id)

    def _skipped(self, candle: Candle, score: Score, reason: str) -> None:
        self.stats["skipped"] += 1
        record = signal_record("ENTRY_SKIPPED", candle.symbol, candle, score, reason=reason)
        self.log.event("ENTRY_SKIPPED", f"{candle.symbol} entry_score {score.entry_score:.3f}: {reason}",
                       **{k: v for k, v in record.items() if k != "kind"})
        for listener in self.parts.signal_listeners:
            listener(record)

    # -- the replay gate ---------------------------------------------------------------------------------------
    def _pause(self) -> None:
        if not self.paused:
            self.paused = True
            self.parts.idle.clear()
        if not self.resume_scheduled:
            self.resume_scheduled = True
            self._resume_later()

    def _resume_later(self) -> None:
        ref = self.actor_ref

        def tell() -> None:
            try:
                ref.tell(ResumeDecisions())
            except Exception:  # stopped meanwhile
                pass

        self.scheduler.call_later(GATE_POLL_SECONDS, tell)

    def _resume(self) -> None:
        self.resume_scheduled = False
        if not self.paused:
            return
        while self.held_back:
            if not self._gate_open():
                self._pause()
                return
            self._decide(self.held_back.popleft())
            if self.paused and self.resume_scheduled:
                return  # that candle's signals closed the gate again
        if not self._gate_open():  # the last candle's signals: idle only once the trader settled them
            self._pause()
            return
        self.paused = False
        self.parts.idle.set()

    # -- feed and positions -----------------------------------------------------------------------------------
    def _feed_status(self, message: FeedStatusChanged) -> None:
        if message.event == "FEED_STALE":
            self.stale.add(message.symbol)
            self.log.event("STRATEGY_FEED_STALE", f"no entries on {message.symbol} until it ticks again",
                           level=30, symbol=message.symbol)
        elif message.event == "FEED_RESUMED":
            if message.symbol in self.stale:
                self.log.event("STRATEGY_FEED_RESUMED", f"entries on {message.symbol} allowed again",
                               symbol=message.symbol)
            self.stale.discard(message.symbol)

    def _forget(self, pos_id: str, why: str = "closed by the trader") -> None:
        for symbol, (held, _) in list(self.book.items()):
            if held == pos_id:
                del self.book[symbol]
                self.log.event("STRATEGY_POSITION_CLOSED", f"{pos_id}: {why}", pos_id=pos_id, symbol=symbol)

    def _sync_positions(self, force: bool = False) -> None:
        """Live runs: align the book with the trader's live trades (at most once a second)."""
        if self.positions is None:
            return
        now = time.monotonic()
        if not force and now - self.last_sync < 1.0:
            return
        self.last_sync = now
        try:
            live = self.positions()
        except StorageError as exc:
            self.log.event("STRATEGY_SYNC_SKIPPED", f"trades unavailable: {exc}", level=30)
            return
        if live is None:
            return
        held = {pos_id for pos_id, _ in self.book.values()}
        for pos_id, (symbol, direction) in sorted(live.items()):
            if pos_id in held or pos_id in self.exited or symbol in self.book:
                continue
            self.book[symbol] = (pos_id, direction)
            self.log.event("STRATEGY_POSITION_ADOPTED", f"{pos_id} is open: exits will be decided for it",
                           pos_id=pos_id, symbol=symbol, direction=direction)
        for pos_id in held - set(live):
            if now - self.raised.get(pos_id, 0.0) >= POSITION_SYNC_GRACE_SECONDS:
                self._forget(pos_id)  # closed, denied or refused by the trader
        self.exited &= set(live)


def position_of(symbol: str, instrument: str, side: str, symbols: frozenset[str]) -> tuple[str, int]:
    """(underlying, direction) of a trade: "NIFTY 2026-11-27 24500 PE" -> ("NIFTY", -1); an index or
    equity traded itself -> (symbol, +1 for BUY / -1 for SELL)."""
    words = instrument.split()
    if len(words) >= 2 and words[-1].upper() in ("CE", "PE") and words[0] in symbols:
        return words[0], (1 if words[-1].upper() == "CE" else -1)
    return symbol, (1 if side.upper() == Side.BUY.value else -1)


# -- assembly -------------------------------------------------------------------------------------------------
class _BusCandles:
    """`candles:<symbol>` and `feed:status` from the bus to the strategy's handle; retried if the bus is down."""

    def __init__(self, bus: Bus, symbols: Sequence[str], target: ChildHandle, scheduler: Scheduler) -> None:
        self.bus = bus
        self.channels = [*(f"candles:{s}" for s in symbols), "feed:status"]
        self.target = target
        self.scheduler = scheduler
        self.subscription: Subscription | None = None
        self.closed = False
        self.attempt = 0

    def on_message(self, channel: str, data: bytes) -> None:
        if channel == "feed:status":
            body = orjson.loads(data)
            self.target.tell(FeedStatusChanged(str(body.get("event", "")), str(body.get("symbol", "*")),
                                               float(body.get("at") or 0.0)))
            return
        candle, event = candle_from_message(data)
        if event == "CANDLE_CLOSED":
            self.target.tell(CandlesClosed(candle.symbol, (candle,)))

    def start(self) -> None:
        if self.closed:
            return
        try:
            self.subscription = self.bus.subscribe(self.channels, self.on_message)
        except StorageError as exc:
            self.attempt += 1
            delay = min(30.0, 0.5 * 2 ** (self.attempt - 1))
            log.event("STRATEGY_SUBSCRIBE_FAILED", f"bus subscription failed ({exc}); retry in {delay:.1f} s",
                      level=30, attempt=self.attempt)
            self.scheduler.call_later(delay, self.start)

    def close(self) -> None:
        self.closed = True
        if self.subscription is not None:
            self.subscription.close()


class _CacheView:
    """Role all: option chains from the MDS read model in the same process."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache

    def option_chain(self, symbol: str) -> Mapping[str, Any] | None:
        record = self.cache.option_chain(symbol, None)
        return None if record is None else record.payload


class _StorageView:
    """Role trader reading a shared database: the stored chain (nearest expiry from today, IST)."""

    def __init__(self, storage: Storage, clock: Clock) -> None:
        self.storage = storage
        self.clock = clock

    def option_chain(self, symbol: str) -> Mapping[str, Any] | None:
        from core.risk import ist_day

        try:
            record = self.storage.option_chains.latest(symbol, today=ist_day(self.clock.now()))
        except StorageError:
            return None
        return None if record is None else record.payload


def _stored_history(storage: Storage, minutes: int) -> Callable[[str, int], list[Candle]]:
    def load(symbol: str, before: int) -> list[Candle]:
        if minutes <= 0:
            return []
        try:
            candles = storage.candles.between(symbol, before - HISTORY_LOOKBACK_SECONDS, before)
        except StorageError as exc:
            log.event("STRATEGY_WARMUP_SKIPPED", f"{symbol}: stored candles unavailable ({exc})", level=30,
                      symbol=symbol)
            return []
        return candles[-minutes:]

    return load


class _ExecutorLink:
    """The trader's executor handle, looked up when the first signal goes out (either assembly order works);
    without a trader in this process, a RecordingExecutor keeps the signals."""

    def __init__(self, ctx: RuntimeContext, parts: StrategyParts) -> None:
        self.ctx = ctx
        self.parts = parts
        self.target: SignalTarget | None = None

    def resolve(self) -> SignalTarget:
        if self.target is None:
            executor = getattr(self.ctx.extras.get("trader"), "executor", None)
            if executor is None:
                log.event("STRATEGY_RECORDING_ONLY", "no executor in this process: signals are recorded, not "
                          "traded", level=30)
                self.parts.recorder = self.parts.recorder or RecordingExecutor()
                executor = self.parts.recorder
            self.target = executor
        return self.target

    def tell(self, message: Any) -> bool:
        return self.resolve().tell(message)


def _risk_refusal(ctx: RuntimeContext) -> Callable[[float], str | None]:
    """Why the trader's risk guard would refuse every entry at `at` (halts, kill switch, holds), if it would:
    the strategy skips such entries (ENTRY_SKIPPED) instead of sending one a minute to be denied."""
    from core.risk import ist_day

    enabled = ctx.settings.risk.trading_enabled

    def refusal(at: float) -> str | None:
        if not enabled:
            return "trading disabled by configuration (risk.trading_enabled)"
        guard = getattr(ctx.extras.get("trader"), "risk", None)
        if guard is None:
            return None
        state = guard.snapshot()
        if state.kill_switch_engaged:
            return f"kill switch engaged: {state.kill_switch_reason or 'by operator'}"
        if state.reconciliation_hold:
            return f"reconciliation hold: {state.reconciliation_hold_reason or 'broker and book disagree'}"
        if not state.trading_enabled and state.day == ist_day(at):  # a halt lasts until the next session
            return f"trading halted for the session: {state.halt_reason or 'limit breached'}"
        return None

    return refusal


def _trader_positions(ctx: RuntimeContext,
                      symbols: frozenset[str]) -> Callable[[], dict[str, tuple[str, int]] | None]:
    """pos_id -> (underlying, direction) of the live trades in the trader's book (this process)."""

    def live() -> dict[str, tuple[str, int]] | None:
        book = getattr(ctx.extras.get("trader"), "book", None)
        if book is None:
            return None  # no trader here (a strategy-only run): the signal-only book
        return {c.pos_id: position_of(c.symbol, c.instrument, c.side.value, symbols) for c in book.contexts()
                if c.state.value not in LIVE_STATES_EXCLUDED}

    return live


def assemble_strategy(ctx: RuntimeContext, parts: StrategyParts | None = None) -> Part:
    s = ctx.settings
    parts = parts or ctx.extras.setdefault("strategy", StrategyParts())
    symbols = tuple(s.feed.symbols)
    executor: SignalTarget = parts.executor if parts.executor is not None else _ExecutorLink(ctx, parts)
    client_mode = ctx.role == "trader" and s.market_data.provider == "mds"
    history: Callable[[str, int], list[Candle]] | None = None
    health: dict[str, Callable[[], HealthCheck]] = {}
    status: dict[str, Callable[[], Any]] = {"strategy": lambda: dict(parts.stats)}
    before_stop: list[Callable[[], None]] = []
    supervisor = ctx.supervisor("signals")

    if client_mode:
        from actors.signals.mds_client import MdsClientActor, MdsClientState, MdsHttpClient, MdsMarketView

        client = MdsHttpClient.from_settings(s.market_data)
        view = MdsMarketView(client, ctx.clock, s.market_data.quote_max_age_seconds)
        state = MdsClientState()
        parts.market = view
        parts.mds_client = (client, view, state)
        ctx.extras["quote"] = view.quote  # the trader's quotes (its QuoteBook looks this up lazily)
        before_stop.append(client.close)
        status["mds_client"] = state.snapshot

        def mds_health() -> HealthCheck:
            ok = state.consecutive_failures == 0
            return HealthCheck(ok, {"base_url": client.base_url, **({} if ok else {"error": state.last_error})})

        health["mds"] = mds_health
    elif ctx.role == "all" and getattr(ctx.extras.get("mds"), "cache", None) is not None:
        parts.market = _CacheView(ctx.extras["mds"].cache)
        history = _stored_history(ctx.storage, s.strategy.history_minutes)
    else:
        parts.market = _StorageView(ctx.storage, ctx.clock)
        history = _stored_history(ctx.storage, s.strategy.history_minutes)
        if not s.storage.redis_url:
            log.event("STRATEGY_NO_MARKET_DATA", f"role {ctx.role} with market_data.provider "
                      f"{s.market_data.provider} and no storage.redis_url: no candles can reach the strategy "
                      "(set MARKET_DATA_PROVIDER=mds, or a shared Redis)", level=30)

    strategy_spec = ChildSpec("strategy", lambda link: StrategyActor.start(
        link, s, executor, parts.market, ctx.clock, ctx.scheduler, parts, history,
        _trader_positions(ctx, frozenset(symbols)), _risk_refusal(ctx)))
    # Its handle works from now on: candles published while the rest of the tree starts are buffered for it.
    handle = supervisor.add(strategy_spec)
    parts.handle = handle

    if client_mode:
        client, view, state = parts.mds_client
        chain_symbols = tuple(sym for sym in symbols if sym in s.option_chain.underlyings)
        supervisor.add(ChildSpec("mds-client", lambda link: MdsClientActor.start(
            link, client, view, symbols, chain_symbols, handle.tell, ctx.clock, ctx.scheduler, state,
            history_minutes=s.strategy.history_minutes, poll_seconds=s.market_data.candle_poll_seconds,
            fetch_delay=s.market_data.candle_fetch_delay_seconds,
            chain_poll_seconds=s.option_chain.poll_seconds, bus=ctx.bus if s.storage.redis_url else None),
            backoff=ctx.backoff()))
    else:
        subscription = _BusCandles(ctx.bus, symbols, handle, ctx.scheduler)
        subscription.start()
        before_stop.append(subscription.close)

    return Part(name="strategy", children=[supervisor_spec(supervisor, **ctx.supervisor_options())],
                health=health, status=status, before_stop=before_stop)
