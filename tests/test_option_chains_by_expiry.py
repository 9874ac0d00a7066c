"""Option chains by expiry (issue 10, item 3): the MDS read model keeps one chain per (underlying, expiry),
drops a chain at 15:30 IST on its expiry day, restores live chains from the database at start, answers
/v1/option_chain without an expiry with the nearest live one; the poller and the strategy's ATM pick use
`strategy.expiry` (nearest, next, monthly); a chain whose expiry passed during the run is never used."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import falcon.testing
import pytest

from actors.clock import VirtualClock
from actors.instruments import InstrumentBook
from actors.market_data.market_cache import MarketCache
from actors.market_data.option_chain_poller import OptionChainPoller, PollChains, PollerState
from actors.signals.assembly import cache_chains, stored_chains
from actors.signals.messages import CandlesClosed, Drain, RecordingSink
from actors.signals.strategy import StrategyActor, StrategyOptions
from core.instruments import Instrument, InstrumentIndex
from core.market import IST, Candle
from core.signals import EntrySignalRaised
from httpapi.app import create_mds_app
from storage.opening import open_storage
from storage.records import OptionChainRecord
from storage.repositories import Storage
from supervision.scheduler import Scheduler
from tests.support.series import replay_settings, trend_ticks

WEEKLY_1, WEEKLY_2, MONTHLY = "2026-12-01", "2026-12-08", "2026-12-29"
BASE_ID = {WEEKLY_1: 1000, WEEKLY_2: 2000, MONTHLY: 3000}
STRIKES = (23950.0, 24000.0, 24050.0)


def at(day: str, hhmm: str) -> float:
    y, m, d = (int(p) for p in day.split("-"))
    hh, mm = (int(p) for p in hhmm.split(":"))
    return datetime(y, m, d, hh, mm, tzinfo=IST).timestamp()


def chain(expiry: str, spot: float = 24010.0) -> dict[str, Any]:
    oc = {}
    for n, strike in enumerate(STRIKES):
        base = BASE_ID[expiry] + 2 * n
        oc[f"{strike:.6f}"] = {"ce": {"security_id": base, "last_price": 100.0 + n},
                               "pe": {"security_id": base + 1, "last_price": 90.0 + n}}
    return {"last_price": spot, "oc": oc}


def record(expiry: str, updated_at: float) -> OptionChainRecord:
    return OptionChainRecord("NIFTY", expiry, chain(expiry), updated_at)


def master() -> InstrumentBook:
    rows = [Instrument("IDX_I", "13", "INDEX", "NIFTY", "NIFTY", 1, 0.01)]
    for expiry, base in BASE_ID.items():
        flag = "M" if expiry == MONTHLY else "W"
        for n, strike in enumerate(STRIKES):
            for k, option_type in enumerate(("CE", "PE")):
                rows.append(Instrument("NSE_FNO", str(base + 2 * n + k), "OPTIDX",
                                       f"NIFTY-Dec2026-{strike:g}-{option_type}", "NIFTY", 65, 0.05, expiry, strike,
                                       option_type, flag))
    return InstrumentBook(InstrumentIndex(rows), source="test", loaded_at=1.0)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(at(WEEKLY_1, "15:29"))


@pytest.fixture
def cache(clock: VirtualClock) -> MarketCache:
    cache = MarketCache(["NIFTY"], clock, underlyings=["NIFTY"])
    for expiry in BASE_ID:
        cache.set_option_chain(record(expiry, clock.now()))
    return cache


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    opened = open_storage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    opened.migrate()
    yield opened
    opened.close()


def test_a_chain_is_dropped_at_1530_ist_on_its_expiry_day(cache: MarketCache, clock: VirtualClock) -> None:
    assert cache.option_chain("NIFTY", None).expiry == WEEKLY_1  # type: ignore[union-attr]
    assert cache.chain_quote("SEC_1000") == (100.0, clock.now())
    clock.advance(at(WEEKLY_1, "15:30"))
    assert cache.option_chain("NIFTY", None).expiry == WEEKLY_2  # type: ignore[union-attr]
    assert cache.option_chain("NIFTY", WEEKLY_1) is None  # not even when asked for by name
    assert cache.chain_expiries("NIFTY") == [WEEKLY_2, MONTHLY]
    assert cache.chain_quote("SEC_1000") is None and cache.chain_quote("SEC_2000") == (100.0, at(WEEKLY_1, "15:29"))
    assert cache.drop_expired_chains() == [("NIFTY", WEEKLY_1)]
    assert cache.status()["option_chains"] == 2


def test_the_expiry_rule_picks_nearest_next_or_monthly_among_the_listed_expiries(
        cache: MarketCache, clock: VirtualClock) -> None:
    monthly = {MONTHLY}
    assert cache.chain_by_rule("NIFTY", "nearest", monthly).expiry == WEEKLY_1  # type: ignore[union-attr]
    assert cache.chain_by_rule("NIFTY", "next", monthly).expiry == WEEKLY_2  # type: ignore[union-attr]
    assert cache.chain_by_rule("NIFTY", "monthly", monthly).expiry == MONTHLY  # type: ignore[union-attr]
    # Dhan lists a week the poller has no chain for yet: `next` means that week, and no other chain stands in
    cache.set_listed_expiries("NIFTY", [WEEKLY_1, "2026-12-03", WEEKLY_2, MONTHLY])
    assert cache.chain_by_rule("NIFTY", "next", monthly) is None
    clock.advance(at(WEEKLY_1, "15:30"))
    assert cache.chain_by_rule("NIFTY", "nearest", monthly) is None  # 2026-12-03: listed, not polled yet
    assert cache.chain_by_rule("NIFTY", "next", monthly).expiry == WEEKLY_2  # type: ignore[union-attr]


def test_live_chains_come_back_from_the_database_at_start(storage: Storage, clock: VirtualClock) -> None:
    for expiry in BASE_ID:
        storage.option_chains.upsert("NIFTY", expiry, chain(expiry), at(WEEKLY_1, "15:00"))
    clock.advance(at(WEEKLY_1, "16:00"))
    restarted = MarketCache(["NIFTY"], clock, storage, underlyings=["NIFTY"])
    restarted.warm_from_storage()
    assert restarted.chain_expiries("NIFTY") == [WEEKLY_2, MONTHLY]
    # a fresher poll is not overwritten by an older stored copy
    restarted.set_option_chain(OptionChainRecord("NIFTY", WEEKLY_2, chain(WEEKLY_2, 24100.0), at(WEEKLY_1, "16:01")))
    restarted.restore_chains()
    assert restarted.option_chain("NIFTY", WEEKLY_2).payload["last_price"] == 24100.0  # type: ignore[union-attr]
    # role trader on a shared database: the stored chain of the rule's expiry, never an expired one
    assert stored_chains(storage, clock).option_chain("NIFTY")["last_price"] == 24010.0  # type: ignore[index]
    assert stored_chains(storage, clock, "monthly", lambda u: {MONTHLY}).option_chain("NIFTY") == chain(MONTHLY)


def test_option_chain_without_an_expiry_answers_the_nearest_live_one(cache: MarketCache, clock: VirtualClock) -> None:
    class Runtime:
        role = "mds"

        def health(self) -> tuple[bool, dict[str, Any]]:
            return True, {}

    client = falcon.testing.TestClient(create_mds_app(cache, Runtime()))
    assert client.simulate_get("/v1/option_chain", params={"symbol": "NIFTY"}).json["expiry"] == WEEKLY_1
    clock.advance(at(WEEKLY_1, "15:30"))
    assert client.simulate_get("/v1/option_chain", params={"symbol": "NIFTY"}).json["expiry"] == WEEKLY_2
    gone = client.simulate_get("/v1/option_chain", params={"symbol": "NIFTY", "expiry": WEEKLY_1})
    assert gone.status_code == 404


class ListedChains:
    """A ChainSource: Dhan's expiry list and a chain per expiry; it records what was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def expiry_list(self, symbol: str) -> list[str]:
        return [WEEKLY_1, WEEKLY_2, MONTHLY]

    def option_chain(self, symbol: str, expiry: str) -> dict[str, Any]:
        self.asked.append(expiry)
        return chain(expiry)


