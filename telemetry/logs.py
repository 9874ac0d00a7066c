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
import re
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class _Redaction:
    """The registered secrets, compiled; replaced whole on every `redact` (readers never see it change)."""

    secrets: tuple[str, ...] = ()
    line_forms: tuple[str, ...] = ()  # how a secret can appear inside a JSON string literal of the line
    pattern: re.Pattern[str] | None = None  # matches a secret in a decoded string value


_redaction = _Redaction()
_redact_lock = threading.Lock()
# A JSON string literal in an encoded line (outside string literals a JSON line has no quote).
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
WHOLE_WORD_BELOW = 8


def redact(*values: str) -> None:
    """Register secret values that must never reach a log line, whatever logs them.

    Every non-empty secret is redacted, in messages, fields and tracebacks, also when it holds `"` or `\\`
    (the line is JSON: the secret appears escaped there) and when a value embeds it in JSON text or a
    Python repr (escaped twice). A secret of 8 characters or more is replaced wherever it appears; a
    shorter one only as a whole word (its edges not touching another letter, digit or `_`), so a
    2-character password cannot mangle every line. Redaction works on the decoded string values of the
    line, so a redacted line is still valid JSON. Numbers are not matched: log secrets as strings."""
    global _redaction
    with _redact_lock:
        known = list(_redaction.secrets)
        for value in values:
            if value and value not in known:
                known.append(value)
        if len(known) != len(_redaction.secrets):
            _redaction = _compile(tuple(known))


def _escaped(text: str) -> str:
    return orjson.dumps(text).decode()[1:-1]


def _compile(secrets: tuple[str, ...]) -> _Redaction:
    line_forms: dict[str, None] = {}
    alternatives: dict[str, None] = {}
    for secret in sorted(secrets, key=len, reverse=True):
        # As a value holds it: itself, inside JSON text, inside a Python repr (an exception's {value!r}).
        forms = dict.fromkeys((secret, _escaped(secret), repr(secret)[1:-1]))
        line_forms.update(dict.fromkeys(_escaped(form) for form in forms))
        for form in forms:
            alternatives[_matcher(form, whole_word=len(secret) < WHOLE_WORD_BELOW)] = None
    return _Redaction(secrets, tuple(line_forms), re.compile("|".join(alternatives)))


def _matcher(form: str, *, whole_word: bool) -> str:
    body = re.escape(form)
    if not whole_word:
        return body
    # A word edge of the secret must not touch another word character ("pw" masks "pw" and "=pw&", not "pwd").
    lead = r"(?<!\w)" if re.match(r"\w", form[0]) else ""
    trail = r"(?!\w)" if re.match(r"\w", form[-1]) else ""
    return f"{lead}{body}{trail}"


def _scrub(text: str) -> str:
    redaction = _redaction
    if redaction.pattern is None or not any(form in text for form in redaction.line_forms):
        return text
    pattern = redaction.pattern

    def literal(match: re.Match[str]) -> str:
        encoded = match.group(0)
        if not any(form in encoded for form in redaction.line_forms):
            return encoded
        value = orjson.loads(encoded)
        scrubbed = pattern.sub("***", value)
        return encoded if scrubbed == value else orjson.dumps(scrubbed).decode()

    return _JSON_STRING.sub(literal, text)


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
        return _scrub(line)


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
