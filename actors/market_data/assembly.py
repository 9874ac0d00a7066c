"""The `market_data` subtree (role mds / all; the seed's Server A): built and wired here.

    market_data (one_for_one)
      ├─ instrument-master         Dhan's scrip master: at start when stale, each trading day (live only)
      ├─ ingest (rest_for_one)
      │   ├─ candle-persister      batched upserts, survives database outages
      │   ├─ publisher             bus: ticks:<s>, candles:<s>, quote:<s>, option_chain:<s>
      │   ├─ candles (dynamic)     candles:NIFTY, candles:SEC_49081, ...   one builder per symbol
      │   └─ feed                  sim | replay | dhan, with backoff; + the contracts positions hold
      └─ option-chain-poller       expiry list + the nearest and strategy.expiry's chains, with backoff

rest_for_one inside `ingest`: when the persister or publisher restart, everything after them restarts too
(they are the addresses the later actors hold); when the feed restarts, the builders keep their state.
The poller sits beside `ingest`: a feed reconnect does not restart it, nor it the feed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from actors.clock import VirtualClock
from actors.instruments import InstrumentBook, fetch_scrip_master, live_master, snapshot_book
from actors.market_data.candle_builder import CandleBuilder
from actors.market_data.contracts import ContractFeed
from actors.market_data.feed import FeedActor, FeedState
from actors.market_data.instrument_master import InstrumentMasterRefresher, MasterState
from actors.market_data.market_cache import MarketCache
from actors.market_data.option_chain_poller import ChainSource, OptionChainPoller, PollerState, SimChainSource
from actors.market_data.persister import CandlePersister, PersisterState
from actors.market_data.publisher import Publisher, PublisherStats
from actors.sources.base import TickSource
from actors.wiring import HealthCheck, Infrastructure, Subtree
from config.reference import load_calendar
from supervision.outbox import Outbox
from supervision.supervisor import ChildHandle, ChildSpec, Strategy, SupervisorHandle

__all__ = ["CandleListener", "MarketDataHandles", "MarketDataOptions", "assemble_market_data"]

CandleListener = Callable[[str, list[Any], list[Any]], None]  # (symbol, closed, revised): the replay runner


@dataclass(frozen=True)
class MarketDataOptions:
    """What a caller may set besides the settings: the replay runner and tests."""

    candle_listeners: tuple[CandleListener, ...] = ()
    chain_source: ChainSource | None = None  # default: Dhan with credentials, the simulator with the sim feed


@dataclass(frozen=True)
class MarketDataHandles:
    subtree: Subtree
    cache: MarketCache  # the MDS read model: quotes, candles, option chains (the MDS API serves it)
    instruments: InstrumentBook  # the instrument master (refreshed here when Dhan's serves)
    contracts: ContractFeed  # keeps the contracts positions hold on the feed (an actors.wiring.ContractWatch)
    feed_state: FeedState
    persister: ChildHandle
    publisher: ChildHandle
    candles: SupervisorHandle  # the candle builders (one dynamic child per symbol)


def make_source(infra: Infrastructure) -> Callable[[], TickSource]:
    s = infra.settings
    if s.feed.source == "replay":
        from actors.sources.replay import ReplaySource

        clock = infra.clock if isinstance(infra.clock, VirtualClock) else None
        return lambda: ReplaySource(s.feed.replay_path, s.feed.replay_speed, clock,
                                    max_wait_seconds=s.feed.replay_max_wait_seconds)
    if s.feed.source == "dhan":
        from actors.dhan.feed import DhanFeedSource

        return lambda: DhanFeedSource(s, s.feed.symbols, infra.clock, token=infra.token)
    from actors.sources.sim import SimSource

    return lambda: SimSource(s.feed.symbols, s.feed.sim_seed, s.feed.sim_ticks_per_second, infra.clock)


def make_chain_source(infra: Infrastructure, cache: MarketCache, instruments: InstrumentBook) -> ChainSource | None:
    s = infra.settings
    if s.dhan.client_id and s.dhan.access_token:
        from actors.dhan.client import DhanClient

        return DhanClient(s, clock=infra.clock, token=infra.token)
    if s.feed.source == "sim":
        return SimChainSource(cache, infra.clock, instruments)
    return None


def assemble_market_data(infra: Infrastructure, options: MarketDataOptions = MarketDataOptions(),
                         instruments: InstrumentBook | None = None) -> MarketDataHandles:
    """The market_data subtree. `instruments`: the book the runtime shares with the other subtrees (default:
    the shipped snapshot, or an empty book Dhan's master fills when the feed or broker is Dhan)."""
    s = infra.settings
    live_instruments = live_master(s)
    if instruments is None:
        instruments = InstrumentBook() if live_instruments else snapshot_book(infra.clock.now())
    cache = MarketCache(s.feed.symbols, infra.clock, infra.storage, underlyings=s.option_chain.underlyings)
    if infra.storage_ready.is_set():
        cache.warm_from_storage()  # before the builders start: they restore their last candle from here
    live = s.feed.source != "replay"
    feed_state = FeedState(s.feed.source, tuple(s.feed.symbols), live=live)
    persister_state = PersisterState()
    publisher_stats = PublisherStats()
    poller_state = PollerState()
    listeners = list(options.candle_listeners)

    market = infra.supervisor("market_data")
    master_state = MasterState()
    if live_instruments:
        calendar = load_calendar(s.calendar.holidays_file)
        url, timeout = s.dhan.scrip_master_url, max(30.0, s.dhan.request_timeout_seconds)
        market.add(ChildSpec("instrument-master", lambda link: InstrumentMasterRefresher.start(
            link, instruments, lambda: fetch_scrip_master(url, timeout=timeout), infra.storage, infra.clock,
            infra.scheduler, calendar, s.dhan.scrip_master_refresh_time, master_state), backoff=infra.backoff()))
    ingest = infra.supervisor("ingest")
    candles = infra.supervisor("candles", spec_for_key=lambda symbol: ChildSpec(
        id=f"candles:{symbol}",
        start=lambda link: CandleBuilder.start(link, str(symbol), s.feed.late_grace_seconds, cache, infra.storage,
                                               to_persister, to_publisher, listeners)))

    recorder = None
    if infra.record_path:
        from actors.sources.recorder import TickRecorder

        recorder = TickRecorder(infra.record_path)

    persister = ingest.add(ChildSpec("candle-persister", lambda link: CandlePersister.start(
        link, infra.storage, infra.scheduler, infra.clock, s.storage.candle_buffer_max, state=persister_state)))
    publisher = ingest.add(ChildSpec("publisher", lambda link: Publisher.start(link, infra.bus, publisher_stats)))
    ingest.add(infra.supervised(candles))
    feed = ingest.add(ChildSpec("feed", lambda link: FeedActor.start(
        link, make_source(infra), feed_state, candles, publisher, cache, infra.clock,
        infra.scheduler, s.feed.stale_seconds, wrap_sink=recorder.wrap if recorder else None,
        advance_candles=live, calendar=infra.calendar),
        backoff=infra.backoff(), critical_tells=False))
    # Every builder sends to the same two actors: through outboxes, one mailbox message per burst.
    to_persister, to_publisher = Outbox(persister), Outbox(publisher)
    market.add(infra.supervised(ingest, strategy=Strategy.REST_FOR_ONE))

    contracts = ContractFeed(feed, feed_state, s.feed.symbols)

    source = (options.chain_source if options.chain_source is not None
              else make_chain_source(infra, cache, instruments))
    chain_recorder = None
    if infra.record_path and source is not None and s.option_chain.underlyings:
        from actors.sources.chains import ChainRecorder, chains_path_for

        # `run --record FILE` also writes the chains the poller fetches, for `replay`: FILE.chains.jsonl
        chain_recorder = ChainRecorder(chains_path_for(infra.record_path), infra.clock)
        source = chain_recorder.wrap(source)
    if source is not None and s.option_chain.underlyings:
        market.add(ChildSpec("option-chain-poller", lambda link: OptionChainPoller.start(
            link, source, tuple(s.option_chain.underlyings), tuple(s.option_chain.expiries),
            s.option_chain.poll_seconds, cache, infra.storage, publisher, infra.clock,
            infra.scheduler, poller_state, rule=s.strategy.expiry, monthly=instruments.monthly_expiries,
            calendar=infra.calendar), backoff=infra.backoff()))

    def feed_health() -> HealthCheck:
        ages = feed_state.ages(infra.clock.monotonic())
        market_open = infra.calendar.is_open(infra.clock.now())
        stale = sorted(feed_state.stale) if market_open else []  # a closed market's silence is not staleness
        detail = {"source": feed_state.source, "finished": feed_state.finished, "market_open": market_open,
                  "stale": stale, "last_tick_age_seconds": ages}
        return HealthCheck(not stale, detail)

    def feed_status() -> dict[str, Any]:
        return {"source": feed_state.source, "finished": feed_state.finished, "ticks": feed_state.ticks,
                "unknown_symbol_ticks": feed_state.unknown_ticks, "batches": feed_state.batches,
                "contracts": contracts.watched(), "contracts_subscribed": sorted(feed_state.contracts),
                "contract_ticks": feed_state.contract_ticks,
                "stale": sorted(feed_state.stale), "flow_waits": feed_state.flow_waits,
                "source_status": feed_state.live_source_status()}

    def chain_status() -> dict[str, Any]:
        return {"polls": poller_state.polls, "idle": poller_state.idle or None, "errors": poller_state.errors,
                "last_error": poller_state.last_error or None,
                "expiries": {k: list(v) for k, v in poller_state.expiries.items()},
                "invalid": sorted(f"{a} {b}" for a, b in poller_state.invalid)}

    def bus_health() -> HealthCheck:
        return HealthCheck(not publisher_stats.degraded, publisher_stats.snapshot())

    subtree = Subtree(
        spec=infra.supervised(market),
        health={"feed": feed_health, "bus_publish": bus_health},
        status={"feed": feed_status, "persistence": persister_state.snapshot,
                "bus": publisher_stats.snapshot, "option_chains": chain_status,
                "market_data": cache.status,
                "instruments": lambda: {**instruments.status(),
                                        **(master_state.snapshot() if live_instruments else {})}},
        before_stop=[r.close for r in (recorder, chain_recorder) if r is not None],
    )
    return MarketDataHandles(subtree=subtree, cache=cache, instruments=instruments, contracts=contracts,
                             feed_state=feed_state, persister=persister, publisher=publisher, candles=candles)
