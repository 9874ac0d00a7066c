"""OptionChainPoller: the expiry list, then the chain for the nearest (or configured) expiries, every
`option_chain.poll_seconds` (the seed's FEED_POLL_SECONDS), never faster than Dhan allows.

Which expiries: `option_chain.expiries` when configured (those still live), else the nearest live one
(an expiry is over at 15:30 IST on its day) and the one `strategy.expiry` picks (next, monthly: the
instrument master says which expiries are monthly). Each poll first drops the chains that are over.

The Dhan client refuses to send inside its 3-second window (it raises RateLimited with the wait), and
this actor backs off per (underlying, expiry) on 429s and server errors; an invalid expiry is logged and
dropped (the expiry list is fetched again), never retried forever. Chains land in the read model, in
`option_chains` and on the bus.

It polls only while the exchange trades, from `PRE_OPEN_SECONDS` before the open (so chains are fresh at
09:15) to the close; outside that it idles (OPTION_CHAINS_IDLE, then OPTION_CHAINS_ACTIVE at the pre-open).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from actors.brokers.base import BrokerError, PermanentBrokerError, TemporaryBrokerError
from actors.clock import Clock
from actors.instruments import InstrumentBook
from actors.market_data.market_cache import MarketCache
from actors.market_data.messages import PublishValue
from core.calendar import MarketCalendar
from core.instruments import InstrumentError, NoExpiry, choose_expiry, live_expiries
from core.market import IST, to_iso_ist
from storage.errors import StorageError
from storage.records import OptionChainRecord
from storage.repositories import Storage
from supervision.actor import SupervisedActor, tell_quietly
from supervision.scheduler import Scheduler, Timer
from supervision.supervisor import ChildHandle, ChildLink

__all__ = ["ChainSource", "OptionChainPoller", "PollerState", "SimChainSource"]

EXPIRY_REFRESH_SECONDS = 3600.0
PRE_OPEN_SECONDS = 900.0  # NSE's pre-open session starts 15 minutes before the open


class ChainSource(Protocol):
    def expiry_list(self, symbol: str) -> list[str]: ...

    def option_chain(self, symbol: str, expiry: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class PollChains:
    pass


@dataclass
class PollerState:
    """The poller's crash-only store: outlives its restarts; read by /v1/status from HTTP threads, which
    never see a collection change under them (`expiries` gets a new dict of tuples, `invalid` is a frozenset
    replaced whole; the rest is the poller's own bookkeeping)."""

    expiries: dict[str, tuple[str, ...]] = field(default_factory=dict)
    expiries_at: dict[str, float] = field(default_factory=dict)
    not_before: dict[tuple[str, str], float] = field(default_factory=dict)
    failures: dict[tuple[str, str], int] = field(default_factory=dict)
    invalid: frozenset[tuple[str, str]] = frozenset()
    polls: int = 0
    errors: int = 0
    last_error: str = ""
    idle: str = ""  # why the poller is idle ("" = polling): the market is closed


class OptionChainPoller(SupervisedActor):
    def __init__(self, link: ChildLink | None, source: ChainSource, underlyings: tuple[str, ...],
                 configured_expiries: tuple[str, ...], poll_seconds: float, cache: MarketCache,
                 storage: Storage, publisher: ChildHandle, clock: Clock, scheduler: Scheduler,
                 state: PollerState, seed: int = 7, rule: str = "nearest",
                 monthly: Callable[[str], set[str]] = lambda underlying: set(),
                 calendar: MarketCalendar | None = None) -> None:
        super().__init__(link)
        self.calendar = calendar if calendar is not None else MarketCalendar.always_open()
        self.source = source
        self.underlyings = underlyings
        self.configured_expiries = configured_expiries
        self.poll_seconds = poll_seconds
        self.cache = cache
        self.storage = storage
        self.publisher = publisher
        self.clock = clock
        self.scheduler = scheduler
        self.state = state
        self.rng = random.Random(seed)
        self.rule = rule
        self.monthly = monthly
        self.timer: Timer | None = None

    def started(self) -> None:
        ref = self.actor_ref
        self.timer = self.scheduler.call_every(self.poll_seconds, lambda: tell_quietly(ref, PollChains()))
        # The first poll waits a moment: a simulated chain needs a first spot tick.
        self.scheduler.call_later(min(1.0, self.poll_seconds), tell_quietly, ref, PollChains())

    def release(self) -> None:
        if self.timer is not None:
            self.timer.cancel()

    def receive(self, message: Any) -> Any:
        if isinstance(message, PollChains):
            self._poll()
            return None
        return super().receive(message)

    def _active(self) -> bool:
        """Poll while the market trades or opens within PRE_OPEN_SECONDS; say so when that changes."""
        now = self.clock.now()
        status = self.calendar.market_status(now)
        opens_soon = status.next_open is not None and status.next_open - now <= PRE_OPEN_SECONDS
        if status.is_open or opens_soon:
            if self.state.idle:
                self.state.idle = ""
                self.log.event("OPTION_CHAINS_ACTIVE", f"market {status.state} ({status.reason}): polling chains")
            return True
        if not self.state.idle:
            self.state.idle = f"market closed: {status.reason}"
            opens = to_iso_ist(status.next_open) if status.next_open is not None else "unknown"
            self.log.event("OPTION_CHAINS_IDLE", f"market closed ({status.reason}): no chain polls until the "
                           f"pre-open of {opens}", reason=status.reason, next_open=opens)
        return False

    def _poll(self) -> None:
        if not self._active():
            return
        self.state.polls += 1
        for symbol, expiry in self.cache.drop_expired_chains():
            self.log.event("OPTION_CHAIN_EXPIRED", f"{symbol} {expiry}: expired at 15:30 IST; chain dropped",
                           symbol=symbol, expiry=expiry)
        now = self.clock.monotonic()
        for symbol in self.underlyings:
            expiries = self._expiries(symbol, now)
            for expiry in self._targets(symbol, expiries):
                key = (symbol, expiry)
                if now < self.state.not_before.get(key, 0.0):
                    continue
                self._fetch(symbol, expiry, now)

    def _expiries(self, symbol: str, now: float) -> list[str]:
        known = list(self.state.expiries.get(symbol, ()))
        fresh = now - self.state.expiries_at.get(symbol, -math.inf) < EXPIRY_REFRESH_SECONDS
        if known and fresh:
            return known
        key = (symbol, "*expiries*")
        if now < self.state.not_before.get(key, 0.0):
            return known or []
        try:
            expiries = sorted(self.source.expiry_list(symbol))
        except BrokerError as exc:
            self._failed(key, exc, now)
            return known or []
        self.state.expiries = {**self.state.expiries, symbol: tuple(expiries)}
        self.state.expiries_at[symbol] = now
        self.cache.set_listed_expiries(symbol, expiries)
        self.state.failures.pop(key, None)
        return expiries

    def _targets(self, symbol: str, expiries: list[str]) -> list[str]:
        now = self.clock.now()
        if self.configured_expiries:
            return [e for e in live_expiries(self.configured_expiries, now) if (symbol, e) not in self.state.invalid]
        upcoming = [e for e in _live(expiries, now) if (symbol, e) not in self.state.invalid]
        if not upcoming:
            return []
        targets = [upcoming[0]]
        if self.rule != "nearest":
            try:
                chosen = choose_expiry(upcoming, now, self.rule, monthly=self.monthly(symbol) or None)
            except (NoExpiry, InstrumentError):
                chosen = ""
            if chosen and chosen not in targets:
                targets.append(chosen)
        return targets

    def _fetch(self, symbol: str, expiry: str, now: float) -> None:
        key = (symbol, expiry)
        try:
            payload = self.source.option_chain(symbol, expiry)
        except BrokerError as exc:
            self._failed(key, exc, now)
            return
        self.state.failures.pop(key, None)
        record = OptionChainRecord(symbol, expiry, payload, self.clock.now())
        self.cache.set_option_chain(record)
        self.publisher.tell(PublishValue(f"option_chain:{symbol}", {
            "expiry": expiry, "updated_at": record.updated_at, "payload": payload}))
        try:
            self.storage.option_chains.upsert(symbol, expiry, payload, record.updated_at)
        except StorageError as exc:
            self.log.event("OPTION_CHAIN_PERSIST_FAILED", f"{symbol} {expiry}: {exc}", level=30,
                           symbol=symbol, expiry=expiry)
        self.log.event("OPTION_CHAIN_UPDATED", f"{symbol} {expiry}: {len(payload.get('oc', {}))} strikes",
                       level=10, symbol=symbol, expiry=expiry)

    def _failed(self, key: tuple[str, str], exc: BrokerError, now: float) -> None:
        from actors.dhan.errors import InvalidExpiry, RateLimited

        symbol, expiry = key
        self.state.errors += 1
        self.state.last_error = f"{symbol} {expiry}: {exc}"
        if isinstance(exc, InvalidExpiry):
            self.state.invalid = self.state.invalid | {key}
            self.state.expiries_at.pop(symbol, None)  # fetch the expiry list again
            self.log.event("OPTION_CHAIN_INVALID_EXPIRY", f"{symbol} {expiry}: {exc}; not retried", level=30,
                           symbol=symbol, expiry=expiry)
            return
        streak = self.state.failures.get(key, 0) + 1
        self.state.failures[key] = streak
        if isinstance(exc, RateLimited):
            delay = max(exc.retry_after, 3.0 * 2 ** (streak - 1))
        elif isinstance(exc, TemporaryBrokerError):
            delay = min(300.0, self.poll_seconds * 2 ** (streak - 1))
        elif isinstance(exc, PermanentBrokerError):
            delay = 300.0
        else:
            delay = self.poll_seconds
        delay = min(delay, 600.0) * (1 + self.rng.uniform(0, 0.2))
        self.state.not_before[key] = now + delay
        self.log.event("OPTION_CHAIN_BACKOFF", f"{symbol} {expiry}: {type(exc).__name__}: {exc}; "
                       f"next try in {delay:.1f} s", level=30, symbol=symbol, expiry=expiry,
                       code=getattr(exc, "code", ""), streak=streak, delay_seconds=round(delay, 2))



def _live(expiries: list[str], now: float) -> list[str]:
    """The live ones of a list that may hold junk (a list from Dhan is not trusted to be dates)."""
    out = []
    for expiry in expiries:
        try:
            out.extend(live_expiries([expiry], now))
        except InstrumentError:
            continue
    return sorted(out)


class SimChainSource:
    """An option chain made up around the simulated spot, so the embedded default serves the whole API.

    With an instrument master that lists options of the underlying (the shipped snapshot), the expiries,
    strikes and security ids are the master's, so a contract the strategy picks has its lot and tick;
    otherwise strikes every 50 (NIFTY) / 100 (BANKNIFTY) around the spot with stable made-up ids, weekly
    Tuesday expiries. Premiums from intrinsic value plus a time-value hump: not a pricing model.
    """

    STEP = {"NIFTY": 50, "BANKNIFTY": 100, "FINNIFTY": 50}
    BASE_ID = {"NIFTY": 40_000, "BANKNIFTY": 60_000, "FINNIFTY": 80_000}

    def __init__(self, cache: MarketCache, clock: Clock, instruments: InstrumentBook | None = None) -> None:
        self.cache = cache
        self.clock = clock
        self.instruments = instruments

    def expiry_list(self, symbol: str) -> list[str]:
        if self.instruments is not None:
            listed = live_expiries(self.instruments.index.expiries(symbol), self.clock.now())
            if listed:
                return listed
        today = datetime.fromtimestamp(self.clock.now(), IST).date()
        days_to_tuesday = (1 - today.weekday()) % 7
        first = today.toordinal() + days_to_tuesday
        return [datetime.fromordinal(first + 7 * i).date().isoformat() for i in range(4)]

    def option_chain(self, symbol: str, expiry: str) -> dict[str, Any]:
        quote = self.cache.quote(symbol)
        if quote is None:
            raise TemporaryBrokerError(f"no simulated spot for {symbol} yet")
        spot = quote[0]
        listed = self.instruments.index.options(symbol, expiry) if self.instruments is not None else []
        if listed:
            step = self.STEP.get(symbol, 50)
            legs = [(o.strike, o.option_type, int(o.security_id)) for o in listed
                    if abs(o.strike - spot) <= 10.5 * step]
        else:
            step = self.STEP.get(symbol, 50)
            atm = round(spot / step) * step
            base = self.BASE_ID.get(symbol, 90_000)
            legs = []
            for i in range(-10, 11):
                legs.append((float(atm + i * step), "CE", base + 2 * (i + 10)))
                legs.append((float(atm + i * step), "PE", base + 2 * (i + 10) + 1))
        chain: dict[str, Any] = {}
        for strike, option_type, security_id in legs:
            time_value = max(5.0, 120.0 - abs(strike - spot) * 0.4)
            intrinsic = max(0.0, spot - strike) if option_type == "CE" else max(0.0, strike - spot)
            price = round(round((intrinsic + time_value) / 0.05) * 0.05, 2)
            chain.setdefault(f"{strike:.6f}", {})[option_type.lower()] = {
                "last_price": price, "security_id": security_id}
        return {"last_price": spot, "oc": dict(sorted(chain.items(), key=lambda kv: float(kv[0])))}
