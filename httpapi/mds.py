"""The seed's MDS API: /v1/candles/last, /v1/option_chain, /v1/quote. Hot reads come from memory.

`market_data` is the MDS read model (actors.market_data.assembly.MarketDataView): it answers from in-memory state kept
by the candle builders, the feed and the option-chain poller, never with a database query per request.

`/v1/quote` also takes a trading symbol the instrument master knows (`NIFTY-Dec2026-24000-CE` is answered
as its SEC_<id>), and answers for any contract the feed ticks (a position's) or a live chain prices.
`/v1/option_chain` without `expiry` answers the nearest expiry not yet over (15:30 IST on its day).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import falcon
import orjson

from core.market import Candle, to_iso_ist
from httpapi.common import bad_param, bool_param, int_param, str_param

__all__ = ["MarketDataView", "add_mds_routes"]

SYMBOL = r"NIFTY|BANKNIFTY|FINNIFTY|SEC_\d{1,10}"
QUOTE_SYMBOL = r"[A-Za-z0-9][A-Za-z0-9_:. -]{0,63}"
Resolve = Callable[[str], str]  # a user's name -> the system's (InstrumentBook.canonical); ValueError if unknown
EXPIRY = r"\d{4}-\d{2}-\d{2}"


class MarketDataView(Protocol):
    def known_symbol(self, symbol: str) -> bool: ...

    def candles(self, symbol: str, timeframe: int, limit: int, include_partial: bool) -> list[Candle]: ...

    def quote(self, symbol: str) -> tuple[float, float] | None:
        """(ltp, tick epoch seconds) or None."""

    def served_symbol(self, symbol: str) -> bool:
        """Quoted here: a configured symbol, or a contract with a tick or a live chain price."""

    def chain_quote(self, symbol: str) -> tuple[float, float] | None:
        """(price, the chain's updated_at) of a contract in a live option chain."""

    def option_chain(self, symbol: str, expiry: str | None) -> Any:
        """An object with idx, expiry, payload, updated_at — or None."""

    def now(self) -> float: ...

    def version(self, symbol: str) -> int:
        """Changes whenever the symbol's closed candles change."""


def _symbol(req: falcon.Request, market_data: MarketDataView) -> str:
    symbol = str_param(req, "symbol", pattern=SYMBOL)
    assert symbol is not None
    if not market_data.known_symbol(symbol):
        raise falcon.HTTPNotFound(title="unknown symbol", description=f"{symbol} is not served here")
    return symbol


class CandlesLastResource:
    """Closed-candle answers are cached as JSON bytes until the symbol's next closed or revised candle:
    a poller hammering the same query between two minute closes costs a dict lookup."""

    MEMO_MAX = 4096

    def __init__(self, market_data: MarketDataView) -> None:
        self.market_data = market_data
        self._memo: dict[tuple[str, int, int], tuple[int, bytes]] = {}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        timeframe = int_param(req, "timeframe_seconds", default=60, minimum=60, maximum=86400, multiple_of=60)
        limit = int_param(req, "limit", default=100, minimum=1, maximum=5000)
        partial = bool_param(req, "include_partial")
        symbol = _symbol(req, self.market_data)
        assert timeframe is not None and limit is not None
        key = (symbol, timeframe, limit)
        version = self.market_data.version(symbol)
        if not partial:
            hit = self._memo.get(key)
            if hit is not None and hit[0] == version:
                resp.content_type = falcon.MEDIA_JSON
                resp.data = hit[1]
                return
        candles = self.market_data.candles(symbol, timeframe, limit, partial)
        body = orjson.dumps({"symbol": symbol, "timeframe_seconds": timeframe,
                             "candles": [c.as_json() for c in candles]})
        if not partial:
            if len(self._memo) >= self.MEMO_MAX:
                self._memo.clear()
            self._memo[key] = (version, body)
        resp.content_type = falcon.MEDIA_JSON
        resp.data = body


class OptionChainResource:
    def __init__(self, market_data: MarketDataView) -> None:
        self.market_data = market_data

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        expiry = str_param(req, "expiry", required=False, pattern=EXPIRY)
        symbol = _symbol(req, self.market_data)
        record = self.market_data.option_chain(symbol, expiry)
        if record is None:
            what = f"expiry {expiry}" if expiry else "any expiry"
            raise falcon.HTTPNotFound(title="no option chain", description=f"no chain for {symbol} at {what} yet")
        resp.media = {"symbol": symbol, "expiry": record.expiry, "updated_at": to_iso_ist(record.updated_at),
                      "payload": record.payload}


class QuoteResource:
    def __init__(self, market_data: MarketDataView, resolve: Resolve | None) -> None:
        self.market_data = market_data
        self.resolve = resolve

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        text = str_param(req, "symbol", pattern=QUOTE_SYMBOL if self.resolve is not None else SYMBOL)
        assert text is not None
        try:
            symbol = self.resolve(text) if self.resolve is not None else text
        except ValueError as exc:
            raise bad_param("symbol", str(exc)) from None
        if not self.market_data.served_symbol(symbol):
            raise falcon.HTTPNotFound(title="unknown symbol", description=f"{text} is not served here")
        quote = self.market_data.quote(symbol)
        source = "tick"
        if quote is None:
            quote, source = self.market_data.chain_quote(symbol), "option_chain"
        if quote is None:
            raise falcon.HTTPNotFound(title="no quote", description=f"no tick for {text} yet")
        ltp, ts = quote
        body = {"symbol": symbol, "ltp": ltp, "ts": to_iso_ist(ts),
                "age_seconds": round(max(0.0, self.market_data.now() - ts), 3)}
        if source != "tick":
            body["source"] = source
        if symbol != text:
            body["requested"] = text
        resp.media = body


def add_mds_routes(app: falcon.App, market_data: MarketDataView, resolve: Resolve | None = None) -> None:
    app.add_route("/v1/candles/last", CandlesLastResource(market_data))
    app.add_route("/v1/option_chain", OptionChainResource(market_data))
    app.add_route("/v1/quote", QuoteResource(market_data, resolve))
