"""The trading side's quote book (issue 10, items 2 and 9): prices with their age, a REST LTP when nothing
fresher is known (within the quote budget), and exits never priced as if a stale quote were the market."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from actors.clock import SystemClock
from actors.dhan.client import DhanClient
from actors.trading.quotes import STALE_BAND_FACTOR, QuoteBook, exit_pricing
from config.settings import Settings
from core.instruments import on_tick
from core.orders import Side
from tests.fakedhan import FakeDhan


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Fetch:
    def __init__(self, prices: dict[str, float]) -> None:
        self.prices = prices
        self.asked: list[str] = []

    def __call__(self, symbol: str) -> float | None:
        self.asked.append(symbol)
        return self.prices.get(symbol)


def test_a_fresh_tick_wins_a_stale_one_makes_way_for_a_rest_ltp_and_is_the_last_resort() -> None:
    clock = Clock(1000.0)
    ticks = {"SEC_1": (101.5, 999.0)}
    fetch = Fetch({"SEC_1": 103.0})
    book = QuoteBook(timed=[("tick", ticks.get)], fetch=fetch, now=clock, max_age_seconds=2.0)
    assert book.quote("SEC_1").source == "tick" and book("SEC_1") == 101.5 and fetch.asked == []  # type: ignore[union-attr]
    clock.now = 1001.5  # 2.5 s old: not fresh any more
    quote = book.quote("SEC_1")
    assert quote is not None and (quote.price, quote.source, quote.fresh) == (103.0, "rest", True)
    assert book("SEC_1") == 103.0 and fetch.asked == ["SEC_1"]  # the fetched price is reused while fresh
    clock.now = 1004.0
    fetch.prices.clear()  # over the budget, or the call failed
    stale = book.quote("SEC_1")
    assert stale is not None and (stale.price, stale.source, stale.fresh) == (101.5, "tick", False)
    assert book("SEC_2") is None  # nothing knows it
    asked = len(fetch.asked)
    assert book.known("SEC_1") == 101.5 and book.known("SEC_2") is None and len(fetch.asked) == asked  # no network


def test_pins_and_untimed_sources_count_as_fresh() -> None:
    book = QuoteBook([lambda symbol: 50.0 if symbol == "X" else None], now=Clock(0.0))
    book.set("Y", 7.5)
    assert book.quote("Y").source == "pin" and book("X") == 50.0 and book.quote("X").fresh  # type: ignore[union-attr]
    book.set("Y", None)
    assert book("Y") is None


def test_an_exit_is_priced_from_a_fresh_quote_on_the_tick_toward_the_market() -> None:
    book = QuoteBook(timed=[("tick", {"SEC_1": (101.52, 100.0)}.get)], now=Clock(100.5))
    sell = exit_pricing(book, "SEC_1", Side.SELL, fallback=90.0, band_pct=1.0, tick=0.05)
    assert (sell.expected, sell.limit, sell.widened) == (101.52, 100.5, False)  # 100.5048 -> down to 100.50
    buy = exit_pricing(book, "SEC_1", Side.BUY, fallback=90.0, band_pct=1.0, tick=0.05)
    assert buy.limit == 102.55 and on_tick(buy.limit, 0.05)  # 102.5352 -> 102.54 -> up to 102.55


def test_without_a_fresh_quote_an_exit_widens_its_band() -> None:
    clock = Clock(200.0)
    book = QuoteBook(timed=[("tick", {"SEC_1": (100.0, 100.0)}.get)], now=clock, max_age_seconds=2.0)
    stale = exit_pricing(book, "SEC_1", Side.SELL, fallback=90.0, band_pct=1.0, tick=0.05)
    assert stale.widened and stale.band_pct == STALE_BAND_FACTOR and stale.limit == 97.0
    nothing = exit_pricing(book, "SEC_9", Side.SELL, fallback=90.0, band_pct=1.0, tick=0.05)
    assert nothing.quote is None and nothing.expected == 90.0 and nothing.limit == 87.3


@pytest.fixture
def fake() -> Iterator[FakeDhan]:
    with FakeDhan() as server:
        yield server


def test_the_rest_ltp_comes_from_dhan_within_one_request_a_second(fake: FakeDhan) -> None:
    client = DhanClient(Settings().replace(dhan=fake.dhan_settings(request_timeout_seconds=2.0)), clock=SystemClock())
    try:
        fake.state.set_ltp("NSE_FNO", 40012, 88.35)
        assert client.ltp_of("SEC_40012") == 88.35
        assert client.ltp_of("SEC_40012") is None  # the budget is spent: no wait, no request
        assert len(fake.rest.requests_to("/marketfeed/ltp")) == 1
    finally:
        client.close()
