"""The message bus: publish/subscribe of bytes on named channels, plus a small key/value store.

Two implementations behind one interface:
- `InProcessBus`: synchronous delivery, in the publisher's thread, to every subscriber of the channel
  (the embedded `role: all`). Thread-safe.
- `RedisBus`: Redis pub/sub and SET/GET; every key and channel is prefixed (isolates deployments and
  tests); handlers see channel names without the prefix. Each subscription has its own pub/sub
  connection and listener thread (redis-py `run_in_thread` with an exception handler), which survives
  connection errors: it reconnects with a short capped backoff and resubscribes. Pub/sub is
  fire-and-forget: messages published while a listener is disconnected are lost — the bus carries
  notifications, the database carries the truth.

A subscriber's exception is logged (BUS_HANDLER_FAILED) and counted, never propagated to the publisher
or allowed to stop the listener. Redis errors become `BusUnavailable`.
"""

from __future__ import annotations

import itertools
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from storage.errors import BusUnavailable
from telemetry.logs import get_logger

__all__ = ["Bus", "Handler", "InProcessBus", "RedisBus", "Subscription", "open_bus"]

log = get_logger("storage.bus")
Handler = Callable[[str, bytes], None]


class Subscription(ABC):
    @abstractmethod
    def close(self) -> None:
        """Stop delivering to this subscription's handler (idempotent)."""


class Bus(ABC):
    @abstractmethod
    def publish(self, channel: str, message: bytes) -> None: ...

    @abstractmethod
    def publish_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Publish several messages at once (Redis: one pipelined round trip), in order."""

    @abstractmethod
    def subscribe(self, channels: Sequence[str], handler: Handler) -> Subscription:
        """Call `handler(channel, message)` for every message published on `channels` from now on.

        When this returns the subscription is active: a message published afterwards is delivered."""

    @abstractmethod
    def set(self, key: str, value: bytes) -> None: ...

    @abstractmethod
    def set_many(self, items: Mapping[str, bytes] | Sequence[tuple[str, bytes]]) -> None: ...

    @abstractmethod
    def get(self, key: str) -> bytes | None: ...

    @abstractmethod
    def ping(self) -> None:
        """Return when the bus answers; raise BusUnavailable otherwise."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def stats(self) -> dict[str, Any]:
        """Counters: published, publish_errors, last_error, handler_errors, listener_errors, subscriptions."""


class _Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.published = 0
        self.publish_errors = 0
        self.handler_errors = 0
        self.listener_errors = 0
        self.last_error: str | None = None

    def published_ok(self, count: int) -> None:
        with self.lock:
            self.published += count

    def publish_failed(self, error: str) -> None:
        with self.lock:
            self.publish_errors += 1
            self.last_error = error

    def handler_failed(self, channel: str, exc: BaseException) -> None:
        with self.lock:
            self.handler_errors += 1
        log.event("BUS_HANDLER_FAILED", "a bus subscriber raised", level=40, channel=channel,
                  exc_info=(type(exc), exc, exc.__traceback__))

    def listener_failed(self, error: str) -> None:
        with self.lock:
            self.listener_errors += 1
            self.last_error = error

    def snapshot(self, subscriptions: int) -> dict[str, Any]:
        with self.lock:
            return {"published": self.published, "publish_errors": self.publish_errors,
                    "last_error": self.last_error, "handler_errors": self.handler_errors,
                    "listener_errors": self.listener_errors, "subscriptions": subscriptions}


