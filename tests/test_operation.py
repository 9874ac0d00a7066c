"""OPERATION.md cannot rot: every `sh` block runs, in order, in one bash session (as an operator's terminal),
against a live daemon under a real supervisord (the shipped deploy/ files), on PostgreSQL and Redis, with
the real dhanhq SDK against the fake Dhan. A failing command fails the test and names its block.

The shell gets the runbooks' variables as plain (not exported) shell variables, the same names an
operator sets (MYBOT_URL, MYBOT_LOG, ...); MYBOT_TOKEN is left for the setup block to read from the
secrets file, as it does on a host. Blocks marked `sh pending` are listed, not run.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import requests

from tests.conftest import IN_CI
from tests.fakedhan import FakeDhan, unsigned_jwt
from tests.support.supervisord import ROOT, Supervisord
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

TOKEN = "runbook-test-token-0123456789"
FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```\s*$", re.MULTILINE | re.DOTALL)
TOOLS = ("bash", "curl", "jq", "pg_isready", "redis-cli")


def blocks(text: str) -> list[tuple[int, str, str]]:
    """(line number, info string, body) of every fenced block."""
    return [(text.count("\n", 0, m.start()) + 1, m["info"].strip(), m["body"]) for m in FENCE.finditer(text)]


def test_every_block_of_the_runbook_is_a_command_block() -> None:
    found = blocks((ROOT / "OPERATION.md").read_text())
    assert found, "no code block found in OPERATION.md"
    odd = [(line, info) for line, info, _ in found if info not in ("sh", "sh pending")]
    assert not odd, f"OPERATION.md blocks must be `sh` (run by this test) or `sh pending`: {odd}"


@pytest.fixture
def fake() -> Iterator[FakeDhan]:
    client_id = "1000000001"  # a JWT access token, as Dhan's: `mybot dhan token` reads its expiry
    with FakeDhan(client_id, unsigned_jwt(client_id, time.time() + 86_400)) as dhan:
        yield dhan


def test_every_runbook_command_works_against_a_live_daemon(pg_url: str, redis_url: str, redis_prefix: str,
                                                           fake: FakeDhan, tmp_path: Path) -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        message = f"the runbook needs {', '.join(missing)}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    text = (ROOT / "OPERATION.md").read_text()
    runnable = [(line, body) for line, info, body in blocks(text) if info == "sh"]
    pending = [(line, body) for line, info, body in blocks(text) if info == "sh pending"]
    settings = {
        "storage": {"url": pg_url, "redis_url": redis_url, "redis_prefix": redis_prefix},
        "dhan": {k: v for k, v in fake.dhan_settings().items() if k.endswith("_url")},
        "risk": {"session_start": "00:00", "session_end": "24:00", "square_off_time": "24:00"},
        "calendar": {"enabled": False},  # tests run at night and on weekends
        "execution": {"lot_sizes": {"SEC_49081": 75}, "max_slippage_pct": 5.0, "square_off_check_seconds": 0.2},
        "reconcile": {"interval_seconds": 0.5},
    }
    settings["dhan"]["token_check_seconds"] = 0.5  # the token runbook waits for the keeper's TOKEN_RELOADED
    secrets = {"control_token.txt": TOKEN, "dhan_client_id.txt": fake.client_id,
               "dhan_access_token.txt": fake.access_token}
    with Supervisord(tmp_path / "host", settings=settings, secrets=secrets, program={"startsecs": "1"}) as sup:
        sup.wait_healthy()
        # The state the runbooks act on: an open position to flatten, a stray broker position to reconcile.
        entry = {"pos_id": "RUN-1", "symbol": "SEC_49081", "side": "BUY", "qty": 75, "price": 100.0}
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert requests.post(f"{sup.url}/v1/trades", json=entry, headers=auth, timeout=10).status_code == 202
        fake.state.add_position("49082", 50)
        eventually(lambda: requests.get(f"{sup.url}/v1/risk", timeout=5).json()["reconciliation_hold"]["engaged"],
                   timeout=20, message=f"the stray position's RECONCILE_INCIDENT\n{sup.problems()}")

        variables = {"MYBOT_URL": sup.url, "MYBOT_CONFIG": str(sup.config_file), "MYBOT_SECRETS": str(sup.secrets),
                     "MYBOT_LOG": str(sup.log_file), "MYBOT_PG_URL": pg_url, "MYBOT_REDIS_URL": redis_url,
                     "MYBOT_DHAN_URL": fake.rest.base_url, "NEW_DHAN_TOKEN": fake.tokens.issue()}
        script = ["set -eu"] + [f"{name}={shlex.quote(value)}" for name, value in variables.items()]
        for number, (line, body) in enumerate(runnable, 1):
            script.append(f"echo '>>> block {number} (OPERATION.md line {line})' >&2")
            script.append(body)
        result = subprocess.run(["bash", "-c", "\n".join(script)], cwd=sup.root, env=sup.env, capture_output=True,
                                text=True, timeout=600)
        rotated_token = (sup.secrets / "control_token.txt").read_text()
        rehearsal = requests.get(f"{sup.url}/v1/trades/REHEARSAL-1", timeout=5)
        closed = rehearsal.json()["trade"]["state"] if rehearsal.status_code == 200 else rehearsal.text
        problems = sup.problems() if result.returncode else ""
        log_text = "".join(p.read_text() for p in sorted(sup.logs.glob("mybot.log*")) if p.suffix != ".gz")

    artifacts = ROOT / "tests" / "artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "operation-transcript.txt").write_text(f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    markers = [line for line in result.stderr.splitlines() if line.startswith(">>> block")]
    assert result.returncode == 0, (f"failed in {markers[-1] if markers else 'the prelude'}:\n"
                                    f"stderr:\n{result.stderr[-3000:]}\nstdout:\n{result.stdout[-3000:]}\n{problems}")
    assert len(markers) == len(runnable)  # every block ran
    assert rotated_token != TOKEN and closed == "CLOSED"  # the token runbook rotated it; the rehearsal ended
    acks = [orjson.loads(line) for line in log_text.splitlines() if '"event":"RECONCILE_ACKNOWLEDGED"' in line]
    assert [a["accepted"] for a in acks] == [{"SEC_49082": 50}]  # the stray position, checked and accepted
    assert acks[0]["incident_ids"] and acks[0]["who"]
    assert pending == []  # every runbook command runs today
    assert os.path.exists(sup.log_file)
