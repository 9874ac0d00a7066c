"""The trading control surface on the control port (role trader / all).

    GET  /v1/positions                     open positions of this process, marked to the latest quotes
    GET  /v1/trades?state=&day=            trades rows (state: a TradeState name; day: YYYY-MM-DD, IST)
    GET  /v1/trades/{pos_id}               the row, the live context, the orders and the full event timeline
    POST /v1/trades                        manual entry {pos_id, symbol, side: BUY|SELL, qty, price?, reason?}
                                           symbol: NIFTY, SEC_<id>, or a trading symbol the instrument
                                           master knows (NIFTY-Dec2026-24000-CE); qty in units, whole lots
    POST /v1/trades/{pos_id}/exit          {reason?}
    POST /v1/control/kill-switch           {"engaged": true|false, reason?}
    POST /v1/control/flatten               {reason?}: exit everything, then stay halted (kill switch engaged)
    POST /v1/control/reconcile/ack         accept the reconciliation differences, release the hold
    GET  /v1/risk                          limits, today's P&L, consecutive losses, trading_enabled and why

Answers to a manual entry (it takes the same path as a strategy signal: its own trade actor, the risk guard, the executor):
  202 {"pos_id", "status": "accepted"}  the entry was journaled and is being placed (follow GET /v1/trades/{pos_id})
  409 {"error": "duplicate pos_id"}     the pos_id is already known (here or in another process)
  403 {"error": "entry denied", "code", "reason"}  the risk guard refused (kill switch, loss limits, session, ...)
  503 + Retry-After                     not ready (start-up reconciliation), storage down, trading busy
Mutating endpoints need the bearer token (401 without it) and validate their JSON body (400 naming the
field). Nothing a client sends produces a 500.
"""

from __future__ import annotations

import re
from typing import Any

import falcon

from actors.trading.api import (
    POS_ID_PATTERN,
    EntryRefusal,
    ManualEntryRequest,
    TradeConflict,
    TradeNotFound,
    TradingApi,
    TradingUnavailable,
)
from core.instruments import InstrumentError, LotSizeError, lots_of
from core.orders import Side
from core.protection import ProtectionRules, rule_problems
from core.trade import TradeState
from httpapi.common import bad_param, float_param, json_body, str_param
from storage.errors import StorageError, StorageUnavailable

__all__ = ["add_trading_routes"]

SYMBOL_TEXT = r"[A-Za-z0-9][A-Za-z0-9_:. -]{0,63}"
DAY = r"\d{4}-\d{2}-\d{2}"
MAX_QTY = 1_000_000
_STATES = {state.value for state in TradeState}

EXIT_RULE_FIELDS = tuple(ProtectionRules().as_dict())


def _optional_body(req: falcon.Request) -> dict[str, Any]:
    """A JSON object, or {} when no body was sent."""
    if not req.content_length:
        return {}
    return json_body(req)


def _reason(body: dict[str, Any]) -> str:
    value = body.get("reason", "")
    if not isinstance(value, str):
        raise bad_param("reason", "must be a string")
    if len(value) > 200:
        raise bad_param("reason", "longer than 200 characters")
    return value


def _pos_id(value: Any, name: str = "pos_id") -> str:
    if not isinstance(value, str) or not value:
        raise bad_param(name, "is required (a string)")
    if not re.fullmatch(POS_ID_PATTERN, value):
        raise bad_param(name, f"{value[:80]!r} is not valid (letters, digits, _ . : -, at most 64)")
    return value


def _unavailable(detail: str) -> falcon.HTTPServiceUnavailable:
    return falcon.HTTPServiceUnavailable(title="trading unavailable", description=detail, retry_after=1)


class PositionsResource:
    def __init__(self, trading: TradingApi) -> None:
        self.trading = trading

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.trading.positions()


