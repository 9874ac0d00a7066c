"""MDS client mode (the seed's `MARKET_DATA_PROVIDER=mds`): role trader reads market data from Server A only.

    MdsHttpClient   GET /v1/candles/last, /v1/option_chain, /v1/quote, /v1/health on `market_data.mds_base_url`
                    (thread-safe; timeouts from market_data.request_timeout_seconds; bounded tenacity retries)
    MdsMarketView   the latest option chains and quotes the trader holds (any thread); `quote(symbol)` is
                    the trader's quote function in client mode (ctx.extras["quote"]: the executor's LIMIT
                    prices, the paper broker's fills): answered from memory, refreshed by the actor
    MdsClientActor  its own actor (blocking HTTP never sits in the strategy's mailbox): right after each
                    minute closes (+ candle_fetch_delay_seconds) it fetches the closed candles of every symbol,
                    catching up on anything missed, and tells them to the strategy in order; the first
                    successful fetch of a symbol is its warm-up history (`history=True`: scored, not traded).
                    With `storage.redis_url` set it also takes the candles the MDS pushes on
                    `candles:<symbol>` (the next minute goes straight through; a gap triggers an HTTP
                    catch-up; (symbol, ts) already delivered are dropped) and `feed:status`. Without Redis
                    the feed's staleness comes from the MDS health check, polled with the candles.
Option chains of the index symbols are refreshed every `option_chain.poll_seconds`; a quote asked for and
older than `market_data.quote_max_age_seconds` is fetched again.

Errors are translated once, here: `MdsUnavailable` (transport error, timeout, 5xx: retried, then the
caller tries again next cycle), `MdsRejected` (a 4xx other than 404: bad input or configuration, not
retried). A 404 (no quote / chain yet) is an answer: None.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import requests
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from actors.clock import Clock
from actors.market_data.publisher import candle_from_message
from core.market import Candle, from_iso
from core.signals import option_chain_strikes
from storage.bus import Bus, Subscription
from storage.errors import StorageError
from storage.records import OptionChainRecord
from supervision.actor import SupervisedActor
from supervision.scheduler import Scheduler, Timer
from supervision.supervisor import ChildLink
from telemetry.logs import get_logger

__all__ = [
    "MdsClientActor",
    "MdsClientState",
    "MdsError",
    "MdsHttpClient",
    "MdsMarketView",
    "MdsRejected",
    "MdsUnavailable",
]

MINUTE = 60
MAX_LIMIT = 5000  # the MDS API's cap on `limit`
FIRST_CATCH_UP_LIMIT = 10  # minutes asked for first on a catch-up; doubled while that may miss some
log = get_logger("mybot.mds_client")


class MdsError(Exception):
    """Base of the MDS client's failures."""


class MdsUnavailable(MdsError):
    """The MDS did not answer usefully (connection, timeout, 5xx, garbage): retry later."""


class MdsRejected(MdsError):
    """The MDS refused the request (4xx other than 404): bad input or configuration, retrying won't help."""


