"""Reading logs for the review: rotations in order, gzip, garbled lines counted (never fatal), a merge by
time across processes, and the time window's parsing."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest

from review.sources import LogSourceError, Stream, canonical_ts, discover, merge_by_ts, read_stream
from review.window import make_window, ts_text
from telemetry.logs import get_logger
from tests.review_support import VirtualClock, ist, process_log

LINE = b'{"ts":"2026-11-20T04:30:00.000+00:00","level":"INFO","logger":"x","event":"E","message":"m"}\n'


def _touch(path: Path, data: bytes = LINE) -> str:
    path.write_bytes(data)
    return str(path)


def test_a_log_is_read_with_its_rotations_oldest_first(tmp_path: Path) -> None:
    base = _touch(tmp_path / "mybot.log")
    for name in ("mybot.log.1", "mybot.log.3.gz", "mybot.log.2", "mybot.log.10", "mybot.log.old", "mybot.logx.1"):
        _touch(tmp_path / name)
    [stream] = discover([base])
    assert [Path(f).name for f in stream.files] == ["mybot.log.10", "mybot.log.3.gz", "mybot.log.2", "mybot.log.1",
                                                    "mybot.log"]


def test_a_rotated_file_given_alone_is_read_alone_and_files_given_twice_once(tmp_path: Path) -> None:
    one = _touch(tmp_path / "mybot.log.1")
    _touch(tmp_path / "mybot.log")
    [stream] = discover([one])
    assert stream.files == [one]
    [stream] = discover([str(tmp_path / "mybot.log"), one, str(tmp_path / "mybot.log")])
    assert [Path(f).name for f in stream.files] == ["mybot.log.1", "mybot.log"]


def test_unreadable_paths_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(LogSourceError, match="nope.log: no such file"):
        discover([str(tmp_path / "nope.log")])
    with pytest.raises(LogSourceError, match="is a directory"):
        discover([str(tmp_path)])


def test_garbled_lines_are_counted_with_samples_and_never_stop_the_read(tmp_path: Path) -> None:
    path = tmp_path / "mybot.log"
    clock = VirtualClock(ist("10:00:00"))
    with process_log(path, clock):
        get_logger("mybot.test").event("FIRST", "one")
    with open(path, "ab") as handle:
        handle.write(b"Connecting to wss://api-feed.dhan.co\n")  # the SDK's print
        handle.write(b"\n   \n")  # blank lines are nothing
        handle.write(b"[1, 2]\n")  # JSON, not a log line
        handle.write(b'{"level":"INFO","event":"NO_TS"}\n')
        handle.write(b'{"ts":"yesterday","event":"BAD_TS"}\n')
        handle.write(b'{"ts":"2026-11-20T04:31:00.000+00:00","event":"CUT_SH\n')
        handle.write(b"\xff\xfe binary \x00 junk\n")
        handle.write(b'{"ts":"2026-11-20T04:32:00.000+00:00","level":"INFO","logger":"x","event":"CUT","mess'
                     b'{"ts":"2026-11-20T04:33:00.000+00:00","level":"INFO","logger":"x","event":"GLUED"}\n')
    with process_log(path, clock.advance(300)):
        get_logger("mybot.test").event("LAST", "two")
    stream = Stream("mybot.log", [str(path)])
    records = list(read_stream(stream, 0))
    assert [r[2]["event"] for r in records] == ["FIRST", "GLUED", "LAST"]
    [stats] = stream.stats
    assert (stats.lines, stats.garbled, stats.salvaged) == (3, 7, 1)
    assert [s["reason"] for s in stats.samples] == ["not JSON", "not a JSON object", "no ts"]
    assert stats.samples[0] == {"line": 2, "reason": "not JSON", "text": "Connecting to wss://api-feed.dhan.co"}


def test_a_cut_gzip_file_keeps_the_lines_before_the_cut(tmp_path: Path) -> None:
    lines = b"".join(LINE.replace(b"04:30:00.000", f"04:30:{i:02d}.000".encode()) for i in range(50))
    packed = gzip.compress(lines)
    path = tmp_path / "mybot.log.2.gz"
    path.write_bytes(packed[: len(packed) // 2])
    stream = Stream("mybot.log", [str(path)])
    records = list(read_stream(stream, 0))
    [stats] = stream.stats
    assert 0 < len(records) < 50 and stats.garbled == 1
    assert stats.samples[-1]["reason"] == "unreadable rest of file"


def test_times_are_kept_as_the_loggers_text_and_other_forms_converted() -> None:
    assert canonical_ts("2026-11-20T04:30:00.123+00:00") == "2026-11-20T04:30:00.123+00:00"
    assert canonical_ts("2026-11-20T10:00:00.123+05:30") == "2026-11-20T04:30:00.123+00:00"
    assert canonical_ts("2026-11-20T04:30:00") == "2026-11-20T04:30:00.000+00:00"
    assert canonical_ts("yesterday") is None and canonical_ts(17) is None
    assert ts_text(ist("10:00:00.5")) == "2026-11-20T04:30:00.500+00:00"


def test_the_window_filters_while_reading(tmp_path: Path) -> None:
    data = b"".join(LINE.replace(b"04:30:00.000", f"04:{m:02d}:00.000".encode()) for m in range(30, 40))
    stream = Stream("x", [_touch(tmp_path / "x.log", data)])
    window = make_window("2026-11-20", "10:02", "10:05")
    kept = [r[0] for r in read_stream(stream, 0, window.since_text, window.until_text)]
    assert kept == ["2026-11-20T04:32:00.000+00:00", "2026-11-20T04:33:00.000+00:00",
                    "2026-11-20T04:34:00.000+00:00"]
    assert stream.stats[0].outside_window == 7


def test_the_merge_is_the_sorted_union_of_its_streams() -> None:
    rng = random.Random(7)
    streams = []
    for index in range(5):
        times = sorted(rng.choice([rng.randrange(0, 50), rng.randrange(0, 2000)]) for _ in range(rng.randrange(0, 300)))
        streams.append([(f"{t:06d}", index, {"n": n}) for n, t in enumerate(times)])
    merged = list(merge_by_ts([iter(s) for s in streams]))
    assert merged == sorted((r for s in streams for r in s), key=lambda r: (r[0], r[1]))
    assert list(merge_by_ts([])) == [] and list(merge_by_ts([iter([]), iter([])])) == []


def test_the_window_refuses_what_it_cannot_read() -> None:
    assert make_window().since is None
    assert make_window(since="2026-11-20T10:00:00").since == ist("10:00:00")  # naive = IST
    assert make_window(since="2026-11-20T04:30:00+00:00").since == ist("10:00:00")
    assert make_window("2026-11-20", until="24:00").until == ist("00:00:00") + 86_400
    for args, message in [
        (("2026-13-01",), "--day: '2026-13-01' is not a date"),
        ((None, "10:00"), "--since: '10:00' is a time of day; give --day too"),
        (("2026-11-20", "25:00"), "--since: '25:00' is not a time of day"),
        (("2026-11-20", None, "soon"), "--until: 'soon' is neither HH:MM nor an ISO-8601 time"),
        (("2026-11-20", "11:00", "10:00"), "the window is empty"),
        (("2026-11-20", "2026-11-21T10:00"), "the window is empty"),
    ]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            make_window(*args)
