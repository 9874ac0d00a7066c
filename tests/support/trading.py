"""The trading harness: a real trader runtime (role trader) on a real database and real sockets.

`TraderHarness` starts `daemon.runtime.Runtime` with only the trading subtree, a paper broker (or any
broker the test hands in) and pinned quotes, waits for the start-up reconciliation, and shuts the runtime
down afterwards (the `stop_all` fixture stops any actor left over).
"""

from __future__ import annotations

import time
from typing import Any

from actors.brokers.base import OrderUpdateListener
from actors.brokers.paper import PaperBroker
from actors.clock import SystemClock
from actors.instruments import InstrumentBook
from actors.trading.assembly import TradingHandles
from actors.trading.quotes import QuoteBook
from config.settings import Settings
from core.orders import BrokerOrder, OrderRequest, Side
from core.signals import EntrySignalRaised, ExitSignalRaised
from core.trade import TradeState
from daemon.runtime import Runtime, Wiring
from storage import StorageUnavailable
from tests.support.waiting import eventually

__all__ = ["TOKEN", "ScriptedBroker", "TraderHarness", "entry_signal", "eventually", "exit_signal",
           "trader_settings"]  # eventually: re-exported for the trading tests

TOKEN = "test-control-token-42"


class ScriptedBroker(PaperBroker):
    """The paper broker with a few more misbehaviours a test can switch on.

    - `deliver_updates = False`: order updates are dropped (a lost websocket message); kept in `dropped`.
    - `fill_before_cancel = True`: a cancel arrives after the exchange filled the order (the fill wins).
    - `crash_after_place = n`: the next n places go through at the broker, then raise RuntimeError (the
      executor dies between submit and acknowledgement).
    - `duplicate_next_place = True`: the next order is booked twice under the same correlation id (a
      gateway that processed a request twice); both fill.
    """

    def __init__(self, quote: Any, clock: Any, **kwargs: Any) -> None:
        super().__init__(quote, clock, **kwargs)
        self.deliver_updates = True
        self.dropped: list[BrokerOrder] = []
        self.fill_before_cancel = False
        self.crash_after_place = 0
        self.duplicate_next_place = False
        self.places: list[OrderRequest] = []
        self.cancels: list[str] = []

    def subscribe_order_updates(self, listener: OrderUpdateListener) -> None:
        def gate(order: BrokerOrder) -> None:
            if self.deliver_updates:
                listener(order)
            else:
                self.dropped.append(order)

        super().subscribe_order_updates(gate)

    def place(self, request: OrderRequest) -> BrokerOrder:
        self.places.append(request)
        order = super().place(request)
        if self.duplicate_next_place:
            self.duplicate_next_place = False
            with self._lock:
                first = self._by_correlation.pop(request.correlation_id)
            super().place(request)  # a second order under the same correlation id
            with self._lock:
                self._by_correlation[request.correlation_id] = first
        if self.crash_after_place > 0:
            self.crash_after_place -= 1
            raise RuntimeError("executor died after the submit (test)")
        return order

    def cancel(self, order_id: str) -> BrokerOrder:
        self.cancels.append(order_id)
        if self.fill_before_cancel:
            self.hold_fills(False)
            self.poll()
        return super().cancel(order_id)

    def lose_everything(self) -> None:
        """Forget every order (a paper broker restarted under a running trader)."""
        with self._lock:
            self._entries.clear()
            self._working.clear()
            self._by_correlation.clear()

    def orders_for(self, correlation_id: str) -> list[BrokerOrder]:
        return [o for o in self.orders() if o.correlation_id == correlation_id]


