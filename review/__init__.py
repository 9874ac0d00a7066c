"""Log-driven incident review: read the daemon's JSON-lines logs back into incidents and trade stories.

The library the CLI (`mybot review`) and the control API use. Every function streams: files are read
line by line (several processes merged by `ts`, rotations and .gz included), and only what the review
keeps stays in memory (open incidents, the lines of trades, closed candles of traded symbols).

    review(paths, day=None, since=None, until=None, pos_id=None) -> Review     everything below at once
    summarize(paths, day=None, since=None, until=None) -> Summary              the day at a glance
    incidents(paths, day=None, since=None, until=None, pos_id=None) -> list[Incident]
    trade_story(paths, pos_id, day=None, since=None, until=None) -> TradeStory | None

`paths` are log files ("-" = stdin). Each model object has `.as_json()` (the `mybot.review/1` schema,
review/README.md). Errors: LogSourceError for a path that cannot be read, ValueError for a bad filter
(both name the culprit; the CLI exits 2 on them, an HTTP endpoint answers 400).
Rendering: `render_text(review)`, `render_html(review)`.
"""

from __future__ import annotations

from collections.abc import Sequence

from review.analysis import INCIDENT_KINDS, Reviewer
from review.model import SCHEMA_ID, Incident, Process, Review, Step, Summary, TradeStory
from review.report_html import render_html
from review.report_text import render_text
from review.schema import SCHEMA, validate
from review.sources import LogSourceError, discover, merge_by_ts, read_stream
from review.window import Window, make_window

__all__ = ["INCIDENT_KINDS", "SCHEMA", "SCHEMA_ID", "Incident", "LogSourceError", "Process", "Review", "Step",
           "Summary", "TradeStory", "Window", "incidents", "make_window", "render_html", "render_text", "review",
           "summarize", "trade_story", "validate"]


def review(paths: Sequence[str], day: str | None = None, since: str | None = None, until: str | None = None,
           pos_id: str | None = None) -> Review:
    """Read the logs once and build the whole review (see the module docstring for the filters)."""
    window = make_window(day, since, until)
    if not paths:
        raise LogSourceError("no log given")
    streams = discover(paths)
    reviewer = Reviewer([stream.name for stream in streams])
    sources = [read_stream(stream, index, window.since_text, window.until_text)
               for index, stream in enumerate(streams)]
    reviewer.consume(sources[0] if len(sources) == 1 else merge_by_ts(sources))
    files = [stats.as_json() for stream in streams for stats in stream.stats]
    return reviewer.finish(files, window, pos_id or None)


def summarize(paths: Sequence[str], day: str | None = None, since: str | None = None,
              until: str | None = None) -> Summary:
    return review(paths, day, since, until).summary


def incidents(paths: Sequence[str], day: str | None = None, since: str | None = None, until: str | None = None,
              pos_id: str | None = None) -> list[Incident]:
    return review(paths, day, since, until, pos_id).incidents


def trade_story(paths: Sequence[str], pos_id: str, day: str | None = None, since: str | None = None,
                until: str | None = None) -> TradeStory | None:
    trades = review(paths, day, since, until, pos_id).trades
    return trades[0] if trades else None
