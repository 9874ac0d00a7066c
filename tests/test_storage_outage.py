"""PostgreSQL going away and coming back, through a TCP proxy (the shared server keeps running)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import pytest

from core.instruments import Instrument
from core.market import Candle
from storage.errors import StorageUnavailable
from storage.opening import open_storage
from storage.repositories import Storage
from tests.tcp_proxy import TcpProxy

CONNECT_TIMEOUT = 2.0  # libpq's minimum
T0 = 1_763_610_300

pytestmark = pytest.mark.timeout(60)


def via(proxy: TcpProxy, url: str) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def wait_until_works(call: Callable[[], object], within: float) -> float:
    """Retry `call` until it stops raising StorageUnavailable; returns how long that took."""
    started = time.monotonic()
    while True:
        try:
            call()
            return time.monotonic() - started
        except StorageUnavailable:
            if time.monotonic() - started > within:
                raise


@pytest.fixture
def proxy(pg_url: str) -> Iterator[TcpProxy]:
    parts = urlsplit(pg_url)
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as tcp_proxy:
        yield tcp_proxy


@pytest.fixture
def storage(proxy: TcpProxy, pg_url: str) -> Iterator[Storage]:
    storage = open_storage(via(proxy, pg_url), connect_timeout=CONNECT_TIMEOUT)
    storage.migrate()
    try:
        yield storage
    finally:
        storage.close()


@pytest.mark.parametrize("mode", ["blackhole", "refuse"])
def test_unreachable_database_raises_unavailable_quickly_and_recovers_without_reopening(
        storage: Storage, proxy: TcpProxy, mode: Literal["blackhole", "refuse"]) -> None:
    storage.candles.upsert_many([Candle("NIFTY", T0, 1, 2, 0.5, 1.5)])

    proxy.stop_accepting_and_cut(mode)
    durations: list[float] = []
    for call in (storage.ping, lambda: storage.trades.append_events("P1", 0, [("ORDER_PLACED", None, None, {}, 1.0)]),
                 lambda: storage.candles.last_ts("NIFTY")):
        started = time.monotonic()
        with pytest.raises(StorageUnavailable):
            call()
        durations.append(time.monotonic() - started)
    assert max(durations) < CONNECT_TIMEOUT + 1.0
    if mode == "refuse":  # once the outage is known, a refused database fails calls at once
        assert max(durations[1:]) < 0.5

    proxy.resume()
    wait_until_works(storage.ping, within=10.0)
    assert storage.candles.last_ts("NIFTY") == T0
    storage.candles.upsert_many([Candle("NIFTY", T0 + 60, 1, 2, 0.5, 1.5)])
    assert storage.candles.last_ts("NIFTY") == T0 + 60


def test_idle_connections_cut_during_an_outage_do_not_fail_the_first_calls_after_it(
        storage: Storage, proxy: TcpProxy) -> None:
    storage.ping()
    proxy.stop_accepting_and_cut("refuse")
    proxy.resume()
    # every pooled connection is dead now, yet the next call gets a fresh one instead of an error
    assert storage.candles.last_ts("NIFTY") is None
    storage.ping()


def test_open_storage_succeeds_while_the_database_is_down(proxy: TcpProxy, pg_url: str) -> None:
    proxy.stop_accepting_and_cut("refuse")
    storage = open_storage(via(proxy, pg_url), connect_timeout=CONNECT_TIMEOUT)
    try:
        with pytest.raises(StorageUnavailable):
            storage.ping()
        with pytest.raises(StorageUnavailable):
            storage.migrate()
        proxy.resume()
        wait_until_works(storage.migrate, within=10.0)
        storage.bot_state.put("risk", {"trading_enabled": True}, 1.0)
        assert storage.bot_state.get("risk") == {"trading_enabled": True}
    finally:
        storage.close()


def test_placement_lock_raises_unavailable_when_the_database_is_down(storage: Storage, proxy: TcpProxy) -> None:
    proxy.stop_accepting_and_cut("blackhole")
    started = time.monotonic()
    with pytest.raises(StorageUnavailable), storage.placement_lock("P1"):
        pass
    assert time.monotonic() - started < CONNECT_TIMEOUT + 1.0
    proxy.resume()
    with storage.placement_lock("P1"):
        pass


NEW_CALLS: dict[str, Callable[[Storage], object]] = {
    "append_events": lambda storage: storage.trades.append_events(
        "P1", len(storage.trades.events("P1")), [("ORDER_PLACED", None, None, {}, 1.0)]),
    "bot_state.merge": lambda storage: storage.bot_state.merge("control", {"kill_switch": True}, 1.0),
    "leases.claim": lambda storage: storage.leases.claim("P1", "proc-A", 100.0, 10.0),
    "leases.renew": lambda storage: storage.leases.renew("proc-A", 101.0),
    "instruments.replace_all": lambda storage: storage.instruments.replace_all(
        [Instrument("IDX_I", "13", "INDEX", "NIFTY", "NIFTY", 1, 0.05)], 1.0),
    "trades.closed_since": lambda storage: storage.trades.closed_since(0.0),
}


def test_new_calls_raise_unavailable_during_an_outage_and_work_after_it(storage: Storage, proxy: TcpProxy) -> None:
    proxy.stop_accepting_and_cut("refuse")
    for name, call in NEW_CALLS.items():
        started = time.monotonic()
        with pytest.raises(StorageUnavailable):
            call(storage)
        assert time.monotonic() - started < CONNECT_TIMEOUT + 1.0, name
    proxy.resume()
    wait_until_works(storage.ping, within=10.0)
    for call in NEW_CALLS.values():
        call(storage)
    assert storage.bot_state.get("control") == {"kill_switch": True}
    assert [lease.owner for lease in [storage.leases.owner_of("P1")] if lease] == ["proc-A"]
