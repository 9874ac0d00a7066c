"""/v1/health names a crash-looping child, however deep in the tree (issue 9, requirement 10), over real
HTTP on a real runtime with SQLite storage."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from config.settings import load_settings
from daemon.runtime import Part, Runtime, RuntimeContext
from supervision.actor import SupervisedActor
from supervision.supervisor import Backoff, ChildSpec, supervisor_spec
from telemetry.logs import configure_logging


class MissingReplayFile(SupervisedActor):
    """Fails in started() every time, as a replay source whose file is missing does."""

    def __init__(self, link: Any, attempts: list[int], attempted: threading.Event) -> None:
        super().__init__(link)
        self.attempts = attempts
        self.attempted = attempted

    def started(self) -> None:
        self.attempts.append(1)
        if len(self.attempts) == 3:  # so the supervisor has handled the second crash
            self.attempted.set()
        raise FileNotFoundError("replay.csv")


class Idle(SupervisedActor):
    pass


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.fixture
def runtime_with(tmp_path: Path):
    runtimes: list[Runtime] = []

    def start(builder: Any) -> Runtime:
        configure_logging("CRITICAL")
        settings = load_settings(env={}, overrides={
            "storage": {"url": f"sqlite:///{tmp_path / 'db.sqlite'}"}, "http": {"mds_port": 0, "control_port": 0}})
        runtime = Runtime(settings, "all", part_builders=[builder])
        runtimes.append(runtime)
        return runtime.start()

    yield start
    for runtime in runtimes:
        runtime.shutdown()


def test_health_is_503_naming_a_nested_child_that_crash_loops_in_backoff(runtime_with) -> None:
    attempts: list[int] = []
    attempted = threading.Event()

    def build(ctx: RuntimeContext) -> Part:
        source = ChildSpec("replay_source", lambda link: MissingReplayFile.start(link, attempts, attempted),
                           backoff=Backoff(initial=0.01, maximum=30.0, factor=10.0, jitter=0.0))
        market_data = ctx.supervisor("market_data", [ChildSpec("idle", lambda link: Idle.start(link)), source])
        return Part("test", children=[supervisor_spec(market_data, **ctx.supervisor_options())])

    runtime = runtime_with(build)
    assert attempted.wait(10)  # the third start: two crashes in a row behind it, backoff 1 s then 10 s
    code, body = _get(f"{runtime.servers[-1].url}/v1/health")
    assert code == 503, body
    assert "supervisor" in body["failing"]
    assert body["checks"]["supervisor"]["unhealthy"] == ["replay_source"]


def test_health_is_200_when_every_child_runs(runtime_with) -> None:
    def build(ctx: RuntimeContext) -> Part:
        market_data = ctx.supervisor("market_data", [ChildSpec("idle", lambda link: Idle.start(link))])
        return Part("test", children=[supervisor_spec(market_data, **ctx.supervisor_options())])

    runtime = runtime_with(build)
    code, body = _get(f"{runtime.servers[-1].url}/v1/health")
    assert code == 200, body
    assert body["checks"]["supervisor"] == {"ok": True}
