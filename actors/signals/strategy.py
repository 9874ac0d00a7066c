"""The strategy (role trader / all): closed 1-minute candles in, ENTRY_SIGNAL / EXIT_SIGNAL to the trading desk out.

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
decides the same way. Whether an entry may be raised is the core's decision (`SignalPolicy.entry_blocker`
over an `EntryGate` this actor fills in: the session, square-off, a stale feed, the open positions, the
trader's risk state and limits, the candle's age). Exits are
raised whatever the session or feed state; positions still held at square-off are exited on the first
candle at/after it. Sizing is the policy's: entry-score tier lots x the underlying's base lots
(`strategy.lots_per_underlying`, else `strategy.base_lot`) x the instrument master's lot size of the ATM
contract picked from the chain of the `strategy.expiry` expiry (the MarketView picks it; for a contract the
master does not know, `execution.lot_sizes`), capped so an option's premium x qty stays within
risk.capital. A contract neither knows is not traded (ENTRY_SKIPPED says so): a quantity is never guessed.

Open positions: the strategy's own book, from the signals it raised; in live runs it is also reconciled
with the trader's live trades (at most once a second: trades the executor closed, denied or opened by
other means), so a restarted strategy knows what is open. Replays keep the signal-only book
(`sync_positions=False`), corrected only at the decision gate (entries the trader refused), and decide the
candles of all symbols in one (ts, symbol) order (`merge_symbols`): see daemon/replay.py.

Exits are followed up (core.signals.ExitFollowUp): in live runs an exit asked for a position that the
trader still holds `strategy.exit_reraise_seconds` after the last ask is raised again, on a timer, until
the position is no longer live (or PositionClosed): EXIT_SIGNAL_REPEATED with the attempt and the wait. An
exit lost on its way (the trading side restarting) is recovered so; one whose order is still working or
being retried is ignored by the trade. Replays have no view of the live trades and do not re-raise: their
decision gate already waits for each exit to close.

Every signal is one JSON log line (ENTRY_SIGNAL, EXIT_SIGNAL, or ENTRY_SKIPPED with its reason when a
qualifying score could not be acted on) carrying the score and its components.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from actors.clock import Clock
from actors.instruments import InstrumentBook
from actors.signals.messages import (
    CandlesClosed,
    DecisionGate,
    Drain,
    FeedStatusChanged,
    InputEnded,
    MarketView,
    PositionClosed,
    PositionsView,
    RiskView,
    SignalSink,
)
from config.settings import Settings
from core.calendar import MarketCalendar
from core.market import Candle, to_iso_ist
from core.orders import Leg, correlation_id
from core.risk import RiskLimits, new_risk_state, trading_window
from core.scoring import Score, ScoreEngine
from core.signals import (
    EntryGate,
    EntrySignalRaised,
    ExitFollowUp,
    ExitSignalRaised,
    Signal,
    SignalPolicy,
    pick_atm_option,
)
from supervision.actor import SupervisedActor, tell_quietly
from supervision.scheduler import Scheduler, Timer
from supervision.store import Store
from supervision.supervisor import ChildLink
from telemetry import metrics

__all__ = ["StrategyActor", "StrategyOptions", "decision_id", "signal_record"]

MINUTE = 60
GATE_POLL_SECONDS = 0.001
POSITION_SYNC_GRACE_SECONDS = 30.0  # an entry just raised may not be in the trader's book yet
SQUARE_OFF = "SQUARE_OFF"


@dataclass(frozen=True)
class ResumeDecisions:
    """Timer: the decision gate may have opened (replays hold candles until the trader settled)."""


@dataclass(frozen=True)
class FollowUpExits:
    """Timer: raise again the exits of positions that are still live (ExitFollowUp)."""


@dataclass(frozen=True)
class StrategyOptions:
    """What the replay runner and tests may set besides the settings."""

    signal_listeners: tuple[Callable[[dict[str, Any]], None], ...] = ()
    candle_hooks: tuple[Callable[[Candle], None], ...] = ()  # before each live decision
    gate: DecisionGate | None = None
    # Replays: decide the candles of these symbols in one global (ts, symbol) order, whatever order their
    # builders deliver them in (the book, the trader's risk state and the clock are shared across symbols).
    merge_symbols: tuple[str, ...] = ()
    sync_positions: bool = True
    idle: threading.Event = field(default_factory=threading.Event)  # no candle held back by the gate
    stats: dict[str, Any] = field(default_factory=dict)  # counters, read by status

def decision_id(candle: Candle) -> str:
    """The strategy's decision on one closed candle (every signal or skip it made says which): the symbol,
    the timeframe and the candle's start, so the same candle gives the same id in a replay."""
    return f"{candle.symbol}/{candle.timeframe}/{int(candle.ts)}"


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
    def __init__(self, link: ChildLink | None, settings: Settings, sink: SignalSink, market: MarketView | None,
                 clock: Clock, scheduler: Scheduler, options: StrategyOptions,
                 history: Callable[[str, int], list[Candle]] | None = None,
                 positions: PositionsView | None = None, risk_view: RiskView | None = None,
                 instruments: InstrumentBook | None = None, calendar: MarketCalendar | None = None,
                 exits: Store[ExitFollowUp] | None = None) -> None:
        super().__init__(link)
        self.instruments = instruments  # lot sizes of what is traded (None: none known, options not traded)
        # The exchange's hours (core.risk.trading_window narrows them by the risk settings); candles of
        # minutes the exchange does not trade are not decided on at all: the strategy idles.
        self.calendar = calendar if calendar is not None else MarketCalendar.always_open()
        self.settings = settings
        self.sink = sink
        self.market = market
        self.clock = clock
        self.scheduler = scheduler
        self.parts = options
        self.history = history  # (symbol, before_ts) -> stored candles before it (role all / local)
        # Live trades of the trader, pos_id -> (underlying, direction); None: the signal-only book (replays).
        self.positions = positions if options.sync_positions else None
        self.risk_view = risk_view  # the trader's risk guard (None: no trader in this process)
        self.limits = RiskLimits.from_settings(settings.risk)
        risk = settings.risk
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
        # Exits asked and not yet seen to end (not re-added to the book by a sync while closing; asked again).
        # Crash-only: the assembly's store outlives this instance, so a restarted strategy keeps asking.
        self.exits = exits if exits is not None else Store(
            "strategy.exits", ExitFollowUp(settings.strategy.exit_reraise_seconds))
        self.exit_timer: Timer | None = None
        self.stale: set[str] = set()
        self.held_back: deque[Candle] = deque()
        self.last_score: dict[str, Score] = {}
        self.last_candle: dict[str, Candle] = {}
        self.merge = {sym: deque[Candle]() for sym in options.merge_symbols} if options.merge_symbols else None
        self.merge_last: dict[str, int] = {}
        self.input_ended = False
        self.paused = False
        self.resume_scheduled = False
        self.last_sync = 0.0
        self.stats = options.stats
        for key in ("candles", "history", "duplicates", "scores", "entries", "exits", "exits_repeated", "skipped",
                    "market_closed"):
            self.stats.setdefault(key, 0)

    def started(self) -> None:
        self.parts.idle.set()
        self._sync_positions(force=True)
        if self.positions is not None:  # without a view of the live trades a re-raise would be blind
            interval = min(1.0, max(0.05, self.exits.get().reraise_seconds / 4))
            self.exit_timer = self.scheduler.call_every(interval, tell_quietly, self.actor_ref, FollowUpExits())
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
        elif isinstance(message, FollowUpExits):
            self._follow_up_exits()
        elif isinstance(message, PositionClosed):
            self._forget(message.pos_id, message.reason or "closed by the trader")
            self.exits.update(lambda follow: follow.close(message.pos_id))
        elif isinstance(message, Drain):
            return self.status()
        else:
            return super().receive(message)
        return None

    def release(self) -> None:
        if self.exit_timer is not None:
            self.exit_timer.cancel()

    def status(self) -> dict[str, Any]:
        return {**self.stats, "open_positions": {s: p for s, (p, _) in sorted(self.book.items())},
                "exits_asked": [asked.signal.pos_id for asked in self.exits.get().pending()],
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
        if not self.calendar.is_open(candle.ts):
            self.stats["market_closed"] += 1  # a minute the exchange does not trade (the sim at night)
            return
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
        window = trading_window(self.limits, self.calendar, candle.ts)
        if self.book and window is not None and candle.ts + candle.timeframe >= window.square_off_at:
            signals = self._square_off(candle)
        else:
            signals = self._signals(candle, score, position)
            for signal in signals:
                self._send(candle, score, signal)
        metrics.candle_to_signal(self.clock.now() - (candle.ts + candle.timeframe))
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
        at = candle.ts + candle.timeframe
        gate = self._gate(candle, at)
        if position is not None:
            return self.policy.decide(symbol, score, candle, self.book, gate, None, 0)
        reason = self.policy.entry_blocker(symbol, score, self.book, gate, at)
        if reason is not None:
            if score.direction != 0 and score.entry_score >= self.entry_min:
                self._skipped(candle, score, reason)  # a qualifying score we could not act on: say why
            return []
        chain = self.market.option_chain(symbol) if self.market is not None else None
        max_qty = None
        pick = pick_atm_option(chain, score.direction, candle.close)
        traded = pick.instrument if pick is not None else symbol
        lot = self._lot_size(traded)
        if pick is not None:
            if lot is None:
                self._skipped(candle, score, f"lot size of {traded} unknown: not in the instrument master nor execution.lot_sizes")
                return []
            if self.capital > 0:
                max_qty = int(self.capital // pick.premium)  # the premium paid must fit in the capital
        signals = self.policy.decide(symbol, score, candle, self.book, gate, chain, lot or 1, max_qty)
        if not signals:
            self._skipped(candle, score, f"size: less than one lot within capital {self.capital:g}")
        return signals

    def _lot_size(self, symbol: str) -> int | None:
        """The master's lot size of what would be traded, else `execution.lot_sizes` (the operator's word for
        contracts the master does not know, e.g. a replay of a day whose contracts have expired)."""
        known = self.instruments.lot_size(symbol) if self.instruments is not None else None
        return known if known is not None else self.settings.execution.lot_sizes.get(symbol)

    def _gate(self, candle: Candle, at: float) -> EntryGate:
        """Everything besides the score that decides an entry on this candle (the core judges it)."""
        window = trading_window(self.limits, self.calendar, candle.ts)
        # Without a trader in this process the configured limits still apply, to an empty day.
        risk, limits = self.risk_view() if self.risk_view is not None else (new_risk_state(at), self.limits)
        return EntryGate(
            market_open=window is not None and window.entries_from <= candle.ts and at <= window.entries_until,
            square_off_time=self.settings.risk.square_off_time,
            after_square_off=window is None or at >= window.square_off_at,
            feed_stale=candle.symbol in self.stale or "*" in self.stale,
            max_open_positions=self.max_open, candle_age_seconds=self.clock.now() - at,
            max_candle_age_seconds=self.max_age, risk=risk, risk_limits=limits)

    def _send(self, candle: Candle, score: Score, signal: Signal) -> None:
        if isinstance(signal, EntrySignalRaised):
            kind = "ENTRY_SIGNAL"
            self.book[signal.symbol] = (signal.pos_id, signal.direction)
            self.raised[signal.pos_id] = self.clock.monotonic()
            self.stats["entries"] += 1
            message = (f"{signal.side.value} {signal.qty} {signal.instrument} ({signal.lots} lot(s)): "
                       f"{signal.symbol} entry_score {score.entry_score:.3f}, direction {signal.direction:+d}")
        else:
            kind = "EXIT_SIGNAL"
            self.book.pop(signal.symbol or candle.symbol, None)
            now = self.clock.now()
            self.exits.update(lambda follow: follow.ask(signal, now))
            self.stats["exits"] += 1
            message = f"exit {signal.pos_id}: {signal.reason} {signal.exit_score:.3f}"
        record = signal_record(kind, candle.symbol, candle, score, signal)
        leg = Leg.ENTRY if kind == "ENTRY_SIGNAL" else Leg.EXIT  # an exit's first order; retries count up
        self.log.event(kind, message, decision_id=decision_id(candle), correlation_id=correlation_id(signal.pos_id, leg),
                       **{k: v for k, v in record.items() if k != "kind"})
        for listener in self.parts.signal_listeners:
            listener(record)
        if not self.sink.tell(signal):
            self._undelivered(kind, signal.pos_id)

    def _skipped(self, candle: Candle, score: Score, reason: str) -> None:
        self.stats["skipped"] += 1
        record = signal_record("ENTRY_SKIPPED", candle.symbol, candle, score, reason=reason)
        self.log.event("ENTRY_SKIPPED", f"{candle.symbol} entry_score {score.entry_score:.3f}: {reason}",
                       decision_id=decision_id(candle), **{k: v for k, v in record.items() if k != "kind"})
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
        self.scheduler.call_later(GATE_POLL_SECONDS, tell_quietly, self.actor_ref, ResumeDecisions())

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
        now = self.clock.monotonic()
        if not force and now - self.last_sync < 1.0:
            return
        self.last_sync = now
        live = self.positions()
        held = {pos_id for pos_id, _ in self.book.values()}
        asked = self.exits.get()
        for pos_id, (symbol, direction) in sorted(live.items()):
            if pos_id in held or pos_id in asked or symbol in self.book:
                continue
            self.book[symbol] = (pos_id, direction)
            self.log.event("STRATEGY_POSITION_ADOPTED", f"{pos_id} is open: exits will be decided for it",
                           pos_id=pos_id, symbol=symbol, direction=direction)
        for pos_id in held - set(live):
            if now - self.raised.get(pos_id, 0.0) >= POSITION_SYNC_GRACE_SECONDS:
                self._forget(pos_id)  # closed, denied or refused by the trader
        self.exits.update(lambda follow: follow.retain(live))

    def _follow_up_exits(self) -> None:
        """Raise again each exit whose position is still live reraise_seconds after the last ask."""
        if self.positions is None or not self.exits.get():
            return
        follow, repeats = self.exits.get().due(self.positions(), self.clock.now())
        self.exits.set(follow)  # this actor is the store's only writer
        for repeat in repeats:
            signal = repeat.signal
            self.stats["exits_repeated"] += 1
            self.log.event("EXIT_SIGNAL_REPEATED", f"exit {signal.pos_id} again ({signal.reason}): attempt "
                           f"{repeat.attempt}, still live {repeat.waited:.0f} s after the first ask", level=30,
                           pos_id=signal.pos_id, symbol=signal.symbol, reason=signal.reason, attempt=repeat.attempt,
                           waited_seconds=round(repeat.waited, 3), since_last_seconds=round(repeat.since_last, 3))
            if not self.sink.tell(signal):
                self._undelivered("EXIT_SIGNAL", signal.pos_id)

    def _undelivered(self, kind: str, pos_id: str) -> None:
        """An entry the desk refused is an error (the trades supervisor is down). An exit it could not deliver
        is mostly a race (the trade closed a moment before: slippage exit, protective exit, operator), and the
        follow-up asks again while the position stays live: a warning."""
        entry = kind == "ENTRY_SIGNAL"
        why = "" if entry else ": no live trade here (closed already, or run by another process)"
        self.log.event("SIGNAL_UNDELIVERED", f"the trading desk refused {kind} {pos_id}{why}",
                       level=40 if entry else 30, pos_id=pos_id)


