"""Prometheus metrics: the process's instruments, the hooks other parts call, and the scrape.

A leaf: it imports nothing of the project, so every layer may record into it.

Two kinds of numbers, by where they come from:

- **Instruments** (histograms and counters) that only the moment itself can measure: a latency, an order
  reaching its final status, an alert sent. The hot paths record them at batch level through the small
  functions below (`tick_to_candle`, `candles`, ...), which cost one flag check when metrics are off
  (`metrics.enabled = false`) and never take a lock per tick.
- **Views** computed at scrape time from what the runtime already keeps (the supervision tree, the feed's
  store, the risk guard, ...): gauges, and counters the runtime already counts. The HTTP layer builds them
  with `ScrapeCollector` over the runtime's views (httpapi/metrics.py); nothing on a hot path pays for them.

Hooks for parts built elsewhere:
- alerts: `alert_sent(channel, kind)` / `alert_failed(channel, kind)` (mybot_alerts_sent_total,
  mybot_alerts_failed_total);
- the Dhan token's lifecycle: `token_expiry.set(expires_at_epoch)` whenever a token is loaded or renewed
  (mybot_dhan_token_expiry_seconds is computed from it at scrape time; `None` = no token known);
- Dhan rate limits: `rate_limits.register(owner, headroom)` with a bound method returning
  {class: headroom 0..1}; held weakly, so a closed client disappears from the scrape by itself.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = [
    "CONTENT_TYPE",
    "REGISTRY",
    "RateLimits",
    "ScrapeCollector",
    "TokenExpiry",
    "alert_failed",
    "alert_sent",
    "candle_to_signal",
    "candles",
    "configure",
    "counter",
    "gauge",
    "http_request",
    "is_enabled",
    "late_ticks",
    "order_final",
    "order_fill",
    "protective_stop_reaction",
    "rate_limits",
    "render",
    "signal_to_order",
    "tick_to_candle",
    "token_expiry",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Latencies from 100 µs to 30 s: the hot paths live in the sub-millisecond to tens-of-ms range, the
# broker's fills in seconds.
_FAST = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
         10.0, 30.0)
_SLOW = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

disable_created_metrics()  # no `_created` series next to every counter and histogram
REGISTRY = CollectorRegistry(auto_describe=True)


class _Switch:
    on = True


_switch = _Switch()


def configure(*, enabled: bool) -> None:
    """`metrics.enabled`: off makes every recording function below a no-op (the scrape still answers)."""
    _switch.on = enabled


def is_enabled() -> bool:
    return _switch.on


# -- instruments ---------------------------------------------------------------------------------------------

TICK_TO_CANDLE = Histogram(
    "mybot_tick_to_candle_seconds",
    "From a tick batch handed over by the feed source to its candle builder having folded it into the "
    "forming candle (one observation per symbol of a sampled batch: at most one batch per 100 ms)",
    buckets=_FAST, registry=REGISTRY)
CANDLE_TO_SIGNAL = Histogram(
    "mybot_candle_to_signal_seconds",
    "From the end of a closed 1-minute candle's minute to the strategy's decision on it (every live "
    "candle scored, whether or not it raised a signal; includes the close on the 1 s clock)",
    buckets=_FAST, registry=REGISTRY)
SIGNAL_TO_ORDER = Histogram(
    "mybot_signal_to_order_seconds",
    "From an entry signal handed to the trading desk to the broker accepting its entry order",
    buckets=_FAST, registry=REGISTRY)
ORDER_FILL = Histogram(
    "mybot_order_fill_seconds",
    "From an order placed at the broker to its complete fill, by leg (on the runtime's clock)",
    ["leg"], buckets=_SLOW, registry=REGISTRY)
PROTECTIVE_STOP_REACTION = Histogram(
    "mybot_protective_stop_reaction_seconds",
    "From the first quote through a position's protective stop (or trailing) level to the broker "
    "accepting its exit order; recorded by the protective exits when they exist",
    buckets=_FAST, registry=REGISTRY)
HTTP_LATENCY = Histogram(
    "mybot_http_request_duration_seconds",
    "HTTP request handling time by server, method and route template",
    ["server", "method", "route"], buckets=_FAST, registry=REGISTRY)
HTTP_REQUESTS = Counter(
    "mybot_http_requests", "HTTP requests by server, method, route template and status code",
    ["server", "method", "route", "status"], registry=REGISTRY)
CANDLES = Counter(
    "mybot_candles", "Candles closed or revised by the candle builders, by symbol",
    ["symbol", "event"], registry=REGISTRY)
LATE_TICKS_DROPPED = Counter(
    "mybot_ticks_late_dropped", "Ticks that arrived after their minute's grace window, by symbol",
    ["symbol"], registry=REGISTRY)
ORDERS_FINAL = Counter(
    "mybot_orders", "Orders that reached a final status (FILLED, REJECTED, CANCELLED), by leg",
    ["leg", "status"], registry=REGISTRY)
ALERTS_SENT = Counter(
    "mybot_alerts_sent", "Operator alerts delivered, by channel and kind", ["channel", "kind"],
    registry=REGISTRY)
ALERTS_FAILED = Counter(
    "mybot_alerts_failed", "Operator alerts that could not be delivered (after retries), by channel and kind",
    ["channel", "kind"], registry=REGISTRY)


# -- recording (hot paths: one flag check when off) --------------------------------------------------------

_children: dict[tuple[Any, ...], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, memoized: labels() takes the metric's lock on every call."""
    key = (id(metric), *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def tick_to_candle(seconds: float) -> None:
    if _switch.on:
        TICK_TO_CANDLE.observe(seconds)


def candles(symbol: str, closed: int, revised: int) -> None:
    if _switch.on:
        if closed:
            _child(CANDLES, symbol, "closed").inc(closed)
        if revised:
            _child(CANDLES, symbol, "revised").inc(revised)


def late_ticks(symbol: str, dropped: int) -> None:
    if _switch.on and dropped:
        _child(LATE_TICKS_DROPPED, symbol).inc(dropped)


def candle_to_signal(seconds: float) -> None:
    if _switch.on:
        CANDLE_TO_SIGNAL.observe(max(0.0, seconds))


def signal_to_order(seconds: float) -> None:
    if _switch.on:
        SIGNAL_TO_ORDER.observe(seconds)


def order_fill(leg: str, seconds: float) -> None:
    if _switch.on:
        _child(ORDER_FILL, leg).observe(max(0.0, seconds))


def order_final(leg: str, status: str) -> None:
    if _switch.on:
        _child(ORDERS_FINAL, leg, status).inc()


def protective_stop_reaction(seconds: float) -> None:
    if _switch.on:
        PROTECTIVE_STOP_REACTION.observe(seconds)


def http_request(server: str, method: str, route: str, status: str, seconds: float) -> None:
    if _switch.on:
        _child(HTTP_LATENCY, server, method, route).observe(seconds)
        _child(HTTP_REQUESTS, server, method, route, status).inc()


def alert_sent(channel: str, kind: str) -> None:
    ALERTS_SENT.labels(channel, kind).inc()  # rare and operator-facing: counted even with metrics off


def alert_failed(channel: str, kind: str) -> None:
    ALERTS_FAILED.labels(channel, kind).inc()


# -- hooks for parts that live elsewhere -----------------------------------------------------------------------

class TokenExpiry:
    """When the Dhan access token in use expires (epoch seconds), set by whoever loads or renews it."""

    def __init__(self) -> None:
        self._expires_at: float | None = None

    def set(self, expires_at: float | None) -> None:
        self._expires_at = expires_at

    def seconds_left(self, now: float) -> float | None:
        expires_at = self._expires_at
        return None if expires_at is None else expires_at - now


token_expiry = TokenExpiry()


class RateLimits:
    """Dhan rate-limit headroom sources: bound methods returning {class: headroom 0..1}, held weakly."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: list[weakref.WeakMethod[Callable[[], dict[str, float]]]] = []

    def register(self, headroom: Callable[[], dict[str, float]]) -> None:
        """`headroom` must be a bound method (its object is held weakly)."""
        with self._lock:
            self._sources.append(weakref.WeakMethod(headroom))  # type: ignore[arg-type]

    def headroom(self) -> dict[str, float]:
        """The tightest headroom per class over the live sources."""
        with self._lock:
            self._sources = [ref for ref in self._sources if ref() is not None]
            sources = [ref() for ref in self._sources]
        out: dict[str, float] = {}
        for source in sources:
            if source is None:
                continue
            try:
                values = source()
            except Exception:  # a closing client: it says nothing this scrape
                continue
            for name, value in values.items():
                out[name] = min(value, out.get(name, value))
        return out


rate_limits = RateLimits()


# -- the scrape ----------------------------------------------------------------------------------------------------

def gauge(name: str, documentation: str, labels: Iterable[str] = (),
          samples: Iterable[tuple[Iterable[str], float]] = ()) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    for values, value in samples:
        family.add_metric(list(values), value)
    return family


def counter(name: str, documentation: str, labels: Iterable[str] = (),
            samples: Iterable[tuple[Iterable[str], float]] = ()) -> CounterMetricFamily:
    """A counter the runtime already counts (read at scrape time). `name` without `_total`."""
    family = CounterMetricFamily(name, documentation, labels=list(labels))
    for values, value in samples:
        family.add_metric(list(values), value)
    return family


@dataclass
class ScrapeCollector:
    """Metric families computed at scrape time by `views` (each returns an iterable of families). A view
    that fails is skipped for that scrape and counted in mybot_scrape_errors_total{view}."""

    views: dict[str, Callable[[], Iterable[Metric]]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def collect(self) -> Iterator[Metric]:
        for name, view in self.views.items():
            try:
                families = list(view())
            except Exception:  # a view over a stopping part: the rest of the scrape still answers
                self.errors[name] = self.errors.get(name, 0) + 1
                continue
            yield from families
        now = time.time()
        left = token_expiry.seconds_left(now)
        if left is not None:
            yield gauge("mybot_dhan_token_expiry_seconds", "Seconds until the Dhan access token expires "
                        "(negative once expired)", samples=[((), round(left, 3))])
        headroom = rate_limits.headroom()
        if headroom:
            yield gauge("mybot_dhan_rate_limit_headroom_ratio", "Share of each Dhan rate-limit class's budget "
                        "free now (1 = a request may go at once with the full burst; 0 = must wait)",
                        ["class"], [((name,), round(value, 4)) for name, value in sorted(headroom.items())])
        yield counter("mybot_scrape_errors", "Scrape-time views that failed", ["view"],
                      [((name,), count) for name, count in sorted(self.errors.items())])


class _Both:
    def __init__(self, collectors: tuple[Any, ...]) -> None:
        self.collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors:
            yield from collector.collect()


def render(*collectors: Any) -> bytes:
    """The Prometheus text exposition of the process's instruments plus `collectors`' families."""
    return generate_latest(_Both((REGISTRY, *collectors)))  # type: ignore[arg-type]
