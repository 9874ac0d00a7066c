"""The OpenAPI 3 contract of both HTTP apps, served at `GET /v1/openapi.json` on each port.

Each port describes its own routes: the document is built from the routes its Falcon app really has
(`falcon.inspect`), taking each one's operation from `OPERATIONS` below, so a role without trading has no
trading paths in its document. A route with no entry here is missing from the document, and
tests/test_openapi.py fails on it: add the operation when you add a route.

Schemas say what the handlers guarantee; objects stay open (extra keys allowed) unless the handler refuses
unknown fields, as the control API's JSON bodies do.
"""

from __future__ import annotations

from typing import Any

import falcon
from falcon.inspect import inspect_routes

from core.trade import TradeState

__all__ = ["OPERATIONS", "OpenApiResource", "app_routes", "document"]

OPENAPI_VERSION = "3.0.3"
SYMBOL = "^(NIFTY|BANKNIFTY|FINNIFTY|SEC_[0-9]{1,10})$"
SYMBOL_TEXT = "^[A-Za-z0-9][A-Za-z0-9_:. -]{0,63}$"  # a trading symbol too (NIFTY-Dec2026-24000-CE)
POS_ID = "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
DAY = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
TRADE_STATES = [state.value for state in TradeState]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


NUMBER = {"type": "number"}
INTEGER = {"type": "integer"}
STRING = {"type": "string"}
BOOLEAN = {"type": "boolean"}
OBJECT = {"type": "object"}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {
        "error": STRING, "detail": _nullable(STRING), "param": STRING}},
    "Health": {"type": "object", "required": ["status", "role", "failing", "checks"], "properties": {
        "status": {"type": "string", "enum": ["ok", "degraded"]}, "role": STRING,
        "failing": {"type": "array", "items": STRING},
        "checks": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["ok"], "properties": {"ok": BOOLEAN}}}}},
    "Actor": {"type": "object", "required": ["id", "state", "restarts", "mailbox_depth"], "properties": {
        "id": STRING, "state": STRING, "restart": STRING, "restarts": INTEGER, "crashes": INTEGER,
        "consecutive_crashes": INTEGER, "last_failure": _nullable(STRING), "last_failure_at": _nullable(NUMBER),
        "mailbox_depth": INTEGER, "buffered": INTEGER, "dropped": INTEGER, "dead_letters": INTEGER,
        "children": {"type": "array", "items": _ref("Actor")}}},
    "Tree": _nullable({"type": "object", "required": ["id", "children"], "properties": {
        "id": STRING, "children": {"type": "array", "items": _ref("Actor")}}}),
    "Status": {"type": "object", "required": ["role", "pid", "uptime_seconds", "config"], "properties": {
        "role": STRING, "pid": INTEGER, "started_at": NUMBER, "uptime_seconds": NUMBER,
        "supervision": _nullable(OBJECT), "config": OBJECT}},
    "Overview": {"type": "object", "required": ["role", "pid", "uptime_seconds", "now", "health", "tree"],
                 "properties": {
                     "role": STRING, "pid": INTEGER, "uptime_seconds": NUMBER, "now": NUMBER,
                     "market": _nullable({"type": "object", "required": ["state", "reason"], "properties": {
                         "state": {"type": "string", "enum": ["open", "closed"]}, "reason": STRING,
                         "next_open": _nullable(NUMBER)}}),
                     "health": _ref("Health"), "tree": _ref("Tree"),
                     "feed": _nullable(OBJECT), "trading": _nullable(OBJECT),
                     "views": {"type": "array", "items": STRING}}},
    "Restarted": {"type": "object", "required": ["restarted", "status"], "properties": {
        "restarted": STRING, "status": OBJECT}},
    "Candle": {"type": "object", "required": ["ts", "open", "high", "low", "close", "volume"], "properties": {
        "ts": STRING, "open": NUMBER, "high": NUMBER, "low": NUMBER, "close": NUMBER, "volume": NUMBER}},
    "Candles": {"type": "object", "required": ["symbol", "timeframe_seconds", "candles"], "properties": {
        "symbol": STRING, "timeframe_seconds": INTEGER, "candles": {"type": "array", "items": _ref("Candle")}}},
    "OptionChain": {"type": "object", "required": ["symbol", "expiry", "updated_at", "payload"], "properties": {
        "symbol": STRING, "expiry": STRING, "updated_at": STRING, "payload": {}}},
    "Quote": {"type": "object", "required": ["symbol", "ltp", "ts", "age_seconds"], "properties": {
        "symbol": STRING, "ltp": NUMBER, "ts": STRING, "age_seconds": NUMBER}},
    "MarketSymbols": {"type": "object", "required": ["symbols", "timeframes"], "properties": {
        "symbols": {"type": "array", "items": STRING}, "underlyings": {"type": "array", "items": STRING},
        "timeframes": {"type": "array", "items": INTEGER}}},
    "Position": {"type": "object", "required": ["pos_id", "symbol", "side", "state", "qty", "open_qty"],
                 "properties": {
                     "pos_id": STRING, "symbol": STRING, "instrument": STRING, "side": STRING, "state": STRING,
                     "qty": INTEGER, "open_qty": INTEGER, "avg_entry_price": NUMBER, "mark": _nullable(NUMBER),
                     "unrealized_pnl": _nullable(NUMBER), "realized_pnl": NUMBER, "opened_at": _nullable(NUMBER),
                     "exit_reason": _nullable(STRING), "stop_price": _nullable(NUMBER),
                     "target_price": _nullable(NUMBER), "trailing_stop": _nullable(NUMBER),
                     "broker_stop_price": _nullable(NUMBER)}},
    "Positions": {"type": "object", "required": ["positions", "summary"], "properties": {
        "positions": {"type": "array", "items": _ref("Position")}, "summary": OBJECT,
        "realized_today": NUMBER}},
    "TradeRow": {"type": "object", "required": ["pos_id", "symbol", "side", "qty", "state"], "properties": {
        "pos_id": STRING, "symbol": STRING, "instrument": STRING, "side": STRING, "qty": INTEGER,
        "filled_qty": INTEGER, "entry_price": _nullable(NUMBER), "entry_time": _nullable(NUMBER),
        "exit_price": _nullable(NUMBER), "exit_time": _nullable(NUMBER), "fees": NUMBER,
        "realized_pnl": _nullable(NUMBER), "state": STRING, "opened_day": STRING, "detail": OBJECT,
        "created_at": NUMBER, "updated_at": NUMBER}},
    "Trades": {"type": "object", "required": ["trades", "count"], "properties": {
        "trades": {"type": "array", "items": _ref("TradeRow")}, "count": INTEGER}},
    "Trade": {"type": "object", "required": ["pos_id", "trade", "live", "orders", "timeline"], "properties": {
        "pos_id": STRING, "trade": {"allOf": [_ref("TradeRow")], "nullable": True}, "live": _nullable(OBJECT),
        "orders": {"type": "array", "items": OBJECT},
        "timeline": {"type": "array", "items": {"type": "object", "required": ["seq", "event", "at"], "properties": {
            "seq": INTEGER, "event": STRING, "from_state": _nullable(STRING), "to_state": _nullable(STRING),
            "at": NUMBER, "payload": {}}}}}},
    "EntryRequest": {"type": "object", "additionalProperties": False, "required": ["pos_id", "symbol", "side", "qty"],
                     "properties": {
                         "pos_id": {"type": "string", "pattern": POS_ID},
                         "symbol": {"type": "string", "pattern": SYMBOL_TEXT},
                         "side": {"type": "string", "enum": ["BUY", "SELL"]},
                         "qty": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
                         "price": {"type": "number", "exclusiveMinimum": True, "minimum": 0},
                         "reason": {"type": "string", "maxLength": 200},
                         # this entry's protective exits, replacing the exits.* defaults (0 = off)
                         "stop_loss_pct": {"type": "number", "minimum": 0, "exclusiveMaximum": True, "maximum": 100},
                         "target_pct": {"type": "number", "minimum": 0},
                         "trailing_stop_pct": {"type": "number", "minimum": 0, "exclusiveMaximum": True,
                                               "maximum": 100},
                         "max_holding_minutes": {"type": "number", "minimum": 0}}},
    "EntryAccepted": {"type": "object", "required": ["pos_id", "status"], "properties": {
        "pos_id": STRING, "status": {"type": "string", "enum": ["accepted"]}}},
    "EntryDenied": {"type": "object", "required": ["error", "code", "reason"], "properties": {
        "error": STRING, "pos_id": STRING, "code": STRING, "reason": STRING}},
    "Reason": {"type": "object", "additionalProperties": False, "properties": {
        "reason": {"type": "string", "maxLength": 200}}},
    "KillSwitchRequest": {"type": "object", "additionalProperties": False, "required": ["engaged"], "properties": {
        "engaged": BOOLEAN, "reason": {"type": "string", "maxLength": 200}}},
    "ExitAccepted": {"type": "object", "required": ["pos_id", "state", "exit_requested"], "properties": {
        "pos_id": STRING, "state": STRING, "exit_requested": BOOLEAN}},
    "Risk": {"type": "object", "required": ["trading_enabled", "why", "limits", "kill_switch",
                                            "reconciliation_hold", "consecutive_losses"], "properties": {
        "trading_enabled": BOOLEAN, "why": STRING, "deny_code": _nullable(STRING), "day": STRING,
        "realized_pnl": NUMBER, "realized_pnl_book": _nullable(NUMBER), "unrealized_pnl": _nullable(NUMBER),
        "consecutive_losses": INTEGER, "trades_closed": INTEGER, "open_positions": INTEGER,
        "kill_switch": {"type": "object", "required": ["engaged"], "properties": {
            "engaged": BOOLEAN, "reason": _nullable(STRING)}},
        "reconciliation_hold": {"type": "object", "required": ["engaged"], "properties": {
            "engaged": BOOLEAN, "reason": _nullable(STRING)}},
        "limits": OBJECT, "open_exposure": NUMBER, "startup_reconciliation_passed": BOOLEAN}},
    "Flattened": {"type": "object", "required": ["exiting", "kill_switch_engaged", "risk"], "properties": {
        "exiting": {"type": "array", "items": STRING}, "kill_switch_engaged": BOOLEAN, "risk": _ref("Risk")}},
    "Incidents": {"type": "object", "required": ["day", "log_file", "count", "by_kind", "incidents"], "properties": {
        "day": STRING, "log_file": STRING, "count": INTEGER, "by_kind": OBJECT,
        "incidents": {"type": "array", "items": OBJECT}, "inputs": OBJECT}},
    "Story": {"type": "object", "required": ["pos_id", "log_file", "story", "incidents", "trade", "orders",
                                             "timeline"], "properties": {
        "pos_id": STRING, "log_file": STRING, "day": _nullable(STRING), "story": _nullable(OBJECT),
        "incidents": {"type": "array", "items": OBJECT}, "trade": _nullable(OBJECT),
        "orders": {"type": "array", "items": OBJECT}, "timeline": {"type": "array", "items": OBJECT},
        "database_error": _nullable(STRING)}},
    "Acknowledged": {"type": "object", "required": ["acknowledged", "hold_released"], "properties": {
        "acknowledged": {"type": "array"}, "accepted_differences": OBJECT, "hold_released": BOOLEAN}},
}


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _error(description: str) -> dict[str, Any]:
    return _json("Error", description)


