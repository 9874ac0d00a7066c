"""The `trading` subtree (role trader / all; the seed's Server B, execution side): built and wired here.

    trading (one_for_one)
      ├─ trades (dynamic)      trade:<pos_id>, one TradeActor per position: the only owner of its trade
      ├─ executor              the placement service: lock -> claim -> submit or resolve -> result
      ├─ timeout-monitor       ORDER_TIMEOUT, stuck submits and cancels, square-off and flatten sweeps
      ├─ protection            stop-loss, target, trailing stop and time exits, on every tick (exits.*)
      └─ reconciler            start-up adoption + broker vs book every reconcile.interval_seconds

In: `TradingHandles.desk` takes the strategy's signals and the operator's entries and exits. Order
updates: the broker's listener (paper: fills on a scheduler timer every broker.paper_poll_ms; dhan: the
order-update websocket) goes to the OrderRouter, which tells the owning trade actor; the reconciler's
polling is the safety net. Prices come from the `QuoteSource` the runtime hands in; lots and ticks from
the instrument master (`InstrumentBook`); a trade keeps its contract on the live feed through the
`ContractWatch` (role all: the market_data subtree's feed; None where this process has no feed).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from actors.brokers.base import Broker
from actors.brokers.paper import PaperBroker, paper_broker_from_settings
from actors.instruments import InstrumentBook
from actors.trading.api import TradeDesk, TradingApi, TradingViews
from actors.trading.book import OrderRouter, TradeBook
from actors.trading.executor import Executor, ExecutorCounters, PlacementLedger
from actors.trading.leases import TradeLeases, default_owner_id
from actors.trading.messages import EntryCounters
from actors.trading.protection import ProtectionMonitor, ProtectionView
from actors.trading.quotes import QuoteBook, QuoteSource
from actors.trading.reconcile_state import ReconcileState
from actors.trading.reconciler import ReconcileDeps, Reconciler, UnroutedUpdate
from actors.trading.risk_guard import RiskGuard, no_marks
from actors.trading.timeout_monitor import MonitorCounters, TimeoutMonitor
from actors.trading.trade_actor import TradeActor
from actors.trading.trade_deps import NewTrade, TradeDeps, TradeOrigin
from actors.wiring import ContractWatch, HealthCheck, Infrastructure, Subtree
from config.reference import rate_table
from config.settings import ExitsSettings
from core.charges import ChargesError, RateTable, fill_charges
from core.orders import Side
from core.protection import ProtectionRules
from core.risk import RiskLimits, ist_day
from core.trade import OrderCharges
from supervision.scheduler import Timer
from supervision.store import Store
from supervision.supervisor import ChildHandle, ChildSpec, Restart, SupervisorHandle
from telemetry.logs import get_logger

__all__ = ["TradingHandles", "assemble_trading", "build_broker"]

log = get_logger("mybot.trading")


@dataclass(frozen=True)
class TradingHandles:
    """What the runtime, the other subtrees' wiring, the control API and tests use."""

    subtree: Subtree
    desk: TradeDesk  # entries and exits in; the signals subtree's SignalSink
    api: TradingApi
    book: TradeBook
    risk: RiskGuard
    broker: Broker
    quotes: QuoteSource
    instruments: InstrumentBook
    ready: threading.Event  # set once the start-up reconciliation has passed
    trades: SupervisorHandle
    executor: ChildHandle
    reconcile: ReconcileState


def order_charges(rates: RateTable) -> OrderCharges:
    """An order's charges at the rates of its IST day (options on NSE; brokerage once per order)."""

    def charges(side: Side, qty: int, price: float, at: float) -> float:
        try:
            return fill_charges(rates, side=side, qty=qty, price=price, day=ist_day(at)).total
        except ChargesError as exc:  # a fill is never refused for its charges: counted as 0, and said so
            log.event("CHARGES_UNKNOWN", f"charges of {side} {qty} @ {price} not computed: {exc}", level=30)
            return 0.0

    return charges


def exit_rules(exits: ExitsSettings) -> ProtectionRules:
    """The exits.* defaults every entry starts from."""
    return ProtectionRules(exits.stop_loss_pct, exits.target_pct, exits.trailing_stop_pct,
                           exits.max_holding_minutes)


def build_broker(infra: Infrastructure, quotes: QuoteSource, instruments: InstrumentBook | None = None) -> Broker:
    s = infra.settings
    if s.broker.kind == "dhan":
        from actors.dhan.broker import DhanBroker

        return DhanBroker(s, infra.clock, token=infra.token,
                          tick_size=instruments.tick_size if instruments is not None else None)
    # Paper fills run on the shared scheduler thread: they price from what is known, never wait on a REST LTP.
    return paper_broker_from_settings(s.broker, quotes.known if isinstance(quotes, QuoteBook) else quotes,
                                      infra.clock)


