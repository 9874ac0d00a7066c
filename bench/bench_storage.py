"""Storage throughput for both backends (a benchmark, not a test).

    .venv/bin/python bench/bench_storage.py [--batches 30] [--batch-size 1000] [--instruments 200000]
                                            [--appends 500] [--pg-url URL]

For each backend:
- candles: insert `batches` batches of new candles, then upsert them all again with a higher revision
  (every row replaced), and print rows/s and the median batch latency;
- the instrument master: `instruments.replace_all` of that many synthetic rows, into an empty table and
  then over a full one (the daily refresh), streamed from a generator; seconds, rows/s and the RSS growth;
  then the lookups (get, by_trading_symbol, options of one expiry);
- the journal: the checked `append_events`, one event and three events per append, p50 / p99.
PostgreSQL runs in a throwaway schema; SQLite in a temporary file. A backend that is not reachable is
reported and skipped.
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

from bench.common import percentile, rss_mb  # noqa: E402
from core.instruments import Instrument  # noqa: E402
from core.market import Candle  # noqa: E402
from storage.errors import StorageUnavailable  # noqa: E402
from storage.opening import open_storage  # noqa: E402
from storage.repositories import Storage  # noqa: E402

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


UNDERLYINGS = ("NIFTY", "BANKNIFTY", "FINNIFTY", "MIDCPNIFTY", "SENSEX")
EXPIRIES = tuple(f"2026-{month:02d}-{day:02d}" for month in range(1, 11) for day in (8, 22))


def synthetic_master(count: int) -> Iterator[Instrument]:
    """`count` option rows spread like the real master: 5 underlyings x 20 expiries x strikes x CE/PE."""
    for n in range(count):
        underlying = UNDERLYINGS[n % len(UNDERLYINGS)]
        expiry = EXPIRIES[(n // len(UNDERLYINGS)) % len(EXPIRIES)]
        strike = 10_000.0 + 50.0 * (n // (2 * len(UNDERLYINGS) * len(EXPIRIES)))
        option_type = "CE" if (n // (len(UNDERLYINGS) * len(EXPIRIES))) % 2 == 0 else "PE"
        segment = "BSE_FNO" if underlying == "SENSEX" else "NSE_FNO"
        yield Instrument(segment, str(100_000 + n), "OPTIDX", f"{underlying}-{expiry}-{strike:g}-{option_type}",
                         underlying, 65, 0.05, expiry, strike, option_type, "W")


def measure_instruments(storage: Storage, count: int) -> None:
    # Built beforehand: the storage's own cost is measured, not this generator's (a real load streams
    # rows from the CSV parser, whose cost is the loader's).
    started = time.perf_counter()
    master = list(synthetic_master(count))
    print(f"  (building {count} Instrument rows for the bench: {time.perf_counter() - started:.2f} s)")
    for label in ("into an empty table", "over a full one"):
        before = rss_mb()
        started = time.perf_counter()
        stored = storage.instruments.replace_all(master, loaded_at=time.time())
        elapsed = time.perf_counter() - started
        print(f"  replace_all {label:<21} {stored:>7} rows  {elapsed:6.2f} s  {stored / elapsed:>10,.0f} rows/s  "
              f"RSS +{rss_mb() - before:.1f} MB")
    lookups = {
        "get": lambda: storage.instruments.get("NSE_FNO", "100123"),
        "by_trading_symbol": lambda: storage.instruments.by_trading_symbol("nifty-2026-01-08-10000-ce"),
        "options(NIFTY, expiry)": lambda: storage.instruments.options("NIFTY", "2026-01-08"),
    }
    for name, lookup in lookups.items():
        timings = []
        for _ in range(50):
            t0 = time.perf_counter()
            found = lookup()
            timings.append(time.perf_counter() - t0)
        size = len(found) if isinstance(found, list) else int(found is not None)
        print(f"  {name:<24} {size:>5} rows  p50 {statistics.median(timings) * 1000:6.2f} ms")


def measure_journal(storage: Storage, appends: int) -> None:
    results = {}
    for label, per_append in (("append_events x1", 1), ("append_events x3", 3)):
        timings = []
        pos_id = f"BENCH-J{per_append}"
        for n in range(appends):
            events = [("TICK", None, None, {"n": n, "px": 101.5}, float(n))] * per_append
            t0 = time.perf_counter()
            storage.trades.append_events(pos_id, n * per_append, events)
            timings.append(time.perf_counter() - t0)
        results[label] = timings
        print(f"  {label:<24} {appends:>5} appends  p50 {statistics.median(timings) * 1000:6.3f} ms  "
              f"p99 {percentile(timings, 99) * 1000:6.3f} ms")


def run(storage: Storage, count: int, size: int, instruments: int = 0, appends: int = 0) -> None:
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
    if instruments:
        measure_instruments(storage, instruments)
    if appends:
        measure_journal(storage, appends)


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
    parser.add_argument("--instruments", type=int, default=200_000, help="scrip master rows (0: skip)")
    parser.add_argument("--appends", type=int, default=500, help="journal appends per kind (0: skip)")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()

    print(f"SQLite ({args.batches} x {args.batch_size})")
    with tempfile.TemporaryDirectory() as folder, open_storage(f"sqlite:///{folder}/bench.db") as storage:
        run(storage, args.batches, args.batch_size, args.instruments, args.appends)

    print(f"PostgreSQL ({args.batches} x {args.batch_size})")
    try:
        with pg_schema(args.pg_url) as url, open_storage(url) as storage:
            run(storage, args.batches, args.batch_size, args.instruments, args.appends)
    except (StorageUnavailable, OSError) as exc:
        print(f"  skipped: {exc}")
    except Exception as exc:  # psycopg.OperationalError from the schema setup
        print(f"  skipped: {type(exc).__name__}: {exc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
