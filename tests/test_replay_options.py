"""Replay trades what live would trade: every symbol of the file, recorded option chains, charges, a
deterministic summary (wall-clock figures apart)."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from actors.clock import VirtualClock
from actors.sources.chains import RecordedChains, chains_path_for
from config.reference import rate_table
from config.settings import load_settings
from core.charges import fill_charges
from core.market import IST
from daemon.replay import run_replay
from daemon.runtime import Runtime
from telemetry.logs import configure_logging
from tests.support.series import replay_settings, trend_ticks, write_ticks
from tests.support.waiting import eventually

EXPIRY = "2026-11-26"
STEP = 50


@pytest.fixture(autouse=True)
def quiet_logs() -> None:
    configure_logging("WARNING")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def security_id(strike: int, option_type: str) -> int:
    return 40_000 + (strike // STEP) * 2 + (0 if option_type == "CE" else 1)


def chain_at(spot: float) -> dict[str, Any]:
    """A chain around `spot` (strikes every 50; premium = intrinsic value + 80), Dhan's shape."""
    atm = round(spot / STEP) * STEP
    oc = {}
    for strike in range(atm - 5 * STEP, atm + 6 * STEP, STEP):
        oc[f"{strike:.6f}"] = {
            "ce": {"last_price": round(max(0.0, spot - strike) + 80.0, 2), "security_id": security_id(strike, "CE")},
            "pe": {"last_price": round(max(0.0, strike - spot) + 80.0, 2), "security_id": security_id(strike, "PE")}}
    return {"last_price": spot, "oc": oc}


