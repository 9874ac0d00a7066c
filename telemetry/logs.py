"""Structured logs for incident review: one JSON object per line.

Every line has ts, level, logger, event, message, plus context (actor, symbol, pos_id, order_id, ...).
`event` carries the seed's vocabulary (ENTRY_SIGNAL, ORDER_FILLED, ACTOR_CRASHED, ...) so an operator
can grep one word and read the story. Use `get_logger(name).event("ORDER_PLACED", "...", pos_id=...)`.

Every line also carries the process that wrote it: `pid` and, once the runtime knows it, `role` (see
`set_process_context`), so the review tells processes apart in one merged stream. An incident's lines
(its opening line and the one that ends it) carry the same `incident_id` (see `incident_id`).
"""

from __future__ import annotations

import hashlib
import logging
import logging.handlers
import os
import sys
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

__all__ = [
    "EventLogger",
    "JsonFormatter",
    "configure_logging",
    "get_logger",
    "incident_id",
    "process_context",
    "record_fields",
    "redact",
    "set_process_context",
]

_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_secrets: list[str] = []
_process: dict[str, Any] = {}  # stamped on every line: pid, role (a field the line sets itself wins)


def set_process_context(**fields: Any) -> None:
    """What every line says about the process that wrote it (`pid`, `role`); None drops a field.

    `configure_logging` sets the pid; the runtime adds its role once it knows it."""
    global _process
    _process = {**_process, **fields}
    _process = {k: v for k, v in _process.items() if v is not None}


def process_context() -> dict[str, Any]:
    return dict(_process)


def incident_id(kind: str, subject: str, started_at: float) -> str:
    """A stable id for one incident: the same (kind, subject, start) gives the same id in any process, so
    the line that ends an incident can name the one a previous process opened from what it persisted."""
    basis = f"{kind}|{subject}|{started_at:.3f}"
    return f"{kind.lower().replace('_', '-')}-{hashlib.sha1(basis.encode()).hexdigest()[:10]}"


def redact(*values: str) -> None:
    """Register secret values that must never reach a log line, whatever logs them."""
    for value in values:
        if value and len(value) >= 4 and value not in _secrets:
            _secrets.append(value)


def _scrub(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class JsonFormatter(logging.Formatter):
    """`time_source`: a virtual clock (a replay's) that stamps `ts`; the wall-clock time then goes to
    `wall_ts`, so a review of the log reads the market's time and the lines still say when they were written."""

    def __init__(self, time_source: Callable[[], float] | None = None) -> None:
        super().__init__()
        self.time_source = time_source

    def format(self, record: logging.LogRecord) -> str:
        stamp = record.created if self.time_source is None else self.time_source()
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(stamp, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": getattr(record, "event", None) or _default_event(record),
            "message": record.getMessage(),
        }
        if _process:
            entry.update(_process)
        if self.time_source is not None:
            entry["wall_ts"] = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        entry.update(record_fields(record))
        if record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        line = orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        return _scrub(line) if _secrets else line


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The context fields a line carries (what `event(...)` was given besides the event and message)."""
    return {key: value for key, value in record.__dict__.items()
            if key not in _RESERVED and key != "event" and not key.startswith("_")}


def _default_event(record: logging.LogRecord) -> str:
    if record.name.startswith("pykka"):
        return "PYKKA"
    return "LOG"


class EventLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger whose lines carry an `event` name and context fields."""

    def __init__(self, logger: logging.Logger, context: dict[str, Any] | None = None) -> None:
        super().__init__(logger, context or {})

    def bind(self, **context: Any) -> EventLogger:
        return EventLogger(self.logger, {**self.extra, **context})  # type: ignore[dict-item]

    def event(self, event: str, message: str = "", *, level: int = logging.INFO,
              exc_info: Any = None, **context: Any) -> None:
        if self.logger.isEnabledFor(level):
            self.logger.log(level, message or event, exc_info=exc_info,
                            extra={**self.extra, **context, "event": event})  # type: ignore[dict-item]

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**self.extra, **kwargs.get("extra", {})}  # type: ignore[dict-item]
        return msg, kwargs


def get_logger(name: str, **context: Any) -> EventLogger:
    return EventLogger(logging.getLogger(name), context)


def configure_logging(level: str = "INFO", file: str = "", max_bytes: int = 50_000_000,
                      backups: int = 5, stream: TextIO | None = None, role: str | None = None,
                      stdout: bool = True) -> None:
    """JSON lines to stdout (supervisord captures it), optionally to a rotating file; `stdout=False` with a
    file writes the file only (never nothing).

    Every line carries this process's pid (and `role` when given, or once the runtime sets it).

    Pykka's logger has only a NullHandler: it propagates to root here, so actor crashes are visible.
    """
    set_process_context(pid=os.getpid(), role=role)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    formatter = JsonFormatter()
    if stdout or not file:
        out = logging.StreamHandler(stream or sys.stdout)
        out.setFormatter(formatter)
        root.addHandler(out)
    if file:
        rotating = logging.handlers.RotatingFileHandler(file, maxBytes=max_bytes, backupCount=backups)
        rotating.setFormatter(formatter)
        root.addHandler(rotating)
    root.setLevel(level)
    logging.getLogger("pykka").setLevel(level)
    logging.getLogger("pykka").propagate = True
    for noisy in ("urllib3", "websockets", "waitress.queue"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # The pool warns on every reconnect attempt during an outage; our STORAGE_* events tell it once.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
