"""Benchmark: the entry gate (issue 9: one risk check for every trader process on a database).

Run: .venv/bin/python -m bench.bench_entry_gate [--rounds 300] [--pg-url URL]
Prints one JSON object: for 0, 10, 100 and 1,000 live trades in the `trades` table, the p50 / p99 of
- `gate`: `storage.entry_gate(...)` entered and committed with nothing inside (BEGIN, the advisory lock, a
  lease claim, the shared risk document and the day's figures pipelined, then COMMIT): what an entry pays
  on top of its own journal step;
- `figures`: `trades.day_figures()` alone (the aggregate over the live trades);
- `floor`: one `storage.placement_lock()` transaction alone (lock, commit), the baseline of the same run.
PostgreSQL: a fresh schema in --pg-url (default $MYBOT_BENCH_PG_URL or the test database), dropped after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from storage.opening import open_storage  # noqa: E402
from storage.records import LeaseClaim, TradeRecord  # noqa: E402
from storage.repositories import Storage  # noqa: E402

DEFAULT_PG = os.environ.get("MYBOT_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _live(pos_id: str) -> TradeRecord:
    return TradeRecord(pos_id=pos_id, symbol="SEC_49081", instrument="NIFTY CE", side="BUY", qty=75, filled_qty=75,
                       entry_price=100.0, entry_time=1.0, exit_price=None, exit_time=None, fees=12.0,
                       realized_pnl=None, state="POSITION_OPEN", opened_day="2026-11-30",
                       detail={"open_qty": 75, "entry_limit_price": 101.0}, created_at=1.0, updated_at=1.0)


def _timed(rounds: int, work: Callable[[int], Any]) -> dict[str, float]:
    samples = []
    for i in range(rounds):
        started = time.perf_counter()
        work(i)
        samples.append((time.perf_counter() - started) * 1000.0)
    samples.sort()
    return {"p50_ms": round(statistics.median(samples), 3), "p99_ms": round(samples[int(0.99 * (len(samples) - 1))], 3)}


def run(storage: Storage, rounds: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    live = 0
    for target in (0, 10, 100, 1000):
        while live < target:
            storage.trades.upsert_trade(_live(f"L-{live:05d}"))
            live += 1

        def gate(i: int, target: int = target) -> None:
            with storage.entry_gate("risk", 0.0, LeaseClaim(f"G-{target}-{i}", "bench", 10.0, 30.0)):
                pass

        def floor(i: int, target: int = target) -> None:
            with storage.placement_lock(f"F-{target}-{i}"):
                pass

        results[str(target)] = {
            "floor": _timed(rounds, floor),
            "gate": _timed(rounds, gate),
            "figures": _timed(rounds, lambda i: storage.trades.day_figures(0.0)),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    args = parser.parse_args()
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in args.pg_url else "?"
    url = f"{args.pg_url}{separator}options={quote(f'-csearch_path={schema}')}"
    try:
        storage = open_storage(url)
        storage.migrate()
        try:
            print(json.dumps({"benchmark": "entry_gate", "live_trades": run(storage, args.rounds)}))
        finally:
            storage.close()
    finally:
        with psycopg.connect(args.pg_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


if __name__ == "__main__":
    main()
