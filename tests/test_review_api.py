"""GET /v1/incidents and GET /v1/trades/{pos_id}/story: the live trader answers from its own log file and
database, over real sockets."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pykka
import pytest
import requests

from core.risk import ist_day
from telemetry.logs import configure_logging
from tests.support.trading import TOKEN, TraderHarness, trader_settings

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "trader.log"
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


def test_the_live_trader_tells_its_incidents_and_a_trades_story(pg_url: str, log_file: Path) -> None:
    settings = trader_settings(pg_url, execution={"lot_sizes": {"SEC_49081": 75}}, log={"file": str(log_file)})
    with TraderHarness(settings, prices={"SEC_49081": 100.0}) as harness:
        url = harness.url
        entry = {"pos_id": "STORY-1", "symbol": "SEC_49081", "side": "BUY", "qty": 75, "price": 100.0}
        assert requests.post(f"{url}/v1/trades", json=entry, headers=AUTH, timeout=5).status_code == 202
        harness.wait_state("STORY-1", "POSITION_OPEN")
        for engaged in (True, False):
            assert requests.post(f"{url}/v1/control/kill-switch", json={"engaged": engaged, "reason": "api"},
                                 headers=AUTH, timeout=5).status_code == 200
        assert requests.post(f"{url}/v1/trades/STORY-1/exit", headers=AUTH, timeout=5).status_code == 202
        harness.wait_state("STORY-1", "CLOSED")

        incidents = requests.get(f"{url}/v1/incidents", timeout=10)
        story = requests.get(f"{url}/v1/trades/STORY-1/story", timeout=10)
        unknown = requests.get(f"{url}/v1/trades/NOPE-1/story", timeout=10)
        bad_day = requests.get(f"{url}/v1/incidents", params={"day": "2026-02-31"}, timeout=10)
        bad_format = requests.get(f"{url}/v1/incidents", params={"day": "yesterday"}, timeout=10)
        other_day = requests.get(f"{url}/v1/incidents", params={"day": "2020-01-01"}, timeout=10)

    assert incidents.status_code == 200, incidents.text
    body = incidents.json()
    assert body["day"] == ist_day(harness.clock.now()) and body["log_file"] == str(log_file)
    (kill,) = [i for i in body["incidents"] if i["kind"] == "KILL_SWITCH"]
    assert kill["id"].startswith("kill-switch-") and kill["ended_by"] == "KILL_SWITCH_RELEASED"
    assert body["by_kind"] == {"KILL_SWITCH": 1} and body["inputs"]["garbled"] == 0

    assert story.status_code == 200, story.text
    told = story.json()
    assert told["story"]["state"] == "CLOSED" and told["story"]["complete"], told["story"]["missing"]
    assert [o["leg"] for o in told["story"]["orders"]] == ["ENTRY", "EXIT"]
    assert "ORDER_UPDATE" in [s["event"] for s in told["story"]["steps"]]
    assert told["trade"]["state"] == "CLOSED"
    assert [e["log_name"] for e in told["timeline"]][:4] == ["ENTRY_SIGNAL", "ENTRY_REQUESTED", "ORDER_PLACED",
                                                            "ORDER_FILLED"]
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown trade"
    assert bad_day.status_code == 400 and bad_day.json()["param"] == "day"
    assert bad_format.status_code == 400 and bad_format.json()["param"] == "day"
    assert other_day.status_code == 200 and other_day.json()["incidents"] == []


def test_without_a_log_file_the_review_endpoints_say_which_setting_is_missing(pg_url: str) -> None:
    with TraderHarness(trader_settings(pg_url)) as harness:
        incidents = requests.get(f"{harness.url}/v1/incidents", timeout=5)
        story = requests.get(f"{harness.url}/v1/trades/ANY-1/story", timeout=5)
        bad_pos_id = requests.get(f"{harness.url}/v1/trades/{'x' * 80}/story", timeout=5)
    for answer in (incidents, story):
        assert answer.status_code == 409
        assert answer.json()["param"] == "log.file" and "log.file" in answer.json()["detail"]
    assert bad_pos_id.status_code == 400 and bad_pos_id.json()["param"] == "pos_id"
