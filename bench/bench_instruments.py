"""Benchmark: loading Dhan's compact scrip master (~200k rows) into an InstrumentIndex.

Run: .venv/bin/python -m bench.bench_instruments [--rows 200000] [--rounds 3]

Writes a realistic full compact CSV to a temp file: ~18 % index options, futures and indices (the rows
the parser keeps) among equities, stock options and futures, currency and commodity derivatives (the
rows it skips), grouped by segment as Dhan's file is, some names quoted with commas. Then, each in a FRESH
subprocess so that peak RSS belongs to that one job:

* idle      the interpreter with core.instruments imported, doing nothing (the floor of RSS);
* baseline  `csv.reader` over the same file, touching every row and keeping nothing;
* parse     `InstrumentIndex(parse_scrip_master(file))`: stream, filter, build every lookup;
* load      the refresher's whole path (actors/market_data/instrument_master.py): the file streamed over
            HTTP from a local server (requests `stream=True` + `iter_lines`, actors.instruments.
            fetch_scrip_master), the index built, and the kept rows stored with `instruments.replace_all`
            in a fresh SQLite database (`--pg-url URL` stores into PostgreSQL as well, a fresh schema).

Rounds alternate baseline and parse; the medians of wall seconds and peak RSS (ru_maxrss) are reported
with the ratio parse / baseline (peak RSS is the child's VmHWM). Targets (issue 10): parse < 3 s and < 150 MB.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, emit  # noqa: E402
from core.instruments import COMPACT_HEADER, Instrument, compact_row  # noqa: E402

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _tuesdays(start: str, count: int, step_days: int = 7) -> list[str]:
    from datetime import date, timedelta

    day = date.fromisoformat(start)
    return [(day + timedelta(days=step_days * k)).isoformat() for k in range(count)]


def _symbol_month(expiry: str) -> str:
    return f"{MONTHS[int(expiry[5:7]) - 1]}{expiry[:4]}"


def kept_rows(target: int, ids: itertools.count[int]) -> list[str]:
    """Index options and futures of NSE and BSE, plus the index rows, about `target` lines."""
    out = [compact_row(Instrument("IDX_I", sid, "INDEX", name, name, 1, 0.01)) for name, sid in
           (("NIFTY", "13"), ("BANKNIFTY", "25"), ("FINNIFTY", "27"), ("MIDCPNIFTY", "442"),
            ("NIFTYNXT50", "38"), ("SENSEX", "51"), ("BANKEX", "69"))]
    books = [  # underlying, segment, lot, strike step, centre, expiries (weekly count), weight
        ("NIFTY", "NSE_FNO", 65, 50, 25_000, _tuesdays("2026-12-01", 16), 0.32),
        ("BANKNIFTY", "NSE_FNO", 30, 100, 52_000, _tuesdays("2026-12-29", 4, 28), 0.12),
        ("FINNIFTY", "NSE_FNO", 60, 50, 24_000, _tuesdays("2026-12-29", 3, 28), 0.08),
        ("MIDCPNIFTY", "NSE_FNO", 120, 25, 13_000, _tuesdays("2026-12-29", 3, 28), 0.08),
        ("NIFTYNXT50", "NSE_FNO", 25, 100, 68_000, _tuesdays("2026-12-29", 3, 28), 0.05),
        ("SENSEX", "BSE_FNO", 20, 100, 82_000, _tuesdays("2026-12-03", 12), 0.30),
        ("BANKEX", "BSE_FNO", 30, 100, 60_000, _tuesdays("2026-12-29", 3, 28), 0.05),
    ]
    for underlying, segment, lot, step, centre, expiries, weight in books:
        per_expiry = max(2, int(target * weight / len(expiries) / 2))
        weekly = underlying in ("NIFTY", "SENSEX")
        for n, expiry in enumerate(expiries):
            flag = "W" if weekly and n % 4 != 3 else "M"
            for k in range(per_expiry):
                strike = float(centre + (k - per_expiry // 2) * step)
                for option_type in ("CE", "PE"):
                    symbol = f"{underlying}-{_symbol_month(expiry)}-{int(strike)}-{option_type}"
                    out.append(compact_row(Instrument(segment, str(next(ids)), "OPTIDX", symbol, underlying, lot,
                                                      0.05, expiry, strike, option_type, flag)))
            if flag == "M":
                out.append(compact_row(Instrument(segment, str(next(ids)), "FUTIDX",
                                                  f"{underlying}-{_symbol_month(expiry)}-FUT", underlying, lot,
                                                  0.10, expiry, expiry_flag="M")))
    return out


def skipped_rows(count: int, ids: itertools.count[int], rng: random.Random) -> list[str]:
    """Equities (some quoted names with commas), stock options and futures, currency, commodities."""
    out: list[str] = []
    stocks = [f"STOCK{n:04d}" for n in range(2_000)]
    shares = {"equity": 0.10, "stock_fno": 0.62, "currency": 0.10, "commodity": 0.18}
    for n in range(int(count * shares["equity"])):
        stock = stocks[n % len(stocks)]
        exchange = "NSE" if n % 3 else "BSE"
        name = f'"{stock.title()} Industries, Ltd"' if n % 7 == 0 else f"{stock.title()} Industries Ltd"
        out.append(f"{exchange},E,{next(ids)},EQUITY,0,{stock},1.0,{name},,-0.01000,XX,5.0000,NA,ES,EQ,"
                   f"{stock} INDUSTRIES LTD")
    expiries = ["2026-12-29", "2027-01-25", "2027-02-23"]
    for n in range(int(count * shares["stock_fno"])):
        stock, expiry = stocks[n % 220], expiries[n % 3]
        if n % 41 == 0:
            out.append(f"NSE,D,{next(ids)},FUTSTK,0,{stock}-{_symbol_month(expiry)}-FUT,{rng.choice((250, 500, 1000))}.0,"
                       f"{stock} {expiry[8:]} DEC FUT,{expiry} 14:30:00,-0.01000,XX,10.0000,M,FUT,NA,")
            continue
        strike = 100 + 10 * (n % 97)
        kind = "CE" if n % 2 else "PE"
        out.append(f"NSE,D,{next(ids)},OPTSTK,0,{stock}-{_symbol_month(expiry)}-{strike}-{kind},500.0,"
                   f"{stock} {expiry[8:]} {strike} {'CALL' if kind == 'CE' else 'PUT'},{expiry} 14:30:00,"
                   f"{strike}.00000,{kind},5.0000,M,OP,NA,")
    for n in range(int(count * shares["currency"])):
        pair = ("USDINR", "EURINR", "GBPINR", "JPYINR")[n % 4]
        strike = 80 + (n % 80) * 0.25
        kind = "CE" if n % 2 else "PE"
        out.append(f"NSE,C,{next(ids)},OPTCUR,0,{pair}-Dec2026-{strike}-{kind},1000.0,{pair} 29 DEC {strike} {kind},"
                   f"2026-12-29 12:30:00,{strike:.5f},{kind},0.2500,W,OP,NA,")
    while len(out) < count:
        commodity = ("CRUDEOIL", "NATURALGAS", "GOLD", "SILVER", "COPPER")[len(out) % 5]
        strike = 1000 + 50 * (len(out) % 200)
        kind = "CE" if len(out) % 2 else "PE"
        out.append(f"MCX,M,{next(ids)},OPTFUT,0,{commodity}-Dec2026-{strike}-{kind},100.0,"
                   f"{commodity} 16 DEC {strike} {kind},2026-12-16 23:30:00,{strike:.5f},{kind},100.0000,M,OP,NA,"
                   f"{commodity}")
    return out


def write_master(path: Path, rows: int, seed: int = 20261129) -> dict[str, int]:
    rng = random.Random(seed)
    ids = itertools.count(10_000)
    kept = kept_rows(int(rows * 0.18), ids)
    skipped = skipped_rows(rows - len(kept), ids, rng)
    equities = [r for r in skipped if ",E," in r[:8]]
    rest = [r for r in skipped if ",E," not in r[:8]]
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(",".join(COMPACT_HEADER) + "\r\n")
        for row in itertools.chain(equities, kept, rest):  # grouped by segment, index rows among them
            fh.write(row + "\r\n")
    return {"rows": len(kept) + len(skipped), "in_scope": len(kept), "bytes": path.stat().st_size}


# -- the measured jobs (each runs in its own interpreter) -----------------------------------------------


def _peak_rss_mb() -> float:
    """VmHWM, the peak RSS of this process image. Not ru_maxrss: Linux carries the parent's RSS into
    it across fork/vfork + exec, so a child of a big parent would report the parent's size."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def child(job: str, path: str) -> dict[str, object]:
    from core.instruments import InstrumentIndex, ParseReport, parse_scrip_master

    start = time.perf_counter()
    if job == "idle":
        result: dict[str, object] = {}
    elif job == "baseline":
        import csv

        rows = 0
        with open(path, encoding="utf-8", newline="") as fh:
            for _ in csv.reader(fh):
                rows += 1
        result = {"rows": rows - 1}
    elif job == "parse":
        report = ParseReport()
        with open(path, encoding="utf-8", newline="") as fh:
            index = InstrumentIndex(parse_scrip_master(fh, report=report))
        result = {"rows": report.rows, "kept": len(index), "rejected": report.rejected,
                  "nifty_expiries": len(index.expiries("NIFTY"))}
    else:  # load: url|storage_url
        from actors.instruments import fetch_scrip_master
        from storage.opening import open_storage

        url, storage_url = path.split("|", 1)
        rows, report = fetch_scrip_master(url, timeout=30)
        index = InstrumentIndex(rows)
        fetched = time.perf_counter()
        storage = open_storage(storage_url)
        storage.migrate()
        migrated = time.perf_counter()
        stored = storage.instruments.replace_all(rows, time.time())
        storage.close()
        result = {"rows": report.rows, "kept": len(index), "stored": stored,
                  "fetch_parse_index_seconds": round(fetched - start, 4),
                  "store_seconds": round(time.perf_counter() - migrated, 4)}
        start += migrated - fetched  # the schema migration is not part of a refresh
    result["seconds"] = round(time.perf_counter() - start, 4)
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


