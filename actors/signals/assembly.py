"""The `signals` subtree (role trader / all): built and wired here.

    signals (one_for_one)
      ├─ strategy      StrategyActor: ScoreEngine + SignalPolicy (core), thin
      └─ mds-client    only with market_data.provider = mds in role trader (actors.signals.mds_client)

The runtime hands in where signals go (a `SignalSink`: the trading desk), what the trader's risk guard and
book look like now (`RiskView`, `PositionsView`), and where market data comes from: the in-process MDS read
model's chains (role all), the stored chains (role trader on a shared database), or an MDS over HTTP
(`MdsConnection`, role trader with market_data.provider = mds).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from actors.clock import Clock
from actors.instruments import InstrumentBook
from actors.market_data.messages import candle_from_message, feed_status_from_message
from actors.signals.mds_client import MdsClientActor, MdsClientState
from actors.signals.messages import (
    CandlesClosed,
    FeedStatusChanged,
    MarketView,
    PositionsView,
    RecordingSink,
    RiskView,
    SignalSink,
)
from actors.signals.strategy import StrategyActor, StrategyOptions
from actors.sources.mds_http import MdsHttpClient, MdsMarketView
from actors.wiring import HealthCheck, Infrastructure, Subtree
from core.instruments import InstrumentError, NoExpiry, choose_expiry, live_expiries
from core.market import Candle
from core.signals import ExitFollowUp
from storage.bus import Bus, Subscription
from storage.errors import StorageError
from storage.records import OptionChainRecord
from storage.repositories import Storage
from supervision.scheduler import Scheduler
from supervision.store import Store
from supervision.supervisor import ChildHandle, ChildSpec
from telemetry.logs import get_logger

__all__ = ["MdsConnection", "SignalsHandles", "assemble_signals", "cache_chains", "stored_chains"]

HISTORY_LOOKBACK_SECONDS = 10 * 86_400  # how far back the warm-up looks for `history_minutes` stored candles

log = get_logger("mybot.strategy")


@dataclass(frozen=True)
class MdsConnection:
    """Role trader with market_data.provider = mds: the MDS over HTTP (built by the runtime: the trading
    side prices from the same view)."""

    client: MdsHttpClient
    view: MdsMarketView


@dataclass(frozen=True)
class SignalsHandles:
    subtree: Subtree
    strategy: ChildHandle  # tell it CandlesClosed / FeedStatusChanged; ask it Drain
    options: StrategyOptions
    sink: SignalSink  # where its signals go (a RecordingSink when no trader is assembled)


MonthlyExpiries = Callable[[str], set[str]]  # underlying -> its monthly expiries (the instrument master's flags)


def _no_monthly(underlying: str) -> set[str]:
    return set()


class _ChainRecords(Protocol):
    def option_chain(self, symbol: str, expiry: str | None) -> OptionChainRecord | None: ...

    def chain_by_rule(self, symbol: str, rule: str, monthly: set[str] | None = None) -> OptionChainRecord | None: ...


class _CacheChains:
    def __init__(self, cache: _ChainRecords, rule: str, monthly: MonthlyExpiries) -> None:
        self.cache = cache
        self.rule = rule
        self.monthly = monthly

    def option_chain(self, symbol: str) -> Mapping[str, Any] | None:
        record = self.cache.chain_by_rule(symbol, self.rule, self.monthly(symbol))
        return None if record is None else record.payload


class _StoredChains:
    def __init__(self, storage: Storage, clock: Clock, rule: str, monthly: MonthlyExpiries) -> None:
        self.storage = storage
        self.clock = clock
        self.rule = rule
        self.monthly = monthly

    def option_chain(self, symbol: str) -> Mapping[str, Any] | None:
        now = self.clock.now()
        try:
            expiries = live_expiries(self.storage.option_chains.expiries(symbol), now)
            expiry = choose_expiry(expiries, now, self.rule, monthly=self.monthly(symbol) or None)
            record = self.storage.option_chains.latest(symbol, expiry)
        except (StorageError, NoExpiry, InstrumentError):
            return None
        return None if record is None else record.payload


def cache_chains(cache: _ChainRecords, rule: str = "nearest", monthly: MonthlyExpiries = _no_monthly) -> MarketView:
    """Role all: option chains from the MDS read model in the same process, of the expiry `rule` picks
    (strategy.expiry) among those not yet over."""
    return _CacheChains(cache, rule, monthly)


def stored_chains(storage: Storage, clock: Clock, rule: str = "nearest",
                  monthly: MonthlyExpiries = _no_monthly) -> MarketView:
    """Role trader reading a shared database: the stored chain of the expiry `rule` picks among the live
    stored ones (an expiry is over at 15:30 IST on its day)."""
    return _StoredChains(storage, clock, rule, monthly)


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
            status = feed_status_from_message(data)
            self.target.tell(FeedStatusChanged(status.event, status.symbol, status.at))
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


def assemble_signals(infra: Infrastructure, sink: SignalSink | None, *, chains: MarketView | None,
                     mds: MdsConnection | None = None, risk_view: RiskView | None = None,
                     positions: PositionsView | None = None,
                     options: StrategyOptions | None = None,
                     instruments: InstrumentBook | None = None) -> SignalsHandles:
    """The signals subtree. Without `mds`, candles come from the bus (and the warm-up from storage).
    `instruments`: the lot sizes of the contracts the strategy trades."""
    s = infra.settings
    options = options or StrategyOptions()
    symbols = tuple(s.feed.symbols)
    if sink is None:
        log.event("STRATEGY_RECORDING_ONLY", "no trader in this process: signals are recorded, not traded",
                  level=30)
        sink = RecordingSink()
    history = None if mds is not None else _stored_history(infra.storage, s.strategy.history_minutes)
    health: dict[str, Callable[[], HealthCheck]] = {}
    status: dict[str, Callable[[], Any]] = {"strategy": lambda: dict(options.stats)}
    before_stop: list[Callable[[], None]] = []
    signals = infra.supervisor("signals")
    strategy_sink = sink
    # Its handle works from now on: candles published while the rest of the tree starts are buffered for it.
    exits = Store("strategy.exits", ExitFollowUp(s.strategy.exit_reraise_seconds))  # outlives the strategy
    strategy = signals.add(ChildSpec("strategy", lambda link: StrategyActor.start(
        link, s, strategy_sink, chains, infra.clock, infra.scheduler, options, history, positions, risk_view,
        instruments, calendar=infra.calendar, exits=exits)))

    if mds is not None:
        state = MdsClientState()
        client, view = mds.client, mds.view
        chain_symbols = tuple(sym for sym in symbols if sym in s.option_chain.underlyings)
        signals.add(ChildSpec("mds-client", lambda link: MdsClientActor.start(
            link, client, view, symbols, chain_symbols, strategy.tell, infra.clock, infra.scheduler, state,
            history_minutes=s.strategy.history_minutes, poll_seconds=s.market_data.candle_poll_seconds,
            fetch_delay=s.market_data.candle_fetch_delay_seconds,
            chain_poll_seconds=s.option_chain.poll_seconds, bus=infra.bus if s.storage.redis_url else None),
            backoff=infra.backoff()))
        before_stop.append(client.close)
        status["mds_client"] = state.snapshot

        def mds_health() -> HealthCheck:
            ok = state.consecutive_failures == 0
            return HealthCheck(ok, {"base_url": client.base_url, **({} if ok else {"error": state.last_error})})

        health["mds"] = mds_health
    else:
        if infra.role == "trader" and not s.storage.redis_url:
            log.event("STRATEGY_NO_MARKET_DATA", f"role trader with market_data.provider {s.market_data.provider} "
                      "and no storage.redis_url: no candles can reach the strategy (set "
                      "MARKET_DATA_PROVIDER=mds, or a shared Redis)", level=30)
        subscription = _BusCandles(infra.bus, symbols, strategy, infra.scheduler)
        subscription.start()
        before_stop.append(subscription.close)

    subtree = Subtree(spec=infra.supervised(signals), health=health, status=status, before_stop=before_stop)
    return SignalsHandles(subtree=subtree, strategy=strategy, options=options, sink=sink)
