"""Start-up: `mybot run` (embedded default, role all) to a 200 from /v1/health, median of N runs.

Run: .venv/bin/python -m bench.bench_startup [--runs 5]
Baseline, same run: the interpreter starting and importing the CLI (`python -c 'import daemon.cli'`),
the floor any daemon start pays. Each run uses a fresh SQLite file and free ports.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from bench.common import ROOT, emit


def one_start(role: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("MYBOT_")},
               "MYBOT_HTTP_MDS_PORT": "0", "MYBOT_HTTP_CONTROL_PORT": "0", "PYTHONPATH": str(ROOT),
               "MYBOT_STORAGE_URL": f"sqlite:///{tmp}/mybot.db", "MYBOT_SECRETS_DIR": f"{tmp}/secrets"}
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", "run", "--role", role], cwd=tmp,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            port = None
            assert proc.stdout is not None
            for line in proc.stdout:
                entry = json.loads(line) if line.startswith("{") else {}
                if entry.get("event") == "HTTP_STARTED" and entry.get("server") == "control":
                    port = int(entry["port"])
                    break
            assert port is not None, "no control server"
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=2) as resp:
                        if resp.status == 200:
                            return time.perf_counter() - started
                except urllib.error.HTTPError:
                    pass
                time.sleep(0.01)  # polling another process's HTTP endpoint: nothing to await
        finally:
            proc.terminate()
            proc.wait(10)


def import_floor() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import daemon.cli, daemon.runtime, actors.market_data.assembly"],
                   cwd=ROOT, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--role", default="all")
    args = parser.parse_args()
    starts, floors = [], []
    for _ in range(args.runs):
        floors.append(import_floor())
        starts.append(one_start(args.role))
    emit("startup", {"role": args.role, "runs": args.runs,
                     "run_to_healthy_median_s": round(statistics.median(starts), 3),
                     "run_to_healthy_max_s": round(max(starts), 3),
                     "interpreter_and_imports_median_s": round(statistics.median(floors), 3),
                     "target": "< 2 s on the embedded default"})


if __name__ == "__main__":
    main()
