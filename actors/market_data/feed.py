"""FeedActor: owns the tick source (sim, replay or Dhan); routes tick batches to the candle builders.

The source runs on its own thread and hands over batches; one message per batch (not per tick) crosses
into this actor and one per symbol per batch goes on to each builder, which is what lets ingest go past
the one-message-per-tick ceiling. Stale-feed detection runs on a 1-second timer: no tick for
`feed.stale_seconds` on a subscribed symbol -> FEED_STALE, the next tick -> FEED_RESUMED.

Contracts held in positions (`FeedState.watched`, set by the ContractFeed) are added to a source that can
(`ContractSubscriber`: Dhan subscribes them on the running websocket, the simulator walks them; a replay
ignores them) and taken off when no position holds them; their ticks update the quote cache and the bus (`ticks:`/`quote:`), but
build no candles and never make the feed stale. A restarted feed subscribes the watched set again.

Both clocks follow the market calendar: stale detection runs only while the exchange trades (the silence
is counted from the open, not from yesterday's last tick; at the close stale symbols are cleared,
FEED_STALE_CLEARED, and FEED_RESUMED goes on the bus so consumers stop holding entries), and a live feed
closes the forming minute on the clock only in session (and for `CLOSE_GRACE_SECONDS` after the close, so
the last minute closes at 15:30, not at the next morning's first tick).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from actors.clock import Clock
from actors.market_data.market_cache import MarketCache
from actors.market_data.messages import (
    AdvanceClock,
    CandleTicks,
    CloseCandles,
    PublishFeedStatus,
    PublishTicks,
)
from actors.sources.base import ContractSubscriber, SourceCallbacks, TickSource
from core.calendar import MarketCalendar
from core.market import Tick
from supervision.actor import SupervisedActor, tell_quietly
from supervision.scheduler import Scheduler, Timer
from supervision.supervisor import ChildHandle, ChildLink, SupervisorHandle
from telemetry.logs import incident_id

__all__ = ["FeedActor", "FeedState", "TicksReceived"]

MAX_IN_FLIGHT = 8  # tick batches queued for routing before the source waits
LATENCY_SAMPLE_SECONDS = 0.1  # mybot_tick_to_candle_seconds: at most one timed batch per 100 ms
FLOW_WAIT_SECONDS = 1.0  # a live source never waits longer than this (then the batch goes anyway)
CLOSE_GRACE_SECONDS = 90.0  # the candle clock runs this long past the close (the last minute must close)


@dataclass(frozen=True)
class TicksReceived:
    ticks: list[Tick]
    holds_slot: bool = False  # took a flow-control slot: release it once routed
    received_at: float = 0.0  # time.perf_counter() at hand-over, for a sample of batches (0: not timed)


@dataclass(frozen=True)
class SourceFailed:
    error: BaseException


@dataclass(frozen=True)
class SourceFinished:
    pass


@dataclass(frozen=True)
class SourceStatusChanged:
    event: str
    detail: str


@dataclass(frozen=True)
class CheckFeed:
    pass


@dataclass(frozen=True)
class SyncContracts:
    """FeedState.watched changed: subscribe what is new, unsubscribe what is gone."""


@dataclass
class FeedState:
    """The feed's crash-only store: outlives FeedActor restarts, written by the feed actor alone, read by
    health and status from HTTP threads. Readers never see a collection change under them: `stale` is a
    frozenset replaced whole, and `last_arrival` gets a new dict when a symbol is first seen (an existing
    key's value is replaced in place, which never resizes the dict)."""

    source: str
    symbols: tuple[str, ...]
    live: bool  # a live source goes stale; a replay does not
    last_arrival: dict[str, float] = field(default_factory=dict)  # monotonic seconds
    started_at: float = 0.0
    stale: frozenset[str] = frozenset()
    finished: bool = False
    finished_event: threading.Event = field(default_factory=threading.Event)
    ticks: int = 0
    unknown_ticks: int = 0
    ticks_by_symbol: dict[str, int] = field(default_factory=dict)  # routed ticks per symbol
    unknown_by_symbol: dict[str, int] = field(default_factory=dict)  # ignored ticks per symbol not subscribed
    batches: int = 0
    flow_waits: int = 0
    checks: int = 0  # runs of the 1-second check (stale detection, candle clock)
    source_status: dict[str, Any] = field(default_factory=dict)
    current_source: TickSource | None = None  # the running instance's source, for live status reads
    watched: frozenset[str] = frozenset()  # contracts positions hold (ContractFeed writes it, replaced whole)
    contracts: frozenset[str] = frozenset()  # of those, what the running source accepted
    contract_ticks: int = 0

    def live_source_status(self) -> dict[str, Any]:
        source = self.current_source
        return _source_status(source) if source is not None else self.source_status

    def ages(self, now_monotonic: float) -> dict[str, float | None]:
        arrivals = self.last_arrival
        return {s: (round(now_monotonic - arrivals[s], 3) if s in arrivals else None) for s in self.symbols}


class FeedActor(SupervisedActor):
    def __init__(self, link: ChildLink | None, source_factory: Callable[[], TickSource], state: FeedState,
                 candles: SupervisorHandle, publisher: ChildHandle, cache: MarketCache, clock: Clock,
                 scheduler: Scheduler, stale_seconds: float,
                 wrap_sink: Callable[[Callable[[list[Tick]], None]], Callable[[list[Tick]], None]] | None = None,
                 advance_candles: bool = True, calendar: MarketCalendar | None = None) -> None:
        super().__init__(link)
        self.calendar = calendar if calendar is not None else MarketCalendar.always_open()
        self.session_began: float | None = None  # monotonic time the current session was first seen open
        self.source_factory = source_factory
        self.state = state
        self.candles = candles
        self.publisher = publisher
        self.cache = cache
        self.clock = clock
        self.scheduler = scheduler
        self.stale_seconds = stale_seconds
        self.wrap_sink = wrap_sink
        self.advance_candles = advance_candles  # live: close minutes on the clock; replay: on ticks only
        self.known = frozenset(state.symbols)
        self.contracts: frozenset[str] = frozenset()  # watched contracts the current source ticks
        self.builders: dict[str, ChildHandle] = {}
        self.source: TickSource | None = None
        self.timer: Timer | None = None
        self.unknown_logged: set[str] = set()
        self.stale_incidents: dict[str, str] = {}  # symbol -> the open FEED_STALE incident's id
        self.in_flight = threading.BoundedSemaphore(MAX_IN_FLIGHT)

    def started(self) -> None:
        if not self.state.started_at:
            self.state.started_at = self.clock.monotonic()
        ref = self.actor_ref
        in_flight = self.in_flight
        last_timed = [0.0]

        def on_ticks(ticks: Any) -> None:
            # Flow control: the source waits while MAX_IN_FLIGHT batches are queued here, so a fast
            # replay cannot flood the mailbox (memory, and GC scans of millions of queued ticks).
            holds = in_flight.acquire(timeout=FLOW_WAIT_SECONDS)
            if not holds:
                self.state.flow_waits += 1
            # A sample of batches carries its hand-over time: timing every batch would cost the ingest
            # rate a histogram observation per symbol per batch.
            now = time.perf_counter()
            timed = 0.0
            if now - last_timed[0] >= LATENCY_SAMPLE_SECONDS:
                last_timed[0] = timed = now
            tell_quietly(ref, TicksReceived(ticks if isinstance(ticks, list) else list(ticks), holds, timed))

        # The source's thread may still hand something over while this actor stops (release() stops the
        # source, which takes a moment): an instance that has stopped lets it fall silent, its successor runs
        # a source of its own. A tell that raised here would kill the source's thread with a traceback.
        sink = self.wrap_sink(on_ticks) if self.wrap_sink else on_ticks
        callbacks = SourceCallbacks(
            on_ticks=sink,
            on_error=lambda exc: tell_quietly(ref, SourceFailed(exc)),
            on_finished=lambda: tell_quietly(ref, SourceFinished()),
            on_status=lambda event, detail: tell_quietly(ref, SourceStatusChanged(event, detail)))
        self.source = self.source_factory()
        self.state.current_source = self.source
        self.state.contracts = frozenset()
        self._sync_contracts()  # a restarted feed subscribes what positions still hold
        self.source.start(callbacks)
        self.timer = self.scheduler.call_every(1.0, tell_quietly, self.actor_ref, CheckFeed())
        self.log.event("FEED_STARTED", f"{self.state.source} feed started for {len(self.known)} symbols",
                       source=self.state.source)

    def release(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.source is not None:
            self.source.stop(timeout=2.0)
            self.state.source_status = _source_status(self.source)

    def receive(self, message: Any) -> Any:
        if isinstance(message, TicksReceived):
            try:
                self._route(message.ticks, message.received_at)
            finally:
                if message.holds_slot:
                    self.in_flight.release()
        elif isinstance(message, CheckFeed):
            self._check()
        elif isinstance(message, SyncContracts):
            self._sync_contracts()
        elif isinstance(message, SourceStatusChanged):
            self.log.event(message.event, message.detail, source=self.state.source)
        elif isinstance(message, SourceFinished):
            self._finish()
        elif isinstance(message, SourceFailed):
            raise RuntimeError(f"{self.state.source} source failed: {message.error}") from message.error
        else:
            return super().receive(message)
        return None

    def _sync_contracts(self) -> None:
        wanted = self.state.watched - self.known
        added, removed = wanted - self.contracts, self.contracts - wanted
        source = self.source
        subscriber = source if isinstance(source, ContractSubscriber) else None
        if removed:
            if subscriber is not None:
                subscriber.unwatch(sorted(removed))
            self.log.event("FEED_CONTRACTS_REMOVED", f"no position holds {', '.join(sorted(removed))}: "
                           "unsubscribed", symbols=sorted(removed))
        accepted: set[str] = set()
        if added:
            if subscriber is not None:
                prices = {s: q[0] for s in added if (q := self.cache.contract_price(s)) is not None}
                accepted = set(subscriber.watch(sorted(added), prices))
                self.log.event("FEED_CONTRACTS_ADDED", f"subscribed {', '.join(sorted(accepted)) or 'nothing'} "
                               "for open positions", symbols=sorted(accepted),
                               refused=sorted(added - accepted))
            # else a replay: it plays what its file holds, routed by feed.symbols alone (whether a contract
            # is watched yet must not change what a replay counts or quotes: it would not be repeatable)
        self.contracts = (self.contracts - removed) | accepted
        self.state.contracts = self.contracts

    def _route(self, ticks: list[Tick], received_at: float = 0.0) -> None:
        groups: dict[str, list[Tick]] = {}
        contract_groups: dict[str, list[Tick]] = {}
        known = self.known
        contracts = self.contracts
        unknown = 0
        for tick in ticks:
            symbol = tick[0]
            group = groups.get(symbol)
            if group is None:
                if symbol not in known:
                    if symbol in contracts:
                        contract_groups.setdefault(symbol, []).append(tick)
                        continue
                    unknown += 1
                    _count(self.state, "unknown_by_symbol", symbol, 1)
                    if symbol not in self.unknown_logged:
                        self.unknown_logged.add(symbol)
                        self.log.event("UNKNOWN_SYMBOL", f"ticks for {symbol} ignored: not in feed.symbols",
                                       level=30, symbol=symbol)
                    continue
                group = groups[symbol] = []
            group.append(tick)
        arrival = self.clock.monotonic()
        quotes = {}
        for symbol, group in groups.items():
            builder = self.builders.get(symbol)
            if builder is None:
                builder = self.builders[symbol] = self.candles.ensure_child(symbol)
            builder.tell(CandleTicks(group, received_at))
            _count(self.state, "ticks_by_symbol", symbol, len(group))
            newest = max(group, key=_tick_ts) if len(group) > 1 else group[0]
            quotes[symbol] = (newest.ltp, newest.ts)
            if symbol in self.state.last_arrival:
                self.state.last_arrival[symbol] = arrival
            else:
                self.state.last_arrival = {**self.state.last_arrival, symbol: arrival}
            if symbol in self.state.stale:
                self.state.stale = self.state.stale - {symbol}
                self.log.event("FEED_RESUMED", f"{symbol} ticking again", symbol=symbol,
                               **({"incident_id": self.stale_incidents.pop(symbol)}
                                  if symbol in self.stale_incidents else {}))
                self.publisher.tell(PublishFeedStatus("FEED_RESUMED", symbol, self.clock.now()))
        if contract_groups:
            for symbol, group in contract_groups.items():
                newest = max(group, key=_tick_ts) if len(group) > 1 else group[0]
                quotes[symbol] = (newest.ltp, newest.ts)
            self.state.contract_ticks += sum(len(g) for g in contract_groups.values())
            groups = {**groups, **contract_groups}
        self.cache.set_quotes(quotes)
        self.publisher.tell(PublishTicks(groups))
        self.state.ticks += len(ticks) - unknown
        self.state.unknown_ticks += unknown
        self.state.batches += 1

    def _check(self) -> None:
        self.state.checks += 1
        if self.source is not None:
            self.state.source_status = _source_status(self.source)
        now = self.clock.now()
        market_open = self.calendar.is_open(now)
        if self.advance_candles and not self.state.finished and (
                market_open or self.calendar.is_open(now - CLOSE_GRACE_SECONDS)):
            for builder in self.builders.values():
                builder.tell(AdvanceClock(now))
        if not self.state.live or self.state.finished:
            return
        mono = self.clock.monotonic()
        if not market_open:
            self.session_began = None
            self._clear_stale(now)
            return
        if self.session_began is None:
            self.session_began = mono  # silence counts from the open (or from our start in session)
        for symbol in self.state.symbols:
            last = max(self.state.last_arrival.get(symbol, self.state.started_at), self.session_began)
            if mono - last > self.stale_seconds and symbol not in self.state.stale:
                self.state.stale = self.state.stale | {symbol}
                incident = self.stale_incidents[symbol] = incident_id("FEED_STALE", symbol, self.clock.now())
                self.log.event("FEED_STALE", f"no tick for {symbol} in {mono - last:.1f} s", level=30,
                               symbol=symbol, age_seconds=round(mono - last, 3), incident_id=incident)
                self.publisher.tell(PublishFeedStatus("FEED_STALE", symbol, self.clock.now()))

    def _clear_stale(self, now: float) -> None:
        """The market closed: a silent symbol is not stale any more (no FEED_STALE is raised until it opens)."""
        stale, self.state.stale = self.state.stale, frozenset()
        for symbol in sorted(stale):
            self.log.event("FEED_STALE_CLEARED", f"market closed: {symbol} is no longer counted stale",
                           symbol=symbol)
            self.publisher.tell(PublishFeedStatus("FEED_RESUMED", symbol, now))

    def _finish(self) -> None:
        for builder in self.builders.values():
            builder.tell(CloseCandles("end of input"))
        self.state.finished = True
        if self.source is not None:
            self.state.source_status = _source_status(self.source)
        self.log.event("FEED_FINISHED", f"{self.state.source} input ended after {self.state.ticks} ticks; "
                       "forming candles closed", ticks=self.state.ticks)
        self.publisher.tell(PublishFeedStatus("FEED_FINISHED", "*", self.clock.now()))
        self.state.finished_event.set()


def _count(state: FeedState, name: str, symbol: str, n: int) -> None:
    """Add to a per-symbol counter of the store; a new symbol gets a new dict (readers never see it grow)."""
    counts: dict[str, int] = getattr(state, name)
    if symbol in counts:
        counts[symbol] += n
    else:
        setattr(state, name, {**counts, symbol: n})


def _tick_ts(tick: Tick) -> float:
    return tick[1]


def _source_status(source: TickSource) -> dict[str, Any]:
    status = source.status()
    return {"name": status.name, "connected": status.connected, "finished": status.finished,
            "ticks": status.ticks, "reconnects": status.reconnects, **status.detail}
