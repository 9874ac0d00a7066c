"""Specs for DhanFeedSource: the SDK's MarketFeed against the fake Dhan feed over a real websocket."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import pytest

from actors.brokers.base import PermanentBrokerError
from actors.clock import SystemClock
from actors.dhan.errors import DhanAuthError
from actors.dhan.feed import DhanFeedSource, FeedPacket, TickAssembler, decode_packet, disconnect_reason
from actors.sources.base import SourceCallbacks
from config.settings import Settings
from core.market import Tick
from tests.fakedhan import IST_OFFSET, FakeDhan, packets

LTT_EPOCH = 1_729_750_500  # 2024-10-24 11:45:00 IST as a true epoch


class Sink:
    """Collects what the source hands over; tests wait on it instead of sleeping."""

    def __init__(self) -> None:
        self.ticks: list[Tick] = []
        self.batches: list[int] = []
        self.errors: list[BaseException] = []
        self.statuses: list[tuple[str, str]] = []
        self.gate: threading.Event | None = None  # when set up, each hand-over blocks until it opens
        self._cond = threading.Condition()

    def callbacks(self) -> SourceCallbacks:
        return SourceCallbacks(on_ticks=self._on_ticks, on_error=self._on_error, on_status=self._on_status)

    def _on_ticks(self, batch: Sequence[Tick]) -> None:
        with self._cond:
            self.ticks.extend(batch)
            self.batches.append(len(batch))
            self._cond.notify_all()
        if self.gate is not None:
            self.gate.wait(5.0)

    def _on_error(self, exc: BaseException) -> None:
        with self._cond:
            self.errors.append(exc)
            self._cond.notify_all()

    def _on_status(self, event: str, detail: str) -> None:
        with self._cond:
            self.statuses.append((event, detail))
            self._cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)


@pytest.fixture
def fake() -> Iterator[FakeDhan]:
    with FakeDhan() as server:
        yield server


def settings_for(fake: FakeDhan, **feed: object) -> Settings:
    feed_settings = {"reconnect_initial_seconds": 0.05, "reconnect_max_seconds": 0.3, "rest_fallback": False,
                     **feed}
    return Settings().replace(dhan=fake.dhan_settings(request_timeout_seconds=2.0), feed=feed_settings)


@pytest.fixture
def running() -> Iterator[Callable[..., tuple[DhanFeedSource, Sink]]]:
    sources: list[DhanFeedSource] = []

    def start(settings: Settings, symbols: Sequence[str]) -> tuple[DhanFeedSource, Sink]:
        source = DhanFeedSource(settings, symbols, SystemClock())
        sink = Sink()
        source.start(sink.callbacks())
        sources.append(source)
        return source, sink

    yield start
    for source in sources:
        source.stop(timeout=3.0)


def test_ticks_pushed_by_the_feed_arrive_as_ticks_with_ids_mapped_and_ltt_converted(fake, running) -> None:
    source, sink = running(settings_for(fake), ["NIFTY", "BANKNIFTY", "SEC_49081"])
    assert fake.feed.wait_for_subscriptions(1)
    subscription = fake.feed.subscriptions[0]
    assert subscription.request_code == 17  # quote: LTP + LTT + cumulative day volume
    assert sorted(subscription.instruments) == [("IDX_I", "13"), ("IDX_I", "25"), ("NSE_FNO", "49081")]
    path = fake.feed.connect_paths[0]
    assert path.startswith("/?version=2&token=") and "clientId=1000000001" in path and path.endswith("authType=2")

    ltt = LTT_EPOCH + IST_OFFSET  # Dhan writes IST wall-clock seconds as an epoch
    fake.feed.push_tick(13, 25010.55, ltt, volume=0)
    fake.feed.push_tick(25, 52100.4, ltt + 1, volume=0)
    fake.feed.push_tick(49081, 101.35, ltt + 2, volume=1000, segment="NSE_FNO")
    fake.feed.push_tick(49081, 101.4, ltt + 3, volume=1150, segment="NSE_FNO")
    assert sink.wait(lambda: len(sink.ticks) >= 4)
    assert sink.ticks == [
        Tick("NIFTY", float(LTT_EPOCH), 25010.55, 0),
        Tick("BANKNIFTY", float(LTT_EPOCH + 1), 52100.4, 0),
        Tick("SEC_49081", float(LTT_EPOCH + 2), 101.35, 0),  # first sighting: the day's total is not ours
        Tick("SEC_49081", float(LTT_EPOCH + 3), 101.4, 150),  # then the increase of the day volume
    ]
    status = source.status()
    assert status.connected and status.ticks == 4 and status.reconnects == 0


def test_ticker_and_full_modes_decode_their_own_packet_layouts(fake, running) -> None:
    _, ticker_sink = running(settings_for(fake, dhan_mode="ticker"), ["NIFTY"])
    assert fake.feed.wait_for_subscriptions(1)
    assert fake.feed.subscriptions[0].request_code == 15
    fake.feed.push_tick(13, 24990.0, LTT_EPOCH + IST_OFFSET, volume=999)
    assert ticker_sink.wait(lambda: len(ticker_sink.ticks) == 1)
    assert ticker_sink.ticks[0] == Tick("NIFTY", float(LTT_EPOCH), 24990.0, 0)

    _, full_sink = running(settings_for(fake, dhan_mode="full"), ["SEC_49082"])
    assert fake.feed.wait_for_subscriptions(2)
    assert fake.feed.subscriptions[1].request_code == 21
    for volume in (500, 575):
        fake.feed.push_tick(49082, 88.05, LTT_EPOCH + IST_OFFSET, volume=volume, segment="NSE_FNO")
    assert full_sink.wait(lambda: len(full_sink.ticks) == 2)
    assert [t.volume for t in full_sink.ticks] == [0, 75]
    assert full_sink.ticks[1].ltp == 88.05


def test_a_dropped_websocket_reconnects_and_resubscribes(fake, running, caplog) -> None:
    caplog.set_level(logging.INFO, logger="actors.dhan.feed")
    source, sink = running(settings_for(fake), ["NIFTY", "SEC_49081"])
    assert fake.feed.wait_for_subscriptions(1)
    assert fake.feed.drop_connections() == 1

    assert fake.feed.wait_for_subscriptions(2), "the feed did not resubscribe after the drop"
    again = fake.feed.subscriptions[1]
    assert again.connection == 1  # on a new connection
    assert sorted(again.instruments) == sorted(fake.feed.subscriptions[0].instruments)
    fake.feed.push_tick(13, 25001.0, LTT_EPOCH + IST_OFFSET)
    assert sink.wait(lambda: any(t.ltp == 25001.0 for t in sink.ticks))
    assert sink.wait(lambda: source.status().reconnects == 1)
    events = [getattr(r, "event", "") for r in caplog.records]
    assert "FEED_DISCONNECTED" in events and events.count("FEED_CONNECTED") == 2
    assert [e for e, _ in sink.statuses][:3] == ["FEED_CONNECTED", "FEED_DISCONNECTED", "FEED_CONNECTED"]


def test_a_too_many_connections_disconnect_packet_is_logged_and_reconnected_later(fake, running, caplog) -> None:
    caplog.set_level(logging.INFO, logger="actors.dhan.feed")
    source, _ = running(settings_for(fake, reconnect_max_seconds=0.4), ["NIFTY"])
    assert fake.feed.wait_for_subscriptions(1)
    sent_at = time.monotonic()
    fake.feed.send_disconnect(805)
    assert fake.feed.wait_for_subscriptions(2)
    assert fake.feed.subscriptions[1].at - sent_at >= 0.4  # 805 waits the longest backoff
    disconnects = [r for r in caplog.records if getattr(r, "event", "") == "FEED_DISCONNECTED"]
    assert disconnects and disconnects[0].reason == 805
    assert "805" in source.status().detail["last_disconnect"]


def test_a_token_expired_disconnect_packet_ends_the_source_with_an_auth_error(fake, running, caplog) -> None:
    caplog.set_level(logging.INFO, logger="actors.dhan.feed")
    source, sink = running(settings_for(fake), ["NIFTY"])
    assert fake.feed.wait_for_subscriptions(1)
    fake.feed.send_disconnect(807)
    assert sink.wait(lambda: bool(sink.errors))
    error = sink.errors[0]
    assert isinstance(error, DhanAuthError) and isinstance(error, PermanentBrokerError)
    assert error.code == "807"
    assert not source.status().connected
    assert not fake.feed.wait_for_connections(2, timeout=0.3)  # a dead token is not retried
    assert any(getattr(r, "event", "") == "FEED_DISCONNECTED" and r.reason == 807 for r in caplog.records)


def test_rest_ltp_polling_feeds_ticks_while_the_websocket_is_down(fake, running) -> None:
    with socket.socket() as probe:  # a port nobody listens on: the websocket cannot connect
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    settings = Settings().replace(
        dhan=fake.dhan_settings(feed_url=f"ws://127.0.0.1:{dead_port}", request_timeout_seconds=1.0),
        feed={"reconnect_initial_seconds": 0.05, "reconnect_max_seconds": 0.2, "rest_fallback": True,
              "rest_fallback_interval_seconds": 1.0})
    fake.state.set_ltp("NSE_FNO", 49081, 120.5)
    source, sink = running(settings, ["NIFTY", "SEC_49081"])
    assert sink.wait(lambda: len({t.ts for t in sink.ticks}) >= 2, timeout=4.0)
    polls = fake.rest.requests_to("/marketfeed/ltp")
    assert len(polls) >= 2
    assert polls[0].body["IDX_I"] == [13] and polls[0].body["NSE_FNO"] == [49081]  # all symbols, one request
    gaps = [b.mono - a.mono for a, b in zip(polls, polls[1:], strict=False)]
    assert all(0.99 <= gap < 1.5 for gap in gaps), gaps  # about once a second, never faster
    assert {t.symbol: t.ltp for t in sink.ticks} == {"NIFTY": 25642.8, "SEC_49081": 120.5}
    status = source.status()
    assert not status.connected and status.detail["fallback_polling"] is True
    assert ("FEED_FALLBACK_STARTED", "") in sink.statuses


def test_stop_ends_the_thread_promptly_and_says_goodbye_to_dhan(fake, running) -> None:
    source, _ = running(settings_for(fake), ["NIFTY"])
    assert fake.feed.wait_for_subscriptions(1)
    started = time.monotonic()
    source.stop(timeout=2.0)
    assert time.monotonic() - started < 2.0
    assert fake.feed.wait_until_no_clients()
    assert fake.feed.disconnect_requests == 1  # {"RequestCode": 12}
    assert not source.status().connected


def test_a_burst_of_packets_is_handed_over_in_batches(fake, running) -> None:
    _, sink = running(settings_for(fake, dhan_mode="ticker"), ["NIFTY"])
    assert fake.feed.wait_for_subscriptions(1)
    sink.gate = threading.Event()
    fake.feed.push_tick(13, 24999.0, LTT_EPOCH + IST_OFFSET)
    assert sink.wait(lambda: len(sink.ticks) == 1)  # the consumer is now busy with the first batch
    for i in range(300):
        fake.feed.push_raw(packets.ticker_packet(0, 13, 25000.0 + i, LTT_EPOCH + IST_OFFSET))
    sink.gate.set()
    assert sink.wait(lambda: len(sink.ticks) == 301)
    assert [t.ltp for t in sink.ticks[1:]] == [25000.0 + i for i in range(300)]
    assert len(sink.batches) <= 10, sink.batches  # what piled up meanwhile went over in a few batches


# -- packet decoding (pure) -----------------------------------------------------------------------------------


def test_packets_decode_per_the_documented_layouts() -> None:
    ltt = LTT_EPOCH + IST_OFFSET
    assert decode_packet(packets.ticker_packet(0, 13, 25010.55, ltt)) == FeedPacket(
        2, 0, 13, pytest.approx(25010.55), ltt, None)
    quote = decode_packet(packets.quote_packet(2, 49081, 101.35, ltt, 123456))
    assert quote is not None and (quote.code, quote.segment, quote.security_id, quote.volume) == (4, 2, 49081, 123456)
    full = decode_packet(packets.full_packet(2, 49081, 101.35, ltt, 654321, oi=10))
    assert full is not None and (full.code, full.ltt, full.volume) == (8, ltt, 654321)
    assert struct.unpack_from("<H", packets.full_packet(2, 1, 1.0, 1, 1), 1)[0] == 162  # length = whole packet
    assert decode_packet(packets.prev_close_packet(0, 13, 25000.0)) is None
    assert decode_packet(packets.oi_packet(2, 49081, 5)) is None
    assert decode_packet(packets.market_status_packet()) is None
    assert decode_packet(b"\x02\x10") is None
    assert disconnect_reason(packets.disconnect_packet(807)) == 807
    assert disconnect_reason(packets.ticker_packet(0, 13, 1.0, 1)) is None


def test_the_assembler_turns_cumulative_volume_into_increments_and_handles_a_new_day() -> None:
    assembler = TickAssembler({(2, 49081): "SEC_49081"})
    ltt = LTT_EPOCH + IST_OFFSET
    volumes = [assembler.tick(FeedPacket(4, 2, 49081, 100.0, ltt, v), now=0.0).volume  # type: ignore[union-attr]
               for v in (1000, 1075, 1075, 1225, 50)]
    assert volumes == [0, 75, 0, 150, 50]
    assert assembler.tick(FeedPacket(4, 2, 1, 100.0, ltt, 1), now=0.0) is None  # not one of ours
    no_ltt = assembler.tick(FeedPacket(2, 2, 49081, 100.0, 0, None), now=1234.5)
    assert no_ltt is not None and no_ltt.ts == 1234.5