def assemble_trading(infra: Infrastructure, quotes: QuoteSource, broker: Broker | None = None, *,
                     instruments: InstrumentBook | None = None,
                     contracts: ContractWatch | None = None) -> TradingHandles:
    """The trading subtree. An injected `broker` (tests, benchmarks) is the caller's: not closed at shutdown.
    `instruments`: lots and ticks (default: an empty master, where only execution.lot_sizes is known)."""
    s = infra.settings
    instruments = instruments if instruments is not None else InstrumentBook()
    owns_broker = broker is None
    broker = broker if broker is not None else build_broker(infra, quotes, instruments)
    ready = threading.Event()
    book = TradeBook()
    # The market calendar narrows the session; a dead Dhan token (TokenState.entry_hold) denies entries.
    risk = RiskGuard(RiskLimits.from_settings(s.risk), infra.storage, infra.clock, calendar=infra.calendar,
                     holds=(infra.token.entry_hold,) if infra.token is not None else (),
                     marks=(quotes.known if isinstance(quotes, QuoteBook) else quotes) if s.risk.mark_to_market
                     else no_marks)
    reconcile_state = ReconcileState()
    ledger = Store("executor.ledger", PlacementLedger())
    executor_counters = Store("executor.counters", ExecutorCounters())
    monitor_counters = Store("timeout_monitor.counters", MonitorCounters())
    entry_counters = Store("trades.entries", EntryCounters())
    protection_view = Store("protection.view", ProtectionView())

    def trade_spec(key: Hashable) -> ChildSpec:
        pos_id = key.pos_id if isinstance(key, NewTrade) else str(key)
        origin = TradeOrigin(opening=isinstance(key, NewTrade))
        return ChildSpec(id=f"trade:{pos_id}", start=lambda link: TradeActor.start(link, pos_id, trade_deps, origin),
                         restart=Restart.TRANSIENT, backoff=infra.backoff(maximum=5.0),
                         log_fields=(("pos_id", pos_id),))

    trading = infra.supervisor("trading")
    trades = infra.supervisor("trades", spec_for_key=trade_spec)
    options = infra.supervisor_options()
    trading.add(infra.supervised(trades, max_restarts=max(options["max_restarts"] * 10, 50)))
    executor = trading.add(ChildSpec("executor", lambda link: Executor.start(
        link, infra.storage, broker, infra.clock, s.execution, router, ledger, executor_counters)))
    monitor = trading.add(ChildSpec("timeout-monitor", lambda link: TimeoutMonitor.start(
        link, router, book, risk, infra.clock, infra.scheduler, s.execution.order_timeout_seconds,
        s.execution.square_off_check_seconds, monitor_counters)))
    protection = trading.add(ChildSpec("protection", lambda link: ProtectionMonitor.start(
        link, bus=infra.bus, trades=router, book=book, quotes=quotes, clock=infra.clock,
        scheduler=infra.scheduler, check_seconds=s.exits.check_seconds,
        max_quote_age_seconds=s.execution.max_quote_age_seconds, view=protection_view,
        broker_stop=s.exits.broker_stop_pct > 0)))
    reconciler = trading.add(ChildSpec("reconciler", lambda link: Reconciler.start(
        link, reconcile_deps, infra.scheduler, s.reconcile.interval_seconds, reconcile_state),
        backoff=infra.backoff()))
    # Children's start functions run when the tree starts; everything they use exists from here on.
    router = OrderRouter(trades, fallback=lambda order: reconciler.tell(UnroutedUpdate(order)))
    desk = TradeDesk(trades, router)
    leases = TradeLeases(infra.storage, infra.clock,
                         s.reconcile.owner_id or default_owner_id(infra.role, s.http.control_port),
                         s.reconcile.lease_ttl_seconds)
    reconcile_deps = ReconcileDeps(infra.storage, broker, infra.clock, risk, book, router, trades, ready,
                                   infra.storage_ready, desk.adopt, s.reconcile.flatten_orphans, leases,
                                   s.reconcile.lease_renew_seconds)
    trade_deps = TradeDeps(storage=infra.storage, broker=broker, clock=infra.clock, scheduler=infra.scheduler,
                           risk=risk, book=book, router=router, quotes=quotes, execution=s.execution,
                           protection_band_pct=s.broker.protection_band_pct, executor=executor, monitor=monitor,
                           ready=ready, entries=entry_counters, leases=leases, tick_size=instruments.tick_size,
                           contracts=contracts, charges=order_charges(rate_table(s.charges)),
                           exits=exit_rules(s.exits), protection=protection,
                           broker_stop_pct=s.exits.broker_stop_pct)
    broker.subscribe_order_updates(router.on_update)

    views = TradingViews(infra.storage, broker, infra.clock, book, router, quotes, risk, ready, reconcile_state,
                         entry_counters, executor_counters, monitor_counters, protection_view)
    api = TradingApi(desk, views, s.execution.lot_sizes, instruments,
                     answer_timeout=max(2.0, s.supervision.ask_timeout_seconds * 2))
    poll_timer: list[Timer] = []

    def start_polling() -> None:
        if isinstance(broker, PaperBroker):
            poll_timer.append(infra.scheduler.call_every(s.broker.paper_poll_ms / 1000.0, _safe_poll(broker)))

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

    subtree = Subtree(spec=infra.supervised(trading), health={"trading": trading_health},
                      status={"trading": api.status}, after_start=[start_polling], before_stop=[stop_polling])
    return TradingHandles(subtree=subtree, desk=desk, api=api, book=book, risk=risk, broker=broker, quotes=quotes,
                          instruments=instruments, ready=ready, trades=trades, executor=executor,
                          reconcile=reconcile_state)


def _safe_poll(broker: PaperBroker) -> Callable[[], None]:
    def poll() -> None:
        try:
            broker.poll()
        except Exception:  # a closed broker at shutdown; the timer goes on until cancelled
            pass
    return poll
