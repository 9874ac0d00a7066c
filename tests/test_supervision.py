"""Supervision semantics on real Pykka threads.

Tests await conditions (the test actors' journal, `ChildHandle.wait_for_state`), never spin or sleep; the
`run_tree` fixture stops every tree it started for good afterwards and checks no actor outlived it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
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
    stop_root,
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
    entered: threading.Event | None = None
    seconds: float = 5.0


class Journal:
    """What the test actors did, shared across their restarts; waits on conditions, never sleeps.

    Also counts live instances per name (from started() to release()): more than one at a time is a twin.
    """

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.records: list[tuple[str, Any]] = []
        self.live: dict[str, int] = {}
        self.most_live: dict[str, int] = {}
        self.threads: dict[str, list[threading.Thread]] = {}

    def add(self, who: str, value: Any) -> None:
        with self.cond:
            self.records.append((who, value))
            self.cond.notify_all()

    def enter(self, who: str) -> None:
        with self.cond:
            self.live[who] = self.live.get(who, 0) + 1
            self.most_live[who] = max(self.most_live.get(who, 0), self.live[who])
            self.threads.setdefault(who, []).append(threading.current_thread())
            self.cond.notify_all()

    def leave(self, who: str) -> None:
        with self.cond:
            self.live[who] -= 1
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[[list[tuple[str, Any]]], bool], timeout: float = 5.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: predicate(self.records), timeout), self.records

    def values(self, who: str) -> list[Any]:
        with self.cond:
            return [v for w, v in self.records if w == who]

    def numbers(self, who: str) -> list[int]:
        return [v for v in self.values(who) if isinstance(v, int)]


class Worker(SupervisedActor):
    def __init__(self, link: ChildLink, name: str, journal: Journal, fail_start: list[int] | None = None):
        super().__init__(link)
        self.name = name
        self.journal = journal
        self.fail_start = fail_start

    def started(self) -> None:
        self.journal.enter(self.name)
        if self.fail_start and self.fail_start[0] > 0:
            self.fail_start[0] -= 1
            raise RuntimeError("cannot start")
        self.journal.add(self.name, "started")

    def release(self) -> None:
        self.journal.leave(self.name)

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
            if message.entered is not None:
                message.entered.set()
            message.until.wait(message.seconds)
            return None
        return super().receive(message)


def worker(name: str, journal: Journal, restart: Restart = Restart.PERMANENT, **kw: Any) -> ChildSpec:
    return ChildSpec(id=name, start=lambda link: Worker.start(link, name, journal, **kw), restart=restart)


class Escalations:
    """The root's on_escalate: records each reason and signals it."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.event = threading.Event()

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)
        self.event.set()


@pytest.fixture
def escalations() -> Escalations:
    return Escalations()


@pytest.fixture
def run_tree(escalations: Escalations) -> Iterator[Callable[..., SupervisorHandle]]:
    """Start root supervisors (escalations recorded); afterwards stop each for good, then every actor
    still registered, and fail if any actor outlived its tree's final stop."""
    roots: list[SupervisorHandle] = []

    def run(tree: SupervisorHandle, **options: Any) -> SupervisorHandle:
        roots.append(start_root(tree, escalations, **options))
        return tree

    yield run
    stopped_in_time = [stop_root(root, timeout=10) for root in reversed(roots)]
    leftover = pykka.ActorRegistry.get_all()
    pykka.ActorRegistry.stop_all(timeout=5)
    assert all(stopped_in_time) and not leftover, f"actors outlived their tree: {leftover}"


def supervision_events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == name]


def test_crashing_child_is_restarted_and_its_handle_keeps_working(run_tree):
    journal = Journal()
    root = run_tree(SupervisorHandle("root", [worker("a", journal)]))
    handle = root.handle("a")
    assert handle.ask(Record(1)) == 1
    handle.tell(Crash())
    journal.wait_for(lambda r: r.count(("a", "started")) == 2)
    assert handle.ask(Record(2), timeout=2) == 2
    status = handle.status()
    assert status["restarts"] == 1 and "RuntimeError: boom" in status["last_failure"]
    assert status["dead_letters"] == 1


