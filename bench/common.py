"""Small helpers shared by the benchmarks."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(samples_seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_seconds]
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 4), "p99_ms": round(percentile(ms, 99), 4),
            "max_ms": round(max(ms), 4), "mean_ms": round(statistics.fmean(ms), 4)}


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def emit(name: str, result: dict[str, Any]) -> None:
    result = {"bench": name, "python": platform.python_version(), "cpus": os.cpu_count(), **result}
    print(json.dumps(result), flush=True)
