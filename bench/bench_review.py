"""`mybot review` over one busy day: seconds and peak RSS, next to `wc -l` and a plain json.loads loop.

The day: 1M lines from one process (09:15-15:30 IST), written by telemetry.logs' JsonFormatter through a
RotatingFileHandler (50 MB files, the daemon's default size) at virtual times; the two oldest rotations
gzipped as logrotate would. 200 symbols, 100 trades (some with timeouts, slippage exits, exit retries),
a few crashes, outages, stale feeds, a kill switch, plain-text SDK prints. The mix per session minute
is in MIX below. Generated once into bench/out/review/ (reused while its parameters match).

Each measurement runs in a fresh process (peak RSS: its own VmHWM), 3 rounds, alternating; the figures
are the medians. Targets (issue 11): the review <= 2x the json.loads loop, RSS < 300 MB. The review
parses with orjson, so an orjson.loads loop over the same files is measured too: the review's own cost
is the distance to that floor.

    python -m bench.bench_review [--lines N] [--rounds R]
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import logging.handlers
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import ROOT, emit

OUT = ROOT / "bench" / "out" / "review"
DAY = "2026-11-20"
SESSION_START = "09:15:00"
SESSION_SECONDS = 6 * 3600 + 15 * 60
MAX_BYTES = 50_000_000
# Lines per session minute of a busy process, besides the trades and incidents (scaled to --lines).
MIX = {
    "CANDLE_CLOSED": 200,  # one per symbol per minute (a DEBUG-ish line: exercises the price charts)
    "ENTRY_SKIPPED": 60,  # qualifying scores the strategy could not act on (long lines: score components)
    "LATE_TICK_DROPPED": 80,
    "CANDLE_REVISED": 40,
    "CONTROL_CALL": 120,  # a dashboard polling the control API
    "OPTION_CHAIN_UPDATED": 8,
    "LOG": 2150,  # library lines (waitress, urllib3, websockets...) at INFO
}


def _generate(out: Path, lines: int, symbols: int, trades: int) -> list[str]:
    sys.path.insert(0, str(ROOT))
    from core.orders import Leg
    from telemetry.logs import JsonFormatter, get_logger, set_process_context
    from tests import review_support as day

    marker = out / "params.json"
    params = {"lines": lines, "symbols": symbols, "trades": trades, "version": 4}
    if marker.exists() and json.loads(marker.read_text()) == params:
        return _files(out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    path = out / "mybot.log"
    clock = day.VirtualClock(day.ist(SESSION_START))
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=50)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(clock)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    set_process_context(pid=4242, role="all")  # as the daemon's lines: every line names its process
    rng = random.Random(11)
    names = ["NIFTY", "BANKNIFTY", "FINNIFTY"] + [f"SEC_{49000 + i}" for i in range(symbols - 3)]
    per_minute = sum(MIX.values())
    minutes = SESSION_SECONDS // 60
    scale = (lines - trades * 17) / (per_minute * minutes)
    builder = get_logger("mybot.CandleBuilder")
    persister = get_logger("mybot.CandlePersister", actor="candle-persister")
    http = get_logger("mybot.http")
    poller = get_logger("mybot.OptionChainPoller", actor="option-chain-poller")
    library = [logging.getLogger(n) for n in ("waitress", "urllib3.connectionpool", "websockets.client")]
    trade_minutes = sorted(rng.sample(range(5, minutes - 30), trades))
    price = {s: 100.0 + rng.random() * 24000 for s in names}
    day.runtime_starting("all")
    clock.advance(0.4)
    day.runtime_started(4242, "all")
    written = 0
    incidents = {30: "stale", 95: "crash", 140: "db", 200: "bus", 260: "kill", 300: "stale", 330: "crash"}
    open_trades: list[tuple[int, day.Trade, float]] = []
    for minute in range(minutes):
        base = day.ist(SESSION_START) + minute * 60
        events: list[tuple[float, str]] = []
        for kind, count in MIX.items():
            n = int(count * scale + rng.random())
            events += [(base + rng.random() * 60, kind) for _ in range(n)]
        events.sort()
        for at, kind in events:
            clock.now = at
            if kind == "CANDLE_CLOSED":
                symbol = names[written % len(names)]
                price[symbol] *= 1 + rng.gauss(0, 0.0008)
                builder.event("CANDLE_CLOSED", f"{symbol} candle closed", actor=f"candles:{symbol}", symbol=symbol,
                              candle_ts=int(base - 60), close=round(price[symbol], 2), volume=rng.randint(10, 9000),
                              ticks=rng.randint(5, 300), revision=0, level=logging.INFO)
            elif kind == "ENTRY_SKIPPED":
                symbol = names[rng.randrange(3)]
                day.entry_skipped(symbol, round(price[symbol], 2), "3 open positions (limit 3)")
            elif kind == "LATE_TICK_DROPPED":
                symbol = names[rng.randrange(len(names))]
                builder.event("LATE_TICK_DROPPED", f"{symbol}: late tick for a closed minute", actor=f"candles:{symbol}",
                              count=1, total=rng.randint(1, 5000))
            elif kind == "CANDLE_REVISED":
                symbol = names[rng.randrange(len(names))]
                builder.event("CANDLE_REVISED", f"{symbol} revised", actor=f"candles:{symbol}",
                              candle_ts=int(base - 60), revision=1)
            elif kind == "CONTROL_CALL":
                http.event("CONTROL_CALL", "GET /v1/status", who="127.0.0.1", method="GET", path="/v1/status")
            elif kind == "OPTION_CHAIN_UPDATED":
                poller.event("OPTION_CHAIN_UPDATED", "NIFTY 2026-11-27: 120 strikes", symbol="NIFTY",
                             expiry="2026-11-27")
            else:
                rng.choice(library).info("127.0.0.1 - - GET /v1/quote?symbol=SEC_%d HTTP/1.1 200 %d",
                                         rng.randrange(49000, 49200), rng.randrange(100, 900))
            written += 1
            if written % 20_000 == 0:
                with open(path, "a") as handle:  # the SDK's plain prints in the captured stdout
                    handle.write("Connecting to wss://api-feed.dhan.co ... (dhanhq print)\n")
        clock.now = base + 30
        kind = incidents.get(minute)
        if kind == "stale":
            day.feed_stale("NIFTY")
            clock.advance(42.5)
            day.feed_resumed("NIFTY")
        elif kind == "crash":
            day.actor_crashed("candles:SEC_49010", "ValueError: bad tick", poison="TicksReceived")
            clock.advance(0.25)
            day.actor_started("candles", "candles:SEC_49010", restarted=True, generation=1)
        elif kind == "db":
            day.storage_unavailable()
            clock.advance(20)
            day.storage_recovered()
        elif kind == "bus":
            day.bus_degraded()
            clock.advance(9)
            day.bus_restored(12)
        elif kind == "kill":
            day.kill_switch(True, "news")
            clock.advance(25)
            day.kill_switch(False, "news over")
        persister.event("CANDLE_PERSIST_RESUMED", "flushed", buffered=0, flushed=len(names))
        while trade_minutes and trade_minutes[0] == minute:
            trade_minutes.pop(0)
            number = trades - len(trade_minutes)
            trade = day.Trade(f"NIFTY-2611{minute:04d}-{number}", clock, symbol=f"SEC_{49000 + number}")
            clock.now = base + 1
            entry = round(80 + rng.random() * 60, 2)
            trade.signal(round(price["NIFTY"], 2), entry)
            clock.advance(0.004)
            trade.accept(entry, round(entry * 1.01, 2))
            clock.advance(0.03)
            trade.submitted(f"E{number:06d}", Leg.ENTRY, round(entry * 1.01, 2))
            trade.placed(f"E{number:06d}", Leg.ENTRY, round(entry * 1.01, 2))
            clock.advance(0.3)
            slipped = number % 10 == 0
            trade.filled(f"E{number:06d}", Leg.ENTRY, trade.qty, round(entry * (1.012 if slipped else 1.001), 2))
            if slipped:
                trade.slipped()
            open_trades.append((minute + (0 if slipped else rng.randint(3, 25)), trade, entry))
        for due, trade, entry in [t for t in open_trades if t[0] <= minute]:
            open_trades.remove((due, trade, entry))
            clock.now = base + 45
            number = int(trade.pos_id.rsplit("-", 1)[1])
            exit_price = round(entry * (1 + rng.gauss(0.01, 0.05)), 2)
            trade.exit_signal("EXIT_SCORE")
            trade.exit_requested("EXIT_SCORE" if trade.context.state.value == "POSITION_OPEN" else "SLIPPAGE",
                                 round(exit_price * 0.99, 2), exit_price)
            trade.submitted(f"X{number:06d}", Leg.EXIT, round(exit_price * 0.99, 2))
            trade.placed(f"X{number:06d}", Leg.EXIT, round(exit_price * 0.99, 2))
            clock.advance(2)
            if number % 7 == 0:  # the exit order times out, is cancelled, and a second one fills
                trade.timed_out(f"X{number:06d}", Leg.EXIT)
                trade.cancelled(f"X{number:06d}", Leg.EXIT)
                trade.exit_requested("retry exit", round(exit_price * 0.99, 2), exit_price)
                trade.placed(f"Y{number:06d}", Leg.EXIT, round(exit_price * 0.99, 2))
                trade.filled(f"Y{number:06d}", Leg.EXIT, trade.qty, exit_price)
            else:
                trade.filled(f"X{number:06d}", Leg.EXIT, trade.qty, exit_price)
    clock.now = day.ist("15:30:05")
    day.runtime_stopped(0)
    handler.close()
    root.removeHandler(handler)
    files = _files(out)
    for old in [f for f in files if f.rsplit(".", 1)[-1].isdigit()][:2]:  # logrotate's compression
        with open(old, "rb") as src, gzip.open(old + ".gz", "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst)
        os.remove(old)
    marker.write_text(json.dumps(params))
    return _files(out)


def _files(out: Path) -> list[str]:
    """Oldest first, as the review reads them."""
    def rank(path: Path) -> int:
        parts = path.name.replace(".gz", "").split(".")
        return -int(parts[-1]) if parts[-1].isdigit() else 0
    return [str(p) for p in sorted((p for p in out.iterdir() if p.name.startswith("mybot.log")), key=rank)]


JSON_LOOP = """
import gzip, json, sys
n = bad = 0
for path in sys.argv[1:]:
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rb') as handle:
        for line in handle:
            try:
                json.loads(line)
            except ValueError:
                bad += 1
            n += 1
