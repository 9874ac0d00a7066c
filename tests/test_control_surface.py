"""Secrets and the control surface (issue 9, requirement 12), through real parts: the `mybot` CLI as a
subprocess, real waitress sockets, real PostgreSQL, the real JSON log output."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest
import requests

from config.settings import ConfigError, load_settings
from daemon.runtime import Runtime
from telemetry import logs
from telemetry.logs import configure_logging, get_logger, redact
from tests.support.trading import TOKEN, TraderHarness, eventually, trader_settings

ROOT = Path(__file__).resolve().parent.parent
MYBOT = [sys.executable, "-m", "daemon.cli"]
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# Distinct values: a test finds each of them by name in every output.
USERINFO_PW = "Userinfo-Pw-7Q2"
QUERY_PW = "Query-Pw-8R3"
SSL_PW = "Ssl-Pw-9S4"
REDIS_PW = "Redis-Pw-1T5"
REDIS_QUERY_PW = "Redis-Query-Pw-2U6"
ALL_URL_PASSWORDS = (USERINFO_PW, QUERY_PW, SSL_PW, REDIS_PW, REDIS_QUERY_PW)


@pytest.fixture(autouse=True)
def _isolated_redaction(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The redaction registry is process-wide: give the secrets registered here back afterwards."""
    monkeypatch.setattr(logs, "_redaction", logs._redaction)  # an immutable snapshot, swapped by redact()
    yield
    pykka.ActorRegistry.stop_all()


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYBOT_")}
    env.update({"MYBOT_HTTP_MDS_PORT": "0", "MYBOT_HTTP_CONTROL_PORT": "0",
                "MYBOT_STORAGE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
                "MYBOT_SECRETS_DIR": str(tmp_path / "secrets"), "PYTHONPATH": str(ROOT)})
    env.update(extra)
    return env


def _with_passwords(pg_url: str) -> str:
    """The test database's URL with a password in the userinfo and in the query string (trust auth: unused)."""
    assert pg_url.startswith("postgresql://postgres@") and "?" in pg_url, pg_url
    url = pg_url.replace("postgresql://postgres@", f"postgresql://postgres:{USERINFO_PW}@", 1)
    return f"{url}&password={QUERY_PW}&sslpassword={SSL_PW}"


def _assert_no_password(text: str) -> None:
    for password in ALL_URL_PASSWORDS:
        assert password not in text, f"{password} leaked: {text[:2000]}"


# -- passwords in connection URLs ---------------------------------------------------------------------