class TradesResource:
    def __init__(self, trading: TradingApi, auth: Any) -> None:
        self.trading = trading
        self.auth = auth

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        state = str_param(req, "state", required=False, max_len=40)
        if state is not None and state.upper() not in _STATES:
            raise bad_param("state", f"{state!r} is not one of {', '.join(sorted(_STATES))}")
        day = str_param(req, "day", required=False, pattern=DAY, max_len=10)
        try:
            trades = self.trading.trades(state.upper() if state else None, day)
        except ValueError as exc:  # a day like 2026-02-31
            raise bad_param("day", str(exc)) from None
        resp.media = {"trades": trades, "count": len(trades)}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.auth(req)
        body = json_body(req)
        request = self._entry(body)
        decision = self.trading.enter(request)
        if decision.accepted:
            resp.status = falcon.HTTP_202
            resp.media = {"pos_id": decision.pos_id, "status": "accepted"}
            return
        if decision.code == EntryRefusal.DUPLICATE:
            raise falcon.HTTPConflict(title="duplicate pos_id", description=decision.reason)
        if decision.code == EntryRefusal.INVALID_EXITS:  # checked above: only a rule the guard cannot use
            raise bad_param("exits", decision.reason)
        if decision.code in (EntryRefusal.NOT_READY, EntryRefusal.STORAGE):
            raise _unavailable(decision.reason)
        resp.status = falcon.HTTP_403
        resp.media = {"error": "entry denied", "pos_id": decision.pos_id, "code": decision.code,
                      "reason": decision.reason}

    def _entry(self, body: dict[str, Any]) -> ManualEntryRequest:
        pos_id = _pos_id(body.get("pos_id"))
        text = body.get("symbol")
        if not isinstance(text, str) or not re.fullmatch(SYMBOL_TEXT, text):
            raise bad_param("symbol", "must be NIFTY, BANKNIFTY, FINNIFTY, SEC_<security id> or a trading symbol "
                                      "such as NIFTY-Dec2026-24000-CE")
        try:
            symbol = self.trading.instruments.canonical(text)
            contract = self.trading.instruments.find(symbol)
        except InstrumentError as exc:
            raise bad_param("symbol", str(exc)) from None
        side = body.get("side")
        if side not in ("BUY", "SELL"):
            raise bad_param("side", "must be BUY or SELL")
        qty = body.get("qty")
        if isinstance(qty, bool) or not isinstance(qty, int):
            raise bad_param("qty", "must be a positive integer (units)")
        if not 0 < qty <= MAX_QTY:
            raise bad_param("qty", f"must be between 1 and {MAX_QTY}")
        lot = self.trading.lot_size(symbol)
        if lot:
            try:
                lots_of(qty, lot)
            except LotSizeError as exc:
                raise bad_param("qty", f"{exc} of {text}") from None
        price = None
        if "price" in body:  # an explicit null is a mistake, not "no price"
            # A typo like 1e20 is refused here, before anything is journaled (risk.max_price).
            price = float_param(body["price"], "price", minimum=0.0, maximum=self.trading.max_price)
            if price <= 0:
                raise bad_param("price", "must be positive")
        exits: dict[str, float] = {}
        for name in EXIT_RULE_FIELDS:  # this entry's own protective exits (the exits.* config otherwise)
            if name in body:
                exits[name] = float_param(body[name], name, minimum=0.0)
                problems = rule_problems({name: exits[name]})
                if problems:
                    raise bad_param(name, problems[0].partition(": ")[2])
        unknown = set(body) - {"pos_id", "symbol", "side", "qty", "price", "reason", *EXIT_RULE_FIELDS}
        if unknown:
            raise bad_param(sorted(unknown)[0], "unknown field")
        described = symbol
        if contract is not None and contract.is_option:
            described = f"{contract.underlying} {contract.expiry} {contract.strike:g} {contract.option_type}"
        return ManualEntryRequest(pos_id=pos_id, symbol=symbol, side=Side(side), qty=qty, price=price,
                                  reason=_reason(body) or "manual entry", instrument=described, exits=exits)


