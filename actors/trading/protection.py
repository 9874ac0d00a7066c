"""ProtectionMonitor: every open position's stop-loss, target, trailing stop and time exit, on every tick.

Trade actors tell it `GuardPosition` when a position opens with protective exits (and `done` once its exit
begins or it ends). For each symbol guarded it subscribes `ticks:<symbol>` on the bus — the MDS publisher's
conflated tick batches, in-process or on Redis — and runs every price of every batch through the pure
`core.protection.watch`, in order. A crossing tells the trade actor `RequestExit` with the reason
(STOP_LOSS, TARGET, TRAILING_STOP) and source `protection`: the exit goes the normal way (journaled,
priced from the quote book, retried until filled). A PROTECTIVE_EXIT line says which level, at what price.

A timer (exits.check_seconds) fires the time exits (TIME_EXIT), and checks a position whose contract sent
no tick for execution.max_quote_age_seconds against the quote book's fresh price (a bus outage, a role
trader whose MDS does not carry that contract): a missing tick stream slows protection, never stops it.

Crash-only: what it guards is rebuilt from the trade book at start; the best price each trailing stop has
seen lives in a Store, so a restart of this actor never loosens a trailing stop. A process restart starts
each trail again from the entry price and the first price after the restart (written in README); the
broker-side stop keeps its last level. When a trail's best price moves, the trade is told (`TrailMoved`):
it moves its broker-side stop (exits.broker_stop_pct) along.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from actors.clock import Clock
from actors.market_data.messages import ticks_from_message
from actors.trading.book import TradeBook
from actors.trading.messages import GuardPosition, RequestExit, TradeAddresses, TrailMoved
from actors.trading.quotes import QuoteBook, QuoteSource
from core.protection import ExitReason, Guard, ProtectionError, time_due, watch
from core.trade import TradeContext, TradeState
from storage.bus import Bus, Subscription
from storage.errors import StorageError
from supervision.actor import SupervisedActor, tell_quietly
from supervision.scheduler import Scheduler, Timer
from supervision.store import Store
from supervision.supervisor import ChildLink

__all__ = ["ProtectionMonitor", "ProtectionView", "guard_of"]


@dataclass(frozen=True)
class ProtectionView:
    """The monitor's crash-only store: the trails' best prices, what each guard stands at, what fired."""

    best: MappingProxyType[str, float] = field(default_factory=lambda: MappingProxyType({}))
    levels: MappingProxyType[str, dict[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    fired: MappingProxyType[str, int] = field(default_factory=lambda: MappingProxyType({}))
    subscribe_failures: int = 0

    def snapshot(self) -> dict[str, Any]:
        return {"guarded": len(self.levels), "positions": dict(self.levels), "exits": dict(self.fired),
                "subscribe_failures": self.subscribe_failures}


@dataclass(frozen=True)
class _Prices:
    symbol: str
    prices: list[tuple[float, float]]  # (ts_epoch, ltp)
    received: float  # perf_counter when the bus handed the batch over


@dataclass(frozen=True)
class _Check:
    pass


@dataclass
class _Guarded:
    symbol: str
    guard: Guard
    last_price_at: float = 0.0  # monotonic, when a tick last reached this guard (0: none yet)


def guard_of(context: TradeContext) -> GuardPosition:
    """What a trade actor tells the monitor about its trade now: guarded while the position is open with
    protective exits and no exit asked for; done otherwise."""
    guarded = (context.state is TradeState.POSITION_OPEN and not context.exit_reason
               and context.protection.enabled and context.open_qty > 0 and context.avg_entry_price > 0)
    if not guarded:
        return GuardPosition(context.pos_id, done=True)
    return GuardPosition(context.pos_id, context.symbol, context.side, context.avg_entry_price,
                         context.opened_at or context.updated_at, context.protection)


class ProtectionMonitor(SupervisedActor):
    def __init__(self, link: ChildLink | None, *, bus: Bus, trades: TradeAddresses, book: TradeBook,
                 quotes: QuoteSource, clock: Clock, scheduler: Scheduler, check_seconds: float,
                 max_quote_age_seconds: float, view: Store[ProtectionView], broker_stop: bool = False) -> None:
        super().__init__(link)
        self.bus = bus
        self.trades = trades
        self.book = book
        self.quotes = quotes
        self.clock = clock
        self.scheduler = scheduler
        self.check_seconds = check_seconds
        self.max_quote_age = max_quote_age_seconds
        self.view = view
        self.broker_stop = broker_stop  # trades move their broker-side stops as the trail moves
        self.guarded: dict[str, _Guarded] = {}
        self.by_symbol: dict[str, set[str]] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self.timer: Timer | None = None

    def started(self) -> None:
        for context in self.book.live():  # trades tell only on change: take what they are now
            message = guard_of(context)
            if not message.done:
                self._guard(message)
        self._forget_gone()
        ref = self.actor_ref
        self.timer = self.scheduler.call_every(self.check_seconds, lambda: tell_quietly(ref, _Check()))

    def release(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        for subscription in self.subscriptions.values():
            _close_in_background(subscription)
        self.subscriptions.clear()

    def receive(self, message: Any) -> Any:
        if isinstance(message, _Prices):
            self._on_prices(message)
        elif isinstance(message, GuardPosition):
            if message.done:
                self._unguard(message.pos_id)
            else:
                self._guard(message)
        elif isinstance(message, _Check):
            self._check()
        else:
            return super().receive(message)
        return None

    # -- what is guarded --------------------------------------------------------------------------------

    def _guard(self, message: GuardPosition) -> None:
        best = self.view.get().best.get(message.pos_id, 0.0)
        try:
            guard = Guard(message.side, message.entry_price, message.opened_at, message.rules, best)
        except ProtectionError as exc:
            self.log.event("PROTECTION_UNUSABLE", f"{message.pos_id}: {exc}", level=40, pos_id=message.pos_id)
            return
        known = self.guarded.get(message.pos_id)
        if known is not None and known.guard.rules == guard.rules and known.guard.entry_price == guard.entry_price:
            return
        self.guarded[message.pos_id] = _Guarded(message.symbol, guard)
        self.by_symbol.setdefault(message.symbol, set()).add(message.pos_id)
        self._subscribe(message.symbol)
        fields: dict[str, Any] = {**guard.rules.as_dict(), **guard.levels()}
        self.log.event("PROTECTION_ARMED", f"{message.pos_id}: {message.side} {message.symbol} from "
                       f"{guard.entry_price:g}: {_describe(guard)}", pos_id=message.pos_id, symbol=message.symbol,
                       **fields)
        self._show(message.pos_id, guard)

    def _unguard(self, pos_id: str) -> None:
        guarded = self.guarded.pop(pos_id, None)
        if guarded is None:
            return
        owners = self.by_symbol.get(guarded.symbol, set())
        owners.discard(pos_id)
        if not owners:
            self.by_symbol.pop(guarded.symbol, None)
            subscription = self.subscriptions.pop(guarded.symbol, None)
            if subscription is not None:
                _close_in_background(subscription)
        self.view.update(lambda v: replace(v, best=_without(v.best, pos_id), levels=_without(v.levels, pos_id)))

    def _forget_gone(self) -> None:
        """Trail marks of trades that ended while this actor was down."""
        gone = set(self.view.get().best) - set(self.guarded)
        if gone:
            self.view.update(lambda v: replace(v, best=_without(v.best, *gone), levels=_without(v.levels, *gone)))

    def _subscribe(self, symbol: str) -> None:
        if symbol in self.subscriptions:
            return
        ref = self.actor_ref

        def on_ticks(channel: str, data: bytes) -> None:  # the bus's thread: hand over, nothing else
            received = time.perf_counter()
            named, prices = ticks_from_message(data)
            tell_quietly(ref, _Prices(named, prices, received))

        try:
            self.subscriptions[symbol] = self.bus.subscribe([f"ticks:{symbol}"], on_ticks)
        except StorageError as exc:  # the bus is down: the timer's quote checks guard it meanwhile
            self.view.update(lambda v: replace(v, subscribe_failures=v.subscribe_failures + 1))
            self.log.event("PROTECTION_SUBSCRIBE_FAILED", f"ticks:{symbol}: {exc}; checked every "
                           f"{self.check_seconds:g} s against the quote book until the bus is back", level=30,
                           symbol=symbol)

    # -- prices -----------------------------------------------------------------------------------------

    def _on_prices(self, message: _Prices) -> None:
        owners = self.by_symbol.get(message.symbol)
        if not owners:
            return
        now = time.monotonic()
        for pos_id in tuple(owners):
            guarded = self.guarded.get(pos_id)
            if guarded is None:
                continue
            guarded.last_price_at = now
            for _, price in message.prices:
                if self._price(pos_id, guarded, price, message.received, "tick"):
                    break

    def _price(self, pos_id: str, guarded: _Guarded, price: float, crossed_at: float, source: str) -> bool:
        """Run one price through the guard; True when it fired (the guard is gone then)."""
        before = guarded.guard
        after, reason = watch(before, price)
        if reason is not None:
            self._fire(pos_id, guarded, reason, price, crossed_at, source)
            return True
        if after.best != before.best:
            guarded.guard = after
            if after.rules.trailing_stop_pct:  # only a trail needs its best price kept across restarts
                self.view.update(lambda v: replace(v, best=_with(v.best, pos_id, after.best)))
                if self.broker_stop:
                    self.trades.deliver(pos_id, TrailMoved(after.best))
            self._show(pos_id, after)
        return False

    def _check(self) -> None:
        now, wall = time.monotonic(), self.clock.now()
        for pos_id, guarded in tuple(self.guarded.items()):
            if time_due(guarded.guard, wall):
                held = (wall - guarded.guard.opened_at) / 60.0
                self._fire(pos_id, guarded, ExitReason.TIME_EXIT, None, time.perf_counter(), "clock",
                           f"held {held:.1f} min")
                continue
            if now - guarded.last_price_at >= self.max_quote_age:
                price = self._fresh_quote(guarded.symbol)
                if price is not None:
                    self._price(pos_id, guarded, price, time.perf_counter(), "quote")
        if not self.guarded:
            return
        for symbol in tuple(self.by_symbol):
            if symbol not in self.subscriptions:
                self._subscribe(symbol)  # the bus was down when the guard was armed

    def _fresh_quote(self, symbol: str) -> float | None:
        if isinstance(self.quotes, QuoteBook):
            quote = self.quotes.quote(symbol, fetch=False)
            return quote.price if quote is not None and quote.fresh else None
        return self.quotes(symbol)

    def _fire(self, pos_id: str, guarded: _Guarded, reason: ExitReason, price: float | None, crossed_at: float,
              source: str, detail: str = "") -> None:
        guard = guarded.guard
        self._unguard(pos_id)
        at = f" at {price:g}" if price is not None else ""
        levels: dict[str, Any] = guard.levels()
        self.log.event("PROTECTIVE_EXIT", f"{pos_id}: {reason.value}{at} ({detail or _describe(guard)}; entry "
                       f"{guard.entry_price:g})", level=30, pos_id=pos_id, symbol=guarded.symbol,
                       reason=reason.value, price=price, entry_price=guard.entry_price, source=source,
                       **levels)
        self.view.update(lambda v: replace(v, fired=_with(v.fired, reason.value, v.fired.get(reason.value, 0) + 1)))
        self.trades.deliver(pos_id, RequestExit(reason.value, source="protection", crossed_at=crossed_at))

    def _show(self, pos_id: str, guard: Guard) -> None:
        levels = {**guard.levels(), **guard.rules.as_dict()}
        self.view.update(lambda v: replace(v, levels=_with(v.levels, pos_id, levels)))


def _describe(guard: Guard) -> str:
    parts = [f"{name} {value:g}" for name, value in guard.levels().items() if value is not None and name != "best"]
    if guard.rules.max_holding_minutes:
        parts.append(f"time {guard.rules.max_holding_minutes:g} min")
    return ", ".join(parts) or "no levels"


def _with(mapping: MappingProxyType[str, Any], key: str, value: Any) -> MappingProxyType[str, Any]:
    return MappingProxyType({**mapping, key: value})


def _without(mapping: MappingProxyType[str, Any], *keys: str) -> MappingProxyType[str, Any]:
    return MappingProxyType({k: v for k, v in mapping.items() if k not in keys})


def _close_in_background(subscription: Subscription) -> None:
    """A Redis subscription's close joins its listener thread (up to its poll interval): never on the
    monitor's thread, which must keep reading ticks."""
    closer: Callable[[], None] = subscription.close
    threading.Thread(target=closer, name="protection-unsubscribe", daemon=True).start()
