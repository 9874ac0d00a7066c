"""One contract for both buses (in-process and Redis), plus Redis-only specs: prefixes, outages."""

from __future__ import annotations

import queue
import socket
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest
import redis

from storage.bus import Bus, InProcessBus, RedisBus, open_bus
from storage.errors import BusUnavailable
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.timeout(60)

WAIT = 5.0


class Inbox:
    """A handler that collects (channel, message) so a test can wait for deliveries."""

    def __init__(self) -> None:
        self.items: queue.Queue[tuple[str, bytes]] = queue.Queue()

    def __call__(self, channel: str, message: bytes) -> None:
        self.items.put((channel, message))

    def next(self, timeout: float = WAIT) -> tuple[str, bytes]:
        return self.items.get(timeout=timeout)

    def take(self, count: int) -> list[tuple[str, bytes]]:
        return [self.next() for _ in range(count)]

    def empty_after(self, seconds: float) -> bool:
        try:
            self.items.get(timeout=seconds)
        except queue.Empty:
            return True
        return False


def wait_for(condition: Callable[[], bool], within: float = WAIT) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


class BusContract:
    """The specs; subclasses provide the `bus` fixture."""

    def test_a_subscriber_gets_messages_of_its_channels_with_the_bare_channel_name(self, bus: Bus) -> None:
        inbox = Inbox()
        bus.subscribe(["candles:NIFTY", "candles:BANKNIFTY"], inbox)
        bus.publish("candles:NIFTY", b"n1")
        bus.publish("quotes:NIFTY", b"not subscribed")
        bus.publish("candles:BANKNIFTY", b"b1")
        assert inbox.take(2) == [("candles:NIFTY", b"n1"), ("candles:BANKNIFTY", b"b1")]
        assert inbox.empty_after(0.1)

    def test_every_subscriber_of_a_channel_gets_each_message(self, bus: Bus) -> None:
        first, second = Inbox(), Inbox()
        bus.subscribe(["ticks"], first)
        bus.subscribe(["ticks"], second)
        bus.publish("ticks", b"t")
        assert first.next() == ("ticks", b"t")
        assert second.next() == ("ticks", b"t")

    def test_a_closed_subscription_gets_nothing_more(self, bus: Bus) -> None:
        kept, dropped = Inbox(), Inbox()
        bus.subscribe(["ch"], kept)
        subscription = bus.subscribe(["ch"], dropped)
        subscription.close()
        subscription.close()
        bus.publish("ch", b"after close")
        assert kept.next() == ("ch", b"after close")
        assert dropped.empty_after(0.1)

    def test_publish_many_delivers_in_order(self, bus: Bus) -> None:
        inbox = Inbox()
        bus.subscribe(["a", "b"], inbox)
        items = [("a", b"1"), ("b", b"2"), ("a", b"3"), ("b", b"4")]
        bus.publish_many(items)
        bus.publish_many([])
        assert inbox.take(4) == items
        assert bus.stats()["published"] == 4

    def test_a_failing_handler_neither_breaks_the_publisher_nor_the_other_subscribers(self, bus: Bus) -> None:
        def broken(channel: str, message: bytes) -> None:
            raise RuntimeError("subscriber bug")

        inbox = Inbox()
        bus.subscribe(["ch"], broken)
        bus.subscribe(["ch"], inbox)
        bus.publish("ch", b"1")
        bus.publish("ch", b"2")
        assert inbox.take(2) == [("ch", b"1"), ("ch", b"2")]
        wait_for(lambda: bus.stats()["handler_errors"] == 2)

    def test_keys_set_get_and_set_many(self, bus: Bus) -> None:
        assert bus.get("quote:NIFTY") is None
        bus.set("quote:NIFTY", b"26000.5")
        bus.set_many({"quote:BANKNIFTY": b"59000", "quote:SEC_1": b"12.5"})
        bus.set_many([("quote:NIFTY", b"26001")])
        assert bus.get("quote:NIFTY") == b"26001"
        assert bus.get("quote:BANKNIFTY") == b"59000"
        assert bus.get("quote:SEC_1") == b"12.5"

    def test_ping_and_stats(self, bus: Bus) -> None:
        bus.ping()
        bus.publish("x", b"1")
        stats = bus.stats()
        assert stats["published"] == 1 and stats["publish_errors"] == 0 and stats["last_error"] is None

    def test_a_closed_bus_refuses_to_publish(self, bus: Bus) -> None:
        bus.close()
        with pytest.raises(BusUnavailable):
            bus.publish("x", b"1")


