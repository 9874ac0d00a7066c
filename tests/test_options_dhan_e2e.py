"""Trading options on Dhan as a trader would (issue 10, items 1, 2, 3 and 9), end to end: the whole runtime
(role all: feed, chains, strategy, trade actors, Dhan broker, control API) against the fake Dhan over real
sockets, with the fake serving a scrip master in which NIFTY options have a lot of 65 and a tick of 0.05.

- the master is downloaded from `dhan.scrip_master_url` into the `instruments` table and the book;
- a strategy entry's quantity is lots x 65, and its limit price lies on the tick;
- a manual entry of 100 units is refused naming 65; a trading symbol works where SEC_<id> does;
- the traded contract is subscribed on the websocket when the entry is placed and unsubscribed after the
  exit; the exit is priced from its ticks;
- a manual entry without a price on a contract nothing quotes fetches a REST LTP instead of NO_PRICE.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from actors.market_data.messages import candle_message
from config.settings import load_settings
from core.instruments import Instrument, on_tick, round_to_tick
from core.market import IST, Candle
from core.orders import Side, marketable_limit
from daemon.runtime import Runtime
from telemetry.logs import configure_logging
from tests.fakedhan import FakeDhan
from tests.fakedhan.rest import SCRIP_MASTER_PATH
from tests.fakedhan.scripmaster import fake_master
from tests.support.series import trend_ticks
from tests.support.waiting import eventually

TOKEN = "e2e-control-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NIFTY_SPOT = 25663.41  # the ATM CE (25650) is priced 13.41 + 80 = 93.41 by the fake: off the tick once banded
ENTRY_MINUTE = 46  # where trend_ticks' series first scores an entry (tests/test_strategy_actor.py)


def candles_of(ticks: list[tuple[float, str, float]]) -> list[Candle]:
    bars: dict[int, list[float]] = {}
    for ts, _, price in ticks:
        bar = bars.setdefault(int(ts // 60) * 60, [price, price, price, price])
        bar[1], bar[2], bar[3] = max(bar[1], price), min(bar[2], price), price
    return [Candle("NIFTY", ts, *bar) for ts, bar in sorted(bars.items())]


@pytest.fixture
def fake() -> Iterator[FakeDhan]:
    configure_logging("WARNING")
    server = FakeDhan()
    today = dt.datetime.now(IST).date()
    server.set_scrip_master(fake_master(today, spots={"NIFTY": NIFTY_SPOT}))  # expiry lists from it too
    server.state.set_ltp("IDX_I", 13, NIFTY_SPOT)
    server.state.hold_orders()  # the test fills them, at prices it chooses
    with server:
        yield server


@pytest.fixture
def runtime(fake: FakeDhan, pg_url: str) -> Iterator[Runtime]:
    overrides: dict[str, Any] = {
        "storage": {"url": pg_url},
        "dhan": fake.dhan_settings(request_timeout_seconds=2.0),
        "feed": {"source": "dhan", "symbols": ["NIFTY"], "stale_seconds": 600,
                 "reconnect_initial_seconds": 0.05, "reconnect_max_seconds": 0.2},
        "broker": {"kind": "dhan", "read_retry_initial_seconds": 0.01},
        "option_chain": {"underlyings": ["NIFTY"], "poll_seconds": 3.0},
        "http": {"mds_port": 0, "control_port": 0, "threads": 4},
        "control": {"token": TOKEN},
        "risk": {"session_start": "00:00", "session_end": "24:00", "square_off_time": "24:00",
                 "daily_max_loss": 0.0, "daily_max_loss_pct": 0.0},
        "calendar": {"enabled": False},  # any day, any hour
        "execution": {"max_slippage_pct": 50.0, "order_timeout_seconds": 60.0,
                      "max_quote_age_seconds": 30.0},  # a loaded machine must not age the pushed tick
        "strategy": {"timeframes": [60], "timeframe_weights": {"60": 1.0}, "entry_max_candle_age_seconds": 0,
                     "history_minutes": 0},
        "reconcile": {"interval_seconds": 0.5},
        "supervision": {"backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.5},
        "log": {"level": "WARNING"},
    }
    process = Runtime(load_settings(env={}, overrides=overrides), "all").start()
    try:
        assert process.trading is not None and process.trading.ready.wait(15)
        eventually(lambda: len(process.instruments) > 0, 15, message="the scrip master loaded")
        yield process
    finally:
        process.shutdown()


def _control(runtime: Runtime) -> str:
    return next(s for s in runtime.servers if s.name == "control").url


def _mds(runtime: Runtime) -> str:
    return next(s for s in runtime.servers if s.name == "mds").url


def _monthly(runtime: Runtime, strike: float, option_type: str = "CE") -> Instrument:
    index = runtime.instruments.index
    expiry = sorted(index.monthly_expiries("NIFTY"))[0]
    found = index.option("NIFTY", expiry, strike, option_type)
    assert found is not None
    return found


def _orders_for(fake: FakeDhan, security_id: str) -> list[Any]:
    with fake.state._lock:
        return [o for o in fake.state.orders.values() if o.security_id == security_id]


def _subscribed(fake: FakeDhan, security_id: str, codes: tuple[int, ...], unsubscribe: bool = False) -> bool:
    records = fake.feed.unsubscriptions if unsubscribe else fake.feed.subscriptions
    return any(r.request_code in codes and ("NSE_FNO", security_id) in r.instruments for r in list(records))


def test_the_master_is_downloaded_stored_and_serves_lots_ticks_and_trading_symbols(
        fake: FakeDhan, runtime: Runtime) -> None:
    assert len(fake.rest.requests_to(SCRIP_MASTER_PATH)) == 1
    stored = runtime.storage.instruments
    assert stored.loaded_at() is not None and len(stored.all()) == len(runtime.instruments)
    contract = _monthly(runtime, 25650.0)
    assert runtime.instruments.lot_size(contract.symbol) == 65
    assert runtime.instruments.tick_size(contract.trading_symbol) == 0.05
    assert runtime.instruments.canonical(contract.trading_symbol) == contract.symbol
    status = requests.get(f"{_control(runtime)}/v1/status", timeout=5).json()["instruments"]
    assert status["source"] == "dhan" and status["refreshes"] == 1 and status["instruments"] == len(runtime.instruments)


def test_a_strategy_entry_is_lots_times_65_on_the_tick_and_its_contract_rides_the_feed_until_the_exit(
        fake: FakeDhan, runtime: Runtime) -> None:
    assert runtime.market_data is not None
    cache = runtime.market_data.cache
    eventually(lambda: cache.option_chain("NIFTY", None) is not None, 15, message="the NIFTY chain polled")
    for candle in candles_of(trend_ticks())[:ENTRY_MINUTE + 1]:  # the MDS publishes, the strategy decides
        runtime.bus.publish("candles:NIFTY", candle_message(candle))

    trade = eventually(lambda: next(iter(runtime.storage.trades.list_trades()), None), 15,
                       message="the strategy's trade")
    atm = runtime.instruments.resolve(trade.symbol)
    assert atm.underlying == "NIFTY" and atm.strike == 25650.0 and atm.option_type == "CE"
    assert trade.qty % 65 == 0 and trade.qty >= 65  # lots x the master's 65
    [entry] = eventually(lambda: _orders_for(fake, atm.security_id), 10, message="the entry at the fake")
    assert entry.quantity == trade.qty and entry.transaction_type == "BUY"
    assert on_tick(entry.price, 0.05) and entry.price == round_to_tick(marketable_limit(93.41, Side.BUY, 1.0),
                                                                       0.05, Side.BUY)
    eventually(lambda: _subscribed(fake, atm.security_id, (15, 17, 21)), 10,
               message="the traded contract subscribed on the websocket")

    fake.state.fill(entry.order_id, price=93.45)
    eventually(lambda: runtime.storage.trades.get_trade(trade.pos_id).state == "POSITION_OPEN", 10,
               message="the position open")
    # the contract's own ticks price the exit
    eventually(lambda: fake.feed.push_tick(int(atm.security_id), 101.52, segment="NSE_FNO") > 0
               and cache.quote(atm.symbol) is not None, 10, message="a tick of the contract in the cache")
    answer = requests.post(f"{_control(runtime)}/v1/trades/{trade.pos_id}/exit", json={"reason": "test"},
                           headers=AUTH, timeout=5)
    assert answer.status_code == 202, answer.text
    exit_order = eventually(lambda: next((o for o in _orders_for(fake, atm.security_id)
                                          if o.transaction_type == "SELL"), None), 10, message="the exit order")
    # marketable and on the tick: 101.52 less the 1 % band is 100.5048 -> 100.50, rounded toward the market
    assert exit_order.price == 100.5 and on_tick(exit_order.price, 0.05)
    assert not _subscribed(fake, atm.security_id, (16, 18, 22), unsubscribe=True)  # still held
    fake.state.fill(exit_order.order_id, price=100.55)
    eventually(lambda: runtime.storage.trades.get_trade(trade.pos_id).state == "CLOSED", 10, message="closed")
    eventually(lambda: _subscribed(fake, atm.security_id, (16, 18, 22), unsubscribe=True), 10,
               message="the contract unsubscribed after the exit")


def test_manual_entries_take_trading_symbols_whole_lots_and_fetch_a_price_nothing_quotes(
        fake: FakeDhan, runtime: Runtime) -> None:
    contract = _monthly(runtime, 25700.0)  # the monthly is not polled (strategy.expiry = nearest): no quote
    url = f"{_control(runtime)}/v1/trades"
    refused = requests.post(url, json={"pos_id": "MANUAL-1", "symbol": contract.trading_symbol, "side": "BUY",
                                       "qty": 100}, headers=AUTH, timeout=5)
    assert refused.status_code == 400 and refused.json()["param"] == "qty"
    assert "lot size is 65" in refused.json()["detail"] and "65 or 130" in refused.json()["detail"]
    unknown = requests.post(url, json={"pos_id": "MANUAL-1", "symbol": "NIFTY-Dec2099-1-CE", "side": "BUY",
                                       "qty": 65}, headers=AUTH, timeout=5)
    assert unknown.status_code == 400 and unknown.json()["param"] == "symbol"

    fake.state.set_ltp("NSE_FNO", int(contract.security_id), 101.55)
    accepted = requests.post(url, json={"pos_id": "MANUAL-1", "symbol": contract.trading_symbol, "side": "BUY",
                                        "qty": 130}, headers=AUTH, timeout=10)
    assert accepted.status_code == 202, accepted.text
    assert fake.rest.requests_to("/marketfeed/ltp"), "a REST LTP was fetched"
    trade = runtime.storage.trades.get_trade("MANUAL-1")
    assert trade is not None and trade.symbol == contract.symbol and trade.qty == 130
    [order] = eventually(lambda: _orders_for(fake, contract.security_id), 10, message="the manual entry order")
    assert order.quantity == 130 and order.price == 102.55  # 101.55 + 1 % = 102.5655 -> 102.57 -> down to 102.55
    # the entry put the contract on the feed: its ticks answer /v1/quote, asked by its trading symbol
    eventually(lambda: _subscribed(fake, contract.security_id, (15, 17, 21)), 10, message="subscribed")
    eventually(lambda: fake.feed.push_tick(int(contract.security_id), 102.4, segment="NSE_FNO") > 0
               and runtime.market_data is not None and runtime.market_data.cache.quote(contract.symbol), 10,
               message="a tick of the contract")
    quote = requests.get(f"{_mds(runtime)}/v1/quote", params={"symbol": contract.trading_symbol}, timeout=5)
    assert quote.status_code == 200, quote.text
    assert quote.json()["symbol"] == contract.symbol and quote.json()["ltp"] == 102.4
    assert quote.json()["requested"] == contract.trading_symbol


def _open_manual(fake: FakeDhan, runtime: Runtime, pos_id: str, contract: Instrument, **exits: float) -> Any:
    """A manual BUY of one lot at 100 with its own protective exits, filled at the fake at 100."""
    fake.state.set_ltp("NSE_FNO", int(contract.security_id), 100.0)
    answer = requests.post(f"{_control(runtime)}/v1/trades", json={
        "pos_id": pos_id, "symbol": contract.trading_symbol, "side": "BUY", "qty": 65, "price": 100.0, **exits},
        headers=AUTH, timeout=10)
    assert answer.status_code == 202, answer.text
    [entry] = eventually(lambda: _orders_for(fake, contract.security_id), 10, message="the entry at the fake")
    fake.state.fill(entry.order_id, price=100.0)
    eventually(lambda: runtime.storage.trades.get_trade(pos_id).state == "POSITION_OPEN", 10, message="open")
    eventually(lambda: _subscribed(fake, contract.security_id, (15, 17, 21)), 10, message="on the feed")
    eventually(lambda: requests.get(f"{_control(runtime)}/v1/status", timeout=5).json()["trading"]["protection"]
               ["positions"].get(pos_id), 10, message="guarded")


def _sells(fake: FakeDhan, contract: Instrument, order_type: str) -> list[Any]:
    return [o for o in _orders_for(fake, contract.security_id)
            if o.transaction_type == "SELL" and o.order_type == order_type]


def _exit_on_ticks(fake: FakeDhan, runtime: Runtime, pos_id: str, contract: Instrument,
                   prices: tuple[float, ...], fill: float) -> str:
    """Push the contract's ticks on the websocket until the exit order reaches the fake, fill it there; the
    trade's exit reason once CLOSED. The broker-side stop rested at the fake from the entry's fill until the
    exit: it was cancelled before the exit order was sent (both must never sell)."""
    security_id = int(contract.security_id)
    [stop] = eventually(lambda: _sells(fake, contract, "STOP_LOSS"), 10, message="the broker-side stop at Dhan")
    for price in prices:
        assert fake.feed.push_tick(security_id, price, segment="NSE_FNO") > 0
    exit_order = eventually(lambda: next(iter(_sells(fake, contract, "LIMIT")), None), 10, message="the exit order")
    assert stop.status == "CANCELLED" and stop.updated <= exit_order.created, "the stop was cancelled first"
    fake.state.fill(exit_order.order_id, price=fill)
    eventually(lambda: runtime.storage.trades.get_trade(pos_id).state == "CLOSED", 10, message="closed")
    row = runtime.storage.trades.get_trade(pos_id)
    assert row.exit_price == pytest.approx(fill)
    return str(row.detail["exit_reason"])


def test_a_stop_loss_fires_on_the_contracts_own_ticks_and_the_exit_fills_at_dhan(
        fake: FakeDhan, runtime: Runtime) -> None:
    contract = _monthly(runtime, 25700.0)
    _open_manual(fake, runtime, "STOP-DHAN", contract, stop_loss_pct=10.0)
    assert _exit_on_ticks(fake, runtime, "STOP-DHAN", contract, (97.0, 93.0, 89.5), fill=89.45) == "STOP_LOSS"


def test_a_trailing_stop_follows_the_contracts_rise_at_dhan_then_exits(fake: FakeDhan, runtime: Runtime) -> None:
    contract = _monthly(runtime, 25750.0)
    _open_manual(fake, runtime, "TRAIL-DHAN", contract, trailing_stop_pct=10.0)
    [stop] = eventually(lambda: _sells(fake, contract, "STOP_LOSS"), 10, message="the broker-side stop at Dhan")
    assert stop.trigger_price == 88.2  # 2 % (exits.broker_stop_pct) below the trail of 90
    for price in (104.0, 115.0, 120.0):
        assert fake.feed.push_tick(int(contract.security_id), price, segment="NSE_FNO") > 0
    # the trail is at 108 now; the resting stop follows it (modified at Dhan), 2 % below: 105.84 -> 105.85
    eventually(lambda: stop.trigger_price == 105.85 and stop.modifications >= 1, 10, message="the stop moved up")
    reason = _exit_on_ticks(fake, runtime, "TRAIL-DHAN", contract, (110.0, 107.5), fill=107.5)
    assert reason == "TRAILING_STOP"