def test_tell_sent_while_child_restarts_is_delivered_afterwards(run_tree):
    journal = Journal()
    spec = ChildSpec(id="slow", start=lambda link: Worker.start(link, "slow", journal),
                     backoff=Backoff(initial=0.2, maximum=0.2, jitter=0.0))
    root = run_tree(SupervisorHandle("root", [spec]))
    handle = root.handle("slow")
    handle.ask(Record("warm"))
    handle.tell(Crash())
    assert handle.wait_for_state("restarting", timeout=2)  # the crash is asynchronous
    assert not handle.alive
    assert handle.tell(Record("while-down")) is True
    journal.wait_for(lambda r: ("slow", "while-down") in r)
    assert journal.values("slow") == ["started", "warm", "started", "while-down"]


def test_queued_tells_behind_the_poison_message_survive_the_crash(run_tree):
    journal = Journal()
    root = run_tree(SupervisorHandle("root", [worker("q", journal)]))
    handle = root.handle("q")
    gate = threading.Event()
    handle.tell(Block(gate))
    handle.tell(Crash("poison"))
    for i in range(5):
        handle.tell(Record(i))
    gate.set()
    journal.wait_for(lambda r: [v for w, v in r if w == "q" and isinstance(v, int)] == [0, 1, 2, 3, 4])
    assert handle.status()["dead_letters"] == 1


def test_ask_to_a_crashed_child_fails_within_its_deadline(run_tree):
    journal = Journal()
    spec = ChildSpec(id="b", start=lambda link: Worker.start(link, "b", journal),
                     backoff=Backoff(initial=5, maximum=5, jitter=0.0))
    root = run_tree(SupervisorHandle("root", [spec]))
    handle = root.handle("b")
    handle.tell(Crash())
    assert handle.wait_for_state("restarting", timeout=2)
    started = time.monotonic()
    with pytest.raises(ChildUnavailable):
        handle.ask(Record("x"), timeout=0.5)
    assert time.monotonic() - started < 0.5


def test_ask_that_misses_its_deadline_raises_ask_timeout(run_tree):
    journal = Journal()
    root = run_tree(SupervisorHandle("root", [worker("c", journal)]))
    gate = threading.Event()
    handle = root.handle("c")
    handle.tell(Block(gate))
    started = time.monotonic()
    with pytest.raises(AskTimeout):
        handle.ask(Record("late"), timeout=0.1)
    assert time.monotonic() - started < 0.5
    gate.set()


def test_crash_in_on_start_is_a_crash_and_is_restarted(run_tree):
    journal = Journal()
    failures = [2]
    root = run_tree(SupervisorHandle("root", [worker("s", journal, fail_start=failures)]))
    journal.wait_for(lambda r: ("s", "started") in r)
    handle = root.handle("s")
    assert handle.ask(Record("ok")) == "ok"
    assert handle.status()["restarts"] == 2


def test_rest_for_one_restarts_the_later_siblings_in_order(run_tree):
    journal = Journal()
    children = [worker("feed", journal), worker("candles", journal), worker("strategy", journal)]
    root = run_tree(SupervisorHandle("root", children), strategy=Strategy.REST_FOR_ONE)
    journal.wait_for(lambda r: len(r) == 3)
    root.handle("candles").tell(Crash())
    journal.wait_for(lambda r: len(r) == 5)
    assert journal.records[3:] == [("candles", "started"), ("strategy", "started")]
    assert root.handle("feed").status()["restarts"] == 0
    assert root.handle("strategy").status()["restarts"] == 1


def test_intensity_exceeded_escalates_to_the_parent(run_tree, escalations):
    journal = Journal()
    inner = SupervisorHandle("inner", [worker("flaky", journal)])
    root = run_tree(SupervisorHandle("root", [supervisor_spec(inner, max_restarts=2, max_seconds=10)]),
                    max_restarts=5, max_seconds=10)
    for expected in range(1, 4):
        journal.wait_for(lambda r, n=expected: r.count(("flaky", "started")) >= n)
        inner.handle("flaky").tell(Crash())
    # the third crash exceeds 2 restarts in 10 s: inner escalates, root restarts inner, which restarts flaky
    journal.wait_for(lambda r: r.count(("flaky", "started")) >= 4)
    assert root.handle("inner").status()["restarts"] == 1
    assert inner.handle("flaky").ask(Record("after")) == "after"
    assert not escalations.reasons


def test_root_escalation_calls_on_escalate(run_tree, escalations):
    journal = Journal()
    root = run_tree(SupervisorHandle("root", [worker("w", journal)]),
                    max_restarts=1, max_seconds=10)
    for expected in (1, 2):
        journal.wait_for(lambda r, n=expected: r.count(("w", "started")) >= n)
        root.handle("w").tell(Crash())
    assert escalations.event.wait(5)
    assert "exceeded 1 restarts" in escalations.reasons[0]


