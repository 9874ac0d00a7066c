"""The Market Data Service over HTTP: how role trader reads market data from Server A (the seed's
`MARKET_DATA_PROVIDER=mds`, `MDS_BASE_URL`).

    MdsHttpClient   GET /v1/candles/last, /v1/option_chain, /v1/quote, /v1/health on `market_data.mds_base_url`
                    (thread-safe; timeouts from market_data.request_timeout_seconds; bounded tenacity retries)
    MdsMarketView   the latest option chains and quotes the trader holds (any thread); `quote(symbol)` is a
                    quote source of the trading side in client mode (LIMIT prices, paper fills): answered from
                    memory, refreshed by the signals subtree's MdsClientActor while it runs

Errors are translated once, here: `MdsUnavailable` (transport error, timeout, 5xx: retried, then the
caller tries again next cycle), `MdsRejected` (a 4xx other than 404: bad input or configuration, not
retried). A 404 (no quote / chain yet) is an answer: None.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import requests
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from actors.clock import Clock
from core.chains import parse_chain
from core.instruments import InstrumentError, expiry_close_epoch
from core.market import Candle, from_iso
from storage.records import OptionChainRecord
from telemetry.logs import get_logger

__all__ = ["MdsError", "MdsHttpClient", "MdsMarketView", "MdsRejected", "MdsUnavailable"]

MINUTE = 60
MAX_LIMIT = 5000  # the MDS API's cap on `limit`
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
        """The latest chain the MDS served (its nearest live expiry); never one whose expiry is over."""
        with self._lock:
            record = self._chains.get(symbol)
        if record is None:
            return None
        try:
            if expiry_close_epoch(record.expiry) <= self.clock.now():
                return None
        except InstrumentError:
            return None
        return record.payload

    def fresh(self, symbol: str) -> bool:
        with self._lock:
            cached = self._quotes.get(symbol)
        return cached is not None and self.clock.monotonic() - cached[2] <= self.quote_max_age

    def quote(self, symbol: str) -> float | None:
        """The trader's quote function in client mode: the MDS's last price, else an option's premium from
        the latest chain (SEC_<id> legs the MDS feed does not tick), else None."""
        with self._lock:
            cached = self._quotes.get(symbol)
        if cached is not None and self.clock.monotonic() - cached[2] <= self.quote_max_age:
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
                self._quotes[symbol] = (answer[0], answer[1], self.clock.monotonic())
            return answer[0]
        return self._premium(symbol)

    def _premium(self, symbol: str) -> float | None:
        if not symbol.startswith("SEC_"):
            return None
        with self._lock:
            chains = list(self._chains.values())
        for record in chains:
            leg = parse_chain(record.payload).leg(symbol)
            if leg is not None:
                return leg.last_price
        return None


