"""Candle batch-upsert throughput for both storage backends (a benchmark, not a test).

    .venv/bin/python bench/bench_storage.py [--batches 30] [--batch-size 1000] [--pg-url URL]

For each backend: insert `batches` batches of new candles, then upsert them all again with a higher
revision (every row replaced), and print rows/s and the median batch latency. PostgreSQL runs in a
throwaway schema; SQLite in a temporary file. A backend that is not reachable is reported and skipped.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.market import Candle  # noqa: E402
from storage.errors import StorageUnavailable  # noqa: E402
from storage.repositories import Storage, open_storage  # noqa: E402

T0 = 1_763_610_300


def batches(count: int, size: int, revision: int) -> list[list[Candle]]:
    symbols = ["NIFTY", "BANKNIFTY", "SEC_49081", "SEC_49082"]
    result = []
    for b in range(count):
        batch = []
        for i in range(size):
            n = b * size + i
            ts = T0 + 60 * (n // len(symbols))
            price = 26000.0 + (n % 97) * 0.05
            batch.append(Candle(symbols[n % len(symbols)], ts, price, price + 3, price - 2, price + 1, 1000 + n,
                                40, revision, ts + 0.2, ts + 59.8))
        result.append(batch)
    return result


def measure(storage: Storage, label: str, work: list[list[Candle]]) -> dict[str, float]:
    latencies = []
    rows = 0
    started = time.perf_counter()
    for batch in work:
        t0 = time.perf_counter()
        rows += storage.candles.upsert_many(batch)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    result = {"rows": rows, "seconds": elapsed, "rows_per_s": rows / elapsed,
              "batch_p50_ms": statistics.median(latencies) * 1000, "batch_max_ms": max(latencies) * 1000}
    print(f"  {label:<26} {rows:>7} rows  {result['rows_per_s']:>10,.0f} rows/s  "
          f"batch p50 {result['batch_p50_ms']:6.1f} ms  max {result['batch_max_ms']:6.1f} ms")
    return result


def run(storage: Storage, count: int, size: int) -> None:
    storage.migrate()
    measure(storage, "insert new", batches(count, size, revision=0))
    measure(storage, "replace (higher revision)", batches(count, size, revision=1))
    measure(storage, "ignored (lower revision)", batches(count, size, revision=0))
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        got = storage.candles.latest("NIFTY", 375)
        timings.append(time.perf_counter() - started)
    print(f"  latest(NIFTY, 375): {len(got)} candles, p50 {statistics.median(timings) * 1000:.1f} ms")


@contextmanager
def pg_schema(url: str) -> Iterator[str]:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        joiner = "&" if "?" in url else "?"
        yield f"{url}{joiner}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()

    print(f"SQLite ({args.batches} x {args.batch_size})")
    with tempfile.TemporaryDirectory() as folder, open_storage(f"sqlite:///{folder}/bench.db") as storage:
        run(storage, args.batches, args.batch_size)

    print(f"PostgreSQL ({args.batches} x {args.batch_size})")
    try:
        with pg_schema(args.pg_url) as url, open_storage(url) as storage:
            run(storage, args.batches, args.batch_size)
    except (StorageUnavailable, OSError) as exc:
        print(f"  skipped: {exc}")
    except Exception as exc:  # psycopg.OperationalError from the schema setup
        print(f"  skipped: {type(exc).__name__}: {exc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
