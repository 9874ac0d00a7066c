"""Role `trader` (the seed's Server B, execution side): how its actors are wired and supervised.

    trading (one_for_one)
      ├─ trades (dynamic)      trade:<pos_id>, one TradeActor per position, transient, with backoff
      ├─ executor              the single execution entry point: risk guard, placement fence, broker
      ├─ timeout-monitor       ORDER_TIMEOUT and stuck submits/cancels
      └─ reconciler            start-up adoption + broker vs book every reconcile.interval_seconds

Signals come in through `ctx.extras["trader"]` (a TraderHandles): the strategy tells
`handles.executor` its EntrySignalRaised / ExitSignalRaised (or calls `handles.submit(signal)`).
Order updates: the broker's listener (paper: fills on a scheduler timer every broker.paper_poll_ms;
dhan: the order-update websocket) goes to the OrderRouter, which tells the owning trade actor; the
reconciler's polling is the safety net.

Quotes (the marketable LIMIT price, exits, the paper broker's fills, the API's marks) come from the
in-process MDS read model in role `all`; in role `trader` from `ctx.extras["quote"]` (the strategy's MDS
client, published after this assembly and looked up lazily), else from the bus keys the MDS publisher
writes (`quote:<symbol>`, `option_chain:<underlying>` for SEC_<id> premiums). Without a quote an entry
uses its signal's price and an exit its entry price (logged QUOTE_MISSING).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from actors.brokers.base import Broker
from actors.brokers.paper import PaperBroker, paper_broker_from_settings
from actors.trading.api import TradingApi
from actors.trading.executor import Executor, ExecutorState, UnroutedUpdate
from actors.trading.reconciler import Reconciler, ReconcileState
from actors.trading.risk_guard import RiskGuard
from actors.trading.timeout_monitor import MonitorState, TimeoutMonitor
from actors.trading.trade_actor import OrderRouter, TradeActor, TradeBook, TraderDeps
from core.risk import RiskLimits
from core.signals import EntrySignalRaised, ExitSignalRaised
from daemon.runtime import HealthCheck, Part, RuntimeContext
from storage.bus import Bus
from storage.errors import StorageError
from supervision.scheduler import Timer
from supervision.supervisor import ChildHandle, ChildSpec, Restart, SupervisorHandle, supervisor_spec

__all__ = ["QuoteBook", "TraderHandles", "assemble_trader", "build_broker"]

CHAIN_CACHE_SECONDS = 0.5


@dataclass(frozen=True)
class TraderHandles:
    """What other parts (the strategy) and tests use to reach the trading actors."""

    executor: ChildHandle  # tell it EntrySignalRaised / ExitSignalRaised
    trades: SupervisorHandle
    book: TradeBook
    risk: RiskGuard
    ready: threading.Event  # set once the start-up reconciliation has passed
    api: TradingApi
    broker: Broker
    deps: TraderDeps
    reconcile: ReconcileState

    def submit(self, signal: EntrySignalRaised | ExitSignalRaised) -> bool:
        return self.executor.tell(signal)

    def open_positions(self) -> dict[str, tuple[str, int]]:
        """underlying -> (pos_id, direction) of the live trades: the shape SignalPolicy.decide reads.

        The underlying is the first word of the trade's instrument ("NIFTY 24500 CE" -> NIFTY, as the
        executor writes it from an EntrySignalRaised); the direction is +1 long / -1 short the
        underlying (a bought PE is short)."""
        out: dict[str, tuple[str, int]] = {}
        for context in self.book.contexts():
            if context.is_terminal:
                continue
            words = context.instrument.split()
            underlying = words[0] if words else context.symbol
            direction = 1 if context.side.value == "BUY" else -1
            if words and words[-1] == "PE":
                direction = -direction
            out[underlying] = (context.pos_id, direction)
        return out


class QuoteBook:
    """Latest prices for the trading side: explicit overrides, the MDS read model, then the bus."""

    def __init__(self, cache: Any = None, bus: Bus | None = None, underlyings: Iterable[str] = (),
                 late: Callable[[], Callable[[str], float | None] | None] | None = None) -> None:
        self._cache = cache
        self._bus = bus
        self._late = late  # a quote function another part publishes after this one is built
        self._underlyings = tuple(underlyings)
        self._overrides: dict[str, float] = {}
        self._chain_prices: dict[str, float] = {}
        self._chain_at = -1e9
        self._lock = threading.Lock()

    def set(self, symbol: str, price: float | None) -> None:
        """Pin a price (tests, a manual override); None removes it."""
        with self._lock:
            if price is None:
                self._overrides.pop(symbol, None)
            else:
                self._overrides[symbol] = float(price)

    def __call__(self, symbol: str) -> float | None:
        with self._lock:
            pinned = self._overrides.get(symbol)
        if pinned is not None:
            return pinned
        if self._cache is not None:
            quote = self._cache.quote(symbol)
            if quote is not None and quote[0] > 0:
                return float(quote[0])
        late = self._late() if self._late is not None else None
        if late is not None:
            price = late(symbol)
            return price if price and price > 0 else None
        if self._cache is None and self._bus is not None:
            price = self._bus_quote(symbol)
            if price is not None:
                return price
        if symbol.startswith("SEC_"):
            return self._chain_prices_now().get(symbol)
        return None

    def _bus_quote(self, symbol: str) -> float | None:
        assert self._bus is not None
        try:
            raw = self._bus.get(f"quote:{symbol}")
        except StorageError:
            return None
        if raw is None:
            return None
        try:
            price = float(orjson.loads(raw)["ltp"])
        except (ValueError, KeyError, TypeError):
            return None
        return price if price > 0 else None

    def _chain_prices_now(self) -> dict[str, float]:
        """SEC_<id> -> last_price from the latest option chains (indexed at most every 0.5 s)."""
        now = time.monotonic()
        with self._lock:
            if now - self._chain_at < CHAIN_CACHE_SECONDS:
                return self._chain_prices
        prices: dict[str, float] = {}
        for underlying in self._underlyings:
            for payload in self._chain_payloads(underlying):
                _index_chain(payload, prices)
        with self._lock:
            self._chain_prices, self._chain_at = prices, now
        return prices

    def _chain_payloads(self, underlying: str) -> list[Any]:
        if self._cache is not None:
            payloads = []
            for expiry in self._cache.chain_expiries(underlying):
                record = self._cache.option_chain(underlying, expiry)
                if record is not None:
                    payloads.append(record.payload)
            return payloads
        if self._bus is None:
            return []
        try:
            raw = self._bus.get(f"option_chain:{underlying}")
        except StorageError:
            return []
        if raw is None:
            return []
        try:
            return [orjson.loads(raw).get("payload")]
        except (ValueError, AttributeError):
            return []


def _index_chain(payload: Any, prices: dict[str, float]) -> None:
    node = payload
    for _ in range(3):  # the raw Dhan body, the SDK's wrapper or the inner object
        if isinstance(node, dict) and isinstance(node.get("oc"), dict):
            break
        node = node.get("data") if isinstance(node, dict) else None
    if not isinstance(node, dict) or not isinstance(node.get("oc"), dict):
        return
    for legs in node["oc"].values():
        if not isinstance(legs, dict):
            continue
        for leg in legs.values():
            if isinstance(leg, dict) and leg.get("security_id") not in (None, "", 0):
                try:
                    price = float(leg.get("last_price") or 0.0)
                except (TypeError, ValueError):
                    continue
                if price > 0:
                    prices[f"SEC_{leg['security_id']}"] = price


def build_broker(ctx: RuntimeContext, quotes: Callable[[str], float | None]) -> Broker:
    s = ctx.settings
    if s.broker.kind == "dhan":
        from actors.dhan.broker import DhanBroker

        return DhanBroker(s, ctx.clock)
    return paper_broker_from_settings(s.broker, quotes, ctx.clock)


def assemble_trader(ctx: RuntimeContext, *, broker: Broker | None = None,
                    quotes: Callable[[str], float | None] | None = None) -> Part:
    """The trading part. `broker` / `quotes` are injected by tests and benchmarks (an injected broker
    is the caller's: it is not closed at shutdown)."""
    s = ctx.settings
    if quotes is None:
        mds = ctx.extras.get("mds")
        cache = getattr(mds, "cache", None)
        # In role trader the strategy's MDS client publishes ctx.extras["quote"] after this assembly.
        quotes = QuoteBook(cache, None if cache is not None else ctx.bus, s.option_chain.underlyings,
                           late=lambda: ctx.extras.get("quote"))
    owns_broker = broker is None
    broker = broker if broker is not None else build_broker(ctx, quotes)
    ready = threading.Event()
    book = TradeBook()
    router = OrderRouter()
    risk = RiskGuard(RiskLimits.from_settings(s.risk), ctx.storage, ctx.clock)
    deps = TraderDeps(storage=ctx.storage, broker=broker, clock=ctx.clock, risk=risk, book=book, router=router,
                      quotes=quotes, execution=s.execution, protection_band_pct=s.broker.protection_band_pct)
    executor_state = ExecutorState()
    monitor_state = MonitorState()
    reconcile_state = ReconcileState()

    trading = ctx.supervisor("trading")
    trades = ctx.supervisor("trades", spec_for_key=lambda pos_id: ChildSpec(
        id=f"trade:{pos_id}",
        start=lambda link: TradeActor.start(link, pos_id, deps, deps.intros.pop(pos_id, None)),
        restart=Restart.TRANSIENT, backoff=replace(ctx.backoff(), maximum=min(5.0, ctx.backoff().maximum))))
    deps.trades = trades

    def bind() -> None:
        """Child handles exist once the trading supervisor registered its children (before any starts)."""
        if deps.executor is None:
            deps.executor = trading.handle("executor")
        if deps.monitor is None:
            deps.monitor = trading.handle("timeout-monitor")

    def start_executor(link: Any) -> Any:
        bind()
        return Executor.start(link, deps, executor_state, ctx.scheduler, ready)

    def start_monitor(link: Any) -> Any:
        bind()
        return TimeoutMonitor.start(link, router, ctx.clock, ctx.scheduler, s.execution.order_timeout_seconds,
                                    monitor_state)

    def start_reconciler(link: Any) -> Any:
        bind()
        return Reconciler.start(link, deps, ready, ctx.storage_ready, ctx.scheduler, s.reconcile.interval_seconds,
                                reconcile_state)

    options = ctx.supervisor_options()
    trade_options = {**options, "max_restarts": max(options["max_restarts"] * 10, 50)}
    trading.add(supervisor_spec(trades, **trade_options))
    executor = trading.add(ChildSpec("executor", start_executor))
    trading.add(ChildSpec("timeout-monitor", start_monitor))
    trading.add(ChildSpec("reconciler", start_reconciler, backoff=ctx.backoff()))
    children = [supervisor_spec(trading, **options)]

    def unrouted(order: Any) -> None:
        if deps.executor is not None:
            deps.executor.tell(UnroutedUpdate(order))

    router.bind(trades, unrouted)
    broker.subscribe_order_updates(router.on_update)

    api = TradingApi(deps, executor, ready, reconcile_state,
                     executor_state, monitor_state, s.execution.lot_sizes,
                     answer_timeout=max(2.0, s.supervision.ask_timeout_seconds * 2))
    poll_timer: list[Timer] = []

    def start_polling() -> None:
        if isinstance(broker, PaperBroker):
            poll_timer.append(ctx.scheduler.call_every(s.broker.paper_poll_ms / 1000.0, _safe_poll(broker)))

    def stop_polling() -> None:
        for timer in poll_timer:
            timer.cancel()
        if owns_broker:
            broker.close()

    def trading_health() -> HealthCheck:
        snapshot = reconcile_state.snapshot()
        state = risk.snapshot()
        detail = {"ready": ready.is_set(), "broker": broker.name, "live_trades": len(book.contexts()),
                  "reconcile_last_error": snapshot["last_error"], "kill_switch": state.kill_switch_engaged,
                  "reconciliation_hold": state.reconciliation_hold}
        return HealthCheck(ready.is_set() and not snapshot["last_error"], detail)

    handles = TraderHandles(executor=executor,
                            trades=trades, book=book, risk=risk, ready=ready, api=api, broker=broker, deps=deps,
                            reconcile=reconcile_state)
    ctx.extras["trader"] = handles
    return Part(name="trader", children=children, health={"trading": trading_health},
                status={"trading": api.status}, trading_api=api, after_start=[start_polling],
                before_stop=[stop_polling])


def _safe_poll(broker: PaperBroker) -> Callable[[], None]:
    def poll() -> None:
        try:
            broker.poll()
        except Exception:  # a closed broker at shutdown; the timer goes on until cancelled
            pass
    return poll
