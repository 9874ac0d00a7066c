"""What observing the system costs: metrics on vs off, and dashboards left open vs none, in the same run.

Run: .venv/bin/python -m bench.bench_observability [--ticks 1000000] [--signals 400] [--rounds 2] [--pg-url URL]

1. `ingest`: bench_ingest's actor pipeline (200 symbols, replay at speed 0, SQLite) with `metrics.enabled`
   true vs false, rounds alternating, each in a fresh process: ticks/s (median) and the cost in %.
2. `signal_to_order`: bench_execution's path (desk -> trade actor -> risk -> PostgreSQL lock + claim + journal
   -> paper broker place() returned), one signal at a time, with `metrics.enabled` true vs false, rounds
   alternating, each in a fresh process: p50/p99 ms and the cost in %.
3. `dashboards`: the same signal -> order measurement with the control API served over HTTP, while 3
   dashboards poll it from another process (each one, every second: /v1/overview, /v1/positions and
   /v1/risk, i.e. more than any one view of the page asks) vs none, rounds alternating.
Prints one JSON object per part.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench.common import ROOT, emit

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
POLLED = ("/v1/overview", "/v1/positions", "/v1/risk")


# -- 1. ingest ----------------------------------------------------------------------------------------------------

def ingest_round(csv: Path, workdir: Path, symbols: list[str], ticks: int, metrics_on: bool) -> float:
    from actors.clock import VirtualClock
    from actors.market_data.messages import CloseCandles, FlushCandles
    from config.settings import load_settings
    from daemon.cli import tune_interpreter
    from daemon.runtime import Runtime

    settings = load_settings(env={}, overrides={
        "storage": {"url": f"sqlite:///{workdir / 'mds.db'}"},
        "feed": {"source": "replay", "replay_path": str(csv), "replay_speed": 0.0, "symbols": symbols},
        "option_chain": {"underlyings": []}, "log": {"level": "WARNING"}, "metrics": {"enabled": metrics_on}})
    started = time.perf_counter()
    runtime = Runtime(settings, "mds", clock=VirtualClock(), serve_http=False).start()
    tune_interpreter(settings)
    parts = runtime.market_data
    try:
        assert parts is not None and parts.feed_state.finished_event.wait(600)
        for builder in parts.candles.children():
            builder.ask(CloseCandles("bench barrier"), timeout=60)
        parts.persister.ask(FlushCandles(), timeout=120)
        elapsed = time.perf_counter() - started
        assert parts.feed_state.ticks == ticks, (parts.feed_state.ticks, ticks)
    finally:
        runtime.shutdown()
    return ticks / elapsed


def ingest(ticks: int, rounds: int) -> dict[str, Any]:
    from bench.bench_ingest import make_file

    symbols = 200
    rates: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        csv = work / "ticks.csv"
        make_file(csv, ticks, [f"SEC_{40000 + i}" for i in range(symbols)])
        for round_no in range(rounds):
            for metrics_on in ((True, False) if round_no % 2 == 0 else (False, True)):
                round_dir = work / f"r{round_no}-{metrics_on}"
                round_dir.mkdir()
                out = _child("ingest", csv=str(csv), workdir=str(round_dir), ticks=ticks, symbols=symbols,
                             metrics=metrics_on)
                rates[metrics_on].append(out["rate"])
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    return {"part": "ingest", "ticks": ticks, "symbols": symbols, "rounds": rounds,
            "metrics_on_ticks_per_s": round(on), "metrics_off_ticks_per_s": round(off),
            "cost_pct": round((off - on) / off * 100, 2), "on_all": [round(r) for r in rates[True]],
            "off_all": [round(r) for r in rates[False]], "target": "cost <= 3 %"}


# -- 2 and 3. signal -> order ---------------------------------------------------------------------------------------

def _poll(port: int, dashboards: int, stop: Any, counts: Any) -> None:
    import requests

    def one() -> None:
        session = requests.Session()
        while not stop.is_set():
            started = time.monotonic()
            for path in POLLED:
                try:
                    session.get(f"http://127.0.0.1:{port}{path}", timeout=5)
                    with counts.get_lock():
                        counts.value += 1
                except requests.RequestException:
                    pass
            stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))

    threads = [threading.Thread(target=one, daemon=True) for _ in range(dashboards)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def signal_round(pg_url: str, signals: int, metrics_on: bool, dashboards: int) -> dict[str, Any]:
    import pykka

    from actors.clock import SystemClock
    from actors.trading.quotes import QuoteBook
    from bench.bench_execution import TimedBroker, signal, stats_ms
    from config.settings import Settings
    from core.orders import Leg, correlation_id
    from daemon.runtime import Runtime, Wiring
    from telemetry.logs import configure_logging

    configure_logging("WARNING")
    settings = Settings().replace(
        storage={"url": pg_url}, http={"control_port": 0, "mds_port": 0},
        risk={"session_start": "00:00", "session_end": "24:00", "square_off_time": "24:00",
              "max_open_positions": 1_000_000, "daily_max_loss": 0.0, "daily_max_loss_pct": 0.0},
        execution={"order_timeout_seconds": 3600.0}, reconcile={"interval_seconds": 600.0},
        broker={"paper_latency_ms": 0.0, "paper_poll_ms": 50.0}, metrics={"enabled": metrics_on})
    quotes = QuoteBook()
    quotes.set("SEC_49081", 100.0)
    clock = SystemClock()
    broker = TimedBroker(quotes, clock)
    runtime = Runtime(settings, "trader", clock=clock, serve_http=dashboards > 0,
                      wiring=Wiring(subtrees=frozenset({"trading"}), broker=broker, quotes=quotes)).start()
    stop = multiprocessing.Event()
    counts = multiprocessing.Value("i", 0)
    poller = None
    try:
        trader = runtime.trading
        assert trader is not None and trader.ready.wait(30.0)
        if dashboards:
            port = runtime.servers[-1].port
            poller = multiprocessing.Process(target=_poll, args=(port, dashboards, stop, counts), daemon=True)
            poller.start()
        for i in range(20):  # warm-up
            trader.desk.tell(signal(f"W-{i}"))
        broker.wait_for([correlation_id(f"W-{i}", Leg.ENTRY) for i in range(20)])
        polls_before = counts.value
        started_all = time.perf_counter()
        latencies = []
        for i in range(signals):
            pos_id = f"S-{i:05d}"
            started = time.perf_counter()
            trader.desk.tell(signal(pos_id))
            cid = correlation_id(pos_id, Leg.ENTRY)
            broker.wait_for([cid])
            latencies.append(broker.accepted[cid] - started)
            time.sleep(0.005)  # signals spread over time, as a strategy raises them, so the polls interleave
        seconds = time.perf_counter() - started_all
        return {"stats": stats_ms(latencies), "polls_per_s": round((counts.value - polls_before) / seconds, 1)}
    finally:
        stop.set()
        if poller is not None:
            poller.join(10)
        runtime.shutdown()
        pykka.ActorRegistry.stop_all()


def signals_part(pg_url: str, signals: int, rounds: int, what: str) -> dict[str, Any]:
    """what: "metrics" (on vs off, no HTTP) or "dashboards" (3 polling vs none, metrics on)."""
    variants = (("on", {"metrics": True, "dashboards": 0}), ("off", {"metrics": False, "dashboards": 0})) \
        if what == "metrics" else (("dashboards_3", {"metrics": True, "dashboards": 3}),
                                   ("dashboards_0", {"metrics": True, "dashboards": 0}))
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
    for round_no in range(rounds):
        order = variants if round_no % 2 == 0 else tuple(reversed(variants))
        for name, variant in order:
            results[name].append(_child("signals", pg_url=pg_url, signals=signals, **variant))
    out: dict[str, Any] = {"part": "signal_to_order_" + what, "signals": signals, "rounds": rounds}
    for name, runs in results.items():
        out[name] = {"p50_ms": round(statistics.median(r["stats"]["p50_ms"] for r in runs), 3),
                     "p99_ms": round(statistics.median(r["stats"]["p99_ms"] for r in runs), 3),
                     "mean_ms": round(statistics.median(r["stats"]["mean_ms"] for r in runs), 3),
                     "polls_per_s": round(statistics.median(r["polls_per_s"] for r in runs), 1),
                     "all_p50_ms": [r["stats"]["p50_ms"] for r in runs]}
    base, loaded = (out["off"], out["on"]) if what == "metrics" else (out["dashboards_0"], out["dashboards_3"])
    out["p50_cost_pct"] = round((loaded["p50_ms"] - base["p50_ms"]) / base["p50_ms"] * 100, 2)
    out["p99_cost_pct"] = round((loaded["p99_ms"] - base["p99_ms"]) / base["p99_ms"] * 100, 2)
    return out


# -- child processes (one runtime per process, as in production) --------------------------------------------------

def _child(kind: str, **kwargs: Any) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.bench_observability", "--child", kind,
                          "--child-args", json.dumps(kwargs)], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} child failed: {out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _run_child(kind: str, args: dict[str, Any]) -> dict[str, Any]:
    if kind == "ingest":
        symbols = [f"SEC_{40000 + i}" for i in range(args["symbols"])]
        rate = ingest_round(Path(args["csv"]), Path(args["workdir"]), symbols, args["ticks"], args["metrics"])
        return {"rate": rate}
    return signal_round(args["pg_url"], args["signals"], args["metrics"], args["dashboards"])


def _fresh_schema(pg_url: str) -> tuple[str, str]:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    joiner = "&" if "?" in pg_url else "?"
    return schema, f"{pg_url}{joiner}options={quote(f'-csearch_path={schema}')}"


def _drop_schema(pg_url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=1_000_000)
    parser.add_argument("--signals", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--parts", default="ingest,metrics,dashboards")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-args", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child == "signals":
            child_args = json.loads(args.child_args)
            schema, url = _fresh_schema(child_args["pg_url"])
            try:
                print(json.dumps(_run_child("signals", {**child_args, "pg_url": url})))
            finally:
                _drop_schema(child_args["pg_url"], schema)
        else:
            print(json.dumps(_run_child(args.child, json.loads(args.child_args))))
        return
    parts = args.parts.split(",")
    if "ingest" in parts:
        emit("observability_ingest", ingest(args.ticks, args.rounds))
    if "metrics" in parts:
        emit("observability_signal_to_order_metrics", signals_part(args.pg_url, args.signals, args.rounds, "metrics"))
    if "dashboards" in parts:
        emit("observability_signal_to_order_dashboards",
             signals_part(args.pg_url, args.signals, args.rounds, "dashboards"))


if __name__ == "__main__":
    main()