BAD = {"400": _error("a parameter or field is invalid (`param` names it)")}
UNAUTHORIZED = {"401": _error("no valid bearer token")}
UNAVAILABLE = {"503": _error("not ready, restarting or storage unavailable; retry after Retry-After seconds")}
JSON_BODY_ERRORS = {"415": _error("the body is not application/json")}


def _query(name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema}


def _path(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


SYMBOL_QUERY = _query("symbol", {"type": "string", "pattern": SYMBOL}, "NIFTY, BANKNIFTY, FINNIFTY or SEC_<id>",
                      required=True)
POS_ID_PATH = _path("pos_id", {"type": "string", "pattern": POS_ID}, "the trade's id (its correlationId root)")
CANDLE_QUERY = [
    SYMBOL_QUERY,
    _query("timeframe_seconds", {"type": "integer", "minimum": 60, "maximum": 86400, "multipleOf": 60,
                                 "default": 60}, "bucket size, aligned to the 09:15 IST open"),
    _query("limit", {"type": "integer", "minimum": 1, "maximum": 5000, "default": 100}, "newest N, oldest first"),
]
SECURED = [{"bearer": []}]


def _body(schema: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(schema)}}}


def _mutation(summary: str, body: str | None, responses: dict[str, Any], body_required: bool = True,
              path: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "security": SECURED,
                                 "responses": {**responses, **BAD, **UNAUTHORIZED}}
    if body is not None:
        operation["requestBody"] = _body(body, body_required)
        operation["responses"].update(JSON_BODY_ERRORS)
    if path:
        operation["parameters"] = path
    return operation


