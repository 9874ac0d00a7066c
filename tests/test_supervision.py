"""Supervision semantics on real Pykka threads."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import pykka
import pytest

from supervision.actor import ChildUnavailable, SupervisedActor
from supervision.supervisor import (
    AskTimeout,
    Backoff,
    ChildLink,
    ChildSpec,
    Restart,
    Strategy,
    SupervisorHandle,
    start_root,
    supervisor_spec,
)


@dataclass(frozen=True)
class Crash:
    reason: str = "boom"


@dataclass(frozen=True)
class Record:
    value: Any


@dataclass(frozen=True)
class Finish:
    pass


@dataclass(frozen=True)
class Block:
    until: threading.Event


class Journal:
    """What the test actors did, shared across their restarts; waits on conditions, never sleeps."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.records: list[tuple[str, Any]] = []

    def add(self, who: str, value: Any) -> None:
        with self.cond:
            self.records.append((who, value))
            self.cond.notify_all()

    def wait_for(self, predicate, timeout: float = 5.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: predicate(self.records), timeout), self.records

    def values(self, who: str) -> list[Any]:
        with self.cond:
            return [v for w, v in self.records if w == who]


class Worker(SupervisedActor):
    def __init__(self, link: ChildLink, name: str, journal: Journal, fail_start: list[int] | None = None):
        super().__init__(link)
        self.name = name
        self.journal = journal
        self.fail_start = fail_start

    def started(self) -> None:
        if self.fail_start and self.fail_start[0] > 0:
            self.fail_start[0] -= 1
            raise RuntimeError("cannot start")
        self.journal.add(self.name, "started")

    def receive(self, message: Any) -> Any:
        if isinstance(message, Crash):
            raise RuntimeError(message.reason)
        if isinstance(message, Record):
            self.journal.add(self.name, message.value)
            return message.value
        if isinstance(message, Finish):
            self.stop()
            return None
        if isinstance(message, Block):
            message.until.wait(5)
            return None
        return super().receive(message)


def worker(name: str, journal: Journal, restart: Restart = Restart.PERMANENT, **kw: Any) -> ChildSpec:
    return ChildSpec(id=name, start=lambda link: Worker.start(link, name, journal, **kw), restart=restart)


@pytest.fixture
def escalations():
    reasons: list[str] = []
    event = threading.Event()

    def on_escalate(reason: str) -> None:
        reasons.append(reason)
        event.set()

    yield reasons, event, on_escalate
    pykka.ActorRegistry.stop_all(timeout=5)


def test_crashing_child_is_restarted_and_its_handle_keeps_working(escalations):
    _, _, on_escalate = escalations
    journal = Journal()
    root = start_root(SupervisorHandle("root", [worker("a", journal)]), on_escalate)
    handle = root.handle("a")
    assert handle.ask(Record(1)) == 1
    handle.tell(Crash())
    journal.wait_for(lambda r: r.count(("a", "started")) == 2)
    assert handle.ask(Record(2), timeout=2) == 2
    status = handle.status()
    assert status["restarts"] == 1 and "RuntimeError: boom" in status["last_failure"]
    assert status["dead_letters"] == 1


def test_tell_sent_while_child_restarts_is_delivered_afterwards(escalations):
    _, _, on_escalate = escalations
    journal = Journal()
    spec = ChildSpec(id="slow", start=lambda link: Worker.start(link, "slow", journal),
                     backoff=Backoff(initial=0.2, maximum=0.2, jitter=0.0))
    root = start_root(SupervisorHandle("root", [spec]), on_escalate)
    handle = root.handle("slow")
    handle.ask(Record("warm"))
    handle.tell(Crash())
    deadline = time.monotonic() + 2
    while handle.alive and time.monotonic() < deadline:
        pass  # the crash is asynchronous: spin until the slot reports down (no sleep, bounded)
    assert not handle.alive
    assert handle.tell(Record("while-down")) is True
    journal.wait_for(lambda r: ("slow", "while-down") in r)
    assert journal.values("slow") == ["started", "warm", "started", "while-down"]


def test_queued_tells_behind_the_poison_message_survive_the_crash(escalations):
    _, _, on_escalate = escalations
    journal = Journal()
    root = start_root(SupervisorHandle("root", [worker("q", journal)]), on_escalate)
    handle = root.handle("q")
    gate = threading.Event()
    handle.tell(Block(gate))
    handle.tell(Crash("poison"))
    for i in range(5):
        handle.tell(Record(i))
    gate.set()
    journal.wait_for(lambda r: [v for w, v in r if w == "q" and isinstance(v, int)] == [0, 1, 2, 3, 4])
    assert handle.status()["dead_letters"] == 1


def test_ask_to_a_crashed_child_fails_within_its_deadline(escalations):
    _, _, on_escalate = escalations
    journal = Journal()
    spec = ChildSpec(id="b", start=lambda link: Worker.start(link, "b", journal),
                     backoff=Backoff(initial=5, maximum=5, jitter=0.0))
    root = start_root(SupervisorHandle("root", [spec]), on_escalate)
    handle = root.handle("b")
    handle.tell(Crash())
    deadline = time.monotonic() + 2
    while handle.alive and time.monotonic() < deadline:
        pass
    started = time.monotonic()
    with pytest.raises(ChildUnavailable):
        handle.ask(Record("x"), timeout=0.5)
    assert time.monotonic() - started < 0.5


