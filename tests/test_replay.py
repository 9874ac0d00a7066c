"""Deterministic replay: a constructed tick series through the MDS, strategy and trader actors."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from actors.sources.replay import ReplayFileUnreadable
from daemon.replay import run_replay
from telemetry.logs import configure_logging
from tests.support.series import DOWN, SESSION_OPEN, UP, WARM, replay_settings, trend_ticks, write_ticks


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture(autouse=True)
def quiet_logs() -> None:
    configure_logging("WARNING")


def minute_of(record: dict[str, Any]) -> int:
    return int((record["candle_ts"] - SESSION_OPEN) // 60)


def test_a_clean_trend_enters_and_its_reversal_exits(tmp_path: Path) -> None:
    ticks = write_ticks(tmp_path / "ticks.csv", trend_ticks())
    summary = run_replay(replay_settings(), ticks, tmp_path / "out")

    signals = [r for r in read_jsonl(tmp_path / "out" / "signals.jsonl") if r["kind"] != "ENTRY_SKIPPED"]
    assert [r["kind"] for r in signals[:2]] == ["ENTRY_SIGNAL", "EXIT_SIGNAL"], signals
    entry, exit_ = signals[0], signals[1]
    assert entry["direction"] == 1 and entry["side"] == "BUY" and entry["instrument"] == "NIFTY"
    assert WARM <= minute_of(entry) < WARM + UP  # inside the up-trend
    assert entry["score"]["entry_score"] >= 0.65 and "60s.ema_cross" in entry["score"]["components"]
    assert WARM + UP <= minute_of(exit_) < WARM + UP + DOWN  # inside its reversal
    assert exit_["pos_id"] == entry["pos_id"] and exit_["reason"] == "EXIT_SCORE"

    trades = read_jsonl(tmp_path / "out" / "trades.jsonl")
    first = next(t for t in trades if t["pos_id"] == entry["pos_id"])
    assert first["state"] == "CLOSED" and first["side"] == "BUY" and first["qty"] == entry["qty"]
    assert first["entry_price"] == pytest.approx(entry["close"])  # paper fill at the deciding candle's close
    assert first["exit_price"] == pytest.approx(exit_["close"])
    assert first["realized_pnl"] == pytest.approx((exit_["close"] - entry["close"]) * entry["qty"])
    assert summary["mode"] == "paper" and summary["trades"] >= 1 and summary["gate_timeouts"] == 0
    assert summary["ticks"] == (WARM + UP + DOWN) * 6
    written = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert written["pnl"] == summary["pnl"] and "max_drawdown" in written and "win_rate" in written


def regime_walks(symbols: dict[str, tuple[float, float]], minutes: int = 375, seed: int = 5,
                 ticks_per_minute: int = 12) -> list[tuple[float, str, float]]:
    """Random walks whose drift changes every 25 minutes, several symbols interleaved in time order."""
    rng = random.Random(seed)
    series = []
    for symbol, (base, vol) in symbols.items():
        price, drift = base, 0.0
        for minute in range(minutes):
            if minute % 25 == 0:
                drift = rng.choice((-1, 0, 1)) * vol * 0.6
            for k in range(ticks_per_minute):
                price += drift / ticks_per_minute + rng.gauss(0, vol / 3)
                at = SESSION_OPEN + minute * 60 + k * 60 / ticks_per_minute + rng.random() * 0.5
                series.append((at, symbol, round(max(price, 1.0), 2)))
    return sorted(series, key=lambda t: t[0])


def test_two_replays_of_one_file_are_byte_identical(tmp_path: Path) -> None:
    # Three symbols whose candles reach the strategy in whatever order their builders run, sharing one
    # book, one risk state and one clock: a daily-loss halt, the open-positions cap and square-off all
    # come into play, and every one of them must fall the same way twice.
    walks = {"NIFTY": (24_000.0, 4.0), "BANKNIFTY": (52_000.0, 10.0), "SEC_49081": (150.0, 0.8)}
    ticks = write_ticks(tmp_path / "ticks.csv", regime_walks(walks))
    settings = replay_settings(feed={"symbols": list(walks)},
                               strategy={"timeframes": [60, 300], "timeframe_weights": {"60": 0.5, "300": 0.5},
                                         # the indices trade themselves here (1 unit a lot): 75 lots each
                                         # reach the daily loss limit as the 75-unit lots of old did
                                         "lots_per_underlying": {"NIFTY": 75, "BANKNIFTY": 75}},
                               risk={"max_open_positions": 2, "square_off_time": "15:00",
                                     # index points, not premiums: the notional limits would deny every entry
                                     "max_qty_per_order": 0, "max_notional_per_trade": 0.0, "max_exposure": 0.0})
    first = run_replay(settings, ticks, tmp_path / "a")
    second = run_replay(settings, ticks, tmp_path / "b")
    for name in ("signals.jsonl", "trades.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    reasons = {r.get("reason", "")[:20] for r in read_jsonl(tmp_path / "a" / "signals.jsonl")}
    assert {"trading halted for t", "2 open positions (li", "at or after square-o"} <= reasons
    assert first["trades"] >= 2 and first["gate_timeouts"] == 0
    volatile = ("elapsed_seconds", "ticks_per_second", "out_dir")
    assert {k: v for k, v in first.items() if k not in volatile} == \
        {k: v for k, v in second.items() if k not in volatile}


def test_no_entry_outside_the_session_in_candle_time(tmp_path: Path) -> None:
    ticks = write_ticks(tmp_path / "ticks.csv", trend_ticks())
    settings = replay_settings(risk={"session_start": "09:15", "session_end": "10:00"})
    run_replay(settings, ticks, tmp_path / "out")
    records = read_jsonl(tmp_path / "out" / "signals.jsonl")
    assert not [r for r in records if r["kind"] == "ENTRY_SIGNAL"]
    skipped = [r for r in records if r["kind"] == "ENTRY_SKIPPED"]
    assert skipped and all(r["reason"] == "market closed" for r in skipped)


def test_a_missing_or_empty_file_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ReplayFileUnreadable):
        run_replay(replay_settings(), tmp_path / "missing.csv", tmp_path / "out")
    (tmp_path / "empty.csv").write_text("ts,symbol,ltp,volume\n")
    with pytest.raises(ReplayFileUnreadable):
        run_replay(replay_settings(), tmp_path / "empty.csv", tmp_path / "out")


def test_a_replay_writes_its_log_on_the_virtual_clock_and_the_review_reads_it(tmp_path: Path) -> None:
    import review
    from core.market import to_iso_ist

    ticks = write_ticks(tmp_path / "ticks.csv", trend_ticks())
    run_replay(replay_settings(), ticks, tmp_path / "out")
    log = tmp_path / "out" / "replay.log"
    lines = read_jsonl(log)
    assert {"RUNTIME_STARTED", "ENTRY_SIGNAL", "TRADE_CLOSED", "REPLAY_FINISHED"} <= {x["event"] for x in lines}
    # ts is market time (the candle clock), wall_ts when the line was written: the replay's day is not today's.
    day = to_iso_ist(SESSION_OPEN)[:10]
    assert all(x["ts"] <= x["wall_ts"] for x in lines) and lines[-1]["event"] == "REPLAY_FINISHED"
    (entry,) = [r for r in read_jsonl(tmp_path / "out" / "signals.jsonl") if r["kind"] == "ENTRY_SIGNAL"][:1]
    result = review.review([str(log)], day=day)
    story = next(t for t in result.trades if t.pos_id == entry["pos_id"])
    assert story.state == "CLOSED" and story.complete, story.missing
    assert story.signal is not None and story.signal["candle_ts"] == entry["candle_ts"]
    signal_step = next(s for s in story.steps if s.event == "ENTRY_SIGNAL" and s.source != "journal")
    assert signal_step.at == pytest.approx(entry["candle_ts"] + 60)  # stamped at the candle's close
    assert result.garbled == 0 and [p.role for p in result.processes] == ["all"]