def test_transient_child_that_ends_normally_is_not_restarted(run_tree):
    journal = Journal()
    trades = SupervisorHandle("trades", spec_for_key=lambda key: worker(f"trade-{key}", journal,
                                                                        restart=Restart.TRANSIENT))
    run_tree(SupervisorHandle("root", [supervisor_spec(trades)]))
    handle = trades.ensure_child("P1")
    assert handle.tell(Record("buffered-before-start"))
    journal.wait_for(lambda r: ("trade-P1", "buffered-before-start") in r)
    handle.tell(Crash())
    journal.wait_for(lambda r: r.count(("trade-P1", "started")) == 2)
    handle.tell(Finish())  # a normal end: the actor stops itself
    assert handle.wait_for_state("stopped", timeout=2)  # forgotten before it is marked stopped
    assert trades.find_child("P1") is None
    assert journal.values("trade-P1").count("started") == 2


def test_operator_restart_replaces_the_instance_behind_the_same_handle(run_tree):
    journal = Journal()
    root = run_tree(SupervisorHandle("root", [worker("op", journal)]))
    handle = root.handle("op")
    handle.ask(Record(0))
    status = root.restart_child("op")
    assert status["state"] == "running" and status["restarts"] == 1
    assert handle.ask(Record(1)) == 1
    assert journal.values("op") == ["started", 0, "started", 1]


# -- a supervisor's restart is its children's restart, not their end (issue 9, requirement 1) ---------------
def _restart_inner_by(trigger: str, root: SupervisorHandle, inner: SupervisorHandle) -> threading.Thread | None:
    if trigger == "operator":
        thread = threading.Thread(target=root.restart_child, args=("inner",), daemon=True)
        thread.start()
        return thread
    if trigger == "escalation":
        inner.handle("b").tell(Crash())  # inner allows no restart: it escalates into root
    elif trigger == "crash":
        root.handle("inner").tell("not a supervisor message")  # the inner supervisor itself crashes
    return None


@pytest.mark.parametrize("strategy", [Strategy.ONE_FOR_ONE, Strategy.REST_FOR_ONE])
@pytest.mark.parametrize("trigger", ["operator", "escalation", "crash"])
def test_restarting_a_nested_supervisor_keeps_every_handle_taken_before(run_tree, strategy, trigger):
    journal = Journal()
    inner = SupervisorHandle("inner", [worker("a", journal), worker("b", journal)])
    later = SupervisorHandle("later", [worker("c", journal)])  # restarted with inner under rest_for_one
    root = run_tree(SupervisorHandle("root", [worker("first", journal), supervisor_spec(inner, max_restarts=0),
                                              supervisor_spec(later), worker("last", journal)]),
                    strategy=strategy)
    a, b, c = inner.handle("a"), inner.handle("b"), later.handle("c")  # taken at assembly, as parts do
    gate, busy = threading.Event(), threading.Event()
    a.tell(Block(gate, busy))
    assert busy.wait(5)
    for i in range(100):
        a.tell(Record(i))  # queued behind the block: still in a's inbox when the restart begins
        c.tell(Record(i))
    operator = _restart_inner_by(trigger, root, inner)
    assert b.wait_for_state("restarting", timeout=5)  # inner is stopping its children (b first, then a)
    for i in range(100, 200):
        assert a.tell(Record(i)) and c.tell(Record(i))  # told while the parents restart
    gate.set()
    journal.wait_for(lambda r: r.count(("a", "started")) == 2 and r.count(("b", "started")) == 2)
    restarts_later = strategy is Strategy.REST_FOR_ONE and trigger != "operator"
    journal.wait_for(lambda r: r.count(("c", "started")) == (2 if restarts_later else 1))
    for handle in (a, b, c):
        assert handle.wait_for_state("running", timeout=5)
    for i in range(200, 300):
        a.tell(Record(i))
        c.tell(Record(i))
    for handle in (a, b, c):
        assert handle.ask(Record("asked"), timeout=2) == "asked"
    assert inner.handle("a") is a and inner.handle("b") is b and later.handle("c") is c
    journal.wait_for(lambda r: [v for w, v in r if w == "a" and isinstance(v, int)] == list(range(300))
                     and [v for w, v in r if w == "c" and isinstance(v, int)] == list(range(300)))
    assert journal.most_live == {"first": 1, "a": 1, "b": 1, "c": 1, "last": 1}  # never two at once
    assert root.handle("inner").status()["restarts"] == 1
    if operator is not None:
        operator.join(10)


