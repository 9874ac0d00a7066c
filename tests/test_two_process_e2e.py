"""Server A and Server B as two processes: `mybot run --role mds` replays a feed, `mybot run --role trader`
in MDS client mode (MARKET_DATA_PROVIDER=mds) turns the MDS's candles into signals, over HTTP and, when
Redis is configured, from the candles the MDS pushes."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.daemon import Daemon
from tests.support.series import trend_ticks, write_ticks

MDS_CONFIG = """
[feed]
source = "replay"
replay_speed = 3000.0
symbols = ["NIFTY"]
[option_chain]
underlyings = []
"""

TRADER_CONFIG = """
[feed]
symbols = ["NIFTY"]
[strategy]
timeframes = [60]
entry_max_candle_age_seconds = 0.0
[strategy.timeframe_weights]
"60" = 1.0
[calendar]
enabled = false
[risk]
session_start = "00:00"
session_end = "24:00"
square_off_time = "24:00"
[market_data]
provider = "mds"
candle_poll_seconds = {poll}
candle_fetch_delay_seconds = 0.0
[option_chain]
underlyings = []
"""


def run_pair(tmp_path: Path, poll_seconds: float, **shared_env: str) -> tuple[Daemon, Daemon]:
    """Start the MDS on a FIFO (its replay waits for data), then the trader; feed the FIFO once the
    trader made its first fetch, so every candle is live for it."""
    fifo = tmp_path / "ticks.fifo"
    os.mkfifo(fifo)
    mds = Daemon(tmp_path, "mds", MDS_CONFIG, "mds", MYBOT_FEED_REPLAY_PATH=str(fifo), **shared_env)
    trader: Daemon | None = None
    try:
        mds_port = mds.port("mds")
        trader = Daemon(tmp_path, "trader", TRADER_CONFIG.format(poll=poll_seconds), "trader",
                        MDS_BASE_URL=f"http://127.0.0.1:{mds_port}/v1", **shared_env)
        trader.event("STRATEGY_WARMED", symbol="NIFTY", candles=0)  # first fetch done: the MDS has nothing yet
        write_ticks(fifo, trend_ticks())  # blocks until the MDS's replay opens it; EOF ends the replay
    except BaseException:
        for daemon in (trader, mds):
            if daemon is not None:
                daemon.stop()
        raise
    return mds, trader


def entry_then_exit(trader: Daemon) -> tuple[dict[str, Any], dict[str, Any]]:
    entry = trader.event("ENTRY_SIGNAL", timeout=30)
    exit_ = trader.event("EXIT_SIGNAL", timeout=30)
    assert entry["direction"] == 1 and entry["symbol"] == "NIFTY" and entry["side"] == "BUY"
    assert exit_["pos_id"] == entry["pos_id"] and exit_["reason"] == "EXIT_SCORE"
    assert exit_["candle_ts"] > entry["candle_ts"]
    assert "60s.rsi" in entry["score"]["components"]  # explainable: the score's components are logged
    return entry, exit_


def trader_status(trader: Daemon) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{trader.port('control')}/v1/status", timeout=5) as resp:
        return json.load(resp)  # type: ignore[no-any-return]


def test_the_trader_signals_from_the_mds_candles_over_http(tmp_path: Path) -> None:
    mds, trader = run_pair(tmp_path, poll_seconds=0.2)
    try:
        entry, _ = entry_then_exit(trader)
        client = trader_status(trader)["mds_client"]
        assert client["candles_fetched"] > 90 and client["candles_pushed"] == 0  # the exit came at minute ~96
        assert not client["redis_subscribed"]
        # Quotes come from /v1/quote: the paper broker fills the entry without Redis or Dhan.
        trader.event("ORDER_FILLED", pos_id=entry["pos_id"])
        assert not [line for line in trader.lines if line.get("logger", "").startswith("mybot.dhan")]
    finally:
        assert trader.stop() == 0
        assert mds.stop() == 0


def test_the_trader_signals_from_candles_the_mds_pushes_over_redis(tmp_path: Path, redis_url: str,
                                                                   redis_prefix: str) -> None:
    # HTTP only for the start-up fetch and gaps (its minute poll is far off): the candles come pushed.
    mds, trader = run_pair(tmp_path, poll_seconds=60.0, MYBOT_STORAGE_REDIS_URL=redis_url,
                           MYBOT_STORAGE_REDIS_PREFIX=redis_prefix)
    try:
        entry, _ = entry_then_exit(trader)
        client = trader_status(trader)["mds_client"]
        assert client["redis_subscribed"] and client["candles_pushed"] > 50
        # Quotes reach the paper broker through Redis too: the entry is filled.
        trader.event("ORDER_FILLED", pos_id=entry["pos_id"])
    finally:
        assert trader.stop() == 0
        assert mds.stop() == 0
