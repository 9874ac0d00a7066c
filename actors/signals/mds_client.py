"""MDS client mode (the seed's `MARKET_DATA_PROVIDER=mds`): role trader reads market data from Server A only.

    (the HTTP client and the market view it refreshes are in actors/sources/mds_http.py)
    MdsClientActor  its own actor (blocking HTTP never sits in the strategy's mailbox): right after each
                    minute closes (+ candle_fetch_delay_seconds) it fetches the closed candles of every symbol,
                    catching up on anything missed, and tells them to the strategy in order; the first
                    successful fetch of a symbol is its warm-up history (`history=True`: scored, not traded).
                    With `storage.redis_url` set it also takes the candles the MDS pushes on
                    `candles:<symbol>` (the next minute goes straight through; a gap triggers an HTTP
                    catch-up; (symbol, ts) already delivered are dropped) and `feed:status`. Without Redis
                    the feed's staleness comes from the MDS health check, polled with the candles.
Option chains of the index symbols are refreshed every `option_chain.poll_seconds`; a quote asked for and
older than `market_data.quote_max_age_seconds` is fetched again.

Errors come translated from the HTTP client (`MdsUnavailable`: retried next cycle; `MdsError`: logged).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from actors.clock import Clock
from actors.market_data.messages import candle_from_message, feed_status_from_message
from actors.sources.mds_http import MdsError, MdsHttpClient, MdsMarketView, MdsUnavailable
from core.market import Candle
from storage.bus import Bus, Subscription
from storage.errors import StorageError
from supervision.actor import SupervisedActor, tell_quietly
from supervision.scheduler import Scheduler, Timer
from supervision.supervisor import ChildLink
from telemetry.logs import get_logger

__all__ = ["MdsClientActor", "MdsClientState"]

MINUTE = 60
MAX_LIMIT = 5000  # the MDS API's cap on `limit`
FIRST_CATCH_UP_LIMIT = 10  # minutes asked for first on a catch-up; doubled while that may miss some
log = get_logger("mybot.mds_client")


# -- the poller actor ----------------------------------------------------------------------------------------
@dataclass
class MdsClientState:
    """Outlives restarts of the client actor; read by status and health from HTTP threads."""

    last_delivered: dict[str, int] = field(default_factory=dict)  # symbol -> newest candle ts told onwards
    fetches: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_error: str = ""
    last_success_at: float = 0.0
    candles_fetched: int = 0
    candles_pushed: int = 0
    duplicates_dropped: int = 0
    chains: int = 0
    stale: frozenset[str] = frozenset()  # replaced whole: readers on other threads never see it change
    subscribed: bool = False

    def snapshot(self) -> dict[str, Any]:
        return {"fetches": self.fetches, "failures": self.failures, "consecutive_failures": self.consecutive_failures,
                "last_error": self.last_error or None, "last_success_at": self.last_success_at or None,
                "candles_fetched": self.candles_fetched, "candles_pushed": self.candles_pushed,
                "duplicates_dropped": self.duplicates_dropped, "option_chains": self.chains,
                "redis_subscribed": self.subscribed, "stale": sorted(self.stale),
                "last_candle_ts": dict(self.last_delivered)}


@dataclass(frozen=True)
class FetchCandles:
    symbols: tuple[str, ...] = ()  # () = every symbol
    scheduled: bool = False  # the periodic fetch (reschedules the next one)


@dataclass(frozen=True)
class RefreshChains:
    pass


@dataclass(frozen=True)
class RefreshQuote:
    symbol: str


@dataclass(frozen=True)
class CandlePushed:
    candle: Candle
    event: str


@dataclass(frozen=True)
class FeedStatusPushed:
    event: str
    symbol: str
    at: float


Deliver = Callable[[Any], object]


class MdsClientActor(SupervisedActor):
    """Fetches candles (and chains, and feed staleness) from the MDS and tells them to the strategy."""

    def __init__(self, link: ChildLink | None, client: MdsHttpClient, view: MdsMarketView,
                 symbols: Sequence[str], chain_symbols: Sequence[str], deliver: Deliver, clock: Clock,
                 scheduler: Scheduler, state: MdsClientState, *, history_minutes: int, poll_seconds: float,
                 fetch_delay: float, chain_poll_seconds: float, bus: Bus | None = None) -> None:
        super().__init__(link)
        self.client = client
        self.view = view
        self.symbols = tuple(symbols)
        self.chain_symbols = tuple(chain_symbols)
        self.deliver = deliver
        self.clock = clock
        self.scheduler = scheduler
        self.state = state
        self.history_minutes = history_minutes
        self.poll_seconds = poll_seconds
        self.fetch_delay = fetch_delay
        self.chain_poll_seconds = chain_poll_seconds
        self.bus = bus
        self.subscription: Subscription | None = None
        self.timers: list[Timer] = []
        self.outage_logged = False

    # -- lifecycle ------------------------------------------------------------------------------------------
    def started(self) -> None:
        self._subscribe()
        ref = self.actor_ref
        ref.tell(FetchCandles(scheduled=True))  # the warm-up history, then the minute schedule
        if self.chain_symbols:
            ref.tell(RefreshChains())

        def refresh(symbol: str) -> None:
            tell_quietly(ref, RefreshQuote(symbol))  # stopped meanwhile: the cache answers

        self.view.refresher = refresh
        self.log.event("MDS_CLIENT_STARTED", f"reading market data from {self.client.base_url}",
                       base_url=self.client.base_url, symbols=list(self.symbols), redis=self.bus is not None)

    def release(self) -> None:
        # view.refresher stays: while this actor is down its tells fail and the cache answers (a quote
        # asked from the scheduler thread must never wait on the network); a restart sets a new one.
        for timer in self.timers:
            timer.cancel()
        if self.subscription is not None:
            self.subscription.close()
            self.subscription = None
            self.state.subscribed = False

    def _subscribe(self) -> None:
        if self.bus is None or self.subscription is not None:
            return
        ref = self.actor_ref

        def on_message(channel: str, data: bytes) -> None:
            if channel == "feed:status":
                status = feed_status_from_message(data)
                tell_quietly(ref, FeedStatusPushed(status.event, status.symbol, status.at))
                return
            candle, event = candle_from_message(data)
            tell_quietly(ref, CandlePushed(candle, event))

        try:
            self.subscription = self.bus.subscribe([*(f"candles:{s}" for s in self.symbols), "feed:status"],
                                                   on_message)
        except StorageError as exc:  # Redis only speeds things up: HTTP carries on, retried next cycle
            self.log.event("MDS_PUSH_UNAVAILABLE", f"Redis subscription failed: {exc}; HTTP polling only",
                           level=30)
            return
        self.state.subscribed = True

    def _later(self, delay: float, message: Any) -> None:
        self.timers = [t for t in self.timers if not t.cancelled][-8:]
        self.timers.append(self.scheduler.call_later(max(0.0, delay), tell_quietly, self.actor_ref, message))

    def _next_poll_delay(self) -> float:
        """Seconds until the next poll slot (multiples of poll_seconds on the clock) plus the fetch delay."""
        now = self.clock.now()
        period = self.poll_seconds
        return (int(now // period) + 1) * period + self.fetch_delay - now

    # -- messages -------------------------------------------------------------------------------------------
    def receive(self, message: Any) -> Any:
        if isinstance(message, FetchCandles):
            if message.scheduled:
                self._later(self._next_poll_delay(), FetchCandles(scheduled=True))
                self._subscribe()  # a Redis that was down at start
            self._fetch(message.symbols or self.symbols, check_health=message.scheduled)
        elif isinstance(message, CandlePushed):
            self._pushed(message.candle, message.event)
        elif isinstance(message, FeedStatusPushed):
            self._feed_status(message.event, message.symbol, message.at)
        elif isinstance(message, RefreshChains):
            self._later(self.chain_poll_seconds, RefreshChains())
            self._refresh_chains()
        elif isinstance(message, RefreshQuote):
            if not self.view.fresh(message.symbol):  # asked for several times meanwhile: fetched once
                self.view.fetch(message.symbol)
        else:
            return super().receive(message)
        return None

    def _fetch(self, symbols: Sequence[str], check_health: bool) -> None:
        from actors.signals.strategy import CandlesClosed

        failed: list[str] = []
        for symbol in symbols:
            last = self.state.last_delivered.get(symbol)
            try:
                candles = self._new_candles(symbol, last)
            except MdsError as exc:
                failed.append(symbol)
                self._failed(f"{symbol}: {exc}")
                if isinstance(exc, MdsUnavailable):
                    break  # the MDS is down: the other symbols would wait out the same timeouts
                continue
            self.state.candles_fetched += len(candles)
            if last is None:
                # The warm-up: what the MDS held before we started is history (scored, never traded on).
                self.state.last_delivered[symbol] = candles[-1].ts if candles else 0  # 0: all later are live
                self.deliver(CandlesClosed(symbol, tuple(candles[-self.history_minutes:] if self.history_minutes
                                                         else ()), history=True))
            elif candles:
                self.state.last_delivered[symbol] = candles[-1].ts
                self.deliver(CandlesClosed(symbol, tuple(candles)))
        if not failed:
            self._succeeded()
            if check_health and self.subscription is None:
                self._poll_feed_health()

    def _new_candles(self, symbol: str, last: int | None) -> list[Candle]:
        """Closed candles after `last` (None: the warm-up history), oldest first; asks for more until the
        answer reaches back to `last` (or the API's cap), so a long outage is caught up in order."""
        self.state.fetches += 1
        if last is None:
            return self.client.candles_last(symbol, max(1, self.history_minutes))
        limit = FIRST_CATCH_UP_LIMIT
        while True:
            candles = self.client.candles_last(symbol, limit)
            if len(candles) < limit or candles[0].ts <= last or limit >= MAX_LIMIT:
                break
            limit = min(MAX_LIMIT, limit * 4)
        return [c for c in candles if c.ts > last]

    def _pushed(self, candle: Candle, event: str) -> None:
        if event != "CANDLE_CLOSED":
            return  # revisions: the strategy takes each minute once, in order
        last = self.state.last_delivered.get(candle.symbol)
        if last is None or candle.symbol not in self.symbols:
            return  # not warmed yet: the first fetch brings it
        if candle.ts <= last:
            self.state.duplicates_dropped += 1
            return
        if candle.ts != last + MINUTE:
            self._fetch((candle.symbol,), check_health=False)  # a gap: catch up in order over HTTP
            return
        from actors.signals.strategy import CandlesClosed

        self.state.candles_pushed += 1
        self.state.last_delivered[candle.symbol] = candle.ts
        self.deliver(CandlesClosed(candle.symbol, (candle,)))

    def _feed_status(self, event: str, symbol: str, at: float) -> None:
        from actors.signals.strategy import FeedStatusChanged

        if event == "FEED_STALE":
            self.state.stale = self.state.stale | {symbol}
        elif event == "FEED_RESUMED":
            self.state.stale = self.state.stale - {symbol}
        self.deliver(FeedStatusChanged(event, symbol, at))

    def _poll_feed_health(self) -> None:
        """Without Redis, FEED_STALE / FEED_RESUMED come from the MDS health check's feed section."""
        try:
            _, body = self.client.health()
        except MdsError:
            return
        feed = body.get("checks", {}).get("feed")
        if not isinstance(feed, dict):
            return
        stale = {s for s in feed.get("stale", []) if s in self.symbols}
        for symbol in sorted(stale - self.state.stale):
            self._feed_status("FEED_STALE", symbol, self.clock.now())
        for symbol in sorted(self.state.stale - stale):
            self._feed_status("FEED_RESUMED", symbol, self.clock.now())

    def _refresh_chains(self) -> None:
        for symbol in self.chain_symbols:
            try:
                record = self.client.option_chain(symbol)
            except MdsError as exc:
                self.log.event("MDS_CHAIN_FAILED", f"option chain of {symbol}: {exc}", level=30, symbol=symbol)
                if isinstance(exc, MdsUnavailable):
                    return
                continue
            if record is not None:
                self.view.set_chain(record)
                self.state.chains += 1

    def _failed(self, error: str) -> None:
        self.state.failures += 1
        self.state.consecutive_failures += 1
        self.state.last_error = error
        if not self.outage_logged:
            self.outage_logged = True
            self.log.event("MDS_UNAVAILABLE", f"market data fetch failed: {error}; retried every cycle",
                           level=30, error=error)

    def _succeeded(self) -> None:
        if self.outage_logged:
            self.log.event("MDS_AVAILABLE", "market data fetches work again",
                           failures=self.state.consecutive_failures)
        self.outage_logged = False
        self.state.consecutive_failures = 0
        self.state.last_success_at = self.clock.now()
