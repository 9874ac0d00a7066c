"""Run every benchmark in sequence (`make bench`); each prints its JSON line."""

from __future__ import annotations

import subprocess
import sys

from bench.common import ROOT

BENCHES = [
    ["-m", "bench.bench_supervision"],
    ["-m", "bench.bench_startup"],
    ["-m", "bench.bench_mds_latency"],
    ["-m", "bench.bench_http"],
    ["-m", "bench.bench_ingest"],
    ["-m", "bench.bench_execution"],
    ["-m", "bench.bench_protection"],
    ["bench/bench_scoring.py"],
    ["-m", "bench.bench_replay"],
    ["bench/bench_storage.py"],
    ["-m", "bench.bench_instruments"],
    ["-m", "bench.bench_alerts"],
]


def main() -> int:
    failed = 0
    for args in BENCHES:
        result = subprocess.run([sys.executable, *args], cwd=ROOT)
        failed += result.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
