"""Role `mds` (the seed's Server A): how its actors are wired and supervised.

    market_data (rest_for_one)
      ├─ candle-persister      batched upserts, survives database outages
      ├─ publisher             bus: ticks:<s>, candles:<s>, quote:<s>, option_chain:<s>
      ├─ candles (dynamic)     candles:NIFTY, candles:SEC_49081, ...   one builder per symbol
      └─ feed                  sim | replay | dhan, with backoff
    option-chain-poller (backoff)

rest_for_one: when the persister or publisher restart, everything after them restarts too (they are the
addresses the later actors hold); when the feed restarts, the builders keep their state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from actors.clock import VirtualClock
from actors.market_data.candle_builder import CandleBuilder
from actors.market_data.feed import FeedActor, FeedState
from actors.market_data.market_cache import MarketCache
from actors.market_data.option_chain_poller import ChainSource, OptionChainPoller, PollerState, SimChainSource
from actors.market_data.persister import CandlePersister, persister_status
from actors.market_data.publisher import Publisher
from actors.sources.base import TickSource
from daemon.runtime import HealthCheck, Part, RuntimeContext
from supervision.outbox import Outbox
from supervision.supervisor import ChildSpec, Strategy, supervisor_spec

__all__ = ["MdsParts", "assemble_mds"]


class MdsParts:
    """Handles a test or the replay runner may want after assembly."""

    def __init__(self) -> None:
        self.cache: MarketCache | None = None
        self.feed_state: FeedState | None = None
        self.candle_listeners: list[Callable[[str, list[Any], list[Any]], None]] = []


def make_source(ctx: RuntimeContext) -> Callable[[], TickSource]:
    s = ctx.settings
    if s.feed.source == "replay":
        from actors.sources.replay import ReplaySource

        clock = ctx.clock if isinstance(ctx.clock, VirtualClock) else None
        return lambda: ReplaySource(s.feed.replay_path, s.feed.replay_speed, clock,
                                    max_wait_seconds=s.feed.replay_max_wait_seconds)
    if s.feed.source == "dhan":
        from actors.dhan.feed import DhanFeedSource

        return lambda: DhanFeedSource(s, s.feed.symbols, ctx.clock)
    from actors.sources.sim import SimSource

    return lambda: SimSource(s.feed.symbols, s.feed.sim_seed, s.feed.sim_ticks_per_second, ctx.clock)


def make_chain_source(ctx: RuntimeContext, cache: MarketCache) -> ChainSource | None:
    s = ctx.settings
    if s.dhan.client_id and s.dhan.access_token:
        from actors.dhan.client import DhanClient

        return DhanClient(s, clock=ctx.clock)
    if s.feed.source == "sim":
        return SimChainSource(cache, ctx.clock)
    return None


def assemble_mds(ctx: RuntimeContext, parts: MdsParts | None = None,
                 chain_source: ChainSource | None = None) -> Part:
    s = ctx.settings
    parts = parts or ctx.extras.setdefault("mds", MdsParts())
    cache = MarketCache(s.feed.symbols, ctx.clock, ctx.storage)
    if ctx.storage_ready.is_set():
        cache.warm_from_storage()  # before the builders start: they restore their last candle from here
    parts.cache = cache
    live = s.feed.source != "replay"
    feed_state = FeedState(s.feed.source, tuple(s.feed.symbols), live=live)
    parts.feed_state = feed_state
    persister_state: dict[str, Any] = {}
    publisher_stats: dict[str, Any] = {}
    poller_state = PollerState()

    market = ctx.supervisor("market_data")
    candles = ctx.supervisor("candles", spec_for_key=lambda symbol: ChildSpec(
        id=f"candles:{symbol}",
        start=lambda link: CandleBuilder.start(link, symbol, s.feed.late_grace_seconds, cache, ctx.storage,
                                               to_persister, to_publisher, parts.candle_listeners)))

    recorder = None
    if ctx.record_path:
        from actors.sources.recorder import TickRecorder

        recorder = TickRecorder(ctx.record_path)

    persister = market.add(ChildSpec("candle-persister", lambda link: CandlePersister.start(
        link, ctx.storage, ctx.scheduler, ctx.clock, s.storage.candle_buffer_max, state=persister_state)))
    publisher = market.add(ChildSpec("publisher", lambda link: Publisher.start(link, ctx.bus, publisher_stats)))
    market.add(supervisor_spec(candles, **ctx.supervisor_options()))
    market.add(ChildSpec("feed", lambda link: FeedActor.start(
        link, make_source(ctx), feed_state, candles, publisher, cache, ctx.clock,
        ctx.scheduler, s.feed.stale_seconds, wrap_sink=recorder.wrap if recorder else None,
        advance_candles=live),
        backoff=ctx.backoff(), critical_tells=False))
    # Every builder sends to the same two actors: through outboxes, one mailbox message per burst.
    to_persister, to_publisher = Outbox(persister), Outbox(publisher)
    children = [supervisor_spec(market, strategy=Strategy.REST_FOR_ONE, **ctx.supervisor_options())]

    source = chain_source if chain_source is not None else make_chain_source(ctx, cache)
    if source is not None and s.option_chain.underlyings:
        children.append(ChildSpec("option-chain-poller", lambda link: OptionChainPoller.start(
            link, source, tuple(s.option_chain.underlyings), tuple(s.option_chain.expiries),
            s.option_chain.poll_seconds, cache, ctx.storage, publisher, ctx.clock,
            ctx.scheduler, poller_state), backoff=ctx.backoff()))

    def feed_health() -> HealthCheck:
        ages = feed_state.ages(ctx.clock.monotonic())
        detail = {"source": feed_state.source, "finished": feed_state.finished,
                  "stale": sorted(feed_state.stale), "last_tick_age_seconds": ages}
        return HealthCheck(not feed_state.stale, detail)

    def feed_status() -> dict[str, Any]:
        return {"source": feed_state.source, "finished": feed_state.finished, "ticks": feed_state.ticks,
                "unknown_symbol_ticks": feed_state.unknown_ticks, "batches": feed_state.batches,
                "stale": sorted(feed_state.stale), "flow_waits": feed_state.flow_waits,
                "source_status": feed_state.live_source_status()}

    def chain_status() -> dict[str, Any]:
        return {"polls": poller_state.polls, "errors": poller_state.errors,
                "last_error": poller_state.last_error or None, "expiries": poller_state.expiries,
                "invalid": sorted(f"{a} {b}" for a, b in poller_state.invalid)}

    def bus_health() -> HealthCheck:
        return HealthCheck(not publisher_stats.get("degraded", False), dict(publisher_stats))

    before_stop: list[Callable[[], None]] = []
    if recorder is not None:
        before_stop.append(recorder.close)

    return Part(
        name="mds",
        children=children,
        health={"feed": feed_health, "bus_publish": bus_health},
        status={"feed": feed_status, "persistence": lambda: persister_status(persister_state),
                "bus": lambda: dict(publisher_stats), "option_chains": chain_status,
                "market_data": cache.status},
        mds_api=cache,
        before_stop=before_stop,
    )