def _pairs(items: Mapping[str, bytes] | Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    return list(items.items()) if isinstance(items, Mapping) else list(items)


class _InProcessSubscription(Subscription):
    def __init__(self, bus: InProcessBus, channels: tuple[str, ...], handler: Handler, ident: int) -> None:
        self.bus, self.channels, self.handler, self.ident = bus, channels, handler, ident

    def close(self) -> None:
        self.bus._unsubscribe(self)


class InProcessBus(Bus):
    """Synchronous, thread-safe, in-memory bus: `publish` returns after every handler ran."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[str, tuple[_InProcessSubscription, ...]] = {}
        self._values: dict[str, bytes] = {}
        self._ids = itertools.count(1)
        self._counters = _Counters()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            self._counters.publish_failed("bus is closed")
            raise BusUnavailable("bus is closed")

    def publish(self, channel: str, message: bytes) -> None:
        self._check_open()
        subscribers = self._subscribers.get(channel, ())  # an immutable snapshot: handlers run unlocked
        self._counters.published_ok(1)
        for subscription in subscribers:
            try:
                subscription.handler(channel, message)
            except Exception as exc:  # a faulty subscriber must not break the publisher
                self._counters.handler_failed(channel, exc)

    def publish_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        for channel, message in items:
            self.publish(channel, message)

    def subscribe(self, channels: Sequence[str], handler: Handler) -> Subscription:
        self._check_open()
        subscription = _InProcessSubscription(self, tuple(dict.fromkeys(channels)), handler, next(self._ids))
        with self._lock:
            for channel in subscription.channels:
                self._subscribers[channel] = (*self._subscribers.get(channel, ()), subscription)
        return subscription

    def _unsubscribe(self, subscription: _InProcessSubscription) -> None:
        with self._lock:
            for channel in subscription.channels:
                remaining = tuple(s for s in self._subscribers.get(channel, ()) if s is not subscription)
                if remaining:
                    self._subscribers[channel] = remaining
                else:
                    self._subscribers.pop(channel, None)

    def set(self, key: str, value: bytes) -> None:
        self._check_open()
        with self._lock:
            self._values[key] = bytes(value)

    def set_many(self, items: Mapping[str, bytes] | Sequence[tuple[str, bytes]]) -> None:
        self._check_open()
        pairs = _pairs(items)
        with self._lock:
            self._values.update((key, bytes(value)) for key, value in pairs)

    def get(self, key: str) -> bytes | None:
        self._check_open()
        with self._lock:
            return self._values.get(key)

    def ping(self) -> None:
        self._check_open()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._subscribers.clear()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            subscriptions = len({s.ident for subs in self._subscribers.values() for s in subs})
        return self._counters.snapshot(subscriptions)


class _RedisSubscription(Subscription):
    """One pub/sub connection and its listener thread."""

    _MIN_BACKOFF = 0.05
    _MAX_BACKOFF = 2.0

    def __init__(self, bus: RedisBus, channels: tuple[str, ...], handler: Handler) -> None:
        self._bus = bus
        self._handler = handler
        self._stopped = threading.Event()
        # Subscribe confirmations must stay visible to `_await_confirmation` (the instance flag would hide
        # them); the listener thread ignores them per call.
        self._pubsub = bus._client.pubsub(ignore_subscribe_messages=False)  # type: ignore[no-untyped-call]
        self._thread: Any = None
        self._failing = False
        self._delay = self._MIN_BACKOFF
        self.channels = channels
        prefix = bus.prefix
        self._full = {prefix + channel: self._dispatch for channel in channels}

    def start(self, timeout: float) -> None:
        try:
            self._pubsub.subscribe(**self._full)
            self._await_confirmation(timeout)
        except (redis.RedisError, OSError) as exc:
            self._pubsub.close()
            raise BusUnavailable(f"subscribe {list(self.channels)}: {exc}") from exc
        self._thread = self._pubsub.run_in_thread(sleep_time=0.25, daemon=True,
                                                  exception_handler=self._on_listener_error)

    def _await_confirmation(self, timeout: float) -> None:
        """Read until the server confirmed every SUBSCRIBE, so a publish after `subscribe()` is seen."""
        pending = set(self._full)
        deadline = time.monotonic() + timeout
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise redis.TimeoutError(f"no subscribe confirmation for {sorted(pending)}")
            message = self._pubsub.get_message(ignore_subscribe_messages=False, timeout=remaining)
            if message is not None and message.get("type") == "subscribe":
                channel = message["channel"]
                pending.discard(channel.decode() if isinstance(channel, bytes) else channel)

    def _dispatch(self, message: dict[str, Any]) -> None:
        raw = message["channel"]
        full = raw.decode() if isinstance(raw, bytes) else str(raw)
        channel = full[len(self._bus.prefix):]
        try:
            self._handler(channel, message["data"])
        except Exception as exc:  # a faulty subscriber must not stop the listener
            self._bus._counters.handler_failed(channel, exc)

    def _on_listener_error(self, exc: BaseException, pubsub: Any, thread: Any) -> None:
        """Called by the listener thread on any error: reconnect (which resubscribes) with a backoff that
        grows across failures (capped) and resets once reconnected; logged once per outage."""
        if self._stopped.is_set():
            thread.stop()
            return
        self._bus._counters.listener_failed(f"listener: {exc!r}")
        if not self._failing:
            self._failing = True
            log.event("BUS_LISTENER_ERROR", "bus listener lost its connection; reconnecting", level=30,
                      channels=list(self.channels), error=repr(exc))
        while not self._stopped.wait(self._delay):
            self._delay = min(self._delay * 2, self._MAX_BACKOFF)
            connection = pubsub.connection
            if connection is None:  # not expected while running; let the loop call get_message again
                return
            try:
                connection.disconnect()
                connection.connect()  # runs PubSub.on_connect: SUBSCRIBE again to every channel
            except (redis.RedisError, OSError) as retry_error:
                self._bus._counters.listener_failed(f"listener: {retry_error!r}")
                continue
            self._failing = False
            self._delay = self._MIN_BACKOFF
            log.event("BUS_LISTENER_RECOVERED", "bus listener reconnected and resubscribed",
                      channels=list(self.channels))
            return
        thread.stop()

    def stop(self) -> None:
        """Ask the listener to stop (returns at once; `close` waits for it)."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.stop()

    def close(self) -> None:
        already = self._stopped.is_set()
        self.stop()
        thread = self._thread
        if thread is None:
            if not already:
                self._pubsub.close()
        elif thread is not threading.current_thread():
            thread.join(timeout=2.0)  # the listener closes its pub/sub connection on the way out
        self._bus._forget(self)


class RedisBus(Bus):
    """Redis pub/sub + SET/GET under `prefix`. Socket timeouts bound every call (`timeout` seconds)."""

    def __init__(self, url: str, prefix: str = "", password: str = "", timeout: float = 1.0) -> None:
        self.prefix = prefix
        self._timeout = timeout
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "socket_keepalive": True,
            "health_check_interval": 15,
            # One immediate retry: a connection cut while idle is replaced transparently; a server that
            # is really down fails fast instead of stalling the publisher in backoff.
            "retry": Retry(NoBackoff(), 1),
            "client_name": "mybot" + (":" + prefix.strip(":").replace(" ", "_") if prefix.strip(":") else ""),
        }
        if password:
            options["password"] = password
        self._client = redis.Redis.from_url(url, **options)
        self._counters = _Counters()
        self._lock = threading.Lock()
        self._subscriptions: list[_RedisSubscription] = []
        self._closed = False

    def _call(self, what: str, action: Callable[[], Any], counts_as_publish: int = 0) -> Any:
        if self._closed:
            raise BusUnavailable("bus is closed")
        try:
            result = action()
        except (redis.RedisError, OSError) as exc:
            if counts_as_publish:
                self._counters.publish_failed(f"{what}: {exc!r}")
            raise BusUnavailable(f"{what}: {exc}") from exc
        if counts_as_publish:
            self._counters.published_ok(counts_as_publish)
        return result

    def publish(self, channel: str, message: bytes) -> None:
        self._call("publish", lambda: self._client.publish(self.prefix + channel, message), counts_as_publish=1)

    def publish_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        if not items:
            return

        def send() -> None:
            pipe = self._client.pipeline(transaction=False)
            for channel, message in items:
                pipe.publish(self.prefix + channel, message)
            pipe.execute()

        self._call("publish_many", send, counts_as_publish=len(items))

    def subscribe(self, channels: Sequence[str], handler: Handler) -> Subscription:
        if self._closed:
            raise BusUnavailable("bus is closed")
        subscription = _RedisSubscription(self, tuple(dict.fromkeys(channels)), handler)
        subscription.start(timeout=max(self._timeout, 2.0))
        with self._lock:
            self._subscriptions.append(subscription)
        return subscription

    def _forget(self, subscription: _RedisSubscription) -> None:
        with self._lock:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)

    def set(self, key: str, value: bytes) -> None:
        self._call("set", lambda: self._client.set(self.prefix + key, value))

    def set_many(self, items: Mapping[str, bytes] | Sequence[tuple[str, bytes]]) -> None:
        pairs = _pairs(items)
        if pairs:
            self._call("set_many", lambda: self._client.mset({self.prefix + key: value for key, value in pairs}))

    def get(self, key: str) -> bytes | None:
        value = self._call("get", lambda: self._client.get(self.prefix + key))
        return None if value is None else bytes(value)

    def ping(self) -> None:
        self._call("ping", self._client.ping)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._lock:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:  # stop them all first: each takes up to one poll to notice
            subscription.stop()
        for subscription in subscriptions:
            subscription.close()
        self._client.close()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            count = len(self._subscriptions)
        return self._counters.snapshot(count)


def open_bus(redis_url: str = "", prefix: str = "", password: str = "") -> Bus:
    """RedisBus for a redis:// or rediss:// URL; InProcessBus when the URL is empty."""
    if not redis_url:
        return InProcessBus()
    if not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"unsupported bus URL scheme: {redis_url.split(':', 1)[0]!r}")
    return RedisBus(redis_url, prefix=prefix, password=password)
