"""Benchmark: protective-stop reaction, from the tick that crosses a stop to the exit order accepted by the
paper broker, next to the raw signal -> order figure measured in the same run (issue 10, item 4).

Run: .venv/bin/python -m bench.bench_protection [--crossings 1000] [--paper-poll-ms 50] [--pg-url URL]
Prints one JSON object:
- `signal_to_accept`: p50 / p99 / mean ms from the desk's tell of an entry signal to the paper broker's
  place() returning (the execution path of bench_execution), one entry at a time: the --crossings entries
  that open the positions measured below.
- `stop_reaction`: from the `ticks:<symbol>` message that crosses a position's 10 % stop, published on the
  runtime's in-process bus as the MDS publisher does, to the paper broker's place() of its exit order
  returning, one crossing at a time: the bus hand-over, the protection monitor, the trade actor's
  ExitRequested (journaled in PostgreSQL), the executor and its placement lock. Target: p99 < 5 ms.
  Measured twice, each in its own runtime: `without_broker_stop` (exits.broker_stop_pct = 0) and
  `with_broker_stop` (the default 2 %: a stop order rests at the broker, and the exit first cancels it and
  waits for the broker's answer, one more journaled step and a broker call on the path). In that run the
  entries' `signal_to_accept` also waits behind the stop placement each previous entry's fill asked for.
Each position trades its own symbol, so each tick crosses exactly one stop. PostgreSQL: a fresh schema in
--pg-url (default $MYBOT_BENCH_PG_URL or the test database), dropped after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import uuid
from typing import Any
from urllib.parse import quote

import psycopg
import pykka

from actors.clock import SystemClock
from actors.market_data.messages import ticks_message
from actors.trading.quotes import QuoteBook
from bench.bench_execution import TimedBroker, stats_ms
from config.settings import Settings
from core.market import Tick
from core.orders import Leg, Side, correlation_id
from core.signals import EntrySignalRaised
from daemon.runtime import Runtime, Wiring
from telemetry.logs import configure_logging

DEFAULT_PG = os.environ.get("MYBOT_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
ENTRY, STOP_PCT = 100.0, 10.0


def entry(pos_id: str, symbol: str) -> EntrySignalRaised:
    return EntrySignalRaised(pos_id=pos_id, symbol="NIFTY", instrument=symbol, side=Side.BUY, qty=75,
                             score=None, candle_ts=0, at=time.time(), price=ENTRY,  # type: ignore[arg-type]
                             exits={"stop_loss_pct": STOP_PCT})


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not within {timeout} s")
        time.sleep(0.002)


def run(pg_url: str, crossings: int, broker_stop_pct: float, paper_poll_ms: float = 50.0) -> dict[str, Any]:
    # The daemon's JSON lines at WARNING (the PROTECTIVE_EXIT line of each crossing is formatted, as in
    # production), written nowhere: a terminal's speed is not what is measured.
    configure_logging("WARNING", stream=open(os.devnull, "w"))  # noqa: SIM115
    settings = Settings().replace(
        storage={"url": pg_url}, http={"control_port": 0, "mds_port": 0},
        risk={"session_start": "00:00", "session_end": "24:00", "square_off_time": "24:00",
              "max_open_positions": 1_000_000, "daily_max_loss": 0.0, "daily_max_loss_pct": 0.0,
              "max_exposure": 0.0, "consecutive_losses_limit": 1_000_000},
        calendar={"enabled": False},  # any day, any hour
        execution={"order_timeout_seconds": 3600.0, "max_quote_age_seconds": 60.0},
        exits={"check_seconds": 60.0,  # the quote fallback must not beat the tick to a crossing
               "broker_stop_pct": broker_stop_pct},
        reconcile={"interval_seconds": 600.0}, broker={"paper_latency_ms": 0.0, "paper_poll_ms": paper_poll_ms})
    quotes = QuoteBook()
    clock = SystemClock()
    broker = TimedBroker(quotes, clock)
    runtime = Runtime(settings, "trader", clock=clock, wiring=Wiring(
        subtrees=frozenset({"trading"}), broker=broker, quotes=quotes)).start()
    try:
        trader = runtime.trading
        assert trader is not None
        if not trader.ready.wait(30.0):
            raise RuntimeError("trader did not become ready")
        guarded = trader.api.views.protection
        ids = [(f"PX-{i:05d}", f"SEC_{900000 + i}") for i in range(crossings)]
        signal_to_accept = []
        for pos_id, symbol in ids:  # open every position, one entry at a time (signal -> order measured)
            quotes.set(symbol, ENTRY)
            started = time.perf_counter()
            trader.desk.tell(entry(pos_id, symbol))
            cid = correlation_id(pos_id, Leg.ENTRY)
            broker.wait_for([cid])
            signal_to_accept.append(broker.accepted[cid] - started)
        _wait(lambda: len(guarded.get().levels) == crossings, 120.0, f"{crossings} positions guarded")
        if broker_stop_pct:
            _wait(lambda: all(c.stop_status == "WORKING" for c in trader.book.live()), 120.0, "every stop resting")

        reaction = []
        below = ENTRY * (1 - STOP_PCT / 100) - 0.5
        for pos_id, symbol in ids:  # cross one stop at a time
            quotes.set(symbol, below)
            message = ticks_message(symbol, [Tick(symbol, time.time(), below, 1)])
            cid = correlation_id(pos_id, Leg.EXIT)
            started = time.perf_counter()
            runtime.bus.publish(f"ticks:{symbol}", message)
            broker.wait_for([cid])
            reaction.append(broker.accepted[cid] - started)
        fired = dict(guarded.get().fired)
        if fired != {"STOP_LOSS": crossings}:
            raise RuntimeError(f"expected {crossings} stop-losses, the monitor fired {fired}")
        stop = stats_ms(reaction)
        raw = stats_ms(signal_to_accept)
        return {
            "broker_stop_pct": broker_stop_pct, "signal_to_accept": raw, "stop_reaction": stop,
            "ratio_p50": round(stop["p50_ms"] / raw["p50_ms"], 2), "ratio_p99": round(stop["p99_ms"] / raw["p99_ms"], 2),
            "target_met": stop["p99_ms"] < 5.0,
        }
    finally:
        runtime.shutdown()
        pykka.ActorRegistry.stop_all()


def in_fresh_schema(pg_url: str, job: Any) -> Any:
    """job(url) with a search_path of its own schema, dropped afterwards."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    joiner = "&" if "?" in pg_url else "?"
    try:
        return job(f"{pg_url}{joiner}options={quote(f'-csearch_path={schema}')}")
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crossings", type=int, default=1000)
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--paper-poll-ms", type=float, default=50.0,
                        help="how often the paper broker fills (default 50, as bench_execution): the earlier "
                             "crossings' exit fills, and the closes they bring, land during later crossings")
    args = parser.parse_args()
    runs = {name: in_fresh_schema(args.pg_url, lambda url, pct=pct: run(url, args.crossings, pct,
                                                                            args.paper_poll_ms))
            for name, pct in (("without_broker_stop", 0.0), ("with_broker_stop", 2.0))}
    print(json.dumps({"benchmark": "protection", "python": platform.python_version(), "cpus": os.cpu_count(),
                      "storage": "postgresql", "crossings": args.crossings, "paper_poll_ms": args.paper_poll_ms,
                      "target_p99_ms": 5.0, **runs}))


if __name__ == "__main__":
    main()