class TestInProcessBus(BusContract):
    @pytest.fixture
    def bus(self) -> Iterator[Bus]:
        bus = open_bus("")
        assert isinstance(bus, InProcessBus)
        yield bus
        bus.close()

    def test_delivery_is_synchronous(self, bus: Bus) -> None:
        seen: list[bytes] = []
        bus.subscribe(["ch"], lambda channel, message: seen.append(message))
        bus.publish("ch", b"now")
        assert seen == [b"now"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestRedisBus(BusContract):
    @pytest.fixture
    def bus(self, redis_url: str, redis_prefix: str) -> Iterator[Bus]:
        bus = open_bus(redis_url, redis_prefix)
        assert isinstance(bus, RedisBus)
        yield bus
        bus.close()

    def test_channels_and_keys_are_prefixed_and_isolated(self, bus: Bus, redis_url: str, redis_prefix: str) -> None:
        other = RedisBus(redis_url, prefix=redis_prefix + "other:")
        try:
            mine, theirs = Inbox(), Inbox()
            bus.subscribe(["ch"], mine)
            other.subscribe(["ch"], theirs)
            bus.publish("ch", b"for me")
            assert mine.next() == ("ch", b"for me")
            assert theirs.empty_after(0.1)
            bus.set("k", b"mine")
            assert other.get("k") is None
            raw = redis.Redis.from_url(redis_url)
            try:
                assert raw.get(redis_prefix + "k") == b"mine"
                assert raw.get("k") != b"mine"
            finally:
                raw.close()
        finally:
            other.close()

    def test_the_listener_survives_its_connection_being_killed(self, bus: Bus, redis_url: str,
                                                               redis_prefix: str) -> None:
        inbox = Inbox()
        bus.subscribe(["ch"], inbox)
        bus.publish("ch", b"before")
        assert inbox.next() == ("ch", b"before")
        admin = redis.Redis.from_url(redis_url)
        try:
            # Kill only our own pub/sub connection (CLIENT KILL TYPE pubsub would hit other tests too).
            ours = [client for client in admin.client_list(_type="pubsub")
                    if client.get("name") == "mybot:" + redis_prefix.strip(":")]
            assert len(ours) == 1
            admin.client_kill_filter(_id=ours[0]["id"])
            channel = redis_prefix + "ch"
            wait_for(lambda: admin.client_list(_type="pubsub") != []
                     and all(c["id"] != ours[0]["id"] for c in admin.client_list(_type="pubsub"))
                     and dict(admin.pubsub_numsub(channel)).get(channel.encode()) == 1)
        finally:
            admin.close()
        bus.publish("ch", b"after")
        assert inbox.next() == ("ch", b"after")

    def test_publish_to_an_unreachable_redis_raises_bus_unavailable_quickly(self) -> None:
        bus = RedisBus(f"redis://127.0.0.1:{_free_port()}/0", prefix="nowhere:")
        try:
            started = time.monotonic()
            with pytest.raises(BusUnavailable):
                bus.publish("ch", b"1")
            with pytest.raises(BusUnavailable):
                bus.publish_many([("ch", b"1"), ("ch", b"2")])
            with pytest.raises(BusUnavailable):
                bus.get("k")
            with pytest.raises(BusUnavailable):
                bus.ping()
            with pytest.raises(BusUnavailable):
                bus.subscribe(["ch"], Inbox())
            assert time.monotonic() - started < 2.0
            stats = bus.stats()
            assert stats["publish_errors"] == 2 and "Connection" in stats["last_error"]
        finally:
            bus.close()

    def test_a_redis_outage_fails_publishes_and_the_listener_resubscribes_when_it_returns(
            self, redis_url: str, redis_prefix: str) -> None:
        parts = urlsplit(redis_url)
        with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379) as proxy:
            bus = RedisBus(f"redis://127.0.0.1:{proxy.port}{parts.path}", prefix=redis_prefix)
            try:
                inbox = Inbox()
                bus.subscribe(["ch"], inbox)
                bus.publish("ch", b"before")
                assert inbox.next() == ("ch", b"before")

                proxy.stop_accepting_and_cut("refuse")
                with pytest.raises(BusUnavailable):
                    bus.publish("ch", b"during")
                wait_for(lambda: bus.stats()["listener_errors"] > 0)

                proxy.resume()
                admin = redis.Redis.from_url(redis_url)
                channel = redis_prefix + "ch"
                try:
                    wait_for(lambda: dict(admin.pubsub_numsub(channel)).get(channel.encode()) == 1)
                finally:
                    admin.close()
                bus.publish("ch", b"after")
                assert inbox.next() == ("ch", b"after")
            finally:
                bus.close()