def record_chains(path: Path, ticks: list[tuple[float, str, float]]) -> list[tuple[float, dict[str, Any]]]:
    """One snapshot 5 s into every minute of the ticks (as a poller would have fetched them)."""
    snapshots = []
    first, last = int(ticks[0][0] // 60) * 60, int(ticks[-1][0] // 60) * 60
    for minute in range(first, last + 60, 60):
        at = minute + 5.0
        spot = [price for ts, _, price in ticks if ts <= at][-1]
        snapshots.append((at, chain_at(spot)))
    with open(path, "wb") as handle:
        for at, payload in snapshots:
            handle.write(orjson.dumps({"at": at, "symbol": "NIFTY", "expiry": EXPIRY, "payload": payload}) + b"\n")
    return snapshots


def price_in(snapshots: list[tuple[float, dict[str, Any]]], symbol: str, at: float) -> float:
    payload = [p for t, p in snapshots if t <= at][-1]
    sid = int(symbol.removeprefix("SEC_"))
    return next(leg["last_price"] for legs in payload["oc"].values() for leg in legs.values()
                if leg["security_id"] == sid)


def test_a_replay_with_recorded_chains_trades_option_contracts_net_of_charges_byte_identically(
        tmp_path: Path) -> None:
    ticks = trend_ticks()
    tick_file = write_ticks(tmp_path / "day.csv", ticks)
    snapshots = record_chains(tmp_path / "chains.jsonl", ticks)
    # The day's contracts have expired since: the shipped master does not know them, the operator's lot sizes do.
    lots = {f"SEC_{leg['security_id']}": 75 for _, payload in snapshots for legs in payload["oc"].values()
            for leg in legs.values()}
    settings = replay_settings(execution={"lot_sizes": lots})
    first = run_replay(settings, tick_file, tmp_path / "a", chains_path=tmp_path / "chains.jsonl")
    second = run_replay(settings, tick_file, tmp_path / "b", chains_path=tmp_path / "chains.jsonl")
    for name in ("signals.jsonl", "trades.jsonl", "summary.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name

    entries = [r for r in read_jsonl(tmp_path / "a" / "signals.jsonl") if r["kind"] == "ENTRY_SIGNAL"]
    assert entries and all(e["instrument"].startswith("SEC_") for e in entries)
    assert [(e["direction"], e["option_type"]) for e in entries] == [(1, "CE"), (-1, "PE")]  # up, then down
    trades = read_jsonl(tmp_path / "a" / "trades.jsonl")
    closed = [t for t in trades if t["state"] == "CLOSED"]
    assert closed and all(t["symbol"].startswith("SEC_") for t in trades)
    rates = rate_table(settings.charges)
    for trade in closed:
        entry = next(e for e in entries if e["pos_id"] == trade["pos_id"])
        # Filled at the recorded premium of that contract at the deciding candle's close.
        assert trade["entry_price"] == price_in(snapshots, trade["symbol"], entry["at"]) == entry["price"]
        by_hand = (fill_charges(rates, side="BUY", qty=trade["qty"], price=trade["entry_price"], day="2026-11-20")
                   + fill_charges(rates, side="SELL", qty=trade["qty"], price=trade["exit_price"], day="2026-11-20"))
        assert trade["charges"] == round(by_hand.total, 2) > 40.0  # two brokerages alone are Rs 40 + GST
        assert trade["gross_pnl"] == pytest.approx((trade["exit_price"] - trade["entry_price"]) * trade["qty"])
        assert trade["net_pnl"] == pytest.approx(trade["gross_pnl"] - trade["charges"])

    summary = orjson.loads((tmp_path / "a" / "summary.json").read_bytes())
    assert summary["gross_pnl"] == round(sum(t["gross_pnl"] for t in closed), 2)
    assert summary["charges"] == round(sum(t["charges"] for t in closed), 2)
    assert summary["net_pnl"] == summary["pnl"] == pytest.approx(summary["gross_pnl"] - summary["charges"], abs=0.01)
    assert summary["chains"] == {"file": "chains.jsonl", "snapshots": len(snapshots), "underlyings": ["NIFTY"],
                                 "bad_lines": 0}
    assert summary["ticks_by_symbol"] == {"NIFTY": len(ticks)} and summary["ignored"]["ticks"] == 0
    assert "elapsed_seconds" not in summary and "out_dir" not in summary
    timing = json.loads((tmp_path / "a" / "timing.json").read_text())
    assert timing["elapsed_seconds"] > 0 and timing["out_dir"] == str(tmp_path / "a")
    assert first["elapsed_seconds"] == timing["elapsed_seconds"] and second["net_pnl"] == first["net_pnl"]


def test_without_chains_an_index_signal_trades_index_points_and_pays_no_charges(tmp_path: Path) -> None:
    tick_file = write_ticks(tmp_path / "day.csv", trend_ticks())
    summary = run_replay(replay_settings(), tick_file, tmp_path / "out")
    trades = read_jsonl(tmp_path / "out" / "trades.jsonl")
    assert trades and all(t["symbol"] == "NIFTY" and t["charges"] == 0.0 for t in trades)
    assert summary["chains"] is None and summary["charges"] == 0.0 and summary["net_pnl"] == summary["gross_pnl"]


def test_every_symbol_in_the_file_is_replayed_unless_symbols_narrows_it_and_the_rest_is_counted(
        tmp_path: Path) -> None:
    rows = [*trend_ticks("NIFTY", warm=10, up=0, down=0), *trend_ticks("BANKNIFTY", warm=10, up=0, down=0, base=52_000),
            *trend_ticks("SENSEX", warm=2, up=0, down=0, base=80_000), *trend_ticks("FOO", warm=1, up=0, down=0)]
    tick_file = write_ticks(tmp_path / "day.csv", sorted(rows))
    settings = replay_settings(feed={"symbols": ["NIFTY"]})  # the live config names one symbol: not a filter
    everything = run_replay(settings, tick_file, tmp_path / "all")
    assert everything["ticks_by_symbol"] == {"BANKNIFTY": 60, "NIFTY": 60}
    assert everything["ignored"] == {"ticks": 18, "symbols": {"FOO": 6, "SENSEX": 12}, "missing": []}

    narrowed = run_replay(settings, tick_file, tmp_path / "one", symbols=["BANKNIFTY", "FINNIFTY"])
    assert narrowed["ticks_by_symbol"] == {"BANKNIFTY": 60}
    assert narrowed["ignored"] == {"ticks": 78, "symbols": {"FOO": 6, "NIFTY": 60, "SENSEX": 12},
                                   "missing": ["FINNIFTY"]}
    with pytest.raises(ValueError, match="SENSEX"):
        run_replay(settings, tick_file, tmp_path / "bad", symbols=["SENSEX"])


def test_a_replay_on_a_holiday_trades_nothing_the_strategy_idles(tmp_path: Path) -> None:
    holiday = datetime(2026, 11, 24, 9, 15, tzinfo=IST).timestamp()  # Guru Nanak Jayanti, in the shipped file
    tick_file = write_ticks(tmp_path / "day.csv", trend_ticks(start=holiday))
    summary = run_replay(replay_settings(), tick_file, tmp_path / "out")
    assert summary["ticks"] > 0 and (summary["entries"], summary["skipped"], summary["candles"]) == (0, 0, 0)
    same_on_a_trading_day = run_replay(replay_settings(), write_ticks(tmp_path / "fri.csv", trend_ticks()),
                                       tmp_path / "fri")
    assert same_on_a_trading_day["entries"] > 0 and same_on_a_trading_day["candles"] > 0


def test_run_record_writes_the_chains_beside_the_ticks_and_replay_finds_them(tmp_path: Path) -> None:
    record = tmp_path / "day.csv"
    settings = load_settings(env={}, overrides={
        "storage": {"url": f"sqlite:///{tmp_path / 'live.db'}"},
        "feed": {"source": "sim", "symbols": ["NIFTY"], "sim_ticks_per_second": 50},
        "option_chain": {"underlyings": ["NIFTY"], "poll_seconds": 3.0},
        "http": {"mds_port": 0, "control_port": 0}, "calendar": {"enabled": False}})
    live = Runtime(settings, "mds", record_path=str(record)).start()
    chains_file = chains_path_for(record)
    try:
        eventually(lambda: chains_file.exists() and chains_file.read_bytes().count(b"\n") >= 1, 10.0,
                   message="a recorded chain")
    finally:
        live.shutdown()
    line = orjson.loads(chains_file.read_bytes().splitlines()[0])
    assert chains_file.name == "day.chains.jsonl" and line["symbol"] == "NIFTY"
    assert line["expiry"] >= datetime.fromtimestamp(line["at"], IST).date().isoformat()
    assert line["payload"]["oc"] and abs(line["at"] - time.time()) < 60
    recorded = RecordedChains(chains_file, VirtualClock(line["at"]))
    assert recorded.option_chain("NIFTY") == line["payload"]
    sid = next(iter(line["payload"]["oc"].values()))["ce"]["security_id"]
    assert recorded.quote(f"SEC_{sid}") == next(iter(line["payload"]["oc"].values()))["ce"]["last_price"]
    assert RecordedChains(chains_file, VirtualClock(line["at"] - 1)).option_chain("NIFTY") is None  # not yet

    summary = run_replay(settings.replace(calendar={"enabled": False}), record, tmp_path / "replay")
    assert summary["chains"]["file"] == "day.chains.jsonl" and summary["ticks_by_symbol"]["NIFTY"] > 0
