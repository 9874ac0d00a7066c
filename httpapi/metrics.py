"""`GET /metrics` (both ports) and the request timing middleware.

The body is the process's instruments (telemetry/metrics.py) plus the families computed at scrape time
from the runtime's own views: the supervision tree read through its handles (no ask), the feed's store,
the persister's and publisher's counters, the risk guard and the trade book (no database read), the health
checks. Both ports answer with the same process-wide numbers; HTTP series carry `server`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import falcon
from prometheus_client.core import Metric

from httpapi.views import actors, trading_pnl
from telemetry import metrics
from telemetry.metrics import counter, gauge

__all__ = ["MetricsResource", "RequestTiming", "runtime_collector"]


class RequestTiming:
    """Falcon middleware: mybot_http_request_duration_seconds and mybot_http_requests_total per route
    template (never the raw path: unmatched paths share one label)."""

    def __init__(self, server: str) -> None:
        self.server = server

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        started = getattr(req.context, "started", None)
        if started is None:
            return
        route = req.uri_template or ("/static/{file}" if req.path.startswith("/static/") else "(unmatched)")
        metrics.http_request(self.server, req.method, route, str(resp.status_code), time.perf_counter() - started)


class MetricsResource:
    def __init__(self, collector: metrics.ScrapeCollector) -> None:
        self.collector = collector

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = metrics.CONTENT_TYPE
        resp.data = metrics.render(self.collector)


def runtime_collector(runtime: Any) -> metrics.ScrapeCollector:
    """The scrape-time views of one runtime (those its role has)."""
    views: dict[str, Any] = {"process": lambda: _process(runtime), "health": lambda: _health(runtime)}
    if getattr(runtime, "root", None) is not None or hasattr(runtime, "parts"):
        views["actors"] = lambda: _actors(runtime.root)
    if getattr(runtime, "market_data", None) is not None:
        views["market_data"] = lambda: _market_data(runtime)
    if getattr(runtime, "trading", None) is not None:
        views["trading"] = lambda: _trading(runtime.trading)
    return metrics.ScrapeCollector(views)


def _process(runtime: Any) -> Iterable[Metric]:
    yield gauge("mybot_info", "The process's role (value 1)", ["role"], [((runtime.role,), 1)])
    if getattr(runtime, "started_at", 0.0):
        yield gauge("mybot_uptime_seconds", "Seconds since the runtime started",
                    samples=[((), round(time.time() - runtime.started_at, 3))])
    yield gauge("mybot_metrics_enabled", "1 when the hot-path instruments record (metrics.enabled)",
                samples=[((), 1.0 if metrics.is_enabled() else 0.0)])


def _actors(root: Any) -> Iterator[Metric]:
    rows = actors(root)
    label = ["actor"]

    def samples(key: str) -> list[tuple[tuple[str], float]]:
        return [((row["id"],), float(row[key])) for row in rows]

    yield gauge("mybot_actor_running", "1 when the actor runs, 0 while it starts, restarts or is stopped", label,
                [((row["id"],), 1.0 if row["state"] == "running" else 0.0) for row in rows])
    yield gauge("mybot_actor_mailbox_depth", "Messages waiting in the actor's mailbox", label,
                samples("mailbox_depth"))
    yield gauge("mybot_actor_buffered_messages", "Tells held for the actor while it restarts", label,
                samples("buffered"))
    yield counter("mybot_actor_restarts", "Restarts of the actor (crashes and operator restarts)", label,
                  samples("restarts"))
    yield counter("mybot_actor_crashes", "Crashes of the actor", label, samples("crashes"))
    yield counter("mybot_dead_letters", "Messages that crashed the actor, logged and not redelivered", label,
                  samples("dead_letters"))
    yield counter("mybot_actor_messages_dropped", "Tells dropped while the actor restarted (its buffer full; "
                  "tick batches for a candle builder)", label, samples("dropped"))


def _health(runtime: Any) -> Iterator[Metric]:
    ok, checks = runtime.health()
    yield gauge("mybot_health_check_ok", "1 when the health check passes (GET /v1/health)", ["check"],
                [((name,), 1.0 if check.get("ok") else 0.0) for name, check in sorted(checks.items())])


def _market_data(runtime: Any) -> Iterator[Metric]:
    handles = runtime.market_data
    feed = handles.feed_state
    yield counter("mybot_ticks", "Ticks received for subscribed symbols", samples=[((), feed.ticks)])
    yield counter("mybot_ticks_unknown_symbol", "Ticks for symbols not in feed.symbols (ignored)",
                  samples=[((), feed.unknown_ticks)])
    yield counter("mybot_feed_flow_waits", "Times the source waited for the feed actor (flow control)",
                  samples=[((), feed.flow_waits)])
    ages = feed.ages(runtime.clock.monotonic())
    yield gauge("mybot_feed_age_seconds", "Seconds since the last tick of each symbol (absent: none yet)",
                ["symbol"], [((symbol,), age) for symbol, age in sorted(ages.items()) if age is not None])
    stale = feed.stale
    yield gauge("mybot_feed_stale", "1 while the symbol is FEED_STALE", ["symbol"],
                [((symbol,), 1.0 if symbol in stale else 0.0) for symbol in sorted(ages)])
    sections = _sections(runtime)
    persistence = sections.get("persistence")
    if persistence is not None:
        yield counter("mybot_database_failures", "Database writes that failed, by component", ["component"],
                      [(("candle_persister",), persistence["failures"])])
        yield counter("mybot_database_outages", "Database outages seen by the candle persister",
                      samples=[((), persistence["outages"])])
        yield gauge("mybot_candle_buffer_depth", "Candles waiting for the database in the persister's buffer",
                    samples=[((), persistence["buffered"])])
        yield counter("mybot_candles_persist_dropped", "Candles dropped because the persister's buffer was full",
                      samples=[((), persistence["dropped"])])
    bus = sections.get("bus")
    if bus is not None:
        yield counter("mybot_bus_messages", "Messages published on the bus", samples=[((), bus["messages"])])
        yield counter("mybot_bus_failures", "Bus publishes that failed", samples=[((), bus["failures"])])
        yield gauge("mybot_bus_degraded", "1 while the bus is degraded (BUS_DEGRADED)",
                    samples=[((), 1.0 if bus["degraded"] else 0.0)])


def _sections(runtime: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for part in runtime.parts:
        for name in ("persistence", "bus"):
            provider = part.status.get(name)
            if provider is not None:
                found[name] = provider()
    return found


def _trading(trading: Any) -> Iterator[Metric]:
    pnl = trading_pnl(trading)
    risk = trading.risk.status()
    limits = risk["limits"]
    yield gauge("mybot_open_positions", "Open positions of this process", samples=[((), pnl.open_positions)])
    yield gauge("mybot_pnl_realized_rupees", "Realized P&L of the IST day as the risk guard counts it",
                samples=[((), risk["realized_pnl"])])
    yield gauge("mybot_pnl_unrealized_rupees", "Unrealized P&L of the open positions at the latest quotes",
                samples=[((), round(pnl.unrealized, 2))])
    yield gauge("mybot_open_exposure_rupees", "Notional of the open units at their mark",
                samples=[((), round(pnl.open_exposure, 2))])
    loss_limits = [v for v in (limits["daily_max_loss"], limits["daily_max_loss_pct_rupees"]) if v > 0]
    if loss_limits:
        headroom = min(loss_limits) + risk["realized_pnl"]
        yield gauge("mybot_daily_loss_headroom_rupees", "Rupees of realized loss left before the tighter daily "
                    "loss limit halts entries (<= 0: halted)", samples=[((), round(headroom, 2))])
    yield gauge("mybot_consecutive_losses", "Losing trades in a row today", samples=[((), risk["consecutive_losses"])])
    yield gauge("mybot_trading_enabled", "1 when a new entry would pass the risk guard now",
                samples=[((), 1.0 if risk["trading_enabled"] and trading.ready.is_set() else 0.0)])
    yield gauge("mybot_kill_switch_engaged", "1 while the kill switch is engaged",
                samples=[((), 1.0 if risk["kill_switch"]["engaged"] else 0.0)])
    yield gauge("mybot_reconciliation_hold", "1 while a reconciliation incident holds entries",
                samples=[((), 1.0 if risk["reconciliation_hold"]["engaged"] else 0.0)])
    status = trading.api.status()
    entries = status["entries"]
    yield counter("mybot_entries", "Entries asked of the trading desk, by outcome", ["outcome"],
                  [((name,), entries[name]) for name in ("accepted", "denied", "duplicates")])
    reconciliation = status["reconciliation"]
    yield counter("mybot_reconcile_passes", "Reconciliation passes", samples=[((), reconciliation["passes"])])
    yield counter("mybot_reconcile_failures", "Reconciliation passes that failed (broker or database)",
                  samples=[((), reconciliation["failures"])])
