"""Benchmark: indicators + score per closed 1m candle (all configured timeframes), and the signal decision.

Run: .venv/bin/python bench/bench_scoring.py [--candles 20000] [--symbols 1]
Prints one JSON line: median / p99 / mean microseconds per on_candle call (target < 50 µs), split by how
many indicator sets the minute updated (1: the 1m set only; 2: it also closed a 5m bucket; 3: a 15m one
too, which is what the p99 measures), and the same for SignalPolicy.decide (option chain absent).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config.settings import StrategySettings  # noqa: E402
from core.market import Candle  # noqa: E402
from core.scoring import ScoreEngine  # noqa: E402
from core.signals import SignalPolicy  # noqa: E402

SESSION_OPEN = 1_763_610_300  # 2025-11-20 09:15 IST
SESSION_MINUTES = 375


def make_candles(symbol: str, n: int, seed: int) -> list[Candle]:
    rng = random.Random(seed)
    price = 25_000.0
    out = []
    for i in range(n):
        day, minute = divmod(i, SESSION_MINUTES)
        close = price + rng.gauss(0.0, 10.0)
        high = max(price, close) + abs(rng.gauss(0.0, 4.0))
        low = min(price, close) - abs(rng.gauss(0.0, 4.0))
        out.append(Candle(symbol, SESSION_OPEN + day * 86_400 + minute * 60, price, high, low, close,
                          rng.randint(1_000, 50_000), 30))
        price = close
    return out


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def summary(samples_ns: list[int]) -> dict[str, float]:
    us = sorted(s / 1000.0 for s in samples_ns)
    return {"p50_us": round(statistics.median(us), 2), "p99_us": round(percentile(us, 0.99), 2),
            "max_us": round(us[-1], 2), "mean_us": round(statistics.fmean(us), 2), "n": len(us)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--candles", type=int, default=20_000, help="1m candles per symbol")
    parser.add_argument("--symbols", type=int, default=1)
    args = parser.parse_args()
    settings = StrategySettings()
    symbols = ["NIFTY", "BANKNIFTY", "FINNIFTY", *[f"SEC_{49000 + i}" for i in range(max(0, args.symbols - 3))]]
    series = [make_candles(symbols[i], args.candles, seed=i) for i in range(args.symbols)]
    engine = ScoreEngine(settings)
    policy = SignalPolicy(settings)
    score_ns: list[int] = []
    # How many indicator sets a minute updates: 1 (the 1m set), +1 per higher bucket it closes.
    by_sets: dict[int, list[int]] = {}
    decide_ns: list[int] = []
    clock = time.perf_counter_ns
    book: dict[str, tuple[str, int]] = {}
    gc.collect()
    start = time.perf_counter()
    for minute in range(args.candles):
        for candles in series:
            bar = candles[minute]
            t0 = clock()
            score = engine.on_candle(bar)
            t1 = clock()
            score_ns.append(t1 - t0)
            session_minute = minute % SESSION_MINUTES + 1
            sets = 1 + sum(1 for tf in settings.timeframes if tf > 60 and session_minute % (tf // 60) == 0)
            by_sets.setdefault(sets, []).append(t1 - t0)
            if score is not None:
                t2 = clock()
                policy.decide(bar.symbol, score, bar, book, True, False, None, 75)
                decide_ns.append(clock() - t2)
    elapsed = time.perf_counter() - start
    result = {
        "bench": "scoring",
        "timeframes": list(settings.timeframes),
        "symbols": args.symbols,
        "candles_per_symbol": args.candles,
        "on_candle": summary(score_ns),
        "on_candle_by_sets_updated": {str(k): summary(v) for k, v in sorted(by_sets.items())},
        "decide": summary(decide_ns),
        "candles_per_second": round(args.candles * args.symbols / elapsed),
        "target_us": 50,
        "python": platform.python_version(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