class TradeResource:
    def __init__(self, trading: TradingApi) -> None:
        self.trading = trading

    def on_get(self, req: falcon.Request, resp: falcon.Response, pos_id: str) -> None:
        resp.media = self.trading.trade(_pos_id(pos_id))


class TradeExitResource:
    def __init__(self, trading: TradingApi, auth: Any) -> None:
        self.trading = trading
        self.auth = auth

    def on_post(self, req: falcon.Request, resp: falcon.Response, pos_id: str) -> None:
        self.auth(req)
        body = _optional_body(req)
        reason = _reason(body) or "manual exit"
        unknown = set(body) - {"reason"}
        if unknown:
            raise bad_param(sorted(unknown)[0], "unknown field")
        resp.status = falcon.HTTP_202
        resp.media = self.trading.exit(_pos_id(pos_id), reason)


class KillSwitchResource:
    def __init__(self, trading: TradingApi, auth: Any) -> None:
        self.trading = trading
        self.auth = auth

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.auth(req)
        body = json_body(req)
        engaged = body.get("engaged")
        if not isinstance(engaged, bool):
            raise bad_param("engaged", "must be true or false")
        unknown = set(body) - {"engaged", "reason"}
        if unknown:
            raise bad_param(sorted(unknown)[0], "unknown field")
        resp.media = self.trading.kill_switch(engaged, _reason(body))


class FlattenResource:
    def __init__(self, trading: TradingApi, auth: Any) -> None:
        self.trading = trading
        self.auth = auth

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.auth(req)
        body = _optional_body(req)
        unknown = set(body) - {"reason"}
        if unknown:
            raise bad_param(sorted(unknown)[0], "unknown field")
        resp.status = falcon.HTTP_202
        resp.media = self.trading.flatten(_reason(body))


class ReconcileAckResource:
    def __init__(self, trading: TradingApi, auth: Any) -> None:
        self.trading = trading
        self.auth = auth

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.auth(req)
        body = _optional_body(req)
        _reason(body)
        unknown = set(body) - {"reason"}
        if unknown:
            raise bad_param(sorted(unknown)[0], "unknown field")
        resp.media = self.trading.reconcile_ack(who=req.remote_addr or "operator")


class RiskResource:
    def __init__(self, trading: TradingApi) -> None:
        self.trading = trading

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.trading.risk()


def _not_found(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict[str, Any]) -> None:
    raise falcon.HTTPNotFound(title="unknown trade", description=f"no trade with pos_id {exc}")


def _conflict(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict[str, Any]) -> None:
    raise falcon.HTTPConflict(title="conflict", description=str(exc))


def _trading_unavailable(req: falcon.Request, resp: falcon.Response, exc: Exception,
                         params: dict[str, Any]) -> None:
    raise _unavailable(str(exc))


def _storage(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict[str, Any]) -> None:
    if isinstance(exc, StorageUnavailable):
        raise _unavailable(f"storage unavailable: {exc}")
    raise falcon.HTTPInternalServerError(title="storage error", description="see the server log")


def add_trading_routes(app: falcon.App, trading: TradingApi, auth: Any) -> None:
    app.add_route("/v1/positions", PositionsResource(trading))
    app.add_route("/v1/trades", TradesResource(trading, auth))
    app.add_route("/v1/trades/{pos_id}", TradeResource(trading))
    app.add_route("/v1/trades/{pos_id}/exit", TradeExitResource(trading, auth))
    app.add_route("/v1/control/kill-switch", KillSwitchResource(trading, auth))
    app.add_route("/v1/control/flatten", FlattenResource(trading, auth))
    app.add_route("/v1/control/reconcile/ack", ReconcileAckResource(trading, auth))
    app.add_route("/v1/risk", RiskResource(trading))
    app.add_error_handler(TradeNotFound, _not_found)
    app.add_error_handler(TradeConflict, _conflict)
    app.add_error_handler(TradingUnavailable, _trading_unavailable)
    app.add_error_handler(StorageError, _storage)
