"""The JSON form of a review (`mybot review --json`, the control endpoints): schema `mybot.review/1`.

A JSON Schema (draft 2020-12 subset: type, const, properties, required, additionalProperties, items) and a
small validator for it, so tests and clients check documents without another dependency. Times are IST
ISO-8601 strings with milliseconds; durations and latencies are seconds. A field is added to the schema
only with a new optional property; renaming or removing one makes `mybot.review/2`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SCHEMA", "validate"]

_TIME = {"type": ["string", "null"]}
_NUM = {"type": ["number", "null"]}
_INT = {"type": ["integer", "null"]}
_STR = {"type": "string"}
_STRS = {"type": "array", "items": _STR}
_ANY_OBJ = {"type": "object"}


def _obj(required: dict[str, Any], optional: dict[str, Any] | None = None, closed: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": {**required, **(optional or {})},
                              "required": list(required)}
    if closed:
        schema["additionalProperties"] = False
    return schema


_FILE = _obj({"path": _STR, "lines": {"type": "integer"}, "garbled": {"type": "integer"},
              "salvaged": {"type": "integer"}, "outside_window": {"type": "integer"},
              "samples": {"type": "array", "items": _obj({"line": {"type": "integer"}, "reason": _STR,
                                                           "text": _STR})}})
_PROCESS = _obj({"id": _STR, "stream": _STR, "run": {"type": "integer"}, "pid": _INT, "role": _STR,
                 "first": _TIME, "last": _TIME, "started": _TIME, "stopped": _TIME, "exit_code": _INT,
                 "end": _STR})
_INCIDENT = _obj({"id": _STR, "kind": _STR, "start": _TIME, "end": _TIME, "duration_seconds": _NUM,
                  "ongoing": {"type": "boolean"}, "ended_by": _STR, "process": _STR, "actor": _STR,
                  "symbol": _STR, "pos_ids": _STRS, "detail": _STR, "count": {"type": "integer"},
                  "details": _ANY_OBJ})
_STEP = _obj({"at": _STR, "event": _STR, "source": _STR, "text": _STR, "process": _STR,
              "since_previous_seconds": _NUM, "fields": _ANY_OBJ})
_ORDER = _obj({"order_id": _STR, "leg": _STR, "correlation_id": _STR, "qty": _INT, "price": _NUM,
               "placed_at": _TIME, "filled_qty": {"type": "integer"}, "avg_price": _NUM, "status": _STR,
               "fills": {"type": "array", "items": _obj({"at": _STR, "filled_qty": {"type": "integer"},
                                                          "avg_price": {"type": "number"}})}})
_LATENCIES = _obj({name: _NUM for name in ("candle_close_to_signal", "signal_to_placed", "placed_to_filled",
                                           "exit_requested_to_filled", "signal_to_closed")})
_TRADE = _obj({"pos_id": _STR, "symbol": _STR, "underlying": _STR, "instrument": _STR, "side": _STR,
               "qty": _INT, "state": _STR, "opened_at": _TIME, "closed_at": _TIME, "entry_price": _NUM,
               "exit_price": _NUM, "exit_reason": _STR, "realized_pnl": _NUM, "charges": _NUM, "net_pnl": _NUM,
               "signal": {"type": ["object", "null"]}, "verdict": {"type": ["object", "null"]},
               "orders": {"type": "array", "items": _ORDER}, "latencies_seconds": _LATENCIES,
               "complete": {"type": "boolean"}, "missing": _STRS, "processes": _STRS, "incidents": _STRS,
               "dropped_steps": {"type": "integer"}, "steps": {"type": "array", "items": _STEP}})
_COUNTS = {"type": "object", "additionalProperties": {"type": "integer"}}
_SUMMARY = _obj({
    "first": _TIME, "last": _TIME,
    "trades": _obj({name: {"type": "integer"} for name in ("signals", "closed", "open", "denied", "rejected",
                                                            "cancelled")}),
    "gross_pnl": {"type": "number"}, "charges": {"type": "number"}, "charges_logged": {"type": "boolean"},
    "net_pnl": {"type": "number"}, "wins": {"type": "integer"}, "losses": {"type": "integer"},
    "win_rate": _NUM, "max_drawdown": {"type": "number"}, "entries_denied": _COUNTS,
    "entries_skipped": {"type": "integer"}, "incidents": _COUNTS})

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "mybot.review/1",
    **_obj({
        "schema": {"const": "mybot.review/1"},
        "window": _obj({"day": {"type": ["string", "null"]}, "since": _TIME, "until": _TIME}),
        "inputs": _obj({"lines": {"type": "integer"}, "garbled": {"type": "integer"},
                        "salvaged": {"type": "integer"}, "outside_window": {"type": "integer"},
                        "files": {"type": "array", "items": _FILE}}),
        "processes": {"type": "array", "items": _PROCESS},
        "summary": _SUMMARY,
        "incidents": {"type": "array", "items": _INCIDENT},
        "trades": {"type": "array", "items": _TRADE},
        "equity": {"type": "array", "items": _obj({"at": _STR, "pos_id": _STR, "pnl": {"type": "number"},
                                                   "equity": {"type": "number"}})},
        "prices": {"type": "array", "items": _obj({
            "symbol": _STR, "source": {"type": "string"},
            "points": {"type": "array", "items": {"type": "array"}},
            "marks": {"type": "array", "items": _obj({"at": _STR, "price": {"type": "number"}, "kind": _STR,
                                                      "pos_id": _STR})}})},
    }),
}

_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": (int, float), "boolean": bool,
                          "null": type(None), "object": dict, "array": list}


def _is(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[name])


def validate(document: Any, schema: dict[str, Any] | None = None, path: str = "$") -> list[str]:
    """Every way `document` departs from the schema (empty = valid)."""
    schema = SCHEMA if schema is None else schema
    problems: list[str] = []
    if "const" in schema and document != schema["const"]:
        problems.append(f"{path}: expected {schema['const']!r}, got {document!r}")
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        if not any(_is(document, name) for name in names):
            return problems + [f"{path}: expected {'/'.join(names)}, got {type(document).__name__}"]
    if isinstance(document, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in document:
                problems.append(f"{path}: missing {name!r}")
        extra = schema.get("additionalProperties", True)
        for name, value in document.items():
            if name in properties:
                problems += validate(value, properties[name], f"{path}.{name}")
            elif extra is False:
                problems.append(f"{path}: unexpected {name!r}")
            elif isinstance(extra, dict):
                problems += validate(value, extra, f"{path}.{name}")
    if isinstance(document, list) and "items" in schema:
        for index, item in enumerate(document):
            problems += validate(item, schema["items"], f"{path}[{index}]")
    return problems
