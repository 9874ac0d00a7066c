"""The daemon as an operator meets it: `mybot` processes, signals, exit codes, health over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from config.settings import load_settings
from daemon.runtime import Runtime
from storage.schema import load_migrations
from telemetry.logs import configure_logging
from tests.tcp_proxy import TcpProxy

ROOT = Path(__file__).resolve().parent.parent
MYBOT = [sys.executable, "-m", "daemon.cli"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYBOT_")}
    env.update({"MYBOT_HTTP_MDS_PORT": "0", "MYBOT_HTTP_CONTROL_PORT": "0",
                "MYBOT_STORAGE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
                "MYBOT_SECRETS_DIR": str(tmp_path / "secrets"), "PYTHONPATH": str(ROOT)})
    env.update(extra)
    return env


def _start(tmp_path: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*MYBOT, "run", *args], cwd=tmp_path, env=_env(tmp_path, **env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _read_until(proc: subprocess.Popen[str], event: str, timeout: float = 20.0) -> list[dict]:
    """Read JSON log lines until one carries `event`; return every line read."""
    assert proc.stdout is not None
    lines: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = proc.stdout.readline()
        if not raw:
            break
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        lines.append(entry)
        if entry.get("event") == event:
            return lines
    raise AssertionError(f"{event} not seen; last lines: {lines[-5:]}")


def test_bad_config_exits_2_listing_every_problem(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[http]\nmds_port = "eighty"\nbogus = 1\n[risk]\nsession_start = "25:00"\n[nope]\nx = 1\n')
    env = _env(tmp_path, MYBOT_FEED_SOURCE="carrier-pigeon", FEED_POLL_SECONDS="1",
               MYBOT_CONTROL_TOKEN_FILE=str(tmp_path / "missing-token"))
    result = subprocess.run([*MYBOT, "run", "--config", str(config)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    for problem in ("http.mds_port", "http.bogus: unknown key", "risk.session_start", "nope: unknown key",
                    "MYBOT_FEED_SOURCE", "FEED_POLL_SECONDS", "control.token_file"):
        assert problem in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_config_check_masks_secrets(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "control_token.txt").write_text("tok-very-secret-123\n")
    env = _env(tmp_path, MYBOT_DHAN_ACCESS_TOKEN="jwt-also-secret-456")
    result = subprocess.run([*MYBOT, "config", "check"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    effective = json.loads(result.stdout)
    assert effective["control"]["token"] == "***" and effective["dhan"]["access_token"] == "***"
    assert "secret-123" not in result.stdout and "secret-456" not in result.stdout


def test_sigterm_stops_the_daemon_with_exit_0_within_5_seconds(tmp_path: Path) -> None:
    proc = _start(tmp_path, "--role", "mds")
    try:
        lines = _read_until(proc, "RUNTIME_STARTED")
        started = [entry for entry in lines if entry["event"] == "HTTP_STARTED"]
        assert {entry["server"] for entry in started} == {"mds", "control"}
        port = next(int(e["port"]) for e in started if e["server"] == "control")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status", timeout=5) as resp:
            assert json.load(resp)["role"] == "mds"
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - sent < 5
        rest = proc.stdout.read() if proc.stdout else ""
        assert '"RUNTIME_STOPPED"' in rest
    finally:
        if proc.poll() is None:
            proc.kill()


def test_root_escalation_makes_the_daemon_exit_non_zero(tmp_path: Path) -> None:
    # A replay file that does not exist: the feed crashes on every start, past every restart intensity.
    proc = _start(tmp_path, "--role", "mds", MYBOT_FEED_SOURCE="replay",
                  MYBOT_FEED_REPLAY_PATH=str(tmp_path / "missing.csv"), MYBOT_SUPERVISION_MAX_RESTARTS="1",
                  MYBOT_SUPERVISION_BACKOFF_INITIAL_SECONDS="0.01")
    try:
        output, _ = proc.communicate(timeout=30)  # read while it runs: its log can outgrow a pipe's buffer
        code = proc.returncode
        assert code == 1
        assert '"SUPERVISOR_ESCALATED"' in output and '"RUNTIME_ESCALATED"' in output
    finally:
        if proc.poll() is None:
            proc.kill()


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def _wait_for_status(url: str, status: int, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    code, body = _get(url)
    while code != status and time.monotonic() < deadline:
        time.sleep(0.1)  # polling an HTTP endpoint from outside: there is no event to wait on
        code, body = _get(url)
    assert code == status, body
    return body


def test_health_turns_503_when_postgresql_is_unreachable_and_200_when_it_returns(pg_url: str) -> None:
    configure_logging("WARNING")
    from urllib.parse import urlsplit

    parts = urlsplit(pg_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    proxied = pg_url.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")
    settings = load_settings(env={}, overrides={
        "storage": {"url": proxied, "connect_timeout_seconds": 1.0},
        "http": {"mds_port": 0, "control_port": 0}, "option_chain": {"underlyings": []}})
    runtime = Runtime(settings, "mds").start()
    try:
        health = f"{runtime.servers[-1].url}/v1/health"
        assert _wait_for_status(health, 200)["checks"]["database"]["ok"] is True
        proxy.stop_accepting_and_cut()
        body = _wait_for_status(health, 503)
        assert "database" in body["failing"]
        proxy.resume()
        assert _wait_for_status(health, 200)["checks"]["database"]["backend"] == "postgresql"
    finally:
        runtime.shutdown()
        proxy.close()


def test_database_down_at_start_is_retried_not_a_crash(pg_url: str) -> None:
    configure_logging("WARNING")
    from urllib.parse import urlsplit

    parts = urlsplit(pg_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    proxy.stop_accepting_and_cut()
    proxied = pg_url.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")
    settings = load_settings(env={}, overrides={
        "storage": {"url": proxied, "connect_timeout_seconds": 0.5},
        "http": {"mds_port": 0, "control_port": 0}, "option_chain": {"underlyings": []}})
    runtime = Runtime(settings, "mds").start()
    try:
        health = f"{runtime.servers[-1].url}/v1/health"
        assert "database" in _wait_for_status(health, 503)["failing"]
        proxy.resume()
        _wait_for_status(health, 200, timeout=20)
        assert runtime.storage_ready.is_set()
    finally:
        runtime.shutdown()
        proxy.close()


@pytest.mark.parametrize("path", ["/v1/actors/feed/restart"])
def test_actor_restart_needs_the_control_token(tmp_path: Path, path: str) -> None:
    configure_logging("WARNING")
    settings = load_settings(env={"MYBOT_CONTROL_TOKEN": "s3cret-token-long-enough"}, overrides={
        "storage": {"url": f"sqlite:///{tmp_path / 'db.sqlite'}"}, "http": {"mds_port": 0, "control_port": 0},
        "option_chain": {"underlyings": []}})
    runtime = Runtime(settings, "mds").start()
    try:
        url = f"{runtime.servers[-1].url}{path}"
        request = urllib.request.Request(url, method="POST", data=b"")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 401
        request.add_header("Authorization", "Bearer s3cret-token-long-enough")
        with urllib.request.urlopen(request, timeout=5) as resp:
            body = json.load(resp)
        assert body["restarted"] == "feed" and body["status"]["restarts"] == 1
        unknown = urllib.request.Request(url.replace("/feed/", "/nope/"), method="POST", data=b"",
                                         headers={"Authorization": "Bearer s3cret-token-long-enough"})
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(unknown, timeout=5)
        assert missing.value.code == 404
    finally:
        runtime.shutdown()


def test_migrate_applies_the_migrations_once(tmp_path: Path) -> None:
    env = _env(tmp_path)
    first = subprocess.run([*MYBOT, "migrate"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    again = subprocess.run([*MYBOT, "migrate"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    every_version = str([migration.version for migration in load_migrations("sqlite")])  # "[1, 2, 3]"
    assert first.returncode == 0 and every_version in first.stdout and every_version.startswith("[1, ")
    assert again.returncode == 0 and "[]" in again.stdout


@pytest.mark.parametrize("command", [[], ["run"], ["migrate"], ["config", "check"], ["replay"], ["review"]])
def test_every_command_explains_itself(tmp_path: Path, command: list[str]) -> None:
    result = subprocess.run([*MYBOT, *command, "--help"], cwd=tmp_path, env=_env(tmp_path), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "usage: mybot" in result.stdout
