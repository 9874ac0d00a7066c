"""The operator's dashboard on the control port: `GET /` (the page), `/static/...` (its scripts and styles,
package data in httpapi/static/), and the read endpoints it polls besides the control API's own:

    GET /v1/overview                 role, uptime, market clock, health, the supervision tree (no ask)
    GET /v1/market/symbols           symbols with candles here, the chart timeframes, the chain underlyings
    GET /v1/market/candles           ?symbol=&timeframe_seconds=&limit=  closed candles + the forming one
    GET /v1/market/option_chain      ?symbol=  the nearest chain

The market endpoints read this process's MDS read model (role all / mds) or, in role trader with
market_data.provider = mds, the MDS over HTTP; without either they are not routed.

Security: the page and its assets carry a strict Content-Security-Policy (scripts and styles from this
origin only, no inline code, no connection elsewhere, no framing). Reads follow the control API's rules
(open on the bind address); mutations need the bearer token, which the page keeps in sessionStorage and
sends in the Authorization header (never a cookie). The page escapes every text it shows.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Protocol

import falcon

from actors.sources.mds_http import MdsError, MdsHttpClient, MdsRejected
from core.market import Candle, to_iso_ist
from httpapi.common import int_param, str_param
from httpapi.views import MarketClock, tree
from storage.records import OptionChainRecord

__all__ = ["CSP", "STATIC_DIR", "MdsProxyView", "add_dashboard_routes", "add_market_routes"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
SYMBOL = r"NIFTY|BANKNIFTY|FINNIFTY|SEC_\d{1,10}"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_PAGE_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                 "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}


class SecurityHeaders:
    """Falcon middleware: the page's headers on every answer of the control app (JSON included)."""

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        resp.set_headers(_PAGE_HEADERS)


class IndexResource:
    def __init__(self) -> None:
        self.page = (STATIC_DIR / "index.html").read_bytes()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.data = self.page


class OverviewResource:
    """What the Overview view polls: answered from handles and stores, never by asking an actor."""

    def __init__(self, runtime: Any, clock: MarketClock | None, views: list[str]) -> None:
        self.runtime = runtime
        self.clock = clock
        self.views = views

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        runtime = self.runtime
        ok, checks = runtime.health()
        health = {"status": "ok" if ok else "degraded", "role": runtime.role,
                  "failing": [name for name, c in checks.items() if not c["ok"]], "checks": checks}
        now = time.time()
        answer: dict[str, Any] = {
            "role": runtime.role, "pid": os.getpid(), "now": now,
            "uptime_seconds": round(now - runtime.started_at, 3) if runtime.started_at else 0.0,
            "market": self.clock.status(now) if self.clock is not None else None,
            "health": health, "tree": tree(runtime.root), "views": self.views,
            "feed": None, "trading": None,
        }
        market_data = runtime.market_data
        if market_data is not None:
            feed = market_data.feed_state
            answer["feed"] = {"source": feed.source, "ticks": feed.ticks, "stale": sorted(feed.stale),
                              "ages": feed.ages(runtime.clock.monotonic()), "finished": feed.finished}
        if runtime.trading is not None:
            answer["trading"] = runtime.trading.api.status()
        resp.media = answer


def add_dashboard_routes(app: falcon.App, runtime: Any, clock: MarketClock | None, views: list[str]) -> None:
    app.add_route("/", IndexResource())
    app.add_static_route("/static", str(STATIC_DIR), fallback_filename=None)
    app.add_route("/v1/overview", OverviewResource(runtime, clock, views))


# -- market data for the charts ------------------------------------------------------------------------------

class MarketView(Protocol):
    """The part of the MDS read model the dashboard needs (actors.market_data.market_cache.MarketCache)."""

    def known_symbol(self, symbol: str) -> bool: ...

    def candles(self, symbol: str, timeframe: int, limit: int, include_partial: bool) -> list[Candle]: ...

    def option_chain(self, symbol: str, expiry: str | None) -> Any: ...


class MdsProxyView:
    """Role trader with an MDS: the same questions over HTTP (closed candles only: the MDS client asks for
    closed ones)."""

    def __init__(self, client: MdsHttpClient, symbols: tuple[str, ...]) -> None:
        self.client = client
        self.symbols = frozenset(symbols)

    def known_symbol(self, symbol: str) -> bool:
        return symbol in self.symbols

    def candles(self, symbol: str, timeframe: int, limit: int, include_partial: bool) -> list[Candle]:
        try:
            return self.client.candles_last(symbol, limit, timeframe)
        except MdsRejected:
            return []

    def option_chain(self, symbol: str, expiry: str | None) -> OptionChainRecord | None:
        return self.client.option_chain(symbol, expiry)


def _symbol(req: falcon.Request, market: MarketView) -> str:
    symbol = str_param(req, "symbol", pattern=SYMBOL)
    assert symbol is not None
    if not market.known_symbol(symbol):
        raise falcon.HTTPNotFound(title="unknown symbol", description=f"{symbol} has no market data here")
    return symbol


def _mds_unavailable(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict[str, Any]) -> None:
    raise falcon.HTTPServiceUnavailable(title="market data unavailable", description=str(exc), retry_after=2)


class SymbolsResource:
    def __init__(self, symbols: tuple[str, ...], underlyings: tuple[str, ...], timeframes: tuple[int, ...]) -> None:
        self.body = {"symbols": list(symbols), "underlyings": list(underlyings), "timeframes": list(timeframes)}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.body


class MarketCandlesResource:
    def __init__(self, market: MarketView) -> None:
        self.market = market

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        timeframe = int_param(req, "timeframe_seconds", default=60, minimum=60, maximum=86400, multiple_of=60)
        limit = int_param(req, "limit", default=100, minimum=1, maximum=5000)
        symbol = _symbol(req, self.market)
        assert timeframe is not None and limit is not None
        candles = self.market.candles(symbol, timeframe, limit, True)
        resp.media = {"symbol": symbol, "timeframe_seconds": timeframe, "candles": [c.as_json() for c in candles]}


class MarketChainResource:
    def __init__(self, market: MarketView) -> None:
        self.market = market

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        symbol = _symbol(req, self.market)
        record = self.market.option_chain(symbol, None)
        if record is None:
            raise falcon.HTTPNotFound(title="no option chain", description=f"no chain for {symbol} yet")
        resp.media = {"symbol": symbol, "expiry": record.expiry, "updated_at": to_iso_ist(record.updated_at),
                      "payload": record.payload}


def add_market_routes(app: falcon.App, market: MarketView, symbols: tuple[str, ...], underlyings: tuple[str, ...],
                      timeframes: tuple[int, ...]) -> None:
    app.add_route("/v1/market/symbols", SymbolsResource(symbols, underlyings, timeframes))
    app.add_route("/v1/market/candles", MarketCandlesResource(market))
    app.add_route("/v1/market/option_chain", MarketChainResource(market))
    app.add_error_handler(MdsError, _mds_unavailable)
