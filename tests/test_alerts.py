"""Alerts end to end: the daemon's own log lines -> the alerts actor -> fake Telegram and webhook servers on
loopback, over real sockets. Once per incident; signed; retried within bounds; a dead receiver never slows
trading; failures counted in /v1/status."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pykka
import pytest
import requests

from config.settings import Settings
from daemon.runtime import Runtime, Wiring
from telemetry.logs import configure_logging, get_logger
from tests.support.alert_servers import BlackHole, FakeTelegram, FakeWebhook
from tests.support.trading import TOKEN, TraderHarness, eventually, trader_settings
from tests.tcp_proxy import TcpProxy

AUTH = {"Authorization": f"Bearer {TOKEN}"}
BOT_TOKEN = "123456:test-bot-token"
SECRET = "webhook-signing-key"
ROOT = Path(__file__).resolve().parent.parent

log = get_logger("mybot.test")


@pytest.fixture(autouse=True)
def logs() -> Iterator[None]:
    with open(os.devnull, "w") as devnull:
        configure_logging("INFO", stream=devnull)
        yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    pykka.ActorRegistry.stop_all()


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    with FakeTelegram(BOT_TOKEN) as server:
        yield server


@pytest.fixture
def webhook() -> Iterator[FakeWebhook]:
    with FakeWebhook(SECRET) as server:
        yield server


def alert_settings(telegram: FakeTelegram | None = None, webhook_url: str = "", **extra: Any) -> dict[str, Any]:
    alerts: dict[str, Any] = {"retry_initial_seconds": 0.05, "timeout_seconds": 2.0, **extra}
    if telegram is not None:
        alerts.update(telegram_api_url=telegram.url, telegram_token=BOT_TOKEN, telegram_chat_id="-1001")
    if webhook_url:
        alerts.update(webhook_url=webhook_url, webhook_secret=SECRET)
    return alerts


def alerts_only(settings: Settings) -> Runtime:
    """A real runtime with the alerts subtree alone (no market data, no trading)."""
    return Runtime(settings, "all", wiring=Wiring(subtrees=frozenset()), serve_http=False).start()


def titles(messages: list[dict[str, Any]]) -> list[str]:
    return [m["text"].splitlines()[0] for m in messages]


def test_each_incident_is_alerted_once_on_both_channels_and_the_webhook_is_signed(
        pg_url: str, telegram: FakeTelegram, webhook: FakeWebhook) -> None:
    settings = trader_settings(pg_url, execution={"lot_sizes": {"SEC_49081": 75}},
                               alerts=alert_settings(telegram, webhook.url))
    with TraderHarness(settings, prices={"SEC_49081": 100.0}) as harness:
        url = harness.url
        entry = {"pos_id": "ALERT-1", "symbol": "SEC_49081", "side": "BUY", "qty": 75, "price": 100.0}
        assert requests.post(f"{url}/v1/trades", json=entry, headers=AUTH, timeout=5).status_code == 202
        harness.wait_state("ALERT-1", "POSITION_OPEN")
        engage = {"engaged": True, "reason": "news"}
        for _ in range(2):  # engaging an engaged switch is the same incident
            assert requests.post(f"{url}/v1/control/kill-switch", json=engage, headers=AUTH, timeout=5).ok
        assert requests.post(f"{url}/v1/control/flatten", json={"reason": "end of day"}, headers=AUTH,
                             timeout=5).status_code == 202
        harness.wait_state("ALERT-1", "CLOSED")
        telegram.messages.wait_count(2, timeout=10)  # the flatten is done once the monitor sees the book empty
        for _ in range(2):  # the same incident's lines again: one alert
            log.event("TOKEN_EXPIRING", "Dhan token expires in 2.0 h", level=30)
        assert requests.post(f"{url}/v1/control/kill-switch", json={"engaged": False}, headers=AUTH, timeout=5).ok
        assert requests.post(f"{url}/v1/control/kill-switch", json=engage, headers=AUTH, timeout=5).ok  # a new one
        log.event("BROKER_AUTH_EXPIRED", "sentinel: the last alert of the test", level=40)
        messages = telegram.messages.wait_count(5, timeout=10)
        deliveries = webhook.alerts.wait_count(5, timeout=10)
        # A channel's server may have the message a moment before the sender counts it as sent.
        status = eventually(lambda: (lambda alerts: alerts if alerts["sent"] == 10 else None)(
            requests.get(f"{url}/v1/status", timeout=5).json()["alerts"]), message="both channels counted")

    assert titles(messages) == ["[mybot CRITICAL] Kill switch engaged: no new entries",
                                "[mybot INFO] Flatten done: no open position",
                                "[mybot WARNING] Dhan token expires soon",
                                "[mybot CRITICAL] Kill switch engaged: no new entries",
                                "[mybot CRITICAL] Dhan token expired: the broker refuses orders"]
    assert all(m["chat_id"] == "-1001" for m in messages) and "operator: news" in messages[0]["text"]
    assert [d["body"]["kind"] for d in deliveries] == ["KILL_SWITCH", "FLATTEN_DONE", "TOKEN", "KILL_SWITCH", "TOKEN"]
    assert all(d["verified"] for d in deliveries), [d["signature"] for d in deliveries]
    first, second = deliveries[0]["body"], deliveries[3]["body"]
    assert first["incident_id"].startswith("kill-switch-") and first["incident_id"] != second["incident_id"]
    assert first["origin"]["role"] == "trader" and first["origin"]["pid"] == os.getpid()
    assert (status["raised"], status["sent"], status["failures"], status["dropped"]) == (5, 10, 0, 0)
    assert status["duplicates"] >= 1 and status["channels"] == ["telegram", "webhook"]
    assert BOT_TOKEN not in orjson.dumps(status).decode()


def test_failed_sends_are_retried_within_bounds_and_counted(telegram: FakeTelegram, sqlite_url: str) -> None:
    flaky = FakeWebhook(SECRET, script=lambda n: (500, {"error": "busy"}) if n < 2 else (200, {"ok": True}))
    gone = FakeWebhook(SECRET, script=lambda n: (404, {"error": "no such hook"}))
    limited = FakeTelegram(BOT_TOKEN, script=lambda n: (429, {"ok": False, "parameters": {"retry_after": 1}})
                           if n == 0 else (200, {}))
    with flaky, gone, limited:
        runtimes = [alerts_only(Settings().replace(storage={"url": sqlite_url}, alerts=alert_settings(
            webhook_url=hook.url, max_attempts=4))) for hook in (flaky, gone)]
        try:
            log.event("KILL_SWITCH_ENGAGED", "operator: retries", incident_id="kill-switch-retry", level=40)
            flaky.alerts.wait_count(1, timeout=10)
            eventually(lambda: runtimes[1].alerts is not None and runtimes[1].alerts.counters.get().given_up == 1,
                       message="the 404 given up")
        finally:
            for runtime in runtimes:
                runtime.shutdown()
        retried, refused = (r.alerts.counters.get() for r in runtimes if r.alerts is not None)
        assert len(flaky.attempts.snapshot()) == 3 and len(flaky.alerts.snapshot()) == 1
        assert (retried.raised, retried.sent, retried.failures, retried.given_up) == (1, 1, 2, 0)
        assert len(gone.attempts.snapshot()) == 1  # a 404 is not retried
        assert (refused.sent, refused.failures, refused.given_up) == (0, 1, 1) and "HTTP 404" in refused.last_error

        runtime = alerts_only(Settings().replace(storage={"url": sqlite_url}, alerts=alert_settings(limited)))
        try:
            log.event("KILL_SWITCH_ENGAGED", "operator: 429", incident_id="kill-switch-429", level=40)
            limited.messages.wait_count(1, timeout=10)
        finally:
            runtime.shutdown()
        assert len(limited.refused.snapshot()) == 1  # the 429, then one send after its retry_after


def test_a_dead_webhook_never_slows_trading(pg_url: str) -> None:
    with BlackHole() as dead:
        settings = trader_settings(pg_url, execution={"lot_sizes": {"SEC_49081": 75}}, alerts=alert_settings(
            webhook_url=dead.url, timeout_seconds=5.0, max_attempts=2, queue_size=5))
        with TraderHarness(settings, prices={"SEC_49081": 100.0}) as harness:
            url = harness.url
            started = time.monotonic()
            assert requests.post(f"{url}/v1/control/kill-switch", json={"engaged": True}, headers=AUTH,
                                 timeout=5).ok
            assert requests.post(f"{url}/v1/control/kill-switch", json={"engaged": False}, headers=AUTH,
                                 timeout=5).ok
            switched = time.monotonic() - started
            entry = {"pos_id": "DEAD-1", "symbol": "SEC_49081", "side": "BUY", "qty": 75, "price": 100.0}
            assert requests.post(f"{url}/v1/trades", json=entry, headers=AUTH, timeout=5).status_code == 202
            harness.wait_state("DEAD-1", "POSITION_OPEN")
            traded = time.monotonic() - started
            flood = time.monotonic()
            for n in range(500):  # far more alert lines than the queue holds, from the logging thread
                log.event("KILL_SWITCH_ENGAGED", "flood", incident_id=f"kill-switch-flood-{n}", level=40)
            flooded = time.monotonic() - flood
            status = eventually(lambda: (s := requests.get(f"{url}/v1/status", timeout=5).json()["alerts"])
                                and s["failures"] >= 1 and s, timeout=10, message="a failed send counted")
    # The switch and the trade do not wait for the webhook's 5 s timeout; the flood never blocks.
    assert switched < 2.5 and traded < 4.0, (switched, traded)
    assert flooded < 1.0 and status["dropped"] >= 490, (flooded, status)
    assert "timed out" in status["last_error"] or "TimeoutError" in status["last_error"], status["last_error"]


def test_a_database_outage_longer_than_the_threshold_is_alerted_once(pg_url: str, webhook: FakeWebhook) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(pg_url)
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        url = pg_url.replace(parts.netloc, f"{parts.username or 'postgres'}@127.0.0.1:{proxy.port}")
        settings = trader_settings(url, alerts=alert_settings(webhook_url=webhook.url, database_outage_seconds=0.5),
                                   storage={"url": url, "connect_timeout_seconds": 1.0})
        with TraderHarness(settings) as harness:
            proxy.stop_accepting_and_cut("refuse")
            outage = webhook.alerts.wait_count(1, timeout=15)
            proxy.resume()
            eventually(lambda: harness.runtime.health()[0], timeout=15, message="healthy again")
            log.event("FLATTEN_DONE", "sentinel", level=20)
            deliveries = webhook.alerts.wait_count(2, timeout=10)
    assert outage[0]["body"]["kind"] == "DATABASE_OUTAGE" and outage[0]["verified"]
    assert outage[0]["body"]["incident_id"].startswith("database-outage-")
    assert [d["body"]["kind"] for d in deliveries] == ["DATABASE_OUTAGE", "FLATTEN_DONE"]


def test_an_outage_shorter_than_the_threshold_is_not_alerted(sqlite_url: str, webhook: FakeWebhook) -> None:
    runtime = alerts_only(Settings().replace(storage={"url": sqlite_url}, alerts=alert_settings(
        webhook_url=webhook.url, database_outage_seconds=0.3)))
    try:
        log.event("STORAGE_UNAVAILABLE", "database unreachable", incident_id="database-outage-short", level=30)
        log.event("STORAGE_RECOVERED", "database reachable again", incident_id="database-outage-short")
        log.event("STORAGE_UNAVAILABLE", "database unreachable", incident_id="database-outage-long", level=30)
        deliveries = webhook.alerts.wait_count(1, timeout=10)
        log.event("FLATTEN_DONE", "sentinel")
        deliveries = webhook.alerts.wait_count(2, timeout=10)
    finally:
        runtime.shutdown()
    assert [d["body"]["incident_id"] for d in deliveries] == ["database-outage-long", deliveries[1]["body"]["incident_id"]]
    assert deliveries[1]["body"]["kind"] == "FLATTEN_DONE"


def test_an_escalation_is_alerted_before_the_process_exits_1(tmp_path: Path, webhook: FakeWebhook) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYBOT_")}
    env.update({"MYBOT_HTTP_MDS_PORT": "0", "MYBOT_HTTP_CONTROL_PORT": "0", "PYTHONPATH": str(ROOT),
                "MYBOT_STORAGE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}", "MYBOT_SECRETS_DIR": str(tmp_path),
                "MYBOT_FEED_SOURCE": "replay", "MYBOT_FEED_REPLAY_PATH": str(tmp_path / "missing.csv"),
                "MYBOT_SUPERVISION_MAX_RESTARTS": "1", "MYBOT_SUPERVISION_BACKOFF_INITIAL_SECONDS": "0.01",
                "MYBOT_ALERTS_WEBHOOK_URL": webhook.url, "MYBOT_ALERTS_WEBHOOK_SECRET": SECRET})
    result = subprocess.run([sys.executable, "-m", "daemon.cli", "run", "--role", "mds"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stdout[-2000:]
    bodies = [d["body"] for d in webhook.alerts.snapshot()]
    exits = [b for b in bodies if b["title"].startswith("mybot exits 1")]
    assert len(exits) == 1 and exits[0]["origin"]["role"] == "mds", bodies
    assert all(d["verified"] for d in webhook.alerts.snapshot())
    assert SECRET not in result.stdout


def test_the_signature_is_hmac_sha256_of_the_raw_body() -> None:
    from actors.alerts.channels import signature

    body = b'{"kind":"KILL_SWITCH"}'
    assert signature("k", body) == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()


def test_a_replay_alerts_nobody() -> None:
    from daemon.replay import _replay_settings

    configured = Settings().replace(alerts={"webhook_url": "http://127.0.0.1:9/hook", "telegram_token": BOT_TOKEN,
                                            "telegram_chat_id": "-1001"})
    replayed = _replay_settings(configured, Path("ticks.csv"), Path("replay.db"), ("NIFTY",)).alerts
    assert (replayed.webhook_url, replayed.telegram_chat_id, bool(replayed.telegram_token)) == ("", "", False)
