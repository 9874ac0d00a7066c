"""`mybot review` as an operator runs it: real processes, exit codes, the three output forms."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

import review
from tests.review_support import DAY, TRADE_RESTARTED, build_day

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    built = build_day(tmp_path_factory.mktemp("day"))
    return [str(built["mds"]), str(built["trader"])]


def _mybot(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "daemon.cli", "review", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_the_text_review_of_a_day(logs: list[str]) -> None:
    run = _mybot(*logs, "--day", DAY)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"mybot review: day {DAY} (IST); 866 lines from 9 file(s), 3 garbled")
    assert "INCIDENTS (15)" in run.stdout and f"  {TRADE_RESTARTED}  SEC_49081" in run.stdout


def test_json_is_the_documented_schema_and_the_same_as_the_library(logs: list[str]) -> None:
    run = _mybot(*logs, "--day", DAY, "--since", "09:00", "--until", "12:00", "--json")
    assert run.returncode == 0, run.stderr
    document = orjson.loads(run.stdout)
    assert review.validate(document) == []
    assert document == orjson.loads(orjson.dumps(review.review(logs, DAY, "09:00", "12:00").as_json()))


def test_pos_id_prints_one_story(logs: list[str]) -> None:
    run = _mybot(*logs, "--day", DAY, "--pos-id", TRADE_RESTARTED, "--json")
    document = orjson.loads(run.stdout)
    assert [t["pos_id"] for t in document["trades"]] == [TRADE_RESTARTED]
    assert [i["kind"] for i in document["incidents"]] == ["PROCESS_RESTART"]


def test_an_unknown_pos_id_is_said_and_is_not_an_error(logs: list[str]) -> None:
    run = _mybot(*logs, "--day", DAY, "--pos-id", "NOPE-1")
    assert run.returncode == 0 and "no trade 'NOPE-1' in these lines" in run.stderr and "TRADES (0)" in run.stdout


def test_html_is_written_to_the_file_named(logs: list[str], tmp_path: Path) -> None:
    out = tmp_path / "review.html"
    run = _mybot(*logs, "--day", DAY, "--html", str(out))
    assert run.returncode == 0 and f"wrote {out}" in run.stderr
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg id='incident-timeline'" in page
    assert not (tmp_path / "review.html.partial").exists()


@pytest.mark.parametrize("args, message", [
    (["{tmp}/missing.log"], "missing.log: no such file"),
    (["{tmp}"], "is a directory"),
    (["{log}", "--day", "20-11-2026"], "--day: '20-11-2026' is not a date (YYYY-MM-DD)"),
    (["{log}", "--since", "10:00"], "--since: '10:00' is a time of day; give --day too"),
    (["{log}", "--day", DAY, "--until", "27:00"], "--until: '27:00' is not a time of day"),
    (["{log}", "--day", DAY, "--since", "12:00", "--until", "11:00"], "the window is empty"),
    (["{log}", "--html", "{tmp}/no/such/dir/out.html"], "--html: cannot write into"),
])
def test_bad_input_exits_2_naming_what_is_wrong(logs: list[str], tmp_path: Path, args: list[str],
                                                message: str) -> None:
    run = _mybot(*[a.format(tmp=tmp_path, log=logs[0]) for a in args])
    assert run.returncode == 2 and message in run.stderr and run.stdout == ""


def test_no_log_at_all_is_a_usage_error() -> None:
    run = _mybot()
    assert run.returncode == 2 and "the following arguments are required: LOG" in run.stderr


def test_help_explains_the_command() -> None:
    run = _mybot("--help")
    assert run.returncode == 0
    for text in ("--day YYYY-MM-DD", "--since T", "--until T", "--pos-id ID", "--json", "--html OUT", "examples:",
                 "rotations"):
        assert text in run.stdout

