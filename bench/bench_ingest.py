"""MDS ingest: 200 symbols, replay at speed 0, feed -> candle actors -> batched persistence -> bus.

Run: .venv/bin/python -m bench.bench_ingest [--ticks 1000000] [--symbols 200] [--rounds 3]
Each actor round runs in a fresh process (one runtime per process, as in production); its RSS after the
whole session is the memory figure. Baseline, same run, same file: a bare single-thread loop — decode (the same CSV parser) -> current bar
per symbol -> batched SQLite persist of closed bars. Reported: ticks/s of both (median of rounds), their
ratio, and the RSS of the process after the last full replayed session (memory target < 250 MB).
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from actors.clock import VirtualClock
from actors.market_data.messages import CloseCandles, FlushCandles
from actors.sources.recorder import TickRecorder
from actors.sources.replay import TickParser
from bench.common import ROOT, emit, rss_mb
from config.settings import load_settings
from core.market import IST, Tick
from daemon.cli import tune_interpreter
from daemon.runtime import Runtime
from telemetry.logs import configure_logging

SESSION_OPEN = datetime(2026, 11, 20, 9, 15, tzinfo=IST).timestamp()
SESSION_SECONDS = 375 * 60


def make_file(path: Path, ticks: int, symbols: list[str], seed: int = 1) -> None:
    rng = random.Random(seed)
    prices = {s: rng.uniform(50, 500) for s in symbols}
    step = SESSION_SECONDS / ticks
    recorder = TickRecorder(path)
    batch: list[Tick] = []
    ts = SESSION_OPEN
    for _ in range(ticks):
        ts += step
        symbol = symbols[rng.randrange(len(symbols))]
        prices[symbol] = round(max(1.0, prices[symbol] * (1 + rng.gauss(0, 0.0005))), 2)
        batch.append(Tick(symbol, ts, prices[symbol], 25))
        if len(batch) >= 50_000:
            recorder.record(batch)
            batch = []
    recorder.record(batch)
    recorder.close()


def bare_loop(path: Path, db: Path) -> float:
    """The floor: one thread, no actors, no bus."""
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE IF NOT EXISTS bars (symbol TEXT, ts INTEGER, o REAL, h REAL, l REAL, c REAL,"
                  " v INTEGER, PRIMARY KEY (symbol, ts))")
    parser = TickParser()
    bars: dict[str, list] = {}
    closed: list[tuple] = []
    count = 0
    started = time.perf_counter()
    with open(path) as fh:
        fh.readline()
        while True:
            lines = fh.readlines(1 << 20)
            if not lines:
                break
            for symbol, ts, price, volume in parser.parse(lines):
                count += 1
                minute = int(ts // 60) * 60
                bar = bars.get(symbol)
                if bar is None or bar[0] != minute:
                    if bar is not None:
                        closed.append((symbol, *bar))
                    bars[symbol] = [minute, price, price, price, price, volume]
                    continue
                if price > bar[2]:
                    bar[2] = price
                elif price < bar[3]:
                    bar[3] = price
                bar[4] = price
                bar[5] += volume
            if len(closed) >= 1000:
                conn.executemany("INSERT OR REPLACE INTO bars VALUES (?,?,?,?,?,?,?)", closed)
                conn.commit()
                closed = []
    closed.extend((symbol, *bar) for symbol, bar in bars.items())
    conn.executemany("INSERT OR REPLACE INTO bars VALUES (?,?,?,?,?,?,?)", closed)
    conn.commit()
    conn.close()
    return count / (time.perf_counter() - started)


def actor_pipeline(path: Path, workdir: Path, symbols: list[str], ticks: int) -> float:
    settings = load_settings(env={}, overrides={
        "storage": {"url": f"sqlite:///{workdir / 'mds.db'}"},
        "feed": {"source": "replay", "replay_path": str(path), "replay_speed": 0.0, "symbols": symbols},
        "option_chain": {"underlyings": []}, "log": {"level": "WARNING"}})
    started = time.perf_counter()
    runtime = Runtime(settings, "mds", clock=VirtualClock(), serve_http=False).start()
    tune_interpreter(settings)  # what `mybot run` does once started
    parts = runtime.market_data
    try:
        assert parts.feed_state is not None and parts.feed_state.finished_event.wait(600)
        candles = parts.candles
        for builder in candles.children():
            builder.ask(CloseCandles("bench barrier"), timeout=60)
        parts.persister.ask(FlushCandles(), timeout=120)
        elapsed = time.perf_counter() - started
        assert parts.feed_state.ticks == ticks, (parts.feed_state.ticks, ticks)
    finally:
        runtime.shutdown()
    return ticks / elapsed


def one_round(csv: Path, workdir: Path, symbols: int, ticks: int) -> tuple[float, float]:
    """The actor pipeline in a fresh process (as in production: one runtime per process): rate, RSS."""
    out = subprocess.run([sys.executable, "-m", "bench.bench_ingest", "--one-round", str(csv), "--workdir",
                          str(workdir), "--symbols", str(symbols), "--ticks", str(ticks)],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["rate"], result["rss_mb"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ticks", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one-round", metavar="CSV", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    configure_logging("WARNING")
    symbols = [f"SEC_{40000 + i}" for i in range(args.symbols)]
    if args.one_round:
        rate = actor_pipeline(Path(args.one_round), Path(args.workdir), symbols, args.ticks)
        print(json.dumps({"rate": rate, "rss_mb": rss_mb()}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        csv = work / "ticks.csv"
        make_file(csv, args.ticks, symbols)
        bare, actors, rss = [], [], []
        for round_no in range(args.rounds):
            bare.append(bare_loop(csv, work / f"bare{round_no}.db"))
            round_dir = work / f"r{round_no}"
            round_dir.mkdir()
            rate, memory = one_round(csv, round_dir, args.symbols, args.ticks)
            actors.append(rate)
            rss.append(memory)
    bare_median, actors_median = statistics.median(bare), statistics.median(actors)
    emit("mds_ingest", {
        "ticks": args.ticks, "symbols": args.symbols, "rounds": args.rounds,
        "actors_ticks_per_s": round(actors_median), "bare_loop_ticks_per_s": round(bare_median),
        "ratio_to_bare": round(actors_median / bare_median, 3),
        "actors_all_rounds": [round(x) for x in actors], "bare_all_rounds": [round(x) for x in bare],
        "rss_mb_after_a_full_session": max(rss),
        "target": ">= 500k ticks/s and >= 0.40 of the bare loop; RSS < 250 MB"})


if __name__ == "__main__":
    main()
