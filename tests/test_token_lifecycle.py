"""The Dhan access token's life: expiry read at start, renewal (RenewToken, TOTP) swapped into REST, the market
feed and the order-update socket without a restart, written back to its file; an expired token with no way
to renew it denies entries, keeps attempting exits, turns health 503 and never crash-loops.

Real runtime, the real dhanhq SDK, the fake Dhan over real sockets (tests/fakedhan)."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from actors.clock import SystemClock
from actors.dhan.token import RenewalFailed, TokenRenewer, TokenState, find_token_file
from actors.dhan.token_keeper import TokenKeeper
from config.settings import Settings
from core.token import TokenPhase, read_claims, token_phase, totp_code
from daemon.runtime import Runtime, Wiring
from supervision.scheduler import Scheduler
from tests.fakedhan import FakeDhan, totp, unsigned_jwt
from tests.support.clock import SteppedClock
from tests.support.trading import entry_signal, exit_signal, trader_settings
from tests.support.waiting import eventually

CLIENT = "1000000001"
ROOT = Path(__file__).resolve().parent.parent


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", "") == name]


def health(runtime: Runtime) -> tuple[int, dict[str, Any]]:
    url = next(s.url for s in runtime.servers if s.name == "control")
    try:
        with urllib.request.urlopen(f"{url}/v1/health", timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


# -- pure: phases and TOTP -----------------------------------------------------------------------------------

def test_a_token_is_valid_then_expiring_then_due_for_renewal_then_expired() -> None:
    claims = read_claims(unsigned_jwt(CLIENT, 10_000.0, 0.0))
    phase = [token_phase(claims, 10_000.0 - left, warn_before=3600, renew_before=1800)
             for left in (5000, 3600, 1801, 1800, 1, 0, -5)]
    assert phase == [TokenPhase.VALID, TokenPhase.EXPIRING, TokenPhase.EXPIRING, TokenPhase.RENEW_DUE,
                     TokenPhase.RENEW_DUE, TokenPhase.EXPIRED, TokenPhase.EXPIRED]
    assert token_phase(None, 0.0, warn_before=3600, renew_before=1800) == TokenPhase.UNKNOWN


def test_totp_codes_match_rfc_6238_and_the_fake_dhan() -> None:
    secret = base64.b32encode(b"12345678901234567890").decode()  # RFC 6238 appendix B, SHA1
    assert [totp_code(secret, t, digits=8) for t in (59, 1111111109, 1234567890, 2000000000)] == \
        ["94287082", "07081804", "89005924", "69279037"]
    assert totp_code("jbsw y3dp ehpk 3pxp", 1_795_000_000) == totp("JBSWY3DPEHPK3PXP", 1_795_000_000)


def test_a_totp_login_needs_both_files_and_they_must_be_readable(tmp_path: Path) -> None:
    from config.settings import ConfigError

    with pytest.raises(ConfigError) as half:
        Settings().replace(dhan={"pin_file": str(tmp_path / "missing-pin.txt")})
    assert half.value.problems == ["dhan.totp_secret_file: required with dhan.pin_file",
                                   f"dhan.pin_file: {tmp_path / 'missing-pin.txt'} is not a readable file"]
    (tmp_path / "totp.txt").write_text("JBSWY3DPEHPK3PXP")
    (tmp_path / "pin.txt").write_text("123456")
    both = Settings().replace(dhan={"totp_secret_file": str(tmp_path / "totp.txt"), "pin_file": str(tmp_path / "pin.txt")})
    assert both.dhan.totp_secret_file.endswith("totp.txt")


# -- writing the token back -------------------------------------------------------------------------------------

def test_a_renewed_token_is_written_back_atomically_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "dhan_access_token.txt"
    path.write_text("old-token\n")
    path.chmod(0o644)
    found = find_token_file(str(tmp_path), "old-token")
    assert found is not None and found.path == path and not found.changed()
    assert find_token_file(str(tmp_path), "a-token-from-the-environment") is None
    found.write("new-token")
    assert path.read_text() == "new-token\n" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dhan_access_token.txt"]  # no temp file left
    assert not found.changed()
    path.write_text("from-the-operator\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert found.changed() and found.read() == "from-the-operator"


# -- the renewal calls against the fake Dhan -------------------------------------------------------------------

@pytest.mark.parametrize("field", ["token", "accessToken"])
def test_renew_token_answers_a_new_token_in_either_field_and_the_old_one_stops_working(field: str) -> None:
    with FakeDhan(access_token=unsigned_jwt(CLIENT, time.time() + 3600), renew_field=field) as fake:
        renewer = TokenRenewer(Settings().replace(dhan=fake.dhan_settings()))
        new = renewer.renew(fake.access_token)
        assert new != fake.access_token and read_claims(new).client_id == CLIENT
        assert fake.tokens.check(fake.access_token) == "revoked" and fake.tokens.check(new) is None
        with pytest.raises(RenewalFailed) as refused:
            renewer.renew(fake.access_token)  # the old token cannot renew again
        assert "401" in str(refused.value) and fake.access_token not in str(refused.value)


def test_the_totp_login_generates_a_token_and_a_wrong_pin_is_refused_without_echoing_secrets(
        tmp_path: Path) -> None:
    with FakeDhan(access_token=unsigned_jwt(CLIENT, time.time() - 60)) as fake:
        (tmp_path / "totp.txt").write_text(fake.tokens.totp_secret + "\n")
        (tmp_path / "pin.txt").write_text(fake.tokens.pin)
        settings = Settings().replace(dhan=fake.dhan_settings(
            auth_base_url=fake.rest.root_url, totp_secret_file=str(tmp_path / "totp.txt"),
            pin_file=str(tmp_path / "pin.txt")))
        token = TokenRenewer(settings).login()
        assert fake.tokens.check(token) is None and fake.tokens.logins == 1
        (tmp_path / "pin.txt").write_text("999999")
        with pytest.raises(RenewalFailed) as refused:
            TokenRenewer(settings).login()
        assert "401" in str(refused.value) and "999999" not in str(refused.value)


def test_an_expired_token_is_replaced_by_a_totp_login_by_the_keeper(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with FakeDhan(access_token=unsigned_jwt(CLIENT, time.time() - 60)) as fake:
        (tmp_path / "totp.txt").write_text(fake.tokens.totp_secret)
        (tmp_path / "pin.txt").write_text(fake.tokens.pin)
        settings = Settings().replace(dhan=fake.dhan_settings(
            auth_base_url=fake.rest.root_url, totp_secret_file=str(tmp_path / "totp.txt"),
            pin_file=str(tmp_path / "pin.txt"), auto_renew_token=True, token_check_seconds=0.1))
        state = TokenState(CLIENT, fake.access_token)
        assert state.entry_hold() is not None  # expired: entries held from the first look
        swapped: list[str] = []
        state.subscribe(swapped.append)
        ref = TokenKeeper.start(None, state, TokenRenewer(settings), settings.dhan, SystemClock(),
                                Scheduler.shared(), None)
        try:
            eventually(lambda: swapped, 5.0, message="a token generated by TOTP")
        finally:
            ref.stop()
        assert swapped == [state.current()] and fake.tokens.check(state.current()) is None
        assert state.entry_hold() is None and state.health()[0]
        renewed = events(caplog, "TOKEN_RENEWED")
        assert [r.how for r in renewed] == ["TOTP"]  # RenewToken needs a token that still works: not tried
        assert not fake.rest.requests_to("/RenewToken") and not events(caplog, "BROKER_AUTH_EXPIRED")


# -- the running system -------------------------------------------------------------------------------------

def dhan_runtime(fake: FakeDhan, tmp_path: Path, clock: Any = None, **dhan: Any) -> Runtime:
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    token_file = secrets / "dhan_access_token.txt"
    token_file.write_text(fake.access_token + "\n")
    token_file.chmod(0o644)
    settings = trader_settings(
        f"sqlite:///{tmp_path / 'mybot.db'}", dhan=fake.dhan_settings(token_check_seconds=0.1, **dhan),
        feed={"source": "dhan", "symbols": ["NIFTY"], "stale_seconds": 30.0, "rest_fallback": False,
              "reconnect_initial_seconds": 0.05, "reconnect_max_seconds": 0.2},
        broker={"kind": "dhan", "order_burst": 5}, option_chain={"underlyings": []},
    ).replace(secrets_dir=str(secrets))
    runtime = Runtime(settings, "all", clock=clock, wiring=Wiring(subtrees=frozenset({"market_data", "trading"})))
    runtime.start()
    assert runtime.trading is not None and runtime.trading.ready.wait(10.0), "start-up reconciliation"
    assert fake.feed.wait_for_subscriptions(1) and fake.order_updates.wait_for_logins(1)
    return runtime


def place_and_fill(fake: FakeDhan, runtime: Runtime, pos_id: str) -> str:
    """An entry through the trading desk, filled at Dhan (the fake fills orders by itself); returns the token
    its order was sent with."""
    assert runtime.trading is not None
    before = len(fake.rest.requests_to("/orders", "POST"))
    assert runtime.trading.desk.tell(entry_signal(pos_id, symbol="SEC_49081", qty=75, price=100.0))
    post = eventually(lambda: fake.rest.requests_to("/orders", "POST")[before:], 5.0, message=f"{pos_id} sent")[0]
    storage = runtime.storage
    eventually(lambda: (t := storage.trades.get_trade(pos_id)) and t.state == "POSITION_OPEN", 5.0,
               message=f"{pos_id} open")
    return post.headers["access-token"]


def test_a_token_renewed_before_expiry_is_swapped_into_rest_the_feed_and_the_order_socket_without_a_restart(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = SteppedClock()
    with FakeDhan(access_token=unsigned_jwt(CLIENT, time.time() + 7200)) as fake:
        old = fake.access_token
        runtime = dhan_runtime(fake, tmp_path, clock, auto_renew_token=True)
        try:
            market = runtime.market_data
            assert market is not None
            assert events(caplog, "TOKEN_EXPIRES_AT") and fake.tokens.renewals == 0  # 2 h left: nothing due
            assert not events(caplog, "TOKEN_EXPIRING")
            assert place_and_fill(fake, runtime, "TOK-BEFORE") == old

            clock.jump(7200 - 20 * 60)  # 20 minutes before expiry: past the 60 min warning and 30 min renewal
            eventually(lambda: events(caplog, "TOKEN_PERSISTED"), 5.0, message="renewed and written back")
            assert fake.tokens.renewals == 1
            new = fake.tokens.current
            assert new != old and fake.tokens.check(old) == "revoked"
            assert [r.event for r in caplog.records if getattr(r, "event", "") in
                    ("TOKEN_EXPIRING", "TOKEN_RENEWED", "TOKEN_PERSISTED")] == \
                ["TOKEN_EXPIRING", "TOKEN_RENEWED", "TOKEN_PERSISTED"]
            token_file = tmp_path / "secrets" / "dhan_access_token.txt"
            assert token_file.read_text() == new + "\n" and stat.S_IMODE(token_file.stat().st_mode) == 0o600

            # The feed dials again with the new token, and ticks flow on it.
            eventually(lambda: any(f"token={new}" in p for p in fake.feed.connect_paths), 5.0,
                       message="the feed reconnected with the new token")
            eventually(lambda: fake.feed.push_tick(13, 24_321.5) == 1, 5.0, message="the new feed connection")
            eventually(lambda: (q := market.cache.quote("NIFTY")) and q[0] == 24_321.5, 5.0, message="a tick")
            # The order-update socket logs in again with it; orders go on with it.
            eventually(lambda: any(login["LoginReq"]["Token"] == new for login in fake.order_updates.logins), 5.0,
                       message="the order-update socket logged in with the new token")
            assert place_and_fill(fake, runtime, "TOK-AFTER") == new
            assert runtime.escalation is None
            assert not events(caplog, "ACTOR_CRASHED") and not events(caplog, "ACTOR_RESTARTED")
            assert not events(caplog, "TOKEN_REJECTED") and not events(caplog, "BROKER_AUTH_EXPIRED")
            status, body = health(runtime)
            assert body["checks"]["broker_auth"]["ok"] and body["checks"]["broker_auth"]["renewals"] == 1
        finally:
            runtime.shutdown()


def test_an_expired_token_with_no_way_to_renew_denies_entries_keeps_exiting_and_never_crash_loops(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with FakeDhan(access_token=unsigned_jwt(CLIENT, time.time() + 3600)) as fake:
        runtime = dhan_runtime(fake, tmp_path)  # no auto-renew, no TOTP
        try:
            trading = runtime.trading
            assert trading is not None
            place_and_fill(fake, runtime, "TOK-OPEN")

            fake.tokens.expire(fake.access_token)  # Dhan drops it: feed 807, REST 401 DH-901
            eventually(lambda: events(caplog, "BROKER_AUTH_EXPIRED"), 5.0, message="BROKER_AUTH_EXPIRED")
            status, body = health(runtime)
            assert status == 503 and "broker_auth" in body["failing"]
            assert body["checks"]["broker_auth"]["error"].startswith("BROKER_AUTH_EXPIRED: the access token was "
                                                                     "refused by Dhan")

            # Entries are denied, by the risk guard, naming it.
            assert trading.desk.tell(entry_signal("TOK-DENIED", symbol="SEC_49081", qty=75, price=100.0))
            storage = runtime.storage
            eventually(lambda: (t := storage.trades.get_trade("TOK-DENIED")) and t.state == "DENIED", 5.0,
                       message="the entry denied")
            denial = [e for e in storage.trades.events("TOK-DENIED") if e.event == "EntryDenied"][0]
            assert denial.payload["reason"].startswith("BROKER_AUTH_EXPIRED: BROKER_AUTH_EXPIRED:")

            # Exits are still attempted: each refused at Dhan (401), asked again.
            sent = len(fake.rest.requests_to("/orders", "POST"))
            assert trading.desk.tell(exit_signal("TOK-OPEN"))
            eventually(lambda: len([r for r in fake.rest.requests_to("/orders", "POST")[sent:] if r.status == 401])
                       >= 2, 10.0, message="the exit attempted again after a refusal")
            assert storage.trades.get_trade("TOK-OPEN").state == "EXIT_PENDING"  # type: ignore[union-attr]

            # No crash loop: the feed waits for a token, nothing restarts, one incident.
            market = runtime.market_data
            assert market is not None
            later = market.feed_state.checks + 3
            eventually(lambda: market.feed_state.checks >= later, 10.0, message="three feed checks")
            assert runtime.escalation is None and events(caplog, "FEED_WAITING_FOR_TOKEN")
            assert not events(caplog, "ACTOR_CRASHED") and not events(caplog, "ACTOR_RESTARTED")
            assert len(events(caplog, "BROKER_AUTH_EXPIRED")) == 1

            # An operator puts a new token in the file: picked up, no restart; the exit goes through.
            fresh = fake.tokens.issue()
            (tmp_path / "secrets" / "dhan_access_token.txt").write_text(fresh + "\n")
            eventually(lambda: events(caplog, "TOKEN_RELOADED"), 5.0, message="the new token picked up")
            eventually(lambda: health(runtime)[0] == 200, 10.0, message="health back to 200")
            exit_post = eventually(lambda: [r for r in fake.rest.requests_to("/orders", "POST")[sent:]
                                            if r.status == 200], 15.0, message="the exit placed")[0]
            assert exit_post.headers["access-token"] == fresh
            eventually(lambda: (t := storage.trades.get_trade("TOK-OPEN")) and t.state == "CLOSED", 5.0,
                       message="the position closed")
            assert runtime.escalation is None
        finally:
            runtime.shutdown()


def test_a_token_already_expired_at_start_is_an_incident_not_a_crash_loop(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with FakeDhan(access_token=unsigned_jwt(CLIENT, time.time() - 60)) as fake:
        settings = Settings().replace(
            storage={"url": f"sqlite:///{tmp_path / 'mds.db'}"}, http={"mds_port": 0, "control_port": 0},
            dhan=fake.dhan_settings(token_check_seconds=0.1, auto_renew_token=True),  # too late to renew
            feed={"source": "dhan", "symbols": ["NIFTY"], "rest_fallback": False,
                  "reconnect_initial_seconds": 0.05, "reconnect_max_seconds": 0.2},
            option_chain={"underlyings": []}, calendar={"enabled": False},
            supervision={"backoff_initial_seconds": 0.02, "backoff_max_seconds": 0.2})
        runtime = Runtime(settings, "mds").start()
        try:
            market = runtime.market_data
            assert market is not None
            eventually(lambda: events(caplog, "BROKER_AUTH_EXPIRED"), 5.0, message="BROKER_AUTH_EXPIRED")
            eventually(lambda: events(caplog, "FEED_WAITING_FOR_TOKEN"), 5.0, message="the feed waits")
            dials = len(fake.feed.connect_paths)
            later = market.feed_state.checks + 3
            eventually(lambda: market.feed_state.checks >= later, 10.0, message="three feed checks")
            status, body = health(runtime)
            assert status == 503 and body["checks"]["broker_auth"]["error"].startswith(
                "BROKER_AUTH_EXPIRED: the access token expired at ")
            assert runtime.escalation is None and not events(caplog, "ACTOR_CRASHED")
            assert len(events(caplog, "BROKER_AUTH_EXPIRED")) == 1 and not fake.rest.requests_to("/RenewToken")
            assert len(fake.feed.connect_paths) == dials  # refused, then waiting: no reconnect storm
        finally:
            runtime.shutdown()


# -- mybot dhan token ----------------------------------------------------------------------------------------------

def run_cli(tmp_path: Path, token: str) -> subprocess.CompletedProcess[str]:
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "dhan_access_token.txt").write_text(token)
    (secrets / "dhan_client_id.txt").write_text(CLIENT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYBOT_")}
    env["MYBOT_SECRETS_DIR"] = str(secrets)
    return subprocess.run([sys.executable, "-m", "daemon.cli", "dhan", "token"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_mybot_dhan_token_prints_the_expiry(tmp_path: Path) -> None:
    valid = run_cli(tmp_path, unsigned_jwt(CLIENT, 1_795_000_000 + 10 ** 7, 1_795_000_000))
    assert valid.returncode == 0, valid.stderr
    assert valid.stdout.startswith("Dhan access token expires at 2027-03-") and "valid for" in valid.stdout
    expired = run_cli(tmp_path, unsigned_jwt(CLIENT, 1_700_000_000, 1_699_900_000))
    assert expired.returncode == 1 and "2023-11-15T03:43:20+05:30 (EXPIRED" in expired.stdout
    garbage = run_cli(tmp_path, "not-a-jwt")
    assert garbage.returncode == 2 and "not a JWT" in garbage.stderr and "not-a-jwt" not in garbage.stderr
