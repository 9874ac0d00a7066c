"""Benchmark: signal -> order accepted by the paper broker, through the whole execution path.

Run: .venv/bin/python bench/bench_execution.py [--signals 1000] [--burst 50] [--pg-url URL]
Prints one JSON object:
- `signal_to_accept`: p50 / p99 / mean milliseconds from `executor.tell(EntrySignalRaised)` to the
  paper broker's place() returning, one signal at a time, over --signals signals. Included: the risk
  guard, the duplicate check, the PostgreSQL placement lock (process lock + pg_advisory_xact_lock on a
  dedicated connection), claim_intent, the journal (SignalAccepted + EntryRequested) and trades row, the
  orders row. The trade actors journal ORDER_PLACED / ORDER_FILLED concurrently (same database).
- `advisory_lock_floor`: one `storage.placement_lock(pos_id)` transaction alone, same run.
- `burst`: --burst pos_ids entering at once: entries/s until the last is accepted, against the raw
  PaperBroker.place() rate (no executor, no database) in the same run.
PostgreSQL: a fresh schema in --pg-url (default $MYBOT_BENCH_PG_URL or the test database), dropped after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
import pykka  # noqa: E402

from actors.brokers.paper import PaperBroker  # noqa: E402
from actors.clock import SystemClock  # noqa: E402
from actors.trading.quotes import QuoteBook  # noqa: E402
from config.settings import Settings  # noqa: E402
from core.orders import BrokerOrder, Leg, OrderRequest, Side  # noqa: E402
from core.signals import EntrySignalRaised  # noqa: E402
from daemon.runtime import Runtime, Wiring  # noqa: E402

DEFAULT_PG = os.environ.get("MYBOT_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


class TimedBroker(PaperBroker):
    """Records when place() returned, per correlation id, and wakes whoever waits for it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.accepted: dict[str, float] = {}
        self.cond = threading.Condition()

    def place(self, request: OrderRequest) -> BrokerOrder:
        order = super().place(request)
        with self.cond:
            self.accepted[request.correlation_id] = time.perf_counter()
            self.cond.notify_all()
        return order

    def wait_for(self, correlation_ids: list[str], timeout: float = 30.0) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: all(c in self.accepted for c in correlation_ids), timeout):
                missing = [c for c in correlation_ids if c not in self.accepted]
                raise RuntimeError(f"not accepted within {timeout} s: {missing[:5]}")


def signal(pos_id: str) -> EntrySignalRaised:
    return EntrySignalRaised(pos_id=pos_id, symbol="NIFTY", instrument="SEC_49081", side=Side.BUY, qty=75,
                             score=None, candle_ts=0, at=time.time(), price=100.0)  # type: ignore[arg-type]


def stats_ms(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000.0 for s in samples)
    return {"p50_ms": round(statistics.median(ms), 3), "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 3),
            "mean_ms": round(statistics.fmean(ms), 3), "max_ms": round(ms[-1], 3), "n": len(ms)}


def run(pg_url: str, signals: int, burst: int) -> dict[str, Any]:
    from core.orders import correlation_id

    settings = Settings().replace(
        storage={"url": pg_url}, http={"control_port": 0, "mds_port": 0},
        risk={"session_start": "00:00", "session_end": "24:00", "square_off_time": "24:00",
              "max_open_positions": 1_000_000, "daily_max_loss": 0.0, "daily_max_loss_pct": 0.0,
              "max_exposure": 0.0},  # a thousand open positions: the open notional limit would stop them
        calendar={"enabled": False},  # any day, any hour
        execution={"order_timeout_seconds": 3600.0}, reconcile={"interval_seconds": 600.0},
        broker={"paper_latency_ms": 0.0, "paper_poll_ms": 50.0})
    quotes = QuoteBook()
    quotes.set("SEC_49081", 100.0)
    clock = SystemClock()
    broker = TimedBroker(quotes, clock)
    runtime = Runtime(settings, "trader", clock=clock, wiring=Wiring(
        subtrees=frozenset({"trading"}), broker=broker, quotes=quotes)).start()
    try:
        trader = runtime.trading
        assert trader is not None
        if not trader.ready.wait(30.0):
            raise RuntimeError("trader did not become ready")
        storage = runtime.storage

        # Warm-up (connections, code paths), not measured.
        for i in range(20):
            trader.desk.tell(signal(f"W-{i}"))
        broker.wait_for([correlation_id(f"W-{i}", Leg.ENTRY) for i in range(20)])

        latencies = []
        for i in range(signals):
            pos_id = f"S-{i:05d}"
            started = time.perf_counter()
            trader.desk.tell(signal(pos_id))
            cid = correlation_id(pos_id, Leg.ENTRY)
            broker.wait_for([cid])
            latencies.append(broker.accepted[cid] - started)

        floor = []
        for i in range(max(200, signals // 2)):
            started = time.perf_counter()
            with storage.placement_lock(f"F-{i}"):
                pass
            floor.append(time.perf_counter() - started)

        ids = [f"B-{i:03d}" for i in range(burst)]
        cids = [correlation_id(p, Leg.ENTRY) for p in ids]
        started = time.perf_counter()
        for pos_id in ids:
            trader.desk.tell(signal(pos_id))
        broker.wait_for(cids)
        burst_seconds = max(broker.accepted[c] for c in cids) - started

        raw = PaperBroker(quotes, clock)
        n_raw = 5000
        raw_started = time.perf_counter()
        for i in range(n_raw):
            raw.place(OrderRequest(f"R-{i}", f"R-{i}", Leg.ENTRY, "SEC_49081", Side.BUY, 75, 101.0, 100.0))
        raw_seconds = time.perf_counter() - raw_started
        return {
            "benchmark": "execution",
            "python": platform.python_version(), "cpus": os.cpu_count(), "storage": "postgresql",
            "signal_to_accept": stats_ms(latencies),
            "advisory_lock_floor": stats_ms(floor),
            "burst": {"pos_ids": burst, "seconds": round(burst_seconds, 4),
                      "entries_per_second": round(burst / burst_seconds, 1),
                      "raw_paper_place_per_second": round(n_raw / raw_seconds, 1)},
        }
    finally:
        runtime.shutdown()
        pykka.ActorRegistry.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--signals", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    args = parser.parse_args()
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(args.pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    joiner = "&" if "?" in args.pg_url else "?"
    url = f"{args.pg_url}{joiner}options={quote(f'-csearch_path={schema}')}"
    try:
        print(json.dumps(run(url, args.signals, args.burst)))
    finally:
        with psycopg.connect(args.pg_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


if __name__ == "__main__":
    main()
