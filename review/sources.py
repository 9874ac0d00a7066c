"""Reading the daemon's JSON-lines logs as one stream ordered by `ts`, never a whole file at once.

- A *stream* is one log and its rotations (`mybot.log.3.gz`, `mybot.log.2`, `mybot.log.1`, `mybot.log`:
  oldest first), or stdin. Rotations of one log do not overlap in time, so a stream is read file after
  file; several streams (several processes) are merged by `ts` with a k-way merge that copies runs of
  lines from one stream while it stays the earliest (logs of different processes interleave in blocks).
- Given the current log (`x.log`), its existing rotations are read too; given a rotated file, only it.
- A line that is not a JSON object with a string `ts` is *garbled*: counted per file with a few
  samples, never fatal. A line truncated by a `kill -9` with the next process's first line glued on is
  garbled too, and the glued line is salvaged.
- `ts` is kept as the text the logger wrote (UTC ISO, milliseconds): that text sorts as time, so the
  hot loop compares strings and converts to epoch seconds only for the lines the review keeps.
"""

from __future__ import annotations

import gzip
import os
import re
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from heapq import heapify, heappop, heapreplace
from typing import Any

import orjson

__all__ = ["FileStats", "LogSourceError", "Record", "Stream", "canonical_ts", "discover", "merge_by_ts",
           "read_stream"]

STDIN = "-"
MAX_SAMPLES = 3
SAMPLE_CHARS = 160
_ROTATED = re.compile(r"^(?P<base>.+?)\.(?P<n>\d+)(?P<gz>\.gz)?$")
_GLUED = b'{"ts":'

# (ts, stream index, the parsed line)
Record = tuple[str, int, dict[str, Any]]


class LogSourceError(Exception):
    """A path that cannot be read (missing, a directory, no permission): bad input, exit 2 in the CLI."""


@dataclass
class FileStats:
    path: str
    lines: int = 0
    garbled: int = 0
    salvaged: int = 0  # garbled lines whose tail was still a whole log line (read as such)
    outside_window: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)

    def note_garbled(self, line_no: int, raw: bytes, why: str) -> None:
        self.garbled += 1
        if len(self.samples) < MAX_SAMPLES:
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            if len(text) > SAMPLE_CHARS:
                text = text[:SAMPLE_CHARS] + "…"
            self.samples.append({"line": line_no, "reason": why, "text": text})

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "lines": self.lines, "garbled": self.garbled, "salvaged": self.salvaged,
                "outside_window": self.outside_window, "samples": list(self.samples)}


@dataclass
class Stream:
    """One process's log: its files oldest first (or stdin)."""

    name: str  # the current log's path (the rotation base), or "-"
    files: list[str]
    stats: list[FileStats] = field(default_factory=list)


def _rotation(path: str) -> tuple[str, int]:
    """'x.log.2.gz' -> ('x.log', 2); 'x.log' -> ('x.log', 0); 'x.log.gz' -> ('x.log', 0)."""
    match = _ROTATED.match(path)
    if match:
        return match["base"], int(match["n"])
    if path.endswith(".gz"):
        return path[:-3], 0
    return path, 0


def _check_readable(path: str) -> None:
    if not os.path.exists(path):
        raise LogSourceError(f"{path}: no such file")
    if os.path.isdir(path):
        raise LogSourceError(f"{path}: is a directory")
    if not os.access(path, os.R_OK):
        raise LogSourceError(f"{path}: permission denied")


def _siblings(base: str) -> list[str]:
    """Existing rotations of `base` (x.log.1, x.log.2.gz, ...)."""
    folder = os.path.dirname(base) or "."
    stem = os.path.basename(base)
    found = []
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    for name in names:
        if name.startswith(stem + "."):
            full = os.path.join(os.path.dirname(base), name)
            match = _ROTATED.match(full)
            if match and match["base"] == base:
                found.append(full)
    return found


def discover(paths: Iterable[str]) -> list[Stream]:
    """Group paths into streams (a log and its rotations, oldest first). Raises LogSourceError."""
    groups: dict[str, set[str]] = {}
    order: list[str] = []
    for path in paths:
        if path == STDIN:
            if STDIN not in groups:
                groups[STDIN] = {STDIN}
                order.append(STDIN)
            continue
        _check_readable(path)
        base, number = _rotation(path)
        if base not in groups:
            groups[base] = set()
            order.append(base)
        groups[base].add(path)
        if number == 0 and not path.endswith(".gz"):
            groups[base].update(_siblings(base))
    streams = []
    for base in order:
        files = sorted(groups[base], key=lambda p: (-_rotation(p)[1], p.endswith(".gz")))
        streams.append(Stream(base, files))
    return streams


