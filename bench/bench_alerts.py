"""What the alerts cost the code that logs: one log line through the real JSON handler (to a file), with and
without the alerts' log handler installed, for a line no alert reads (nearly all of them) and for an alert
line whose receiver is dead (a black-hole webhook: the handler only enqueues; the actor waits, not the
logger). Baseline and candidate run in the same process, interleaved.

    python -m bench.bench_alerts [--lines N] [--rounds R]
"""

from __future__ import annotations

import argparse
import logging
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench.common import emit


def _per_line_us(log: logging.LoggerAdapter, lines: int, event: str) -> float:  # type: ignore[type-arg]
    started = time.perf_counter()
    for n in range(lines):
        log.event(event, "bench line", level=logging.WARNING, symbol="NIFTY", n=n,  # type: ignore[attr-defined]
                  incident_id=f"kill-switch-{n}")
    return (time.perf_counter() - started) / lines * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from actors.alerts.assembly import assemble_alerts
    from actors.clock import SystemClock
    from actors.wiring import Infrastructure
    from config.settings import Settings
    from storage.bus import open_bus
    from storage.opening import open_storage
    from supervision.scheduler import Scheduler
    from supervision.supervisor import SupervisorHandle, start_root, stop_root
    from telemetry.logs import configure_logging, get_logger

    folder = Path(tempfile.mkdtemp())
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead.listen(1024)
    settings = Settings().replace(storage={"url": f"sqlite:///{folder / 'x.db'}"}, alerts={
        "webhook_url": f"http://127.0.0.1:{dead.getsockname()[1]}/dead", "timeout_seconds": 5.0, "queue_size": 200})
    configure_logging("INFO", str(folder / "bench.log"), stream=open(folder / "stdout.log", "w"))  # noqa: SIM115
    storage = open_storage(settings.storage.url)
    infra = Infrastructure(settings, "all", storage, open_bus("", ""), SystemClock(), Scheduler.shared(),
                           threading.Event())
    alerts = assemble_alerts(infra)
    assert alerts is not None
    root = SupervisorHandle("root")
    root.add(alerts.subtree.spec)
    start_root(root, lambda reason: None)
    log = get_logger("mybot.bench")
    results: dict[str, list[float]] = {"plain": [], "with_handler": [], "alert_lines_dead_webhook": []}
    for _ in range(args.rounds):
        results["plain"].append(_per_line_us(log, args.lines, "CONTROL_CALL"))
        logging.getLogger().addHandler(alerts.handler)
        results["with_handler"].append(_per_line_us(log, args.lines, "CONTROL_CALL"))
        results["alert_lines_dead_webhook"].append(_per_line_us(log, args.lines // 10, "KILL_SWITCH_ENGAGED"))
        logging.getLogger().removeHandler(alerts.handler)
    counters = alerts.counters.get()
    stop_root(root, timeout=10)
    emit("alerts_log_overhead", {
        "lines_per_round": args.lines, "rounds": args.rounds,
        **{f"{name}_us_per_line_median": round(statistics.median(v), 2) for name, v in results.items()},
        "dropped": counters.dropped, "raised": counters.raised})


if __name__ == "__main__":
    main()