def test_a_dynamic_supervisors_live_children_keep_their_handles_across_its_restart(run_tree):
    journal = Journal()
    trades = SupervisorHandle("trades", spec_for_key=lambda key: worker(f"trade-{key}", journal,
                                                                        restart=Restart.TRANSIENT))
    root = run_tree(SupervisorHandle("root", [supervisor_spec(trades)]))
    p1, p2 = trades.ensure_child("P1"), trades.ensure_child("P2")
    assert p1.wait_for_state("running", timeout=5) and p2.wait_for_state("running", timeout=5)
    assert p1.ask(Record("before")) == "before" and p2.ask(Record("before")) == "before"
    gate, busy = threading.Event(), threading.Event()
    p1.tell(Block(gate, busy))
    assert busy.wait(5)
    p1.tell(Record(0))
    operator = threading.Thread(target=root.restart_child, args=("trades",), daemon=True)
    operator.start()
    assert p2.wait_for_state("restarting", timeout=5)
    assert p1.tell(Record(1)) and p2.tell(Record(1))
    gate.set()
    journal.wait_for(lambda r: r.count(("trade-P1", "started")) == 2 and r.count(("trade-P2", "started")) == 2)
    assert trades.find_child("P1") is p1 and trades.find_child("P2") is p2
    journal.wait_for(lambda r: [v for w, v in r if w == "trade-P1" and isinstance(v, int)] == [0, 1]
                     and [v for w, v in r if w == "trade-P2" and isinstance(v, int)] == [1])
    assert p1.wait_for_state("running", timeout=5)
    assert p1.ask(Record("after")) == "after"
    operator.join(10)


def test_a_final_stop_stays_final(run_tree):
    journal = Journal()
    inner = SupervisorHandle("inner", [worker("a", journal)])
    root = run_tree(SupervisorHandle("root", [supervisor_spec(inner), worker("b", journal)]))
    a, b = inner.handle("a"), root.handle("b")
    root.terminate_child("inner")
    assert a.wait_for_state("stopped", timeout=5)
    assert a.tell(Record("lost")) is False
    with pytest.raises(ChildUnavailable):
        a.ask(Record("x"))
    assert [child["id"] for child in root.status()["children"]] == ["b"]  # status: after the terminate
    assert root.find("a") is None
    assert stop_root(root, timeout=5)  # the runtime's shutdown
    assert b.state == "stopped" and b.tell(Record("lost")) is False
    assert "lost" not in journal.values("a") + journal.values("b")


# -- crash loops are never silent (issue 9, requirement 10) -----------------------------------------------
def test_consecutive_crashes_escalate_even_when_backoff_keeps_the_intensity_window_empty(run_tree, escalations):
    journal = Journal()
    # 50 ms between restarts: at most 2 restarts in any 0.1 s window, never past max_restarts=3.
    spec = ChildSpec(id="replay", start=lambda link: Worker.start(link, "replay", journal, fail_start=[1000]),
                     backoff=Backoff(initial=0.05, maximum=0.05, factor=1.0, jitter=0.0))
    run_tree(SupervisorHandle("root", [spec]), max_restarts=3, max_seconds=0.1, max_consecutive_crashes=5)
    assert escalations.event.wait(10)
    assert "replay crashed 5 times in a row" in escalations.reasons[0]
    assert journal.live.get("replay", 0) == 0 and "started" not in journal.values("replay")


def test_crashes_separated_by_good_runs_do_not_count_as_a_loop(run_tree, escalations):
    journal = Journal()
    # reset_after=0: every run counts as a good one, so no crash follows another "in a row".
    root = run_tree(SupervisorHandle("root", [worker("w", journal)]), max_restarts=100,
                    max_consecutive_crashes=2, reset_after=0.0)
    handle = root.handle("w")
    for expected in range(1, 6):
        journal.wait_for(lambda r, n=expected: r.count(("w", "started")) == n)
        handle.tell(Crash())
    journal.wait_for(lambda r: r.count(("w", "started")) == 6)
    assert handle.status()["consecutive_crashes"] == 1
    assert not escalations.reasons