# -- HTTP -------------------------------------------------------------------------------------------------
class MdsHttpClient:
    """The MDS API over HTTP. Thread-safe: one requests.Session per calling thread."""

    def __init__(self, base_url: str, timeout: float = 2.0, attempts: int = 3, retry_wait: float = 0.2,
                 session_factory: Callable[[], requests.Session] = requests.Session) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.retry_wait = retry_wait
        self._session_factory = session_factory
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self.requests = 0
        self.failures = 0

    @classmethod
    def from_settings(cls, market_data: Any) -> MdsHttpClient:
        return cls(market_data.mds_base_url, market_data.request_timeout_seconds, market_data.request_attempts,
                   market_data.retry_wait_seconds)

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._session_factory()
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def get(self, path: str, params: Mapping[str, Any], *, attempts: int | None = None,
            allow_statuses: tuple[int, ...] = ()) -> tuple[int, Any]:
        """(status, JSON body); 404 -> (404, None). Retries MdsUnavailable with a bounded, growing wait."""
        retrying = Retrying(stop=stop_after_attempt(attempts or self.attempts),
                            wait=wait_exponential(multiplier=self.retry_wait, max=max(self.retry_wait * 8, 0.01)),
                            retry=retry_if_exception_type(MdsUnavailable), reraise=True)
        return retrying(self._get_once, path, params, allow_statuses)

    def _get_once(self, path: str, params: Mapping[str, Any], allow_statuses: tuple[int, ...]) -> tuple[int, Any]:
        url = f"{self.base_url}{path}"
        self.requests += 1
        try:
            response = self._session().get(url, params=dict(params), timeout=self.timeout)
        except requests.RequestException as exc:
            self.failures += 1
            raise MdsUnavailable(f"GET {path}: {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status == 404 and 404 not in allow_statuses:
            return 404, None
        if status >= 500 and status not in allow_statuses:
            self.failures += 1
            raise MdsUnavailable(f"GET {path}: HTTP {status}: {response.text[:200]}")
        if 400 <= status < 500 and status not in allow_statuses:
            raise MdsRejected(f"GET {path} {dict(params)}: HTTP {status}: {response.text[:200]}")
        try:
            return status, orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            self.failures += 1
            raise MdsUnavailable(f"GET {path}: HTTP {status} with a body that is not JSON") from exc

    # -- the seed's endpoints ---------------------------------------------------------------------------
    def candles_last(self, symbol: str, limit: int, timeframe_seconds: int = MINUTE) -> list[Candle]:
        """The `limit` newest CLOSED candles of `symbol`, oldest first ([] when the MDS has none)."""
        status, body = self.get("/candles/last", {"symbol": symbol, "timeframe_seconds": timeframe_seconds,
                                                  "limit": max(1, min(MAX_LIMIT, limit))})
        if status == 404 or body is None:
            raise MdsRejected(f"the MDS does not serve {symbol}")
        try:
            return [Candle(symbol, int(from_iso(c["ts"])), float(c["open"]), float(c["high"]), float(c["low"]),
                           float(c["close"]), int(c.get("volume") or 0), timeframe=timeframe_seconds)
                    for c in body["candles"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise MdsUnavailable(f"/candles/last for {symbol}: malformed answer ({exc})") from exc

    def option_chain(self, symbol: str, expiry: str | None = None) -> OptionChainRecord | None:
        params = {"symbol": symbol} if expiry is None else {"symbol": symbol, "expiry": expiry}
        status, body = self.get("/option_chain", params)
        if status == 404 or body is None:
            return None
        try:
            return OptionChainRecord(symbol, str(body["expiry"]), dict(body["payload"]), from_iso(body["updated_at"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise MdsUnavailable(f"/option_chain for {symbol}: malformed answer ({exc})") from exc

    def quote(self, symbol: str, attempts: int | None = None) -> tuple[float, float] | None:
        """(ltp, tick epoch seconds) or None when the MDS has no quote for it."""
        status, body = self.get("/quote", {"symbol": symbol}, attempts=attempts)
        if status == 404 or body is None:
            return None
        try:
            return float(body["ltp"]), from_iso(body["ts"])
        except (KeyError, TypeError, ValueError) as exc:
            raise MdsUnavailable(f"/quote for {symbol}: malformed answer ({exc})") from exc

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, body): a 503 is an answer here (it names what fails), not an error."""
        status, body = self.get("/health", {}, attempts=1, allow_statuses=(503,))
        return status == 200, body if isinstance(body, dict) else {}

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()


# -- the trader's view of the market ------------------------------------------------------------------------
class MdsMarketView:
    """Latest option chains and quotes (any thread).

    `quote(symbol)` never waits on the network once the client actor runs: a quote older than
    `quote_max_age` is answered from the cache (or an option's premium in the latest chain) while the actor
    fetches a fresh one -- the paper broker calls it from the shared scheduler thread. Without the actor
    (tools, tests) it fetches on the caller's thread, bounded by the timeout and the retries."""

    def __init__(self, client: MdsHttpClient, clock: Clock, quote_max_age: float = 1.0) -> None:
        self.client = client
        self.clock = clock
        self.quote_max_age = quote_max_age
        self.refresher: Callable[[str], object] | None = None  # set by the client actor while it runs
        self._lock = threading.Lock()
        self._chains: dict[str, OptionChainRecord] = {}
        self._quotes: dict[str, tuple[float, float, float]] = {}  # symbol -> (ltp, tick ts, fetched monotonic)
        self._failing = False

    def set_chain(self, record: OptionChainRecord) -> None:
        with self._lock:
            self._chains[record.idx] = record

    def option_chain(self, symbol: str) -> Mapping[str, Any] | None:
        with self._lock:
            record = self._chains.get(symbol)
        return None if record is None else record.payload

    def chain_record(self, symbol: str) -> OptionChainRecord | None:
        with self._lock:
            return self._chains.get(symbol)

    def fresh(self, symbol: str) -> bool:
        with self._lock:
            cached = self._quotes.get(symbol)
        return cached is not None and time.monotonic() - cached[2] <= self.quote_max_age

    def quote(self, symbol: str) -> float | None:
        """The trader's quote function in client mode: the MDS's last price, else an option's premium from
        the latest chain (SEC_<id> legs the MDS feed does not tick), else None."""
        with self._lock:
            cached = self._quotes.get(symbol)
        if cached is not None and time.monotonic() - cached[2] <= self.quote_max_age:
            return cached[0]
        refresher = self.refresher
        if refresher is None:
            return self.fetch(symbol)
        refresher(symbol)
        return cached[0] if cached is not None else self._premium(symbol)

    def fetch(self, symbol: str) -> float | None:
        """Ask the MDS now (blocking, bounded); the answer is cached."""
        try:
            answer = self.client.quote(symbol, attempts=min(2, self.client.attempts))
        except MdsRejected:
            answer = None  # e.g. an option the MDS feed does not serve: look in the chains
        except MdsUnavailable as exc:
            if not self._failing:
                self._failing = True
                log.event("MDS_QUOTE_FAILED", f"quote for {symbol}: {exc}; last known prices meanwhile",
                          level=30, symbol=symbol)
            with self._lock:
                cached = self._quotes.get(symbol)
            return cached[0] if cached is not None else self._premium(symbol)
        self._failing = False
        if answer is not None:
            with self._lock:
                self._quotes[symbol] = (answer[0], answer[1], time.monotonic())
            return answer[0]
        return self._premium(symbol)

    def _premium(self, symbol: str) -> float | None:
        if not symbol.startswith("SEC_"):
            return None
        security_id = symbol[4:]
        with self._lock:
            chains = list(self._chains.values())
        for record in chains:
            _, strikes = option_chain_strikes(record.payload)
            for legs in strikes.values():
                for side in ("ce", "pe"):
                    leg = legs.get(side)
                    if isinstance(leg, Mapping) and str(leg.get("security_id")) == security_id:
                        try:
                            price = float(leg.get("last_price") or 0.0)
                        except (TypeError, ValueError):
                            return None
                        return price if price > 0 else None
        return None


# -- the poller actor ----------------------------------------------------------------------------------------
@dataclass
class MdsClientState:
    """Outlives restarts of the client actor; read by status and health from HTTP threads."""

    last_delivered: dict[str, int] = field(default_factory=dict)  # symbol -> newest candle ts told onwards
    fetches: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_error: str = ""
    last_success_at: float = 0.0
    candles_fetched: int = 0
    candles_pushed: int = 0
    duplicates_dropped: int = 0
    chains: int = 0
    stale: set[str] = field(default_factory=set)
    subscribed: bool = False

    def snapshot(self) -> dict[str, Any]:
        return {"fetches": self.fetches, "failures": self.failures, "consecutive_failures": self.consecutive_failures,
                "last_error": self.last_error or None, "last_success_at": self.last_success_at or None,
                "candles_fetched": self.candles_fetched, "candles_pushed": self.candles_pushed,
                "duplicates_dropped": self.duplicates_dropped, "option_chains": self.chains,
                "redis_subscribed": self.subscribed, "stale": sorted(self.stale),
                "last_candle_ts": dict(self.last_delivered)}


@dataclass(frozen=True)
class FetchCandles:
    symbols: tuple[str, ...] = ()  # () = every symbol
    scheduled: bool = False  # the periodic fetch (reschedules the next one)


@dataclass(frozen=True)
class RefreshChains:
    pass


@dataclass(frozen=True)
class RefreshQuote:
    symbol: str


@dataclass(frozen=True)
class CandlePushed:
    candle: Candle
    event: str


@dataclass(frozen=True)
class FeedStatusPushed:
    event: str
    symbol: str
    at: float


Deliver = Callable[[Any], object]


class MdsClientActor(SupervisedActor):
    """Fetches candles (and chains, and feed staleness) from the MDS and tells them to the strategy."""

    def __init__(self, link: ChildLink | None, client: MdsHttpClient, view: MdsMarketView,
                 symbols: Sequence[str], chain_symbols: Sequence[str], deliver: Deliver, clock: Clock,
                 scheduler: Scheduler, state: MdsClientState, *, history_minutes: int, poll_seconds: float,
                 fetch_delay: float, chain_poll_seconds: float, bus: Bus | None = None) -> None:
        super().__init__(link)
        self.client = client
        self.view = view
        self.symbols = tuple(symbols)
        self.chain_symbols = tuple(chain_symbols)
        self.deliver = deliver
        self.clock = clock
        self.scheduler = scheduler
        self.state = state
        self.history_minutes = history_minutes
        self.poll_seconds = poll_seconds
        self.fetch_delay = fetch_delay
        self.chain_poll_seconds = chain_poll_seconds
        self.bus = bus
        self.subscription: Subscription | None = None
        self.timers: list[Timer] = []
        self.outage_logged = False

    # -- lifecycle ------------------------------------------------------------------------------------------
    def started(self) -> None:
        self._subscribe()
        ref = self.actor_ref
        ref.tell(FetchCandles(scheduled=True))  # the warm-up history, then the minute schedule
        if self.chain_symbols:
            ref.tell(RefreshChains())

        def refresh(symbol: str) -> None:
            try:
                ref.tell(RefreshQuote(symbol))
            except Exception:  # stopped meanwhile: the cache answers
                pass

        self.view.refresher = refresh
        self.log.event("MDS_CLIENT_STARTED", f"reading market data from {self.client.base_url}",
                       base_url=self.client.base_url, symbols=list(self.symbols), redis=self.bus is not None)

    def release(self) -> None:
        # view.refresher stays: while this actor is down its tells fail and the cache answers (a quote
        # asked from the scheduler thread must never wait on the network); a restart sets a new one.
        for timer in self.timers:
            timer.cancel()
        if self.subscription is not None:
            self.subscription.close()
            self.subscription = None
            self.state.subscribed = False

    def _subscribe(self) -> None:
        if self.bus is None or self.subscription is not None:
            return
        ref = self.actor_ref

        def on_message(channel: str, data: bytes) -> None:
            if channel == "feed:status":
                body = orjson.loads(data)
                ref.tell(FeedStatusPushed(str(body.get("event", "")), str(body.get("symbol", "*")),
                                          float(body.get("at") or 0.0)))
                return
            candle, event = candle_from_message(data)
            ref.tell(CandlePushed(candle, event))

        try:
            self.subscription = self.bus.subscribe([*(f"candles:{s}" for s in self.symbols), "feed:status"],
                                                   on_message)
        except StorageError as exc:  # Redis only speeds things up: HTTP carries on, retried next cycle
            self.log.event("MDS_PUSH_UNAVAILABLE", f"Redis subscription failed: {exc}; HTTP polling only",
                           level=30)
            return
        self.state.subscribed = True

    def _later(self, delay: float, message: Any) -> None:
        ref = self.actor_ref

        def tell() -> None:
            try:
                ref.tell(message)
            except Exception:  # stopped meanwhile: nothing to do
                pass

        self.timers = [t for t in self.timers if not t.cancelled][-8:]
        self.timers.append(self.scheduler.call_later(max(0.0, delay), tell))

    def _next_poll_delay(self) -> float:
        """Seconds until the next poll slot (multiples of poll_seconds on the clock) plus the fetch delay."""
        now = self.clock.now()
        period = self.poll_seconds
        return (int(now // period) + 1) * period + self.fetch_delay - now

    # -- messages -------------------------------------------------------------------------------------------
    def receive(self, message: Any) -> Any:
        if isinstance(message, FetchCandles):
            if message.scheduled:
                self._later(self._next_poll_delay(), FetchCandles(scheduled=True))
                self._subscribe()  # a Redis that was down at start
            self._fetch(message.symbols or self.symbols, check_health=message.scheduled)
        elif isinstance(message, CandlePushed):
            self._pushed(message.candle, message.event)
        elif isinstance(message, FeedStatusPushed):
            self._feed_status(message.event, message.symbol, message.at)
        elif isinstance(message, RefreshChains):
            self._later(self.chain_poll_seconds, RefreshChains())
            self._refresh_chains()
        elif isinstance(message, RefreshQuote):
            if not self.view.fresh(message.symbol):  # asked for several times meanwhile: fetched once
                self.view.fetch(message.symbol)
        else:
            return super().receive(message)
        return None

    def _fetch(self, symbols: Sequence[str], check_health: bool) -> None:
        from actors.signals.strategy import CandlesClosed

        failed: list[str] = []
        for symbol in symbols:
            last = self.state.last_delivered.get(symbol)
            try:
                candles = self._new_candles(symbol, last)
            except MdsError as exc:
                failed.append(symbol)
                self._failed(f"{symbol}: {exc}")
                if isinstance(exc, MdsUnavailable):
                    break  # the MDS is down: the other symbols would wait out the same timeouts
                continue
            self.state.candles_fetched += len(candles)
            if last is None:
                # The warm-up: what the MDS held before we started is history (scored, never traded on).
                self.state.last_delivered[symbol] = candles[-1].ts if candles else 0  # 0: all later are live
                self.deliver(CandlesClosed(symbol, tuple(candles[-self.history_minutes:] if self.history_minutes
                                                         else ()), history=True))
            elif candles:
                self.state.last_delivered[symbol] = candles[-1].ts
                self.deliver(CandlesClosed(symbol, tuple(candles)))
        if not failed:
            self._succeeded()
            if check_health and self.subscription is None:
                self._poll_feed_health()

    def _new_candles(self, symbol: str, last: int | None) -> list[Candle]:
        """Closed candles after `last` (None: the warm-up history), oldest first; asks for more until the
        answer reaches back to `last` (or the API's cap), so a long outage is caught up in order."""
        self.state.fetches += 1
        if last is None:
            return self.client.candles_last(symbol, max(1, self.history_minutes))
        limit = FIRST_CATCH_UP_LIMIT
        while True:
            candles = self.client.candles_last(symbol, limit)
            if len(candles) < limit or candles[0].ts <= last or limit >= MAX_LIMIT:
                break
            limit = min(MAX_LIMIT, limit * 4)
        return [c for c in candles if c.ts > last]

    def _pushed(self, candle: Candle, event: str) -> None:
        if event != "CANDLE_CLOSED":
            return  # revisions: the strategy takes each minute once, in order
        last = self.state.last_delivered.get(candle.symbol)
        if last is None or candle.symbol not in self.symbols:
            return  # not warmed yet: the first fetch brings it
        if candle.ts <= last:
            self.state.duplicates_dropped += 1
            return
        if candle.ts != last + MINUTE:
            self._fetch((candle.symbol,), check_health=False)  # a gap: catch up in order over HTTP
            return
        from actors.signals.strategy import CandlesClosed

        self.state.candles_pushed += 1
        self.state.last_delivered[candle.symbol] = candle.ts
        self.deliver(CandlesClosed(candle.symbol, (candle,)))

    def _feed_status(self, event: str, symbol: str, at: float) -> None:
        from actors.signals.strategy import FeedStatusChanged

        if event == "FEED_STALE":
            self.state.stale.add(symbol)
        elif event == "FEED_RESUMED":
            self.state.stale.discard(symbol)
        self.deliver(FeedStatusChanged(event, symbol, at))

    def _poll_feed_health(self) -> None:
        """Without Redis, FEED_STALE / FEED_RESUMED come from the MDS health check's feed section."""
        try:
            _, body = self.client.health()
        except MdsError:
            return
        feed = body.get("checks", {}).get("feed")
        if not isinstance(feed, dict):
            return
        stale = {s for s in feed.get("stale", []) if s in self.symbols}
        for symbol in sorted(stale - self.state.stale):
            self._feed_status("FEED_STALE", symbol, self.clock.now())
        for symbol in sorted(self.state.stale - stale):
            self._feed_status("FEED_RESUMED", symbol, self.clock.now())

    def _refresh_chains(self) -> None:
        for symbol in self.chain_symbols:
            try:
                record = self.client.option_chain(symbol)
            except MdsError as exc:
                self.log.event("MDS_CHAIN_FAILED", f"option chain of {symbol}: {exc}", level=30, symbol=symbol)
                if isinstance(exc, MdsUnavailable):
                    return
                continue
            if record is not None:
                self.view.set_chain(record)
                self.state.chains += 1

    def _failed(self, error: str) -> None:
        self.state.failures += 1
        self.state.consecutive_failures += 1
        self.state.last_error = error
        if not self.outage_logged:
            self.outage_logged = True
            self.log.event("MDS_UNAVAILABLE", f"market data fetch failed: {error}; retried every cycle",
                           level=30, error=error)

    def _succeeded(self) -> None:
        if self.outage_logged:
            self.log.event("MDS_AVAILABLE", "market data fetches work again",
                           failures=self.state.consecutive_failures)
        self.outage_logged = False
        self.state.consecutive_failures = 0
        self.state.last_success_at = self.clock.now()