class Discard:
    def tell(self, message: Any) -> bool:
        return True


@pytest.mark.parametrize(("rule", "polled"), [("nearest", [WEEKLY_2]), ("next", [WEEKLY_2, MONTHLY]),
                                              ("monthly", [WEEKLY_2, MONTHLY])])
def test_the_poller_skips_an_expiry_that_is_over_and_polls_the_strategys(
        storage: Storage, clock: VirtualClock, rule: str, polled: list[str]) -> None:
    clock.advance(at(WEEKLY_1, "15:45"))  # expiry day, after the close
    cache = MarketCache(["NIFTY"], clock, underlyings=["NIFTY"])
    cache.set_option_chain(record(WEEKLY_1, at(WEEKLY_1, "15:00")))  # polled before the close
    source = ListedChains()
    ref = OptionChainPoller.start(None, source, ("NIFTY",), (), 600.0, cache, storage, Discard(), clock,
                                  Scheduler.shared(), PollerState(), rule=rule, monthly=lambda u: {MONTHLY})
    try:
        ref.ask(PollChains(), timeout=5)
    finally:
        ref.stop()
    assert source.asked[:len(polled)] == polled
    assert cache.chain_expiries("NIFTY") == polled and WEEKLY_1 not in storage.option_chains.expiries("NIFTY")


def test_a_chain_whose_expiry_passed_during_the_run_is_not_used_by_the_strategy(
        cache: MarketCache, clock: VirtualClock) -> None:
    bars: dict[int, list[float]] = {}
    for ts, _, price in trend_ticks():
        bar = bars.setdefault(int(ts // 60) * 60, [price, price, price, price])
        bar[1], bar[2], bar[3] = max(bar[1], price), min(bar[2], price), price
    candles = [Candle("NIFTY", ts, *bar) for ts, bar in sorted(bars.items())]

    def entry_after(expired: bool) -> EntrySignalRaised:
        if expired:
            clock.advance(at(WEEKLY_1, "15:30"))
        sink = RecordingSink()
        settings = replay_settings(strategy={"entry_max_candle_age_seconds": 0})
        ref = StrategyActor.start(None, settings, sink, cache_chains(cache, "nearest"), VirtualClock(),
                                  Scheduler.shared(), StrategyOptions(), None, None, None, master())
        ref.tell(CandlesClosed("NIFTY", tuple(candles[:47])))
        ref.ask(Drain(), timeout=10)
        ref.stop()
        [entry] = sink.signals
        assert isinstance(entry, EntrySignalRaised)
        return entry

    assert entry_after(expired=False).instrument == "SEC_1002"  # the 24000 CE of the week still trading
    assert entry_after(expired=True).instrument == "SEC_2002"  # the same strike of the next expiry
