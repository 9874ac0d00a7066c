"""The incident review over HTTP: the live process answers from its own log file (`log.file`) and database.

    GET /v1/incidents?day=YYYY-MM-DD       the day's incidents (default: today, IST), `mybot.review/1` objects
    GET /v1/trades/{pos_id}/story?day=     the trade's causal story from the log, with its row and journal
                                           from the database (the journal's events under their log names)

Both read the log the way `mybot review` does (the file and its rotations, streamed). Without a log file
(`log.file` empty: logs go to stdout only) they answer 409 naming `log.file`. One review runs at a time
(a review of a long day is CPU work the trading actors share the interpreter with): a second request
waits up to `WAIT_SECONDS`, then gets 503 with Retry-After.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import falcon

import review
from actors.trading.api import POS_ID_PATTERN, TradeNotFound, TradingApi
from core.risk import ist_day
from httpapi.common import bad_param, str_param
from storage.errors import StorageError

__all__ = ["add_review_routes"]

WAIT_SECONDS = 10.0
DAY = r"\d{4}-\d{2}-\d{2}"


def _pos_id(value: str) -> str:
    if not re.fullmatch(POS_ID_PATTERN, value):
        raise bad_param("pos_id", f"{value[:80]!r} is not valid (letters, digits, _ . : -, at most 64)")
    return value


class NoLogFile(falcon.HTTPConflict):
    def __init__(self) -> None:
        super().__init__(title="no log file",
                         description="this process writes its log to stdout only: set log.file (MYBOT_LOG_FILE) "
                                     "to have the review answered from it")
        self.param = "log.file"


class _Reviews:
    """The log file, the day's date, and the one-at-a-time gate (shared by both resources)."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.gate = threading.Semaphore(1)

    def paths(self) -> list[str]:
        path = self.runtime.settings.log.file
        if not path:
            raise NoLogFile()
        return [path]

    def today(self) -> str:
        return ist_day(self.runtime.clock.now())

    def run(self, day: str | None, pos_id: str | None = None) -> review.Review:
        paths = self.paths()
        if not self.gate.acquire(timeout=WAIT_SECONDS):
            raise falcon.HTTPServiceUnavailable(title="review busy", description="another review is running",
                                                retry_after=2)
        try:
            return review.review(paths, day=day, pos_id=pos_id)
        except review.LogSourceError as exc:
            raise falcon.HTTPServiceUnavailable(title="log file unreadable", description=str(exc),
                                                retry_after=5) from exc
        except ValueError as exc:
            raise bad_param("day", str(exc)) from exc
        finally:
            self.gate.release()


class IncidentsResource:
    def __init__(self, reviews: _Reviews) -> None:
        self.reviews = reviews

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        day = str_param(req, "day", required=False, pattern=DAY, max_len=10) or self.reviews.today()
        result = self.reviews.run(day)
        incidents = [incident.as_json() for incident in result.incidents]
        inputs = result.as_json()["inputs"]
        resp.media = {"day": day, "log_file": self.reviews.paths()[0], "count": len(incidents),
                      "by_kind": result.summary.incidents, "incidents": incidents,
                      "inputs": {"lines": inputs["lines"], "garbled": inputs["garbled"]}}


class StoryResource:
    def __init__(self, reviews: _Reviews, trading: TradingApi | None) -> None:
        self.reviews = reviews
        self.trading = trading

    def on_get(self, req: falcon.Request, resp: falcon.Response, pos_id: str) -> None:
        pos_id = _pos_id(pos_id)
        day = str_param(req, "day", required=False, pattern=DAY, max_len=10)
        result = self.reviews.run(day, pos_id)
        story = result.trades[0] if result.trades else None
        stored: dict[str, Any] | None = None
        database_error = None
        if self.trading is not None:
            try:
                stored = self.trading.trade(pos_id)
            except TradeNotFound:
                stored = None
            except StorageError as exc:  # the log still tells the story
                database_error = str(exc)
        if story is None and stored is None and database_error is None:
            raise falcon.HTTPNotFound(title="unknown trade",
                                      description=f"no trade {pos_id} in the log or the database")
        resp.media = {"pos_id": pos_id, "log_file": self.reviews.paths()[0], "day": day,
                      "story": story.as_json() if story is not None else None,
                      "incidents": [i.as_json() for i in result.incidents],
                      "trade": stored["trade"] if stored else None,
                      "orders": stored["orders"] if stored else [],
                      "timeline": stored["timeline"] if stored else [], "database_error": database_error}


def add_review_routes(app: falcon.App, runtime: Any, trading: TradingApi | None) -> None:
    reviews = _Reviews(runtime)
    app.add_route("/v1/incidents", IncidentsResource(reviews))
    app.add_route("/v1/trades/{pos_id}/story", StoryResource(reviews, trading))
