"""Full replay (candles + indicators + scores + paper execution) vs the same file through candles only.

Run: .venv/bin/python -m bench.bench_replay [--days 5] [--symbols 2] [--ticks-per-minute 60] [--rounds 3]
Both sides are `daemon.replay.run_replay` on one generated file (a trending random walk per symbol, full
sessions 09:15-15:30 IST), in the same process and run: `candles_only=True` runs the MDS actors alone
(feed -> candle builders -> SQLite + bus); the full replay adds the strategy (default multi-timeframe
scoring) and the trader (risk guard, executor, trade actors, paper broker). Reported: ticks/s of each
(median of rounds, rounds alternate), their ratio (target >= 0.70), the same ratio in process CPU seconds
(steadier on a shared machine), signals and trades of the full replay, and whether every round produced
byte-identical signals.jsonl / trades.jsonl.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from bench.common import emit
from config.settings import load_settings
from core.market import IST
from daemon.replay import run_replay
from telemetry.logs import configure_logging

SYMBOLS = ("NIFTY", "BANKNIFTY", "FINNIFTY", "SEC_49081")
BASES = {"NIFTY": 24_000.0, "BANKNIFTY": 52_000.0, "FINNIFTY": 23_000.0, "SEC_49081": 150.0}


def write_file(path: Path, days: int, symbols: int, ticks_per_minute: int, seed: int = 7) -> int:
    """Trending random walks (a new drift every 20-60 minutes), ticks evenly spaced within each minute."""
    rng = random.Random(seed)
    names = SYMBOLS[:symbols]
    prices = {s: BASES[s] for s in names}
    step = 60.0 / ticks_per_minute
    rows = 0
    start = datetime(2026, 11, 16, 9, 15, tzinfo=IST)
    with open(path, "w") as fh:
        fh.write("ts,symbol,ltp,volume\n")
        for day in range(days):
            session = start + timedelta(days=day)
            drift = {s: 0.0 for s in names}
            change = {s: 0 for s in names}
            for minute in range(375):
                for s in names:
                    if minute >= change[s]:
                        drift[s] = rng.choice((-1.0, 0.0, 1.0)) * prices[s] * 0.0004
                        change[s] = minute + rng.randint(20, 60)
                for k in range(ticks_per_minute):
                    at = session + timedelta(seconds=minute * 60 + k * step)
                    stamp = at.isoformat(timespec="milliseconds")
                    for s in names:
                        prices[s] = max(0.05, prices[s] + drift[s] / ticks_per_minute
                                        + rng.gauss(0.0, prices[s] * 0.00012))
                        fh.write(f"{stamp},{s},{prices[s]:.2f},{rng.randint(0, 50)}\n")
                        rows += 1
    return rows


def digest(out: Path) -> str:
    return hashlib.sha256((out / "signals.jsonl").read_bytes() + (out / "trades.jsonl").read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--symbols", type=int, default=2, choices=range(1, len(SYMBOLS) + 1))
    parser.add_argument("--ticks-per-minute", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configure_logging("ERROR")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ticks_file = root / "ticks.csv"
        rows = write_file(ticks_file, args.days, args.symbols, args.ticks_per_minute)
        settings = load_settings(env={}, overrides={
            "feed": {"symbols": list(SYMBOLS[:args.symbols])}, "log": {"level": "ERROR"},
            "risk": {"daily_max_loss": 0.0, "daily_max_loss_pct": 0.0, "consecutive_losses_limit": 1000}})
        full: list[float] = []
        candles: list[float] = []
        cpu: dict[str, list[float]] = {"full": [], "candles": []}  # process CPU seconds: less load-sensitive
        digests: set[str] = set()
        summary: dict[str, object] = {}
        for round_no in range(args.rounds):
            started = time.process_time()
            base = run_replay(settings, ticks_file, root / f"candles{round_no}", candles_only=True)
            cpu["candles"].append(time.process_time() - started)
            candles.append(float(base["ticks_per_second"]))
            started = time.process_time()
            summary = run_replay(settings, ticks_file, root / f"full{round_no}")
            cpu["full"].append(time.process_time() - started)
            full.append(float(summary["ticks_per_second"]))
            digests.add(digest(root / f"full{round_no}"))
        full_rate = statistics.median(full)
        candle_rate = statistics.median(candles)
        emit("replay", {
            "ticks": rows, "days": args.days, "symbols": args.symbols, "ticks_per_minute": args.ticks_per_minute,
            "rounds": args.rounds,
            "full_ticks_per_s": round(full_rate), "candles_only_ticks_per_s": round(candle_rate),
            "ratio": round(full_rate / candle_rate, 3), "target_ratio": 0.70,
            "full_runs": [round(x) for x in full], "candles_only_runs": [round(x) for x in candles],
            "cpu_seconds_full": round(statistics.median(cpu["full"]), 3),
            "cpu_seconds_candles_only": round(statistics.median(cpu["candles"]), 3),
            "cpu_ratio": round(statistics.median(cpu["candles"]) / statistics.median(cpu["full"]), 3),
            "entries": summary.get("entries"), "exits": summary.get("exits"), "trades": summary.get("trades"),
            "pnl": summary.get("pnl"), "identical_outputs": len(digests) == 1,
        })


if __name__ == "__main__":
    main()