OPERATIONS: dict[str, dict[str, dict[str, Any]]] = {
    "/": {"get": {"summary": "the operator's dashboard (HTML; its scripts and styles under /static/)",
                  "responses": {"200": {"description": "the page", "content": {"text/html": {"schema": STRING}}}}}},
    "/metrics": {"get": {"summary": "Prometheus metrics (text exposition format 0.0.4)", "responses": {
        "200": {"description": "the metrics", "content": {"text/plain": {"schema": STRING}}}}}},
    "/v1/openapi.json": {"get": {"summary": "this document", "responses": {
        "200": {"description": "OpenAPI 3", "content": {"application/json": {"schema": OBJECT}}}}}},
    "/v1/health": {"get": {"summary": "health checks: 200 when all pass, 503 naming what fails", "responses": {
        "200": _json("Health", "every check passes"), "503": _json("Health", "some check fails")}}},
    "/v1/status": {"get": {"summary": "supervision tree (asked of the supervisors), counters, config without "
                                      "secrets", "responses": {"200": _json("Status", "the status")}}},
    "/v1/overview": {"get": {"summary": "role, uptime, market clock, health and the supervision tree, read "
                                        "without asking any actor (the dashboard polls it)",
                             "responses": {"200": _json("Overview", "the overview")}}},
    "/v1/actors/{actor_id}/restart": {"post": _mutation(
        "restart one actor (e.g. feed, candles:NIFTY, executor)", None, {
            "200": _json("Restarted", "restarted"), "404": _error("no such actor"), **UNAVAILABLE},
        path=[_path("actor_id", {"type": "string", "maxLength": 200}, "the actor's id in the tree")])},
    "/v1/candles/last": {"get": {"summary": "the last closed candles (the seed's MDS shape)", "parameters": [
        *CANDLE_QUERY, _query("include_partial", {"type": "boolean", "default": False}, "add the forming candle")],
        "responses": {"200": _json("Candles", "candles"), **BAD, "404": _error("unknown symbol")}}},
    "/v1/option_chain": {"get": {"summary": "the latest option chain", "parameters": [
        SYMBOL_QUERY, _query("expiry", {"type": "string", "pattern": DAY}, "YYYY-MM-DD (default: the nearest)")],
        "responses": {"200": _json("OptionChain", "the chain"), **BAD, "404": _error("unknown symbol or no chain")}}},
    "/v1/quote": {"get": {"summary": "the latest quote (a tick, else the option chain's price)", "parameters": [
        _query("symbol", {"type": "string", "pattern": SYMBOL_TEXT},
               "NIFTY, BANKNIFTY, FINNIFTY, SEC_<id> or a trading symbol", required=True)], "responses": {
        "200": _json("Quote", "the quote"), **BAD, "404": _error("unknown symbol or no tick yet")}}},
    "/v1/market/symbols": {"get": {"summary": "the symbols with candles and the chart timeframes", "responses": {
        "200": _json("MarketSymbols", "symbols")}}},
    "/v1/market/candles": {"get": {"summary": "candles for the dashboard's chart (closed + the forming one)",
                                   "parameters": CANDLE_QUERY, "responses": {
                                       "200": _json("Candles", "candles"), **BAD, "404": _error("unknown symbol"),
                                       **UNAVAILABLE}}},
    "/v1/market/option_chain": {"get": {"summary": "the nearest option chain for the dashboard", "parameters": [
        SYMBOL_QUERY], "responses": {"200": _json("OptionChain", "the chain"), **BAD,
                                     "404": _error("unknown symbol or no chain"), **UNAVAILABLE}}},
    "/v1/positions": {"get": {"summary": "open positions marked to the latest quotes", "responses": {
        "200": _json("Positions", "positions"), **UNAVAILABLE}}},
    "/v1/trades": {
        "get": {"summary": "trades", "parameters": [
            _query("state", {"type": "string", "enum": TRADE_STATES}, "a trade state"),
            _query("day", {"type": "string", "pattern": DAY}, "YYYY-MM-DD (IST)")],
            "responses": {"200": _json("Trades", "trades"), **BAD, **UNAVAILABLE}},
        "post": _mutation("manual entry, through the risk guard and the executor", "EntryRequest", {
            "202": _json("EntryAccepted", "accepted: being placed"), "403": _json("EntryDenied", "denied by risk"),
            "409": _error("duplicate pos_id"), **UNAVAILABLE})},
    "/v1/trades/{pos_id}": {"get": {"summary": "the trade, its orders and its event timeline",
                                    "parameters": [POS_ID_PATH], "responses": {
                                        "200": _json("Trade", "the trade"), **BAD, "404": _error("unknown trade"),
                                        **UNAVAILABLE}}},
    "/v1/incidents": {"get": {"summary": "the day's incidents, reviewed from the log file (mybot review)",
                              "parameters": [_query("day", {"type": "string", "pattern": DAY},
                                                    "YYYY-MM-DD (IST); default today")],
                              "responses": {"200": _json("Incidents", "the incidents"), **BAD,
                                            "409": _error("no log file to review (`param`: log.file)"),
                                            "503": _error("the log is unreadable, or another review is running")}}},
    "/v1/trades/{pos_id}/story": {"get": {
        "summary": "one trade's story from the log, with its row, orders and timeline from the database",
        "parameters": [POS_ID_PATH, _query("day", {"type": "string", "pattern": DAY}, "YYYY-MM-DD (IST)")],
        "responses": {"200": _json("Story", "the story"), **BAD, "404": _error("unknown trade"),
                      "409": _error("no log file to review (`param`: log.file)"),
                      "503": _error("the log is unreadable, or another review is running")}}},
    "/v1/trades/{pos_id}/exit": {"post": _mutation("exit one position", "Reason", {
        "202": _json("ExitAccepted", "exit requested"), "404": _error("unknown trade"),
        "409": _error("the trade cannot exit now (closed, or not run here)"), **UNAVAILABLE},
        body_required=False, path=[POS_ID_PATH])},
    "/v1/control/kill-switch": {"post": _mutation("engage or release the kill switch", "KillSwitchRequest", {
        "200": _json("Risk", "the risk state after"), **UNAVAILABLE})},
    "/v1/control/flatten": {"post": _mutation("exit everything, then stay halted", "Reason", {
        "202": _json("Flattened", "exits requested"), **UNAVAILABLE}, body_required=False)},
    "/v1/control/reconcile/ack": {"post": _mutation("acknowledge the reconciliation differences, release the hold",
                                                    "Reason", {"200": _json("Acknowledged", "acknowledged"),
                                                               **UNAVAILABLE}, body_required=False)},
    "/v1/risk": {"get": {"summary": "limits, today's P&L, consecutive losses, trading_enabled and why",
                         "responses": {"200": _json("Risk", "the risk state"), **UNAVAILABLE}}},
}


def app_routes(app: falcon.App) -> dict[str, set[str]]:
    """The routes Falcon really has: path template -> methods with a responder of ours."""
    found: dict[str, set[str]] = {}
    for route in inspect_routes(app):
        methods = {m.method.lower() for m in route.methods if not m.internal}
        if methods:
            found[route.path] = methods
    return found


def document(app: falcon.App, title: str, description: str) -> dict[str, Any]:
    """The app's contract: each route it has, with its operation from OPERATIONS (when there is one)."""
    paths: dict[str, Any] = {}
    for path, methods in sorted(app_routes(app).items()):
        known = OPERATIONS.get(path, {})
        operations = {method: known[method] for method in sorted(methods) if method in known}
        if operations:
            paths[path] = operations
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": "1", "description": description},
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": "the control token (control_token.txt / MYBOT_CONTROL_TOKEN)"}}},
    }


class OpenApiResource:
    """Built on first request (every route is added by then), then served from memory."""

    def __init__(self, app: falcon.App, title: str, description: str) -> None:
        self.app = app
        self.title = title
        self.description = description
        self._document: dict[str, Any] | None = None

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self._document is None:
            self._document = document(self.app, self.title, self.description)
        resp.media = self._document