def serve(directory: Path) -> tuple[str, object]:
    """A local HTTP server for the master file (the parent's threads; the child downloads from it)."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's signature
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


def pg_schema_url(pg_url: str, schema: str) -> str:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.execute(f'CREATE SCHEMA "{schema}"')
    joiner = "&" if "?" in pg_url else "?"
    return f"{pg_url}{joiner}options=-csearch_path%3D{schema}"


def drop_pg_schema(pg_url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def run_child(job: str, path: Path | str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-m", "bench.bench_instruments", "--child", job, str(path)],
                         cwd=ROOT, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pg-url", default="", help="also store the master into this PostgreSQL (a fresh schema)")
    parser.add_argument("--child", nargs=2, metavar=("JOB", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1])))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "api-scrip-master.csv"
        shape = write_master(path, args.rows)
        idle = run_child("idle", path)
        baseline, parsed, loaded, loaded_pg = [], [], [], []
        base_url, server = serve(Path(tmp))
        url = f"{base_url}/{path.name}"
        try:
            for n in range(args.rounds):
                baseline.append(run_child("baseline", path))
                parsed.append(run_child("parse", path))
                loaded.append(run_child("load", f"{url}|sqlite:///{Path(tmp) / f'load{n}.db'}"))
                if args.pg_url:
                    schema = f"bench_instruments_{n}"
                    try:
                        loaded_pg.append(run_child("load", f"{url}|{pg_schema_url(args.pg_url, schema)}"))
                    finally:
                        drop_pg_schema(args.pg_url, schema)
        finally:
            server.shutdown()  # type: ignore[attr-defined]

    def median(samples: list[dict[str, object]], key: str) -> float:
        return round(statistics.median(float(s[key]) for s in samples), 3)  # type: ignore[arg-type]

    result = {
        "file": {**shape, "mb": round(shape["bytes"] / 1e6, 1)},
        "kept": parsed[0]["kept"], "rejected": parsed[0]["rejected"],
        "idle_rss_mb": idle["peak_rss_mb"],
        "baseline_csv_reader": {"seconds": median(baseline, "seconds"), "peak_rss_mb": median(baseline, "peak_rss_mb")},
        "parse_into_index": {"seconds": median(parsed, "seconds"), "peak_rss_mb": median(parsed, "peak_rss_mb"),
                             "seconds_rounds": [p["seconds"] for p in parsed]},
    }
    for name, samples in (("load_into_sqlite", loaded), ("load_into_postgresql", loaded_pg)):
        if samples:
            result[name] = {"seconds": median(samples, "seconds"), "peak_rss_mb": median(samples, "peak_rss_mb"),
                            "fetch_parse_index_seconds": median(samples, "fetch_parse_index_seconds"),
                            "store_seconds": median(samples, "store_seconds"), "stored": samples[0]["stored"]}
    result["parse_vs_baseline_time"] = round(result["parse_into_index"]["seconds"]  # type: ignore[index]
                                             / result["baseline_csv_reader"]["seconds"], 2)  # type: ignore[index]
    result["targets"] = {"seconds_lt_3": result["parse_into_index"]["seconds"] < 3,  # type: ignore[index]
                         "rss_lt_150mb": result["parse_into_index"]["peak_rss_mb"] < 150,  # type: ignore[index]
                         "load_into_sqlite_seconds_lt_3": result["load_into_sqlite"]["seconds"] < 3,  # type: ignore[index]
                         "load_into_sqlite_rss_lt_150mb": result["load_into_sqlite"]["peak_rss_mb"] < 150}  # type: ignore[index]
    emit("instruments", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
