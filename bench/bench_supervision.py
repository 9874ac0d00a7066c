"""Supervision costs: restart latency over 1,000 crashes; tell throughput through a handle vs raw Pykka.

Run: .venv/bin/python -m bench.bench_supervision [--crashes 1000] [--messages 200000] [--rounds 5]
Restart latency = from the crashing tell to the first successful ask through the same handle (the new
instance serving it). Throughput: the same counting actor fed N tells raw (ActorRef.tell) and through a
ChildHandle, alternating rounds in one run; the ratio of medians is reported.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import pykka

from bench.common import emit, summary_ms
from supervision.actor import ChildUnavailable, SupervisedActor
from supervision.supervisor import ChildSpec, SupervisorHandle, start_root, stop_root
from telemetry.logs import configure_logging


class Crash:
    pass


class Ping:
    pass


class Counter(SupervisedActor):
    def __init__(self, link: Any) -> None:
        super().__init__(link)
        self.count = 0

    def receive(self, message: Any) -> Any:
        if message is None:
            self.count += 1
            return None
        if isinstance(message, Ping):
            return self.count
        if isinstance(message, Crash):
            raise RuntimeError("bench crash")
        return super().receive(message)


def restart_latency(crashes: int) -> dict[str, Any]:
    face = SupervisorHandle("root", [ChildSpec("counter", lambda link: Counter.start(link))])
    start_root(face, lambda reason: None, max_restarts=crashes * 2, max_seconds=3600,
               max_consecutive_crashes=crashes * 2)  # crashing in a row on purpose
    handle = face.handle("counter")
    samples = []
    for _ in range(crashes):
        handle.ask(Ping(), timeout=5)
        started = time.perf_counter()
        handle.tell(Crash())
        while True:
            try:
                handle.ask(Ping(), timeout=1)
                break
            except ChildUnavailable:
                continue  # down or not yet replaced: ask again at once (fails fast, no sleep)
            except pykka.ActorDeadError:
                continue
        samples.append(time.perf_counter() - started)
    stop_root(face, timeout=10)
    return summary_ms(samples)


def tell_throughput(messages: int, rounds: int) -> dict[str, Any]:
    face = SupervisorHandle("root", [ChildSpec("counter", lambda link: Counter.start(link))])
    start_root(face, lambda reason: None)
    handle = face.handle("counter")
    raw_ref = Counter.start(None)
    raw, supervised = [], []
    for _ in range(rounds):
        for label, send, target in (("raw", raw_ref.tell, raw_ref), ("handle", handle.tell, handle)):
            before = target.ask(Ping(), timeout=30)
            started = time.perf_counter()
            for _ in range(messages):
                send(None)
            after = target.ask(Ping(), timeout=60)  # a barrier: every tell has been handled
            elapsed = time.perf_counter() - started
            assert after - before == messages
            (raw if label == "raw" else supervised).append(messages / elapsed)
    raw_ref.stop()
    stop_root(face, timeout=10)
    raw_median, handle_median = statistics.median(raw), statistics.median(supervised)
    return {"raw_tells_per_s": round(raw_median), "handle_tells_per_s": round(handle_median),
            "handle_vs_raw": round(handle_median / raw_median, 3), "rounds": rounds, "messages": messages}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--crashes", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    configure_logging("CRITICAL")
    emit("restart_latency", {"crashes": args.crashes, **restart_latency(args.crashes),
                             "target": "p99 < 20 ms"})
    emit("handle_overhead", {**tell_throughput(args.messages, args.rounds), "target": ">= 0.85 of raw"})


if __name__ == "__main__":
    main()