def trader_settings(storage_url: str, **sections: dict[str, Any]) -> Settings:
    base: dict[str, dict[str, Any]] = {
        "storage": {"url": storage_url},
        "http": {"control_port": 0, "mds_port": 0, "threads": 4},
        # Trades at any hour, any day (tests run at night and on weekends): the calendar off, the risk
        # settings' window all day. Tests of the calendar itself switch it back on.
        "calendar": {"enabled": False},
        "risk": {"session_start": "00:00", "session_end": "24:00", "square_off_time": "24:00",
                 "max_open_positions": 100, "daily_max_loss": 0.0, "daily_max_loss_pct": 0.0,
                 "consecutive_losses_limit": 1000},
        "execution": {"order_timeout_seconds": 5.0, "max_slippage_pct": 5.0, "square_off_check_seconds": 0.1,
                      "ambiguous_settle_seconds": 0.5, "ambiguous_recheck_seconds": 0.05,
                      "submit_retry_seconds": 0.05},
        "broker": {"paper_latency_ms": 0.0, "paper_poll_ms": 10.0, "protection_band_pct": 1.0},
        "reconcile": {"interval_seconds": 0.5},
        "control": {"token": TOKEN},
        "supervision": {"backoff_initial_seconds": 0.02, "backoff_max_seconds": 0.2, "shutdown_timeout_seconds": 2.0},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return Settings().replace(**base)


def entry_signal(pos_id: str, symbol: str = "SEC_49081", side: Side = Side.BUY, qty: int = 75,
                 price: float = 100.0, exits: dict[str, float] | None = None) -> EntrySignalRaised:
    return EntrySignalRaised(pos_id=pos_id, symbol="NIFTY", instrument=symbol, side=side, qty=qty,
                             score=None, candle_ts=0, at=time.time(), price=price,  # type: ignore[arg-type]
                             exits=exits or {})


def exit_signal(pos_id: str, reason: str = "EXIT_SCORE") -> ExitSignalRaised:
    return ExitSignalRaised(pos_id=pos_id, reason=reason, score=None, at=time.time())  # type: ignore[arg-type]


class TraderHarness:
    def __init__(self, settings: Settings, *, broker: Any = None, quotes: QuoteBook | None = None,
                 prices: dict[str, float] | None = None, instruments: InstrumentBook | None = None) -> None:
        """`instruments`: the instrument master (default: an empty one, so only execution.lot_sizes
        knows lot sizes, as before the master existed)."""
        self.settings = settings
        self.quotes = quotes or QuoteBook()
        for symbol, price in (prices or {"SEC_49081": 100.0}).items():
            self.quotes.set(symbol, price)
        self.clock = SystemClock()
        self.broker = broker if broker is not None else ScriptedBroker(self.quotes, self.clock)
        self.runtime = Runtime(settings, "trader", clock=self.clock, wiring=Wiring(
            subtrees=frozenset({"trading"}), broker=self.broker, quotes=self.quotes,
            instruments=instruments if instruments is not None else InstrumentBook()))
        self.trader: TradingHandles

    def start(self, wait_ready: bool = True) -> TraderHarness:
        self.runtime.start()
        assert self.runtime.trading is not None
        self.trader = self.runtime.trading
        if wait_ready and not self.trader.ready.wait(10.0):
            raise AssertionError("the start-up reconciliation did not pass within 10 s")
        return self

    def stop(self) -> None:
        self.runtime.shutdown()

    def __enter__(self) -> TraderHarness:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- views -------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.runtime.servers[0].url

    @property
    def storage(self) -> Any:
        return self.runtime.storage

    def state(self, pos_id: str) -> str | None:
        record = self.storage.trades.get_trade(pos_id)
        return None if record is None else record.state

    def wait_state(self, pos_id: str, *states: TradeState | str, timeout: float = 5.0) -> str:
        wanted = {str(s) for s in states}

        def reached() -> str | None:
            try:
                state = self.state(pos_id)
            except StorageUnavailable:  # a test that cuts the database waits through the outage
                return None
            return state if state in wanted else None

        def now() -> str:
            try:
                return str(self.state(pos_id))
            except StorageUnavailable as exc:
                return f"unreadable: {exc}"

        return eventually(reached, timeout, message=lambda: f"{pos_id} in {sorted(wanted)} (now {now()})")

    def events(self, pos_id: str) -> list[str]:
        return [e.event for e in self.storage.trades.events(pos_id)]

    def enter(self, pos_id: str, **kwargs: Any) -> None:
        assert self.trader.desk.tell(entry_signal(pos_id, **kwargs))

    def exit(self, pos_id: str, reason: str = "EXIT_SCORE") -> None:
        assert self.trader.desk.tell(exit_signal(pos_id, reason))
