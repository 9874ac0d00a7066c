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
from actors.dhan.token import TokenState
from actors.dhan.token_keeper import TokenKeeperHandles, assemble_token_keeper
from actors.instruments import InstrumentBook, live_master, snapshot_book
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
from actors.trading.quotes import LtpFetch, QuoteBook, QuoteSource, bus_quotes, chain_quotes
from actors.wiring import HealthCheck, Infrastructure, Subtree
from config.reference import calendar_from_settings
from config.security import reads_require_token
from config.settings import Settings, secret_values, settings_summary
from core.calendar import MarketCalendar
from core.instruments import InstrumentIndex
from core.market import to_iso_ist
from core.token import TokenError, read_claims
from storage.bus import open_bus
from storage.errors import StorageError
from storage.opening import open_storage
from supervision.actor import ChildUnavailable
from supervision.scheduler import Scheduler
from supervision.supervisor import AskTimeout, SupervisorHandle, start_root
from telemetry import metrics
from telemetry.logs import get_logger, incident_id, redact, set_process_context

__all__ = ["ROLES", "Runtime", "Wiring"]

log = get_logger("mybot.runtime")

ROLES = ("all", "mds", "trader")
SUBTREES = ("market_data", "trading", "signals")
ROLE_SUBTREES: dict[str, frozenset[str]] = {
    "all": frozenset(SUBTREES), "mds": frozenset({"market_data"}), "trader": frozenset({"trading", "signals"})}
EXIT_OK = 0
EXIT_ESCALATED = 1
STORED_MASTER_CHECK_SECONDS = 300.0


