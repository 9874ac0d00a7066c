"""/v1/health names a crash-looping child, however deep in the tree (issue 9, requirement 10), over real
HTTP on a real runtime with SQLite storage."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from config.settings import load_settings
from daemon.runtime import Runtime
from telemetry.logs import configure_logging
from tests.support.waiting import eventually


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.fixture
def mds_runtime(tmp_path: Path):
    runtimes: list[Runtime] = []

    def start(**feed: Any) -> Runtime:
        configure_logging("CRITICAL")
        settings = load_settings(env={}, overrides={
            "storage": {"url": f"sqlite:///{tmp_path / 'db.sqlite'}"}, "http": {"mds_port": 0, "control_port": 0},
            "feed": {"symbols": ["NIFTY"], **feed}, "option_chain": {"underlyings": []},
            "supervision": {"backoff_initial_seconds": 0.01, "backoff_max_seconds": 30.0}})
        runtime = Runtime(settings, "mds")
        runtimes.append(runtime)
        return runtime.start()

    yield start
    for runtime in runtimes:
        runtime.shutdown()


def test_health_is_503_naming_a_nested_child_that_crash_loops_in_backoff(mds_runtime, tmp_path: Path) -> None:
    runtime = mds_runtime(source="replay", replay_path=str(tmp_path / "missing.csv"))
    control = runtime.servers[-1].url

    code, body = eventually(lambda: (got := _get(f"{control}/v1/health"))[0] == 503 and got, 10.0,
                            message="health 503 while the feed crash-loops")
    assert "supervisor" in body["failing"], body
    # the feed sits two supervisors down (market_data -> ingest -> feed); a missing replay file crashes it
    assert body["checks"]["supervisor"]["unhealthy"] == ["feed"], body


def test_health_is_200_when_every_child_runs(mds_runtime) -> None:
    runtime = mds_runtime(source="sim")
    code, body = eventually(lambda: (got := _get(f"{runtime.servers[-1].url}/v1/health"))[0] == 200 and got, 10.0,
                            message="health 200 with the sim feed")
    assert body["checks"]["supervisor"] == {"ok": True}