def test_unhealthy_names_children_in_backoff_and_crash_loops_through_nested_supervisors(run_tree):
    journal = Journal()
    feed = ChildSpec(id="feed", start=lambda link: Worker.start(link, "feed", journal),
                     backoff=Backoff(initial=30, maximum=30, jitter=0.0))
    inner = SupervisorHandle("inner", [feed, worker("looper", journal)])
    root = run_tree(SupervisorHandle("root", [worker("fine", journal), supervisor_spec(inner)]),
                    max_restarts=100)
    assert root.unhealthy() == []
    looper = inner.handle("looper")
    for expected in (1, 2):
        journal.wait_for(lambda r, n=expected: r.count(("looper", "started")) == n)
        looper.tell(Crash())
    journal.wait_for(lambda r: r.count(("looper", "started")) == 3)
    assert looper.wait_for_state("running", timeout=5) and root.unhealthy() == ["looper"]  # running, but crashed twice in a row
    inner.handle("feed").tell(Crash())
    assert inner.handle("feed").wait_for_state("restarting", timeout=5)
    assert sorted(root.unhealthy()) == ["feed", "looper"]  # feed waits 30 s in backoff
    assert root.handle("fine").alive


# -- no twins (issue 9, requirement 11) --------------------------------------------------------------------
def test_a_child_that_overruns_its_stop_is_not_replaced_until_it_has_stopped(run_tree, caplog):
    caplog.set_level(logging.INFO, logger="mybot.supervision")
    journal = Journal()
    root = run_tree(SupervisorHandle("root", [worker("executor", journal)]), shutdown_timeout=0.2,
                    stop_wait_seconds=30)
    executor = root.handle("executor")
    gate, busy = threading.Event(), threading.Event()
    executor.tell(Block(gate, busy, seconds=30))  # a slow broker call
    assert busy.wait(5)
    status = root.restart_child("executor")  # returns after the shutdown timeout, without a successor
    assert status["state"] == "restarting" and status["stop_overdue"] is True
    assert supervision_events(caplog, "ACTOR_STOP_TIMEOUT")
    assert journal.live["executor"] == 1 and journal.values("executor") == ["started"]
    asked = time.monotonic()
    with pytest.raises(ChildUnavailable):
        executor.ask(Record("ask"), timeout=2)
    assert time.monotonic() - asked < 0.5
    assert executor.tell(Record("buffered"))
    assert root.status()["children"][0]["buffered"] == 1  # the supervisor's mailbox is not blocked
    assert "executor" in root.unhealthy()
    gate.set()  # the broker answers: the old instance finishes its handler and stops
    journal.wait_for(lambda r: r == [("executor", "started"), ("executor", "started"), ("executor", "buffered")])
    assert journal.most_live["executor"] == 1
    assert executor.ask(Record("after")) == "after"


def test_a_child_still_running_after_the_stop_wait_escalates_instead_of_starting_a_twin(
        run_tree, escalations, caplog):
    caplog.set_level(logging.INFO, logger="mybot.supervision")
    journal = Journal()
    root = run_tree(SupervisorHandle("root", [worker("executor", journal)]), shutdown_timeout=0.1,
                    stop_wait_seconds=0.5)
    executor = root.handle("executor")
    gate, busy = threading.Event(), threading.Event()
    executor.tell(Block(gate, busy, seconds=30))
    assert busy.wait(5)
    try:
        root.restart_child("executor")
        assert escalations.event.wait(5)
        assert "executor still runs" in escalations.reasons[0]
        assert any(getattr(r, "escalating", False) for r in supervision_events(caplog, "ACTOR_STOP_TIMEOUT"))
        assert journal.values("executor") == ["started"] and journal.live["executor"] == 1
    finally:
        gate.set()
    old_thread = journal.threads["executor"][0]
    old_thread.join(5)  # its last act told the root it ended; the root has given up and starts nothing
    assert not old_thread.is_alive()
    root.status()  # a barrier: the root has handled that message
    assert journal.values("executor") == ["started"] and len(journal.threads["executor"]) == 1
    assert executor.state == "restarting"


def test_a_final_stop_after_a_root_escalation_stops_the_whole_subtree(run_tree, escalations):
    journal = Journal()
    inner = SupervisorHandle("inner", [worker("a", journal)])
    root = run_tree(SupervisorHandle("root", [supervisor_spec(inner)]), max_restarts=0)
    a = inner.handle("a")
    root.handle("inner").tell("not a supervisor message")  # inner crashes; root allows no restart
    assert escalations.event.wait(5)
    assert a.state == "restarting"  # stopped for a restart that the runtime's shutdown will not make
    assert stop_root(root, timeout=5)
    assert a.state == "stopped" and a.tell(Record("lost")) is False