@dataclass(frozen=True)
class Wiring:
    """What a caller may set besides the settings: the replay runner, tests and benchmarks inject parts here.

    `subtrees`: which subtrees to assemble (default: the role's). `broker` and `quotes` replace the ones the
    runtime would build (an injected broker is the caller's: not closed at shutdown). `signal_sink` replaces
    the trading desk as the strategy's output. `instruments` replaces the instrument master (the snapshot,
    or Dhan's) — a test's own master; a live refresher, if any, still refreshes it. `calendar` replaces the
    one the `calendar` settings make; `chains` replaces where the strategy reads option chains (the replay's
    recorded chains)."""

    subtrees: frozenset[str] | None = None
    market_data: MarketDataOptions = MarketDataOptions()
    strategy: StrategyOptions | None = None
    broker: Broker | None = None
    quotes: QuoteSource | None = None
    signal_sink: SignalSink | None = None
    instruments: InstrumentBook | None = None
    calendar: MarketCalendar | None = None
    chains: MarketView | None = None


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
        self.token_keeper: TokenKeeperHandles | None = None
        self.parts: list[Subtree] = []
        self.mds: MdsConnection | None = None
        self._storage_outage = ""  # the incident id of a database down at start (until migrations apply)
        self._closers: list[Any] = []  # clients the runtime made for the wiring (closed after the tree)
        self.instruments = InstrumentBook()  # the instrument master; chosen in _assemble
        # The one market calendar of the process (risk guard, strategy, feed, chain poller, health).
        self.calendar = self.wiring.calendar if self.wiring.calendar is not None else \
            calendar_from_settings(settings.calendar)
        redact(*secret_values(settings))  # the Secret fields and the passwords inside connection URLs

    # -- start ----------------------------------------------------------------------------------------
    def start(self) -> Runtime:
        s = self.settings
        self.started_at = time.time()
        set_process_context(pid=os.getpid(), role=self.role)
        log.event("RUNTIME_STARTING", f"mybot starting, role {self.role}", role=self.role,
                  storage=settings_summary(s)["storage"]["url"], feed=s.feed.source, broker=s.broker.kind)
        self.scheduler = Scheduler.shared()
        metrics.configure(enabled=s.metrics.enabled)
        metrics.token_expiry.set(_token_expiry(s.dhan.access_token.reveal()))
        self.storage = open_storage(s.storage.url, connect_timeout=s.storage.connect_timeout_seconds,
                                    password=s.storage_password.reveal())
        self.storage_ready = threading.Event()
        self._migrate_with_retry(attempt=1)
        self.bus = open_bus(s.storage.redis_url, s.storage.redis_prefix, s.redis_password.reveal())
        token = TokenState(s.dhan.client_id.reveal(), s.dhan.access_token.reveal(), self.clock) \
            if s.dhan.client_id and s.dhan.access_token else None
        infra = Infrastructure(s, self.role, self.storage, self.bus, self.clock, self.scheduler,
                               self.storage_ready, self._record_path, calendar=self.calendar, token=token)
        self.infra = infra
        self._assemble(infra)
        if infra.token is not None:  # mybot_dhan_token_expiry_seconds follows every renewal
            token = infra.token
            metrics.token_expiry.set(_token_expiry(token.current()))
            token.subscribe(lambda renewed: metrics.token_expiry.set(_token_expiry(renewed)))
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
        self.instruments = w.instruments if w.instruments is not None else self._instrument_book(infra)
        if infra.token is not None:
            self.token_keeper = assemble_token_keeper(infra, infra.token)
        if "market_data" in self.subtrees:
            self.market_data = assemble_market_data(infra, w.market_data, self.instruments)
        elif live_master(s):
            self._follow_stored_master(attempt=0)  # no refresher in this process: the MDS stores the master
        mds = None
        if self.role == "trader" and s.market_data.provider == "mds":
            client = MdsHttpClient.from_settings(s.market_data)
            mds = MdsConnection(client, MdsMarketView(client, infra.clock, s.market_data.quote_max_age_seconds))
        self.mds = mds
        if "trading" in self.subtrees:
            quotes = w.quotes if w.quotes is not None else self._quote_book(mds)
            self.trading = assemble_trading(
                infra, quotes, w.broker, instruments=self.instruments,
                contracts=self.market_data.contracts if self.market_data is not None else None)
        if "signals" in self.subtrees:
            trading = self.trading
            rule, monthly = s.strategy.expiry, self.instruments.monthly_expiries
            chains: MarketView | None
            if w.chains is not None:
                chains = w.chains
            elif mds is not None:
                chains = mds.view
            elif self.market_data is not None:
                chains = cache_chains(self.market_data.cache, rule, monthly)
            else:
                chains = stored_chains(infra.storage, infra.clock, rule, monthly)
            sink = w.signal_sink if w.signal_sink is not None else (trading.desk if trading else None)
            underlyings = tuple(s.feed.symbols)
            self.signals = assemble_signals(
                infra, sink, chains=chains, mds=mds, options=w.strategy,
                risk_view=(lambda: (trading.risk.snapshot(), trading.risk.limits)) if trading else None,
                positions=(lambda: trading.book.positions_by_underlying(underlyings)) if trading else None,
                instruments=self.instruments)
        # The alerts first (started first, stopped last: the line that says the process gives up is still
        # sent while the rest stops), then the token keeper: its TOKEN_EXPIRES_AT (and a renewal due at
        # start) before anything dials Dhan.
        self.parts = [h.subtree for h in (self.alerts, self.token_keeper, self.market_data, self.trading,
                                          self.signals) if h is not None]

    def _instrument_book(self, infra: Infrastructure) -> InstrumentBook:
        """The instrument master every subtree shares: the shipped snapshot for sim/paper/replay; else an
        empty book that Dhan's master fills (market_data's refresher, or the stored copy in role trader)."""
        if live_master(self.settings):
            return InstrumentBook()
        return snapshot_book(infra.clock.now())

    def _follow_stored_master(self, attempt: int) -> None:
        """Role trader with Dhan: the master the MDS process stores, read at start and re-read when newer."""
        if self._stop_requested.is_set():
            return
        delay = STORED_MASTER_CHECK_SECONDS
        if self.storage_ready.is_set():
            try:
                stored_at = self.storage.instruments.loaded_at()
                if stored_at is not None and stored_at > self.instruments.loaded_at:
                    rows = self.storage.instruments.all()
                    self.instruments.replace(InstrumentIndex(rows), source="storage", loaded_at=stored_at)
                    log.event("INSTRUMENTS_LOADED", f"instrument master read from the database: {len(rows)} "
                              "instruments", source="storage", instruments=len(rows), loaded_at=stored_at)
                elif stored_at is None and attempt == 0:
                    log.event("INSTRUMENTS_MISSING", "no instrument master stored yet (the MDS process loads it): "
                              "lots and ticks unknown until it does", level=30)
            except StorageError as exc:
                log.event("INSTRUMENTS_RESTORE_FAILED", f"stored instrument master unavailable: {exc}", level=30)
                delay = min(delay, 5.0 * 2 ** min(attempt, 6))
        else:
            delay = 1.0
        self.scheduler.call_later(delay, self._follow_stored_master, attempt + 1)

    def _ltp_fetch(self) -> LtpFetch | None:
        """A REST LTP for prices nothing fresher knows (Dhan's quote API, 1 request/s), where this process
        talks to Dhan."""
        s = self.settings
        if not (live_master(s) and s.dhan.client_id and s.dhan.access_token):
            return None
        from actors.dhan.client import DhanClient

        client = DhanClient(s, clock=self.clock)
        self._closers.append(client.close)
        return client.ltp_of

    def _quote_book(self, mds: MdsConnection | None) -> QuoteBook:
        """Where the trading side's prices come from, by what this process has (see actors/trading/quotes)."""
        s = self.settings
        underlyings = tuple(s.option_chain.underlyings)
        now, max_age = self.clock.now, s.execution.max_quote_age_seconds
        if self.market_data is not None:
            cache = self.market_data.cache
            return QuoteBook(timed=[("tick", cache.quote), ("chain", cache.chain_quote)], fetch=self._ltp_fetch(),
                             now=now, max_age_seconds=max_age)
        if mds is not None:  # the trader asks the MDS only, never Dhan, for prices
            return QuoteBook([mds.view.quote], now=now, max_age_seconds=max_age)
        bus = self.bus

        def bus_payloads(underlying: str) -> list[tuple[object, float]]:
            try:
                raw = bus.get(f"option_chain:{underlying}")
                if raw is None:
                    return []
                body = orjson.loads(raw)
                return [(body.get("payload"), float(body.get("updated_at") or 0.0))]
            except (StorageError, ValueError, AttributeError, TypeError):
                return []

        return QuoteBook(timed=[("bus", bus_quotes(bus)), ("chain", chain_quotes(underlyings, bus_payloads))],
                         fetch=self._ltp_fetch(), now=now, max_age_seconds=max_age)

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
            app = create_mds_app(self.market_data.cache, self, self.instruments.canonical)
            self.servers.append(HttpServer(app, h.host, h.mds_port, h.threads, "mds",
                                           connection_limit=h.connection_limit).start())
        market: Any = None
        if self.market_data is not None:
            market = self.market_data.cache
        elif self.mds is not None:
            from httpapi.dashboard import MdsProxyView

            market = MdsProxyView(self.mds.client, tuple(self.settings.feed.symbols))
        control = create_control_app(self, self.trading.api if self.trading is not None else None, market)
        self.servers.append(HttpServer(control, h.control_host, h.control_port, h.threads, "control",
                                       connection_limit=h.connection_limit).start())

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
        for closer in (*self._closers, self.bus.close, self.storage.close):
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

    def market(self) -> dict[str, Any]:
        """The exchange now, for health: {"market": "open" | "closed", "market_reason", "next_open"}."""
        status = self.calendar.market_status(self.clock.now())
        return {"market": status.state, "market_reason": status.reason,
                "next_open": to_iso_ist(status.next_open) if status.next_open is not None else None}

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
        sections.setdefault("instruments", self.instruments.status())
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
        return self.root.restart(actor_id)  # "root" restarts every subtree in place

    def control_token(self) -> str:
        return self.settings.control.token.reveal()

    def control_reads_require_token(self) -> bool:
        """Reads on the control port need the bearer token (config.security.reads_require_token)."""
        return reads_require_token(self.settings.control.reads_require_token, self.settings.http.control_host)


def _token_expiry(token: str) -> float | None:
    """A Dhan token's expiry for mybot_dhan_token_expiry_seconds (None: no readable JWT)."""
    if not token:
        return None
    try:
        return read_claims(token).expires_at
    except TokenError:
        return None
