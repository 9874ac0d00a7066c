"""MDS HTTP: /v1/candles/last?limit=300 vs a trivial endpoint on the same waitress server, same run.

Run: .venv/bin/python -m bench.bench_http [--seconds 5] [--connections 16] [--rounds 2]
The server runs in a child process (as in production, its own GIL); the load comes from 4 processes
holding `connections` keep-alive connections in total. Reported per endpoint: requests/s and latency
p50/p99 (medians over rounds), and the candles/trivial rate ratio.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import statistics
import threading
import time
from datetime import datetime
from typing import Any

from bench.common import emit, percentile

CANDLES = "/v1/candles/last?symbol=NIFTY&timeframe_seconds=60&limit=300"
TRIVIAL = "/bench/trivial"


def serve(port_queue: Any, stop: Any) -> None:
    import falcon

    from actors.clock import SystemClock
    from actors.market_data.market_cache import MarketCache
    from core.market import IST, Candle
    from httpapi.app import create_mds_app
    from httpapi.server import HttpServer
    from telemetry.logs import configure_logging

    configure_logging("WARNING")

    class Runtime:
        role = "mds"

        def health(self) -> tuple[bool, dict[str, Any]]:
            return True, {}

    class Trivial:
        def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
            resp.media = {"ok": True}

    cache = MarketCache(["NIFTY"], SystemClock())
    start = int(datetime(2026, 11, 20, 9, 15, tzinfo=IST).timestamp())
    cache.add_candles("NIFTY", [Candle("NIFTY", start + 60 * i, 24000.0 + i, 24010.5 + i, 23990.25 + i,
                                       24005.75 + i, 1000 + i, 40) for i in range(1500)])
    app = create_mds_app(cache, Runtime())
    app.add_route(TRIVIAL, Trivial())
    server = HttpServer(app, "127.0.0.1", 0, 8, "bench").start()
    port_queue.put(server.port)
    stop.wait()
    server.stop()


def load(port: int, path: str, seconds: float, threads: int, out: Any) -> None:
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine = []
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            assert response.status == 200, response.status
            mine.append(time.perf_counter() - started)
        conn.close()
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put(latencies)


def measure(port: int, path: str, seconds: float, connections: int) -> dict[str, float]:
    procs, out = 4, mp.Queue()
    per = max(1, connections // procs)
    children = [mp.Process(target=load, args=(port, path, seconds, per, out)) for _ in range(procs)]
    for child in children:
        child.start()
    latencies: list[float] = []
    for _ in children:
        latencies.extend(out.get(timeout=seconds + 60))
    for child in children:
        child.join()
    return {"rps": len(latencies) / seconds, "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    ports, stop = mp.Queue(), mp.Event()
    server = mp.Process(target=serve, args=(ports, stop))
    server.start()
    port = ports.get(timeout=30)
    results: dict[str, list[dict[str, float]]] = {"candles": [], "trivial": []}
    try:
        for _ in range(args.rounds):
            results["trivial"].append(measure(port, TRIVIAL, args.seconds, args.connections))
            results["candles"].append(measure(port, CANDLES, args.seconds, args.connections))
    finally:
        stop.set()
        server.join(10)

    def med(name: str, key: str) -> float:
        return round(statistics.median(r[key] for r in results[name]), 3)

    emit("mds_http", {
        "connections": args.connections, "seconds": args.seconds, "rounds": args.rounds,
        "candles_limit300": {"rps": med("candles", "rps"), "p50_ms": med("candles", "p50_ms"),
                             "p99_ms": med("candles", "p99_ms")},
        "trivial": {"rps": med("trivial", "rps"), "p50_ms": med("trivial", "p50_ms"),
                    "p99_ms": med("trivial", "p99_ms")},
        "candles_vs_trivial": round(med("candles", "rps") / med("trivial", "rps"), 3),
        "target": ">= 0.85 of the trivial rate, p99 < 10 ms"})


if __name__ == "__main__":
    main()