def test_ask_that_misses_its_deadline_raises_ask_timeout(escalations):
    _, _, on_escalate = escalations
    journal = Journal()
    root = start_root(SupervisorHandle("root", [worker("c", journal)]), on_escalate)
    gate = threading.Event()
    handle = root.handle("c")
    handle.tell(Block(gate))
    started = time.monotonic()
    with pytest.raises(AskTimeout):
        handle.ask(Record("late"), timeout=0.1)
    assert time.monotonic() - started < 0.5
    gate.set()


def test_crash_in_on_start_is_a_crash_and_is_restarted(escalations):
    _, _, on_escalate = escalations
    journal = Journal()
    failures = [2]
    root = start_root(SupervisorHandle("root", [worker("s", journal, fail_start=failures)]), on_escalate)
    journal.wait_for(lambda r: ("s", "started") in r)
    handle = root.handle("s")
    assert handle.ask(Record("ok")) == "ok"
    assert handle.status()["restarts"] == 2


def test_rest_for_one_restarts_the_later_siblings_in_order(escalations):
    _, _, on_escalate = escalations
    journal = Journal()
    children = [worker("feed", journal), worker("candles", journal), worker("strategy", journal)]
    root = start_root(SupervisorHandle("root", children), on_escalate, strategy=Strategy.REST_FOR_ONE)
    journal.wait_for(lambda r: len(r) == 3)
    root.handle("candles").tell(Crash())
    journal.wait_for(lambda r: len(r) == 5)
    assert journal.records[3:] == [("candles", "started"), ("strategy", "started")]
    assert root.handle("feed").status()["restarts"] == 0
    assert root.handle("strategy").status()["restarts"] == 1


def test_intensity_exceeded_escalates_to_the_parent(escalations):
    reasons, escalated, on_escalate = escalations
    journal = Journal()
    inner = SupervisorHandle("inner", [worker("flaky", journal)])
    root = start_root(SupervisorHandle("root", [supervisor_spec(inner, max_restarts=2, max_seconds=10)]),
                      on_escalate, max_restarts=5, max_seconds=10)
    for expected in range(1, 4):
        journal.wait_for(lambda r, n=expected: r.count(("flaky", "started")) >= n)
        inner.handle("flaky").tell(Crash())
    # the third crash exceeds 2 restarts in 10 s: inner escalates, root restarts inner, which restarts flaky
    journal.wait_for(lambda r: r.count(("flaky", "started")) >= 4)
    assert root.handle("inner").status()["restarts"] == 1
    assert inner.handle("flaky").ask(Record("after")) == "after"
    assert not reasons


def test_root_escalation_calls_on_escalate(escalations):
    reasons, escalated, on_escalate = escalations
    journal = Journal()
    root = start_root(SupervisorHandle("root", [worker("w", journal)]), on_escalate,
                      max_restarts=1, max_seconds=10)
    for expected in (1, 2):
        journal.wait_for(lambda r, n=expected: r.count(("w", "started")) >= n)
        root.handle("w").tell(Crash())
    assert escalated.wait(5)
    assert "exceeded 1 restarts" in reasons[0]


def test_transient_child_that_ends_normally_is_not_restarted(escalations):
    _, _, on_escalate = escalations
    journal = Journal()
    trades = SupervisorHandle("trades", spec_for_key=lambda key: worker(f"trade-{key}", journal,
                                                                        restart=Restart.TRANSIENT))
    start_root(SupervisorHandle("root", [supervisor_spec(trades)]), on_escalate)
    deadline = time.monotonic() + 2
    while trades.owner is None and time.monotonic() < deadline:
        pass
    handle = trades.ensure_child("P1")
    assert handle.tell(Record("buffered-before-start"))
    journal.wait_for(lambda r: ("trade-P1", "buffered-before-start") in r)
    handle.tell(Crash())
    journal.wait_for(lambda r: r.count(("trade-P1", "started")) == 2)
    handle.tell(Finish())  # a normal end: the actor stops itself
    deadline = time.monotonic() + 2
    while trades.find_child("P1") is not None and time.monotonic() < deadline:
        pass
    assert trades.find_child("P1") is None
    assert journal.values("trade-P1").count("started") == 2


def test_operator_restart_replaces_the_instance_behind_the_same_handle(escalations):
    _, _, on_escalate = escalations
    journal = Journal()
    root = start_root(SupervisorHandle("root", [worker("op", journal)]), on_escalate)
    handle = root.handle("op")
    handle.ask(Record(0))
    status = root.restart_child("op")
    assert status["state"] == "running" and status["restarts"] == 1
    assert handle.ask(Record(1)) == 1
    assert journal.values("op") == ["started", 0, "started", 1]