def test_a_restarted_supervisor_waits_for_a_child_its_crashed_predecessor_could_not_stop(run_tree):
    journal = Journal()
    inner = SupervisorHandle("inner", [worker("a", journal), worker("b", journal)])
    root = run_tree(SupervisorHandle("root", [supervisor_spec(inner, shutdown_timeout=0.1)]))
    a, b = inner.handle("a"), inner.handle("b")
    gate, busy = threading.Event(), threading.Event()
    a.tell(Block(gate, busy, seconds=30))
    assert busy.wait(5)
    root.handle("inner").tell("not a supervisor message")  # inner crashes while a is stuck in a handler
    journal.wait_for(lambda r: r.count(("b", "started")) == 2)  # the new inner instance runs...
    assert b.wait_for_state("running", timeout=5)
    assert a.state == "restarting" and journal.live["a"] == 1  # ...but holds a's successor back
    assert a.tell(Record("buffered"))
    with pytest.raises(ChildUnavailable):
        a.ask(Record("ask"))
    assert "a" in root.unhealthy()
    gate.set()
    journal.wait_for(lambda r: r.count(("a", "started")) == 2 and ("a", "buffered") in r)
    assert journal.most_live["a"] == 1
    assert a.wait_for_state("running", timeout=5) and a.ask(Record("after")) == "after"


def test_a_crash_of_the_root_supervisor_itself_is_an_escalation(run_tree, escalations):
    journal = Journal()
    root = run_tree(SupervisorHandle("root", [worker("w", journal)]))
    w = root.handle("w")
    root.owner.tell("not a supervisor message")  # type: ignore[union-attr]
    assert escalations.event.wait(5)
    assert "root supervisor root crashed: TypeError" in escalations.reasons[0]
    assert w.wait_for_state("restarting", timeout=5) and journal.live["w"] == 0  # its children stopped
    assert stop_root(root, timeout=5) and w.state == "stopped"


def test_the_root_restarted_in_place_restarts_every_child_behind_the_same_handles(run_tree):
    journal = Journal()
    inner = SupervisorHandle("inner", [worker("a", journal)])
    trades = SupervisorHandle("trades", spec_for_key=lambda key: worker(f"trade-{key}", journal,
                                                                        restart=Restart.TRANSIENT))
    root = run_tree(SupervisorHandle("root", [worker("first", journal), supervisor_spec(inner),
                                              supervisor_spec(trades)]))
    first, a, p1 = root.handle("first"), inner.handle("a"), trades.ensure_child("P1")
    assert p1.wait_for_state("running", timeout=5) and a.ask(Record(0)) == 0
    gate, busy = threading.Event(), threading.Event()
    a.tell(Block(gate, busy))
    assert busy.wait(5)
    a.tell(Record(1))  # queued behind the block when the restart begins
    operator = threading.Thread(target=lambda: journal.add("operator", root.restart("root")), daemon=True)
    operator.start()
    assert p1.wait_for_state("restarting", timeout=5)  # stopped in reverse order: trades before inner
    assert a.tell(Record(2)) and first.tell(Record(2)) and p1.tell(Record(2))  # told while the root restarts
    gate.set()
    journal.wait_for(lambda r: all(r.count((name, "started")) == 2 for name in ("first", "a", "trade-P1")))
    journal.wait_for(lambda r: [v for w, v in r if w == "operator"] != [])
    [answer] = journal.values("operator")
    assert answer["id"] == "root" and answer["restarts"] == 1
    assert [c["restarts"] for c in answer["children"]] == [1, 1, 1]
    assert root.handle("first") is first and inner.handle("a") is a and trades.find_child("P1") is p1
    for handle in (first, a, p1):
        assert handle.ask(Record("after"), timeout=2) == "after"
    assert journal.numbers("a") == [0, 1, 2] and journal.numbers("first") == [2]
    assert journal.numbers("trade-P1") == [2]
    assert journal.most_live == {"first": 1, "a": 1, "trade-P1": 1}  # never two at once
    assert root.status()["restarts_in_place"] == 1
    operator.join(10)


def test_restart_by_id_finds_any_actor_of_the_tree_and_refuses_an_unknown_one(run_tree):
    journal = Journal()
    inner = SupervisorHandle("inner", [worker("a", journal)])
    root = run_tree(SupervisorHandle("root", [supervisor_spec(inner)]))
    assert root.restart("a")["restarts"] == 1
    assert root.restart("inner")["restarts"] == 1
    journal.wait_for(lambda r: r.count(("a", "started")) == 3)
    with pytest.raises(KeyError):
        root.restart("nope")
