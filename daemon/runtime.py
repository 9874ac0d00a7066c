"""The daemon: storage and bus, the supervision tree for a role, the two HTTP servers, ordered shutdown.

Roles: `mds` (Server A: feed, candle builders, option-chain poller, MDS API), `trader` (Server B:
strategy, executor, trade actors, monitors, control API) and `all` (both in one process, talking over the
in-process bus). `Runtime._assemble` is the one composition root: each subtree (actors/market_data,
actors/trading, actors/signals) is built in dependency order and handed the typed handles it needs.

Shutdown order: HTTP servers first (no new requests), then the supervision tree (children in reverse
start order), then the bus and storage. Root escalation -> the same orderly shutdown, exit code 1, so
supervisord restarts the process. SIGTERM / Ctrl-C -> exit 0.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson

from actors.alerts.assembly import AlertsHandles, assemble_alerts
from actors.brokers.base import Broker
from actors.clock import Clock, SystemClock
from actors.market_data.assembly import MarketDataHandles, MarketDataOptions, assemble_market_data
from actors.signals.assembly import (
    MdsConnection,
    SignalsHandles,
    assemble_signals,
    cache_chains,
    stored_chains,
)
from actors.signals.messages import MarketView, SignalSink
from actors.signals.strategy import StrategyOptions
from actors.sources.mds_http import MdsHttpClient, MdsMarketView
from actors.trading.assembly import TradingHandles, assemble_trading
from actors.trading.quotes import QuoteBook, QuoteSource, bus_quotes, chain_quotes
from actors.wiring import HealthCheck, Infrastructure, Subtree
from config.settings import Settings, settings_summary
from storage.bus import open_bus
from storage.errors import StorageError
from storage.opening import open_storage
from supervision.actor import ChildUnavailable
from supervision.scheduler import Scheduler
from supervision.supervisor import AskTimeout, SupervisorHandle, start_root
from telemetry.logs import get_logger, incident_id, redact, set_process_context

__all__ = ["ROLES", "Runtime", "Wiring"]

log = get_logger("mybot.runtime")

ROLES = ("all", "mds", "trader")
SUBTREES = ("market_data", "trading", "signals")
ROLE_SUBTREES: dict[str, frozenset[str]] = {
    "all": frozenset(SUBTREES), "mds": frozenset({"market_data"}), "trader": frozenset({"trading", "signals"})}
EXIT_OK = 0
EXIT_ESCALATED = 1


@dataclass(frozen=True)
class Wiring:
    """What a caller may set besides the settings: the replay runner, tests and benchmarks inject parts here.

    `subtrees`: which subtrees to assemble (default: the role's). `broker` and `quotes` replace the ones the
    runtime would build (an injected broker is the caller's: not closed at shutdown). `signal_sink` replaces
    the trading desk as the strategy's output."""

    subtrees: frozenset[str] | None = None
    market_data: MarketDataOptions = MarketDataOptions()
    strategy: StrategyOptions | None = None
    broker: Broker | None = None
    quotes: QuoteSource | None = None
    signal_sink: SignalSink | None = None


class Runtime:
    def __init__(self, settings: Settings, role: str = "all", *, clock: Clock | None = None,
                 wiring: Wiring | None = None, record_path: str = "",
                 install_signals: bool = False, serve_http: bool = True) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        self.settings = settings
        self.role = role
        self.clock = clock or SystemClock()
        self.wiring = wiring or Wiring()
        subtrees = self.wiring.subtrees if self.wiring.subtrees is not None else ROLE_SUBTREES[role]
        unknown = set(subtrees) - set(SUBTREES)
        if unknown:
            raise ValueError(f"unknown subtrees {sorted(unknown)}: expected some of {', '.join(SUBTREES)}")
        self.subtrees = subtrees
        self.started_at = 0.0
        self.exit_code = EXIT_OK
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()
        self._install_signals = install_signals
        self._record_path = record_path
        self._serve_http = serve_http
        self.servers: list[Any] = []
        self.root: SupervisorHandle | None = None
        self.escalation: str | None = None
        self.market_data: MarketDataHandles | None = None
        self.trading: TradingHandles | None = None
        self.signals: SignalsHandles | None = None
        self.alerts: AlertsHandles | None = None
        self.parts: list[Subtree] = []
        self._storage_outage = ""  # the incident id of a database down at start (until migrations apply)
        for secret in (settings.dhan.client_id, settings.dhan.access_token, settings.control.token,
                       settings.storage_password, settings.redis_password, settings.alerts.telegram_token,
                       settings.alerts.webhook_secret):
            redact(secret.reveal())

    # -- start ----------------------------------------------------------------------------------------
    def start(self) -> Runtime:
        s = self.settings
        self.started_at = time.time()
        set_process_context(pid=os.getpid(), role=self.role)
        log.event("RUNTIME_STARTING", f"mybot starting, role {self.role}", role=self.role,
                  storage=settings_summary(s)["storage"]["url"], feed=s.feed.source, broker=s.broker.kind)
        self.scheduler = Scheduler.shared()
        self.storage = open_storage(s.storage.url, connect_timeout=s.storage.connect_timeout_seconds,
                                    password=s.storage_password.reveal())
        self.storage_ready = threading.Event()
        self._migrate_with_retry(attempt=1)
        self.bus = open_bus(s.storage.redis_url, s.storage.redis_prefix, s.redis_password.reveal())
        infra = Infrastructure(s, self.role, self.storage, self.bus, self.clock, self.scheduler,
                               self.storage_ready, self._record_path)
        self.infra = infra
        self._assemble(infra)
        root = infra.supervisor("root")
        for part in self.parts:
            root.add(part.spec)
        self.root = start_root(root, self._on_escalate, **infra.supervisor_options())
        for part in self.parts:
            for hook in part.after_start:
                hook()
        if self._serve_http:
            self._start_http()
        if self._install_signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        log.event("RUNTIME_STARTED", f"mybot running ({self.role}) in {time.time() - self.started_at:.3f} s",
                  role=self.role, pid=os.getpid())
        return self

    def _assemble(self, infra: Infrastructure) -> None:
        """The one composition root: each subtree is built in dependency order and handed, explicitly, the
        typed handles of those it needs. Nothing is looked up later."""
        s, w = self.settings, self.wiring
        # First built, so first started and last stopped: the line that says the process gives up is
        # still sent while the other subtrees stop (actors/alerts/assembly.py).
        self.alerts = assemble_alerts(infra)
        if "market_data" in self.subtrees:
            self.market_data = assemble_market_data(infra, w.market_data)
        mds = None
        if self.role == "trader" and s.market_data.provider == "mds":
            client = MdsHttpClient.from_settings(s.market_data)
            mds = MdsConnection(client, MdsMarketView(client, infra.clock, s.market_data.quote_max_age_seconds))
        if "trading" in self.subtrees:
            quotes = w.quotes if w.quotes is not None else self._quote_book(mds)
            self.trading = assemble_trading(infra, quotes, w.broker)
        if "signals" in self.subtrees:
            trading = self.trading
            chains: MarketView | None
            if mds is not None:
                chains = mds.view
            elif self.market_data is not None:
                chains = cache_chains(self.market_data.cache)
            else:
                chains = stored_chains(infra.storage, infra.clock)
            sink = w.signal_sink if w.signal_sink is not None else (trading.desk if trading else None)
            underlyings = tuple(s.feed.symbols)
            self.signals = assemble_signals(
                infra, sink, chains=chains, mds=mds, options=w.strategy,
                risk_view=(lambda: (trading.risk.snapshot(), trading.risk.limits)) if trading else None,
                positions=(lambda: trading.book.positions_by_underlying(underlyings)) if trading else None)
        self.parts = [h.subtree for h in (self.alerts, self.market_data, self.trading, self.signals) if h is not None]

    def _quote_book(self, mds: MdsConnection | None) -> QuoteBook:
        """Where the trading side's prices come from, by what this process has (see actors/trading/quotes)."""
        underlyings = tuple(self.settings.option_chain.underlyings)
        if self.market_data is not None:
            cache = self.market_data.cache

            def cache_quote(symbol: str) -> float | None:
                quote = cache.quote(symbol)
                return float(quote[0]) if quote is not None else None

            def cache_payloads(underlying: str) -> list[object]:
                records = (cache.option_chain(underlying, expiry) for expiry in cache.chain_expiries(underlying))
                return [record.payload for record in records if record is not None]

            return QuoteBook([cache_quote, chain_quotes(underlyings, cache_payloads)])
        if mds is not None:
            return QuoteBook([mds.view.quote])
        bus = self.bus

        def bus_payloads(underlying: str) -> list[object]:
            try:
                raw = bus.get(f"option_chain:{underlying}")
                return [orjson.loads(raw).get("payload")] if raw is not None else []
            except (StorageError, ValueError, AttributeError):
                return []

        return QuoteBook([bus_quotes(bus), chain_quotes(underlyings, bus_payloads)])

    def _migrate_with_retry(self, attempt: int) -> None:
        """Database down at start: retry with backoff on the scheduler; health says so meanwhile."""
        if self._stop_requested.is_set():
            return
        try:
            self.storage.migrate()
        except StorageError as exc:
            delay = min(30.0, 0.5 * 2 ** (attempt - 1))
            if attempt == 1:
                self._storage_outage = incident_id("DATABASE_OUTAGE", "migrations", time.time())
            log.event("STORAGE_UNAVAILABLE", f"migration failed ({exc}); retry in {delay:.1f} s", level=30,
                      attempt=attempt, incident_id=self._storage_outage)
            self.scheduler.call_later(delay, self._migrate_with_retry, attempt + 1)
            return
        self.storage_ready.set()
        if attempt > 1:
            log.event("STORAGE_AVAILABLE", "database reachable, migrations applied", attempt=attempt,
                      incident_id=self._storage_outage)

    def _start_http(self) -> None:
        from httpapi.app import create_control_app, create_mds_app
        from httpapi.server import HttpServer

        h = self.settings.http
        if self.market_data is not None:
            app = create_mds_app(self.market_data.cache, self)
            self.servers.append(HttpServer(app, h.host, h.mds_port, h.threads, "mds").start())
        control = create_control_app(self, self.trading.api if self.trading is not None else None)
        self.servers.append(HttpServer(control, h.host, h.control_port, h.threads, "control").start())

    # -- run / stop -------------------------------------------------------------------------------------
    def wait(self) -> int:
        """Block until a signal or an escalation asks to stop; then shut down in order. The exit code."""
        while not self._stop_requested.wait(0.1):
            pass
        self.shutdown()
        return self.exit_code

    def request_stop(self, reason: str = "requested") -> None:
        if not self._stop_requested.is_set():
            log.event("RUNTIME_STOP_REQUESTED", f"stopping: {reason}", reason=reason)
        self._stop_requested.set()

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.request_stop(signal.Signals(signum).name)

    def _on_escalate(self, reason: str) -> None:
        self.escalation = reason
        self.exit_code = EXIT_ESCALATED
        log.event("RUNTIME_ESCALATED", f"root supervisor gave up: {reason}; shutting down for a restart",
                  level=50, reason=reason)
        self._stop_requested.set()

    def shutdown(self) -> None:
        if self._stopped.is_set():
            return
        self._stop_requested.set()
        started = time.monotonic()
        for server in self.servers:
            server.stop(timeout=1.0)
        for part in self.parts:
            for hook in part.before_stop:
                try:
                    hook()
                except Exception as exc:  # shutdown goes on whatever one hook does
                    log.event("SHUTDOWN_HOOK_FAILED", str(exc), level=40, part=part.spec.id, exc_info=exc)
        if self.root is not None and self.root.owner is not None:
            ref = self.root.owner.ref  # type: ignore[union-attr]
            try:
                ref.stop(block=True, timeout=self.settings.supervision.shutdown_timeout_seconds)
            except Exception as exc:  # a hung actor thread cannot be killed: say so and go on
                log.event("SHUTDOWN_TIMEOUT", f"supervision tree did not stop cleanly: {exc}", level=40)
        for closer in (self.bus.close, self.storage.close):
            try:
                closer()
            except Exception as exc:
                log.event("SHUTDOWN_CLOSE_FAILED", str(exc), level=30)
        self._stopped.set()
        log.event("RUNTIME_STOPPED", f"mybot stopped in {time.monotonic() - started:.3f} s",
                  exit_code=self.exit_code)

    # -- views for the HTTP layer -------------------------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, HealthCheck] = {"database": self._database_health(),
                                          "supervisor": self._supervisor_health()}
        if self.settings.storage.redis_url:
            checks["redis"] = self._redis_health()
        for part in self.parts:
            for name, check in part.health.items():
                try:
                    checks[name] = check()
                except Exception as exc:  # a failing check is a failed check, not a 500
                    checks[name] = HealthCheck(False, {"error": str(exc)})
        ok = all(c.ok for c in checks.values())
        return ok, {name: {"ok": c.ok, **c.detail} for name, c in checks.items()}

    def _database_health(self) -> HealthCheck:
        try:
            self.storage.ping()
        except StorageError as exc:
            return HealthCheck(False, {"backend": self.storage.backend, "error": str(exc)})
        if not self.storage_ready.is_set():
            return HealthCheck(False, {"backend": self.storage.backend, "error": "migrations pending"})
        return HealthCheck(True, {"backend": self.storage.backend})

    def _redis_health(self) -> HealthCheck:
        try:
            self.bus.ping()
        except StorageError as exc:
            return HealthCheck(False, {"error": str(exc), **self.bus.stats()})
        return HealthCheck(True, self.bus.stats())

    def _supervisor_health(self) -> HealthCheck:
        if self.escalation:
            return HealthCheck(False, {"error": f"escalated: {self.escalation}"})
        if self.root is None:
            return HealthCheck(False, {"error": "not started"})
        # Non-blocking reads of the tree (no ask): a crash-looping child, or one waiting in backoff or for
        # a stuck predecessor to end, turns health 503 by name, at any depth.
        down = [h.id for h in self.root.children() if not h.alive]
        unhealthy = self.root.unhealthy()
        detail: dict[str, Any] = {}
        if down:
            detail["down"] = down
        if unhealthy:
            detail["unhealthy"] = unhealthy
        return HealthCheck(not detail, detail)

    def status(self) -> dict[str, Any]:
        tree: Any
        try:
            tree = self.root.status() if self.root else None
        except (ChildUnavailable, AskTimeout) as exc:
            tree = {"error": str(exc)}
        sections: dict[str, Any] = {}
        for part in self.parts:
            for name, provider in part.status.items():
                try:
                    sections[name] = provider()
                except Exception as exc:
                    sections[name] = {"error": str(exc)}
        return {
            "role": self.role,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "uptime_seconds": round(time.time() - self.started_at, 3),
            "supervision": tree,
            **sections,
            "config": settings_summary(self.settings),
        }

    def restart_actor(self, actor_id: str) -> dict[str, Any]:
        if self.root is None:
            raise ChildUnavailable("not started")
        found = self.root.find(actor_id)
        if found is None:
            raise KeyError(actor_id)
        supervisor, _ = found
        return supervisor.restart_child(actor_id)

    def control_token(self) -> str:
        return self.settings.control.token.reveal()