print(n, bad)
"""

ORJSON_LOOP = JSON_LOOP.replace("import gzip, json, sys", "import gzip, sys\nimport orjson as json")

REVIEW_LIB = f"""
import sys
import review
result = review.review(sys.argv[1:], day='{DAY}')
print(result.lines, result.garbled, len(result.incidents), len(result.trades))
"""


# Peak RSS as the measured process itself sees it (VmHWM of its own address space): wait4's ru_maxrss
# would carry the benchmark process's size over the fork/exec.
HWM = ("import atexit, sys; atexit.register(lambda: sys.stderr.write(next(l for l in open('/proc/self/status') "
       "if l.startswith('VmHWM')).split()[1] + ' kB HWM\\n'))\n")
CLI = HWM + "import runpy; sys.argv = ['mybot', *sys.argv[1:]]; runpy.run_module('daemon.cli', run_name='__main__')"


def _measure(command: list[str] | str, shell: bool = False) -> tuple[float, float | None, str]:
    """Wall seconds, peak RSS in MB (None for a shell pipeline), stdout of a fresh process."""
    start = time.perf_counter()
    run = subprocess.run(command, shell=shell, cwd=ROOT, capture_output=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    elapsed = time.perf_counter() - start
    if run.returncode != 0:
        raise RuntimeError(f"{command!r} exited {run.returncode}: {run.stderr.decode()[-500:]}")
    marks = [line for line in run.stderr.decode().splitlines() if line.endswith(" kB HWM")]
    rss = int(marks[-1].split()[0]) / 1024 if marks else None
    return elapsed, rss, run.stdout.decode().strip()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--trades", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    files = _generate(OUT, args.lines, args.symbols, args.trades)
    generated = time.perf_counter() - started
    plain = [f for f in files if not f.endswith(".gz")]
    packed = [f for f in files if f.endswith(".gz")]
    wc = "(zcat " + " ".join(packed) + "; cat " + " ".join(plain) + ") | wc -l"
    python = sys.executable
    commands = {
        "wc_l": (wc, True),
        "json_loads_loop": ([python, "-c", HWM + JSON_LOOP, *files], False),
        "orjson_loads_loop": ([python, "-c", HWM + ORJSON_LOOP, *files], False),
        "review_library": ([python, "-c", HWM + REVIEW_LIB, *files], False),
        "review_cli_json": ([python, "-c", CLI, "review", str(OUT / "mybot.log"), "--day", DAY, "--json"], False),
        "review_cli_html": ([python, "-c", CLI, "review", str(OUT / "mybot.log"), "--day", DAY, "--html",
                             str(OUT / "review.html")], False),
    }
    samples: dict[str, list[tuple[float, float | None]]] = {name: [] for name in commands}
    outputs: dict[str, str] = {}
    for _ in range(args.rounds):
        for name, (command, shell) in commands.items():
            seconds, rss, output = _measure(command, shell)
            samples[name].append((seconds, rss))
            outputs[name] = output.splitlines()[0][:120] if output else ""
    result: dict[str, object] = {"lines_target": args.lines, "files": len(files),
                                 "bytes": sum(os.path.getsize(f) for f in files),
                                 "generate_seconds": round(generated, 1)}
    peaks: dict[str, float | None] = {}
    for name, values in samples.items():
        rss = [v[1] for v in values if v[1] is not None]
        peaks[name] = max(rss) if rss else None
        result[name] = {"seconds_median": round(statistics.median(v[0] for v in values), 3),
                        "seconds": [round(v[0], 3) for v in values],
                        "peak_rss_mb": None if peaks[name] is None else round(peaks[name] or 0.0, 1),
                        "output": outputs[name]}
    loop = statistics.median(v[0] for v in samples["json_loads_loop"])
    lib = statistics.median(v[0] for v in samples["review_library"])
    cli = statistics.median(v[0] for v in samples["review_cli_html"])
    result["review_vs_json_loads"] = round(lib / loop, 3)
    result["review_vs_orjson_loads"] = round(lib / statistics.median(v[0] for v in samples["orjson_loads_loop"]), 3)
    result["cli_html_vs_json_loads"] = round(cli / loop, 3)
    worst = max(p or 0.0 for n, p in peaks.items() if n.startswith("review"))
    result["targets"] = {"review <= 2x json.loads": lib <= 2 * loop, "rss < 300 MB": worst < 300}
    emit("review", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
