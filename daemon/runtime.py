"""The daemon: storage and bus, the supervision tree for a role, the two HTTP servers, ordered shutdown.

Roles: `mds` (Server A: feed, candle builders, option-chain poller, MDS API), `trader` (Server B:
strategy, executor, trade actors, monitors, control API) and `all` (both in one process, talking over the
in-process bus). Each role contributes a `Part`: its child specs, health checks and status sections.

Shutdown order: HTTP servers first (no new requests), then the supervision tree (children in reverse
start order), then the bus and storage. Root escalation -> the same orderly shutdown, exit code 1, so
supervisord restarts the process. SIGTERM / Ctrl-C -> exit 0.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from actors.clock import Clock, SystemClock
from config.settings import Settings, settings_summary
from storage.bus import Bus, open_bus
from storage.errors import StorageError
from storage.repositories import Storage, open_storage
from supervision.actor import ChildUnavailable
from supervision.scheduler import Scheduler
from supervision.supervisor import (
    AskTimeout,
    Backoff,
    ChildSpec,
    SupervisorHandle,
    start_root,
)
from telemetry.logs import get_logger, redact

__all__ = ["HealthCheck", "Part", "Runtime", "RuntimeContext"]

log = get_logger("mybot.runtime")

ROLES = ("all", "mds", "trader")
EXIT_OK = 0
EXIT_ESCALATED = 1


@dataclass(frozen=True)
class HealthCheck:
    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Part:
    """What a role contributes to the runtime."""

    name: str
    children: list[ChildSpec] = field(default_factory=list)
    health: dict[str, Callable[[], HealthCheck]] = field(default_factory=dict)
    status: dict[str, Callable[[], Any]] = field(default_factory=dict)
    mds_api: Any = None  # the MDS read model served on the MDS port
    trading_api: Any = None  # the trading control surface served on the control port
    after_start: list[Callable[[], None]] = field(default_factory=list)
    before_stop: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class RuntimeContext:
    """What part builders get: settings and the shared infrastructure, nothing global."""

    settings: Settings
    role: str
    storage: Storage
    bus: Bus
    clock: Clock
    scheduler: Scheduler
    storage_ready: threading.Event
    record_path: str = ""
    extras: dict[str, Any] = field(default_factory=dict)

    def backoff(self) -> Backoff:
        s = self.settings.supervision
        return Backoff(initial=s.backoff_initial_seconds, maximum=s.backoff_max_seconds)

    def supervisor(self, name: str, children: list[ChildSpec] | None = None,
                   spec_for_key: Callable[[Any], ChildSpec] | None = None) -> SupervisorHandle:
        s = self.settings.supervision
        return SupervisorHandle(name, children, spec_for_key, ask_timeout=s.ask_timeout_seconds,
                                tell_buffer=s.tell_buffer)

    def supervisor_options(self) -> dict[str, Any]:
        s = self.settings.supervision
        return {"max_restarts": s.max_restarts, "max_seconds": s.max_seconds,
                "shutdown_timeout": s.shutdown_timeout_seconds, "scheduler": self.scheduler}


PartBuilder = Callable[[RuntimeContext], Part]


def default_part_builders(role: str) -> list[PartBuilder]:
    builders: list[PartBuilder] = []
    if role in ("all", "mds"):
        from actors.market_data.assembly import assemble_mds

        builders.append(assemble_mds)
    if role in ("all", "trader"):
        from actors.signals.strategy import assemble_strategy
        from actors.trading.assembly import assemble_trader

        builders += [assemble_trader, assemble_strategy]  # the strategy sends its signals to the executor
    return builders


class Runtime:
    def __init__(self, settings: Settings, role: str = "all", *, clock: Clock | None = None,
                 part_builders: list[PartBuilder] | None = None, record_path: str = "",
                 install_signals: bool = False, serve_http: bool = True,
                 extras: dict[str, Any] | None = None) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        self.settings = settings
        self.role = role
        self.clock = clock or SystemClock()
        self.started_at = 0.0
        self.exit_code = EXIT_OK
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()
        self._install_signals = install_signals
        self._builders = part_builders if part_builders is not None else default_part_builders(role)
        self._record_path = record_path
        self._serve_http = serve_http
        self._extras = extras if extras is not None else {}
        self.parts: list[Part] = []
        self.servers: list[Any] = []
        self.root: SupervisorHandle | None = None
        self.escalation: str | None = None
        for secret in (settings.dhan.client_id, settings.dhan.access_token, settings.control.token,
                       settings.storage_password, settings.redis_password):
            redact(secret.reveal())

    # -- start ----------------------------------------------------------------------------------------
    def start(self) -> Runtime:
        s = self.settings
        self.started_at = time.time()
        log.event("RUNTIME_STARTING", f"mybot starting, role {self.role}", role=self.role,
                  storage=settings_summary(s)["storage"]["url"], feed=s.feed.source, broker=s.broker.kind)
        self.scheduler = Scheduler.shared()
        self.storage = open_storage(s.storage.url, connect_timeout=s.storage.connect_timeout_seconds,
                                    password=s.storage_password.reveal())
        self.storage_ready = threading.Event()
        self._migrate_with_retry(attempt=1)
        self.bus = open_bus(s.storage.redis_url, s.storage.redis_prefix, s.redis_password.reveal())
        ctx = RuntimeContext(s, self.role, self.storage, self.bus, self.clock, self.scheduler,
                             self.storage_ready, self._record_path, self._extras)
        self.context = ctx
        self.parts = [build(ctx) for build in self._builders]
        root = ctx.supervisor("root", [spec for part in self.parts for spec in part.children])
        self.root = start_root(root, self._on_escalate, **ctx.supervisor_options())
        for part in self.parts:
            for hook in part.after_start:
                hook()
        if self._serve_http:
            self._start_http()
        if self._install_signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        # Start-up objects live for the whole run: keep them out of every future GC scan, and collect
        # young objects less often (ticks are short-lived; the default threshold of 700 rescans far
        # too often at hundreds of thousands of ticks per second).
        gc.collect()  # freeze what lives, not garbage (several runtimes in one process: tests, benchmarks)
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        # Measured at 1M ticks through 200 candle actors: 5 ms (CPython's default) 82k ticks/s, 20 ms
        # 123k, 50 ms 152k. Threads that block (most of ours) hand the GIL over at once regardless.
        sys.setswitchinterval(s.supervision.gil_switch_interval_ms / 1000)
        log.event("RUNTIME_STARTED", f"mybot running ({self.role}) in {time.time() - self.started_at:.3f} s",
                  role=self.role, pid=os.getpid())
        return self

    def _migrate_with_retry(self, attempt: int) -> None:
        """Database down at start: retry with backoff on the scheduler; health says so meanwhile."""
        if self._stop_requested.is_set():
            return
        try:
            self.storage.migrate()
        except StorageError as exc:
            delay = min(30.0, 0.5 * 2 ** (attempt - 1))
            log.event("STORAGE_UNAVAILABLE", f"migration failed ({exc}); retry in {delay:.1f} s", level=30,
                      attempt=attempt)
            self.scheduler.call_later(delay, self._migrate_with_retry, attempt + 1)
            return
        self.storage_ready.set()
        if attempt > 1:
            log.event("STORAGE_AVAILABLE", "database reachable, migrations applied", attempt=attempt)

    def _start_http(self) -> None:
        from httpapi.app import create_control_app, create_mds_app
        from httpapi.server import HttpServer

        h = self.settings.http
        mds_api = next((p.mds_api for p in self.parts if p.mds_api is not None), None)
        trading_api = next((p.trading_api for p in self.parts if p.trading_api is not None), None)
        if mds_api is not None:
            app = create_mds_app(mds_api, self)
            self.servers.append(HttpServer(app, h.host, h.mds_port, h.threads, "mds").start())
        control = create_control_app(self, trading_api)
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
                    log.event("SHUTDOWN_HOOK_FAILED", str(exc), level=40, part=part.name, exc_info=exc)
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
        extras: dict[str, Any] = {}
        for part in self.parts:
            for name, provider in part.status.items():
                try:
                    extras[name] = provider()
                except Exception as exc:
                    extras[name] = {"error": str(exc)}
        return {
            "role": self.role,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "uptime_seconds": round(time.time() - self.started_at, 3),
            "supervision": tree,
            **extras,
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