def test_config_check_masks_passwords_in_database_and_redis_urls(tmp_path: Path) -> None:
    env = _env(tmp_path,
               MYBOT_STORAGE_URL=f"postgresql://trader:{USERINFO_PW}@db.internal:5432/mybot"
                                 f"?password={QUERY_PW}&sslpassword={SSL_PW}&sslmode=require",
               MYBOT_STORAGE_REDIS_URL=f"redis://:{REDIS_PW}@cache.internal:6379/0?password={REDIS_QUERY_PW}")
    result = subprocess.run([*MYBOT, "config", "check"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    _assert_no_password(result.stdout + result.stderr)
    storage = json.loads(result.stdout)["storage"]
    assert storage["url"] == ("postgresql://trader:***@db.internal:5432/mybot"
                              "?password=***&sslpassword=***&sslmode=require")
    assert storage["redis_url"] == "redis://:***@cache.internal:6379/0?password=***"


def test_config_error_messages_mask_the_passwords_of_a_rejected_url(tmp_path: Path) -> None:
    env = _env(tmp_path, MYBOT_STORAGE_URL=f"mysql://trader:{USERINFO_PW}@db/mybot?password={QUERY_PW}",
               MYBOT_STORAGE_REDIS_URL=f"http://:{REDIS_PW}@cache:6379/0?sslpassword={SSL_PW}")
    result = subprocess.run([*MYBOT, "config", "check"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert "MYBOT_STORAGE_URL: 'mysql://trader:***@db/mybot?password=***' is not in the expected form" \
        in result.stderr, result.stderr
    assert "MYBOT_STORAGE_REDIS_URL: 'http://:***@cache:6379/0?sslpassword=***'" in result.stderr
    _assert_no_password(result.stdout + result.stderr)


def test_startup_log_and_status_mask_the_database_url_passwords(tmp_path: Path, pg_url: str, redis_url: str,
                                                                redis_prefix: str) -> None:
    """The real daemon on PostgreSQL and Redis with passwords in their URLs: RUNTIME_STARTING, every other
    log line and /v1/status show them masked (and the database is reached: the forms are valid libpq)."""
    assert redis_url.startswith("redis://") and "@" not in redis_url and "?" not in redis_url, redis_url
    redis_with_passwords = redis_url.replace("redis://", f"redis://:{REDIS_PW}@", 1) + f"?password={REDIS_QUERY_PW}"
    env = _env(tmp_path, MYBOT_STORAGE_URL=_with_passwords(pg_url), MYBOT_FEED_SIM_TICKS_PER_SECOND="5",
               MYBOT_OPTION_CHAIN_UNDERLYINGS="", MYBOT_STORAGE_REDIS_URL=redis_with_passwords,
               MYBOT_STORAGE_REDIS_PREFIX=redis_prefix)
    proc = subprocess.Popen([*MYBOT, "run", "--role", "mds"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        lines: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(e.get("event") == "RUNTIME_STARTED" for e in lines):
            raw = proc.stdout.readline()
            if not raw:
                break
            lines.append(json.loads(raw))
        starting = next(e for e in lines if e["event"] == "RUNTIME_STARTING")
        masked = pg_url.replace("postgresql://postgres@", "postgresql://postgres:***@", 1)
        assert starting["storage"] == masked + "&password=***&sslpassword=***"
        port = next(int(e["port"]) for e in lines if e["event"] == "HTTP_STARTED" and e["server"] == "control")
        health = requests.get(f"http://127.0.0.1:{port}/v1/health", timeout=5)
        status = requests.get(f"http://127.0.0.1:{port}/v1/status", timeout=5)
        assert status.status_code == 200
        assert status.json()["config"]["storage"]["url"] == starting["storage"]
        assert status.json()["config"]["storage"]["redis_url"] == (
            redis_url.replace("redis://", "redis://:***@", 1) + "?password=***")
        assert health.json()["checks"]["database"]["ok"], health.text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        rest = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    _assert_no_password(json.dumps(lines) + rest + status.text + health.text)


def test_url_passwords_are_registered_with_the_log_redaction_at_start(tmp_path: Path) -> None:
    buffer = io.StringIO()
    configure_logging("INFO", stream=buffer)
    settings = load_settings(env={}, overrides={
        "storage": {"url": f"postgresql://u:{USERINFO_PW}@127.0.0.1:1/db?password={QUERY_PW}&sslpassword={SSL_PW}",
                    "redis_url": f"redis://:{REDIS_PW}@127.0.0.1:1/0?password={REDIS_QUERY_PW}"}})
    Runtime(settings, "mds")  # registers its secrets; not started
    get_logger("mybot.test").event("STORAGE_UNAVAILABLE", " ".join(ALL_URL_PASSWORDS),
                                   detail={"dsn": settings.storage.url, "bus": settings.storage.redis_url})
    line = json.loads(buffer.getvalue().splitlines()[-1])
    assert line["message"] == "*** *** *** *** ***"
    assert line["detail"]["dsn"] == "postgresql://u:***@127.0.0.1:1/db?password=***&sslpassword=***"
    _assert_no_password(buffer.getvalue())


# -- redaction of awkward secrets ----------------------------------------------------------------------

def test_redaction_hides_secrets_with_quotes_and_backslashes_in_the_json_line() -> None:
    buffer = io.StringIO()
    configure_logging("INFO", stream=buffer)
    secret = 'pa"ss\\word-with-quote'
    redact(secret)
    log = get_logger("mybot.test")
    log.event("CONTROL_REFUSED", f"token {secret} refused", token=secret, nested={"body": json.dumps({"t": secret})})
    try:
        raise RuntimeError(f"broker said {secret!r}")
    except RuntimeError as exc:
        log.event("ORDER_FAILED", "place failed", level=40, exc_info=exc)
    text = buffer.getvalue()
    escaped = json.dumps(secret)[1:-1]
    assert secret not in text and escaped not in text and json.dumps(escaped)[1:-1] not in text
    assert "pa" not in text.replace('"path"', "")  # not even a fragment of it
    first, second = (json.loads(line) for line in text.splitlines()[-2:])  # still valid JSON
    assert first["message"] == "token *** refused" and first["token"] == "***"
    assert json.loads(first["nested"]["body"]) == {"t": "***"}
    assert "broker said '***'" in second["exception"] or "broker said ***" in second["exception"]


def test_redaction_hides_short_secrets_as_whole_words_without_mangling_the_line() -> None:
    buffer = io.StringIO()
    configure_logging("INFO", stream=buffer)
    redact("q7", "x")  # 2 and 1 characters: today never redacted
    get_logger("mybot.test").event("STORAGE_UNAVAILABLE", "password=q7 user=q7x token x; q7", qty=7, side="x",
                                   words=["q7", "xq7", "box"])
    line = json.loads(buffer.getvalue().splitlines()[-1])
    assert line["message"] == "password=*** user=q7x token ***; ***"
    assert line["side"] == "***" and line["words"] == ["***", "xq7", "box"] and line["qty"] == 7
    assert line["event"] == "STORAGE_UNAVAILABLE" and line["logger"] == "mybot.test"


# -- the control token ---------------------------------------------------------------------------------

def test_a_control_token_shorter_than_16_characters_is_refused_at_start(tmp_path: Path) -> None:
    short = "fifteen-chars15"
    assert len(short) == 15
    env = _env(tmp_path, MYBOT_CONTROL_TOKEN=short, MYBOT_HTTP_MDS_PORT="eighty")
    result = subprocess.run([*MYBOT, "run", "--role", "mds"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2
    assert "control.token: 15 characters; at least 16 are required" in result.stderr, result.stderr
    assert "MYBOT_HTTP_MDS_PORT" in result.stderr  # listed with every other problem
    assert short not in result.stderr + result.stdout
    ok = subprocess.run([*MYBOT, "config", "check"], cwd=tmp_path, env=_env(tmp_path, MYBOT_CONTROL_TOKEN=short + "6"),
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr


# -- who can reach the control port, and what they can read ---------------------------------------------

def test_control_host_defaults_to_loopback_when_the_mds_api_binds_every_interface(tmp_path: Path) -> None:
    configure_logging("WARNING")
    settings = load_settings(env={"MYBOT_CONTROL_TOKEN": TOKEN}, overrides={
        "storage": {"url": f"sqlite:///{tmp_path / 'db.sqlite'}"},
        "http": {"host": "0.0.0.0", "mds_port": 0, "control_port": 0}, "option_chain": {"underlyings": []}})
    runtime = Runtime(settings, "mds").start()
    try:
        bound = {server.name: server._server.socket.getsockname()[0] for server in runtime.servers}
        assert bound == {"mds": "0.0.0.0", "control": "127.0.0.1"}
        status = requests.get(f"http://127.0.0.1:{runtime.servers[-1].port}/v1/status", timeout=5)
        assert status.status_code == 200  # loopback control port: reads stay open
    finally:
        runtime.shutdown()


def test_non_loopback_control_host_without_a_token_or_with_open_reads_is_refused() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(env={}, overrides={"http": {"control_host": "0.0.0.0"},
                                         "control": {"reads_require_token": "false"}})
    problems = " | ".join(refused.value.problems)
    assert "control.reads_require_token = false: http.control_host = '0.0.0.0'" in problems
    assert "it needs a control token" in problems


READS = ("/v1/positions", "/v1/trades", "/v1/trades/NO-SUCH-TRADE", "/v1/risk", "/v1/status")


def test_two_server_mode_control_port_on_the_network_needs_the_token_for_trade_reads(pg_url: str) -> None:
    settings = trader_settings(pg_url, http={"control_host": "0.0.0.0", "control_port": 0})
    with TraderHarness(settings) as harness:
        base = f"http://127.0.0.1:{harness.runtime.servers[-1].port}"
        for path in READS:
            refused = requests.get(base + path, timeout=5)
            assert refused.status_code == 401, path
            assert refused.json()["error"] == "unauthorized"
            wrong = requests.get(base + path, headers={"Authorization": "Bearer " + "x" * len(TOKEN)}, timeout=5)
            assert wrong.status_code == 401, path
            allowed = requests.get(base + path, headers=AUTH, timeout=5)
            assert allowed.status_code == (404 if "NO-SUCH" in path else 200), (path, allowed.text)
        assert requests.get(base + "/v1/health", timeout=5).status_code == 200  # supervisors probe it


def test_reads_require_token_true_closes_reads_on_loopback_too(pg_url: str) -> None:
    settings = trader_settings(pg_url, control={"reads_require_token": "true"})
    with TraderHarness(settings) as harness:
        base = harness.runtime.servers[-1].url
        assert harness.runtime.servers[-1].host == "127.0.0.1"
        assert requests.get(base + "/v1/positions", timeout=5).status_code == 401
        assert requests.get(base + "/v1/positions", headers=AUTH, timeout=5).status_code == 200


def test_trade_reads_stay_open_on_a_loopback_control_port(pg_url: str) -> None:
    with TraderHarness(trader_settings(pg_url)) as harness:
        base = harness.runtime.servers[-1].url
        for path in ("/v1/positions", "/v1/trades", "/v1/risk", "/v1/status"):
            assert requests.get(base + path, timeout=5).status_code == 200, path


# -- request bodies ------------------------------------------------------------------------------------

def _raw_request(port: int, head: str, body_chunks: list[bytes]) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode())
        for chunk in body_chunks:
            sock.sendall(chunk)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        header_block, _, body = data.partition(b"\r\n\r\n")
        lines = header_block.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        while len(body) < int(headers.get("content-length", "0")):
            more = sock.recv(65536)
            if not more:
                break
            body += more
        return int(lines[0].split()[1]), headers, body


def test_request_bodies_over_64_kib_are_refused_with_413_before_authentication(pg_url: str) -> None:
    with TraderHarness(trader_settings(pg_url)) as harness:
        server = harness.runtime.servers[-1]
        big = b'{"pos_id": "BIG-1", "reason": "' + b"x" * (64 * 1024) + b'"}'
        unauthenticated = requests.post(server.url + "/v1/trades", data=big, timeout=10,
                                        headers={"Content-Type": "application/json"})
        assert unauthenticated.status_code == 413
        assert unauthenticated.json()["error"] == "request body too large"
        authenticated = requests.post(server.url + "/v1/control/kill-switch", data=big, timeout=10,
                                      headers={**AUTH, "Content-Type": "application/json"})
        assert authenticated.status_code == 413
        # Chunked, no Content-Length: refused the same way.
        chunk = b"y" * 8192
        chunks = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 10 + [b"0\r\n\r\n"]
        status, headers, body = _raw_request(server.port, "POST /v1/trades HTTP/1.1\r\nHost: x\r\n"
                                             "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                                             "Connection: close\r\n\r\n", chunks)
        assert status == 413 and headers["content-type"].startswith("application/json")
        assert json.loads(body)["error"] == "request body too large"
        # Far over it (2 MiB declared, nothing sent): refused by waitress from the headers alone.
        status, _, body = _raw_request(server.port, "POST /v1/trades HTTP/1.1\r\nHost: x\r\n"
                                       "Content-Type: application/json\r\nContent-Length: 2097152\r\n\r\n", [])
        assert status == 413, body
        # At the limit: read, parsed and authenticated as usual.
        at_limit = b'{"engaged": true, "reason": "' + b"z" * (64 * 1024 - 32) + b'"}'
        assert len(at_limit) <= 64 * 1024
        assert requests.post(server.url + "/v1/control/kill-switch", data=at_limit, timeout=10,
                             headers={"Content-Type": "application/json"}).status_code == 401
        answered = requests.post(server.url + "/v1/control/kill-switch", data=at_limit, timeout=10,
                                 headers={**AUTH, "Content-Type": "application/json"})
        assert answered.status_code == 400 and answered.json()["param"] == "reason"
        assert not harness.trader.risk.snapshot().kill_switch_engaged


# -- held-open sockets ---------------------------------------------------------------------------------

def _hold_idle_sockets(port: int, count: int) -> list[socket.socket]:
    held = []
    for _ in range(count):
        held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    return held


def _timed(method: str, url: str, **kwargs: Any) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = requests.request(method, url, timeout=10, **kwargs)
    return response, time.monotonic() - started


def _assert_operator_reaches_the_control_port(harness: TraderHarness) -> None:
    base = harness.runtime.servers[-1].url
    engaged, took = _timed("POST", base + "/v1/control/kill-switch", headers=AUTH,
                           json={"engaged": True, "reason": "idle socket flood"})
    assert engaged.status_code == 200, engaged.text
    assert took < 1.0, f"kill switch answered in {took:.2f} s"
    assert harness.trader.risk.snapshot().kill_switch_engaged
    health, took = _timed("GET", base + "/v1/health")
    assert health.status_code == 200 and took < 1.0, (health.status_code, took)
    flatten, took = _timed("POST", base + "/v1/control/flatten", headers=AUTH, json={"reason": "flood"})
    assert flatten.status_code == 202 and took < 1.0, (flatten.status_code, took)


def test_kill_switch_and_health_answer_within_1s_while_300_idle_sockets_are_held_open(pg_url: str) -> None:
    with TraderHarness(trader_settings(pg_url)) as harness:
        held = _hold_idle_sockets(harness.runtime.servers[-1].port, 300)
        try:
            _assert_operator_reaches_the_control_port(harness)
        finally:
            for sock in held:
                sock.close()


def test_idle_sockets_beyond_the_connection_limit_are_shed_oldest_first(pg_url: str) -> None:
    """More idle sockets than the server's connection limit: the oldest idle ones are closed to make room."""
    settings = trader_settings(pg_url, http={"connection_limit": 50, "control_port": 0})
    with TraderHarness(settings) as harness:
        held = _hold_idle_sockets(harness.runtime.servers[-1].port, 300)
        try:
            _assert_operator_reaches_the_control_port(harness)

            def closed_by_server(sock: socket.socket) -> bool:
                sock.settimeout(0.001)
                try:
                    return sock.recv(1) == b""
                except (TimeoutError, BlockingIOError):
                    return False
                except OSError:
                    return True

            eventually(lambda: sum(map(closed_by_server, held)) >= 250, timeout=10,
                       message="the server did not close the idle sockets over its limit")
            assert closed_by_server(held[0]) and not closed_by_server(held[-1])  # oldest first
        finally:
            for sock in held:
                sock.close()