def canonical_ts(value: Any) -> str | None:
    """The logger's own format ('2026-11-20T04:00:00.123+00:00') as is; any other ISO time converted to
    it (a naive time is UTC, as the logger writes); None when it is not a time."""
    if type(value) is str and len(value) == 29 and value.endswith("+00:00"):
        return value
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).isoformat(timespec="milliseconds")


def _open(path: str) -> tuple[Iterable[bytes], Callable[[], None]]:
    """The file's lines and how to close it (stdin is not closed)."""
    if path == STDIN:
        stdin = sys.stdin.buffer
        peek = getattr(stdin, "peek", None)
        if peek is not None and peek(2)[:2] == b"\x1f\x8b":  # `cat mybot.log.2.gz | mybot review -`
            return _gzip_lines(gzip.GzipFile(fileobj=stdin, mode="rb")), lambda: None
        return stdin, lambda: None
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        packed = gzip.GzipFile(path, "rb")
        return _gzip_lines(packed), packed.close
    handle = open(path, "rb")
    return handle, handle.close


def _gzip_lines(packed: gzip.GzipFile) -> Iterator[bytes]:
    """Lines of a .gz split in C from 64 kB chunks (GzipFile splits them in Python, one call a line:
    3x slower). A file cut short raises at the cut, after every whole line before it."""
    rest = b""
    while True:
        chunk = packed.read1(1 << 16)
        if not chunk:
            break
        lines = (rest + chunk).split(b"\n") if rest else chunk.split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


def read_stream(stream: Stream, index: int, since: str = "", until: str = "") -> Iterator[Record]:
    """Every good line of the stream's files in file order, as (ts, index, line), within [since, until)."""
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    low, high = since, until or "\uffff"
    for path in stream.files:
        stats = FileStats(path)
        stream.stats.append(stats)
        try:
            handle, close = _open(path)
        except OSError as exc:
            stats.note_garbled(0, str(exc).encode(), "unreadable file")
            continue
        line_no = good = outside = 0
        try:
            for line_no, raw in enumerate(handle, 1):
                try:
                    entry = loads(raw)
                except decode_error:
                    if not raw.strip():
                        continue
                    entry = _salvage(raw, stats, line_no)
                    if entry is None:
                        continue
                if type(entry) is not dict:
                    stats.note_garbled(line_no, raw, "not a JSON object")
                    continue
                ts = entry.get("ts")
                if type(ts) is not str or len(ts) != 29 or ts[23:] != "+00:00":
                    ts = canonical_ts(ts)
                    if ts is None:
                        stats.note_garbled(line_no, raw, "no ts")
                        continue
                good += 1
                if ts < low or ts >= high:
                    outside += 1
                    continue
                yield ts, index, entry
        except (EOFError, OSError, zlib.error) as exc:  # a truncated or corrupt .gz: keep what was read
            stats.note_garbled(line_no + 1, str(exc).encode(), "unreadable rest of file")
        finally:
            stats.lines, stats.outside_window = good, outside
            close()


def _salvage(raw: bytes, stats: FileStats, line_no: int) -> dict[str, Any] | None:
    """A line cut short (kill -9) followed by the next process's first line: count it, keep the tail."""
    at = raw.rfind(_GLUED)
    if at > 0:
        entry: Any
        try:
            entry = orjson.loads(raw[at:])
        except orjson.JSONDecodeError:
            entry = None
        if type(entry) is dict:
            stats.note_garbled(line_no, raw[:at], "truncated line (the rest of the line was read)")
            stats.salvaged += 1
            return entry
    stats.note_garbled(line_no, raw, "not JSON" if not raw.lstrip().startswith(b"{") else "truncated JSON")
    return None


def merge_by_ts(sources: list[Iterator[Record]]) -> Iterator[Record]:
    """A k-way merge by (ts, stream index) that copies a run of lines while its stream stays earliest."""
    heap: list[tuple[str, int, Record, Iterator[Record]]] = []
    for order, source in enumerate(sources):
        first = next(source, None)
        if first is not None:
            heap.append((first[0], order, first, source))
    heapify(heap)
    while heap:
        if len(heap) == 1:
            _, _, record, source = heap[0]
            yield record
            yield from source
            return
        _, order, record, source = heap[0]
        if len(heap) == 2:
            bound_ts, bound_order = heap[1][0], heap[1][1]
        else:
            other = heap[1] if heap[1][:2] < heap[2][:2] else heap[2]
            bound_ts, bound_order = other[0], other[1]
        yield record
        for record in source:
            ts = record[0]
            if ts < bound_ts or (ts == bound_ts and order < bound_order):
                yield record
                continue
            heapreplace(heap, (ts, order, record, source))
            break
        else:
            heappop(heap)
