"""The ids that link log lines (issue 11, "Linking log lines"): every line names its process, an incident's
opening and closing lines share an id, and the lines about a trade carry its pos_id, correlation id,
order id and leg, as written by the real parts."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pykka
import pytest
import requests

from supervision.actor import SupervisedActor
from supervision.supervisor import ChildLink, ChildSpec, SupervisorHandle, start_root, stop_root
from telemetry.logs import configure_logging, get_logger, incident_id, set_process_context
from tests.support.trading import TOKEN, TraderHarness, eventually, trader_settings

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "mybot.log"
    with open(os.devnull, "w") as devnull:
        configure_logging("INFO", str(path), stream=devnull)
        try:
            yield path
        finally:
            root = logging.getLogger()
            for handler in list(root.handlers):
                root.removeHandler(handler)
                handler.close()
            pykka.ActorRegistry.stop_all()


def test_every_line_names_its_process_and_a_field_the_line_sets_itself_wins() -> None:
    out = io.StringIO()
    configure_logging("INFO", stream=out)
    try:
        set_process_context(role="trader")
        get_logger("mybot.test").event("SOMETHING", "one")
        get_logger("mybot.test").event("RUNTIME_STARTED", "two", pid=4242)
    finally:
        set_process_context(role=None)
        for handler in list(logging.getLogger().handlers):
            logging.getLogger().removeHandler(handler)
    first, second = (orjson.loads(line) for line in out.getvalue().splitlines())
    assert (first["pid"], first["role"]) == (os.getpid(), "trader")
    assert (second["pid"], second["role"]) == (4242, "trader")


def test_an_incident_id_depends_only_on_kind_subject_and_start() -> None:
    one = incident_id("KILL_SWITCH", "2026-11-20", 1795000000.1234)
    assert one == incident_id("KILL_SWITCH", "2026-11-20", 1795000000.1234)
    assert one.startswith("kill-switch-") and len(one) == len("kill-switch-") + 10
    assert one != incident_id("KILL_SWITCH", "2026-11-20", 1795000000.2)
    assert one != incident_id("LOSS_LIMIT_HALT", "2026-11-20", 1795000000.1234)


class _Crashes(SupervisedActor):
    def __init__(self, link: ChildLink) -> None:
        super().__init__(link)

    def receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError("boom")
        return message


def test_a_crash_and_its_restart_share_an_incident_id_and_carry_the_childs_fields(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    spec = ChildSpec("trade:LINK-1", lambda link: _Crashes.start(link), log_fields=(("pos_id", "LINK-1"),))
    root = start_root(SupervisorHandle("root", [spec]), lambda reason: None)
    try:
        root.handle("trade:LINK-1").tell("crash")
        eventually(lambda: any(getattr(r, "event", "") == "ACTOR_RESTARTED" for r in caplog.records),
                   message="the restart")
        assert root.handle("trade:LINK-1").ask("ping") == "ping"
    finally:
        assert stop_root(root, timeout=5)
    by_event = {getattr(r, "event", ""): r for r in caplog.records}
    crashed, dead, restarted = by_event["ACTOR_CRASHED"], by_event["DEAD_LETTER"], by_event["ACTOR_RESTARTED"]
    assert crashed.incident_id and crashed.incident_id == restarted.incident_id  # type: ignore[attr-defined]
    assert dead.crash_incident_id == crashed.incident_id  # type: ignore[attr-defined]
    for record in (crashed, dead, restarted):
        assert (record.actor, record.pos_id, record.supervisor) == ("trade:LINK-1", "LINK-1", "root")  # type: ignore[attr-defined]
    started = [r for r in caplog.records if getattr(r, "event", "") == "ACTOR_STARTED"]
    assert started and not hasattr(started[0], "pos_id")  # a routine start is not part of the trade's story


def test_a_real_traders_lines_carry_the_ids_that_link_them(pg_url: str, log_file: Path) -> None:
    settings = trader_settings(pg_url, execution={"lot_sizes": {"SEC_49081": 75}})
    with TraderHarness(settings, prices={"SEC_49081": 100.0}) as harness:
        url = harness.url
        entry = {"pos_id": "LINK-1", "symbol": "SEC_49081", "side": "BUY", "qty": 75, "price": 100.0}
        assert requests.post(f"{url}/v1/trades", json=entry, headers=AUTH, timeout=5).status_code == 202
        harness.wait_state("LINK-1", "POSITION_OPEN")
        assert requests.post(f"{url}/v1/control/kill-switch", json={"engaged": True, "reason": "linking"},
                             headers=AUTH, timeout=5).status_code == 200
        assert requests.post(f"{url}/v1/trades/LINK-1/exit", json={}, headers=AUTH, timeout=5).status_code == 202
        harness.wait_state("LINK-1", "CLOSED")
        assert requests.post(f"{url}/v1/actors/timeout-monitor/restart", headers=AUTH, timeout=5).status_code == 200
        eventually(lambda: "ACTOR_RESTARTED" in log_file.read_text(), message="the operator's restart")
        timeline = requests.get(f"{url}/v1/trades/LINK-1", timeout=5).json()["timeline"]
    assert [e["log_name"] for e in timeline] == ["ENTRY_SIGNAL", "ENTRY_REQUESTED", "ORDER_PLACED", "ORDER_FILLED",
                                                 "EXIT_SIGNAL", "ORDER_PLACED", "ORDER_FILLED"]
    with TraderHarness(settings, prices={"SEC_49081": 100.0}) as again:  # the next process releases it
        assert requests.post(f"{again.url}/v1/control/kill-switch", json={"engaged": False}, headers=AUTH,
                             timeout=5).status_code == 200

    lines = _lines(log_file)
    assert all(line["pid"] == os.getpid() for line in lines)
    assert all(line["role"] == "trader" for line in lines if line["event"] != "RUNTIME_STARTING")
    updates = [line for line in lines if line["event"] == "ORDER_UPDATE"]
    assert {u["pos_id"] for u in updates} == {"LINK-1"} and {"TRADED"} <= {u["status"] for u in updates}
    assert all({"correlation_id", "order_id", "filled_qty", "avg_price", "broker_at"} <= set(u) for u in updates)
    accepted = [line for line in lines if line["event"] == "PAPER_ORDER_ACCEPTED"]
    assert [(a["pos_id"], a["leg"]) for a in accepted] == [("LINK-1", "ENTRY"), ("LINK-1", "EXIT")]
    (closed,) = [line for line in lines if line["event"] == "TRADE_CLOSED"]
    assert closed["avg_entry_price"] > 0 and closed["avg_exit_price"] > 0
    assert 0 < closed["opened_at"] <= closed["closed_at"]
    engaged, released = ([line for line in lines if line["event"] == name][0]
                         for name in ("KILL_SWITCH_ENGAGED", "KILL_SWITCH_RELEASED"))
    assert engaged["incident_id"] and engaged["incident_id"] == released["incident_id"]  # across two processes
    requested, restarted = ([line for line in lines if line["event"] == name and line.get("child") == "timeout-monitor"]
                            for name in ("ACTOR_RESTART_REQUESTED", "ACTOR_RESTARTED"))
    assert requested[0]["incident_id"] == restarted[-1]["incident_id"]
    assert restarted[-1]["actor"] == "timeout-monitor" and restarted[-1]["supervisor"] == "trading"
