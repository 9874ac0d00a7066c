"""Supervisors with OTP semantics on top of Pykka.

- Child specs: id, how to start it, restart type (permanent | transient | temporary), optional backoff.
- Strategies: one_for_one, rest_for_one. A dynamic supervisor adds per-key children on demand.
- Intensity: at most `max_restarts` within `max_seconds`; past it the supervisor stops its children and
  crashes itself, escalating to its parent. At the root, escalation calls `on_escalate` (the runtime shuts
  down in order and exits non-zero so supervisord restarts the process).
- Crash loops escalate too: `max_consecutive_crashes` crashes of one child in a row, none of its runs
  lasting `reset_after` seconds (its backoff's `reset_after` when it has one). Backoff spreads restarts
  so widely that the intensity window alone never fills; this count does not depend on time.
- Handles are stable: callers address a child by id or key; the raw ActorRef behind a handle changes on
  every restart. Every ask has a deadline and fails fast while the child is down; tells sent while it is
  down are buffered (bounded, drops counted) and delivered after the restart.
- A supervisor's restart is a restart of its children, not their end: the slots and handles live in the
  SupervisorHandle (the tree), so a handle taken at assembly keeps working across any restart of any
  supervisor above it. Only a final stop (runtime shutdown, `terminate_child`) makes a slot STOPPED.
- The message that crashed a child is logged as a dead letter and not redelivered.
- No twins. A child that does not stop within `shutdown_timeout` keeps running on its thread (threads
  cannot be killed), so the supervisor does not start its successor yet: the slot waits, asks fail fast
  with ChildUnavailable and tells are buffered. The supervisor does NOT block its mailbox for this: the
  old instance's last act (`SupervisorLink.ended`) tells the supervisor to start the deferred successor,
  and a timer set at `stop_wait_seconds` after the stop request re-checks. If the old instance still runs
  then, the supervisor logs ACTOR_STOP_TIMEOUT and escalates instead of starting a second instance
  (a restarted supervisor keeps waiting on the same deadline, so the escalation climbs to the root and the
  process restarts, which is the only way to end a stuck thread).

A supervisor is itself a SupervisedActor: crash reports reach it as tells, so its bookkeeping is
serialized by its mailbox like any other actor's state. The slots are shared with handle holders on other
threads: every slot state change happens under the slot's lock and wakes `ChildHandle.wait_for_state`.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pykka

from supervision.actor import ChildUnavailable, SupervisedActor, SupervisorLink, drain_inbox
from supervision.scheduler import Scheduler
from telemetry.logs import get_logger, incident_id

__all__ = [
    "AskTimeout",
    "Backoff",
    "ChildHandle",
    "ChildLink",
    "ChildSpec",
    "ChildUnavailable",
    "Restart",
    "SlotState",
    "Strategy",
    "Supervisor",
    "SupervisorEscalated",
    "SupervisorHandle",
    "start_root",
    "stop_root",
    "supervisor_spec",
]

log = get_logger("mybot.supervision")


class Restart(StrEnum):
    PERMANENT = "permanent"  # always restarted, even after a normal exit
    TRANSIENT = "transient"  # restarted only after a crash (a trade actor that closes normally is done)
    TEMPORARY = "temporary"  # never restarted


class Strategy(StrEnum):
    ONE_FOR_ONE = "one_for_one"
    REST_FOR_ONE = "rest_for_one"  # a crash restarts that child and every child started after it


class AskTimeout(Exception):
    """An ask through a handle missed its deadline."""


class SupervisorEscalated(Exception):
    """Raised inside a supervisor whose restart intensity was exceeded: it crashes into its parent."""


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter for children that talk to the outside (feed, poller, broker)."""

    initial: float = 0.2
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2
    reset_after: float = 30.0  # a child that ran this long starts its backoff (and crash count) over

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = min(self.maximum, self.initial * self.factor ** max(0, attempt - 1))
        return max(0.0, base * (1 + rng.uniform(-self.jitter, self.jitter)))


@dataclass(frozen=True)
class ChildSpec:
    """`start(link)` starts the actor (e.g. `lambda link: FeedActor.start(link, deps)`) and returns its ref."""

    id: str
    start: Callable[[ChildLink], pykka.ActorRef[Any]]
    restart: Restart = Restart.PERMANENT
    backoff: Backoff | None = None
    critical_tells: bool = True  # False: tells may be dropped when the buffer is full (ticks)
    supervises: SupervisorHandle | None = None  # set for a nested supervisor
    # Fields every supervision line about this child carries (a trade actor's pos_id), so its crash and
    # restart lines join the story of what it owns.
    log_fields: tuple[tuple[str, Any], ...] = ()


class SlotState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPED = "stopped"


@dataclass(slots=True)
class _Slot:
    spec: ChildSpec
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Condition = field(init=False)  # on `lock`: notified on every state change
    ref: pykka.ActorRef[Any] | None = None
    state: SlotState = SlotState.STARTING
    generation: int = 0
    restarts: int = 0
    backoff_attempt: int = 0
    consecutive_crashes: int = 0  # crashes since the last run that lasted reset_after
    crashes: int = 0  # every crash of this child (its restarts also count operator restarts)
    reset_after: float = 30.0
    started_at: float = 0.0  # monotonic time of the last start attempt (0: never started)
    last_failure: str = ""
    last_failure_at: float = 0.0
    buffer: deque[Any] = field(default_factory=deque)
    dropped: int = 0
    dead_letters: int = 0
    stopping_by_supervisor: bool = False
    final_stop: bool = False  # the supervisor stops this child for good, not for a restart
    stopping: pykka.ActorRef[Any] | None = None  # an instance asked to stop whose thread has not ended
    stop_asked_at: float = 0.0
    start_deferred: bool = False  # a start waits for `stopping` to end (no twins)
    done: bool = False  # ended and not to be restarted (a transient child that completed normally)
    incident: str = ""  # the open crash (or operator restart) incident: its restart line names it too

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)


_RUNNING = SlotState.RUNNING


def _child_fields(slot: _Slot, supervisor: str, linked: bool = True) -> dict[str, Any]:
    """What a line about a child says: the child as `actor` (as its own lines do), its supervisor, and (for
    what happened to it: crashes, restarts, not its routine start and end) the spec's log fields."""
    fields = {"actor": slot.spec.id, "child": slot.spec.id, "supervisor": supervisor}
    return {**fields, **dict(slot.spec.log_fields)} if linked else fields


def _incident_field(incident: str) -> dict[str, Any]:
    return {"incident_id": incident} if incident else {}


def _open_incident(slot: _Slot, kind: str) -> str:
    """Caller holds slot.lock. Repeated crashes before the restart belong to the first one's incident."""
    if not slot.incident:
        slot.incident = incident_id(kind, slot.spec.id, time.time())
    return slot.incident


def _set_state(slot: _Slot, state: SlotState) -> None:
    """Caller holds slot.lock."""
    slot.state = state
    slot.changed.notify_all()


class ChildLink:
    """What a child actor holds to report to its supervisor (a SupervisorLink). Called on the child's thread."""

    def __init__(self, supervisor: Supervisor, slot: _Slot) -> None:
        self._supervisor = supervisor
        self._slot = slot
        self.child_id = slot.spec.id

    @property
    def final_stop(self) -> bool:
        return self._slot.final_stop

    def crashed(self, ref: pykka.ActorRef[Any], exc: BaseException, phase: str, poison: Any) -> None:
        slot = self._slot
        with slot.lock:
            if slot.ref is not ref:
                return  # a stale instance; the slot has moved on
            _set_state(slot, SlotState.RESTARTING)
            slot.ref = None
            generation = slot.generation
            incident = _open_incident(slot, "ACTOR_CRASH")
            # Tells still queued for the dead instance go first, in order, to the restarted one.
            leftover = drain_inbox(ref)
            slot.buffer.extendleft(reversed(leftover))
        error = f"{type(exc).__name__}: {exc}"
        # Pykka's own log line (event PYKKA) carries the traceback; this one tells the supervision story.
        fields = _child_fields(slot, self._supervisor.name)
        log.event("ACTOR_CRASHED", f"{self.child_id} crashed in {phase}: {error}", level=40,
                  phase=phase, generation=generation, incident_id=incident, **fields)
        if poison is not None:
            slot.dead_letters += 1
            log.event("DEAD_LETTER", f"message that crashed {self.child_id} is not redelivered", level=30,
                      message_type=type(poison).__name__, detail=repr(poison)[:300], crash_incident_id=incident,
                      **fields)
        self._supervisor._tell_self(_ChildCrashed(self.child_id, generation, error))

    def exited(self, ref: pykka.ActorRef[Any]) -> None:
        slot = self._slot
        with slot.lock:
            if slot.ref is not ref:
                return
            slot.ref = None
            _set_state(slot, SlotState.RESTARTING)  # tells buffer from here; the supervisor decides what follows
            by_supervisor = slot.stopping_by_supervisor
            generation = slot.generation
        if not by_supervisor:
            self._supervisor._tell_self(_ChildExited(self.child_id, generation))

    def ended(self, ref: pykka.ActorRef[Any]) -> None:
        """Tells that reached the ending instance's inbox go on to its successor (or wait for it); a
        successor held back because this instance overran its stop may start now."""
        slot = self._slot
        with slot.lock:
            _rescue_locked(slot, ref)
            if slot.stopping is not ref:
                return
            slot.stopping = None
            resume = slot.start_deferred
        if resume:
            # Through the tree, not to the supervisor instance that made this link: that one may have
            # been restarted meanwhile (its successor is the one waiting).
            self._supervisor.tree.notify(_ResumeStart(self.child_id))


def _rescue(slot: _Slot, dead: pykka.ActorRef[Any]) -> None:
    with slot.lock:
        _rescue_locked(slot, dead)


def _rescue_locked(slot: _Slot, dead: pykka.ActorRef[Any]) -> None:
    stranded = drain_inbox(dead)
    if not stranded:
        return
    if slot.state is SlotState.STOPPED:
        slot.dropped += len(stranded)
        return
    current = slot.ref
    if current is not None and current is not dead and slot.state is _RUNNING:
        for i, message in enumerate(stranded):
            try:
                current.tell(message)
            except pykka.ActorDeadError:
                slot.buffer.extendleft(reversed(stranded[i:]))
                return
    else:
        slot.buffer.extendleft(reversed(stranded))


def _unhealthy(slot: _Slot, now: float) -> bool:
    """Down and waiting for a restart (backoff, a twin's end), or crash-looping (two crashes in a row,
    the last restart not yet run for reset_after). Reads without the lock: a health probe never waits."""
    state = slot.state
    if slot.done or state is SlotState.STOPPED or state is SlotState.STARTING:
        return False
    if state is SlotState.RESTARTING:
        return True
    return slot.consecutive_crashes >= 2 and now - slot.started_at < slot.reset_after


class ChildHandle:
    """A stable address for one child. Never goes stale: it follows the child across restarts."""

    __slots__ = ("_slot", "_ask_timeout", "_buffer_limit", "id")

    def __init__(self, slot: _Slot, ask_timeout: float, buffer_limit: int) -> None:
        self._slot = slot
        self._ask_timeout = ask_timeout
        self._buffer_limit = buffer_limit
        self.id = slot.spec.id

    def tell(self, message: Any) -> bool:
        """Deliver now, or buffer while the child restarts. False if the message had to be dropped."""
        slot = self._slot
        # Fast path without the slot lock (many senders share hot handles: a lock there convoys on the
        # GIL). If the child died while this put happened, the message may sit in the dead inbox: the
        # dead actor's teardown or this sender rescues it, whichever comes second.
        ref = slot.ref
        if ref is not None and slot.state is _RUNNING:
            try:
                ref.tell(message)
            except pykka.ActorDeadError:
                pass  # died this instant: buffer below
            else:
                if slot.ref is not ref:
                    _rescue(slot, ref)
                return True
        with slot.lock:
            if slot.state is _RUNNING and slot.ref is not None:
                try:
                    slot.ref.tell(message)
                    return True
                except pykka.ActorDeadError:
                    pass
            if slot.state is SlotState.STOPPED:
                slot.dropped += 1
                return False
            if len(slot.buffer) >= self._buffer_limit:
                if slot.spec.critical_tells:
                    slot.buffer.append(message)  # commands and fills are never dropped
                    return True
                slot.dropped += 1
                if slot.dropped == 1 or slot.dropped % 1000 == 0:
                    log.event("TELL_DROPPED", f"{self.id} is down and its buffer is full", level=30,
                              actor=self.id, dropped=slot.dropped)
                return False
            slot.buffer.append(message)
            return True

    def ask(self, message: Any, timeout: float | None = None) -> Any:
        """Ask with a deadline; fails fast with ChildUnavailable while the child is down."""
        slot = self._slot
        with slot.lock:
            ref = slot.ref if slot.state is SlotState.RUNNING else None
        if ref is None:
            raise ChildUnavailable(f"{self.id} is {slot.state.value}")
        deadline = self._ask_timeout if timeout is None else timeout
        try:
            future = ref.ask(message, block=False)
            return future.get(timeout=deadline)
        except pykka.ActorDeadError as exc:
            raise ChildUnavailable(f"{self.id} stopped before answering") from exc
        except pykka.Timeout as exc:
            raise AskTimeout(f"{self.id} did not answer within {deadline:.3f} s") from exc

    def wait_for_state(self, state: str, timeout: float) -> bool:
        """Block until the child is in `state` ("running", "restarting", "stopped"); False on timeout.
        For tests and operators' tools: an event to await instead of polling `alive`."""
        target = SlotState(state)
        slot = self._slot
        with slot.changed:
            return slot.changed.wait_for(lambda: slot.state is target, timeout)

    @property
    def alive(self) -> bool:
        return self._slot.state is SlotState.RUNNING

    @property
    def supervises(self) -> SupervisorHandle | None:
        """For a nested supervisor: the stable handle of its own children."""
        return self._slot.spec.supervises

    @property
    def state(self) -> str:
        return self._slot.state.value

    def status(self) -> dict[str, Any]:
        slot = self._slot
        ref = slot.ref
        depth = ref.actor_inbox.qsize() if ref is not None else 0  # type: ignore[attr-defined]
        return {
            "id": self.id,
            "state": slot.state.value,
            "restart": slot.spec.restart.value,
            "restarts": slot.restarts,
            "consecutive_crashes": slot.consecutive_crashes,
            "crashes": slot.crashes,
            "last_failure": slot.last_failure or None,
            "last_failure_at": slot.last_failure_at or None,
            "mailbox_depth": depth,
            "buffered": len(slot.buffer),
            "dropped": slot.dropped,
            "dead_letters": slot.dead_letters,
            "stop_overdue": slot.stopping is not None and slot.ref is None,
        }


class SupervisorHandle:
    """The stable address of a supervisor: its children's slots and handles outlive its restarts.

    Everything here is thread-safe and non-blocking except `status` and `restart_child`, which ask the
    supervisor actor with a deadline (HTTP threads and tests use them, never another actor).
    """

    def __init__(self, name: str, children: list[ChildSpec] | None = None,
                 spec_for_key: Callable[[Hashable], ChildSpec] | None = None, *,
                 ask_timeout: float = 2.0, tell_buffer: int = 10_000) -> None:
        self.name = name
        self.initial: list[ChildSpec] = []
        self.spec_for_key = spec_for_key
        self.ask_timeout = ask_timeout
        self.tell_buffer = tell_buffer
        self.lock = threading.Lock()
        self.order: list[str] = []
        self.slots: dict[str, _Slot] = {}
        self.handles: dict[str, ChildHandle] = {}
        self.owner: ChildHandle | _RootHandle | None = None  # how to reach the current supervisor instance
        self.restarts = 0  # operator restarts in place (restart_children)
        for spec in children or []:
            self.add(spec)

    def add(self, spec: ChildSpec) -> ChildHandle:
        """A static child, started in the order added. Its handle works at once: tells sent before the
        tree starts are buffered and delivered when the child runs (assemblies wire handles up front)."""
        self.initial.append(spec)
        return self.register(spec)[1]

    # -- addressing ---------------------------------------------------------------------------------------
    def handle(self, child_id: str) -> ChildHandle:
        with self.lock:
            return self.handles[child_id]

    def children(self) -> list[ChildHandle]:
        with self.lock:
            return [self.handles[cid] for cid in self.order]

    def ensure_child(self, key: Hashable) -> ChildHandle:
        """Dynamic supervisors: the handle for key's child, starting it if needed. Never blocks."""
        if self.spec_for_key is None:
            raise TypeError(f"{self.name} is not a dynamic supervisor")
        spec = self.spec_for_key(key)
        slot, handle, new = self.register(spec)
        if new:
            self._owner().tell(_StartChild(spec.id))
        return handle

    def find_child(self, key: Hashable) -> ChildHandle | None:
        if self.spec_for_key is None:
            raise TypeError(f"{self.name} is not a dynamic supervisor")
        with self.lock:
            return self.handles.get(self.spec_for_key(key).id)

    def register(self, spec: ChildSpec) -> tuple[_Slot, ChildHandle, bool]:
        with self.lock:
            existing = self.slots.get(spec.id)
            if existing is not None and existing.state is not SlotState.STOPPED:
                return existing, self.handles[spec.id], False
            slot = _Slot(spec)
            self.slots[spec.id] = slot
            if spec.id not in self.order:
                self.order.append(spec.id)
            handle = ChildHandle(slot, self.ask_timeout, self.tell_buffer)
            self.handles[spec.id] = handle
        if spec.supervises is not None:
            spec.supervises.owner = handle
        return slot, handle, True

    def forget(self, child_id: str) -> None:
        with self.lock:
            self.slots.pop(child_id, None)
            self.handles.pop(child_id, None)
            if child_id in self.order:
                self.order.remove(child_id)

    def _slots(self) -> list[_Slot]:
        with self.lock:
            return [self.slots[cid] for cid in self.order if cid in self.slots]

    def unhealthy(self) -> list[str]:
        """Ids of children in this subtree (nested supervisors' children included) that are down waiting
        for a restart or crash-looping. Thread-safe and non-blocking: no ask, so it answers even while a
        supervisor is busy or restarting (the health endpoint calls it)."""
        now = time.monotonic()
        found: list[str] = []
        for slot in self._slots():
            if _unhealthy(slot, now):
                found.append(slot.spec.id)
            if slot.spec.supervises is not None:
                found.extend(slot.spec.supervises.unhealthy())
        return found

    # -- operator / runtime calls (ask the actor, with deadlines) ------------------------------------------
    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self._owner().ask(_Status(), timeout=self.ask_timeout)
        return status

    def restart_child(self, child_id: str) -> dict[str, Any]:
        with self.lock:
            if child_id not in self.slots:
                raise KeyError(child_id)
        status: dict[str, Any] = self._owner().ask(_OperatorRestart(child_id), timeout=self.ask_timeout * 5)
        return status

    def restart_children(self) -> dict[str, Any]:
        """Restart this supervisor in place: stop every child (reverse order), start them again (in order),
        behind the same slots and handles. The operator's restart of the root, which nothing above it could
        restart; a nested supervisor restarted by its parent does the same to its children."""
        status: dict[str, Any] = self._owner().ask(_OperatorRestartAll(), timeout=self.ask_timeout * 5)
        return status

    def restart(self, actor_id: str) -> dict[str, Any]:
        """The operator's restart of any actor in this tree by id, this supervisor's own id included
        (restart_children). KeyError for an id the tree does not hold."""
        if actor_id == self.name:
            return self.restart_children()
        found = self.find(actor_id)
        if found is None:
            raise KeyError(actor_id)
        return found[0].restart_child(actor_id)

    def terminate_child(self, child_id: str) -> None:
        self._owner().tell(_TerminateChild(child_id))

    def find(self, child_id: str) -> tuple[SupervisorHandle, ChildHandle] | None:
        """Search this subtree for a child id (the operator's restart endpoint addresses any actor)."""
        for slot in self._slots():
            cid = slot.spec.id
            handle = self.handles.get(cid)
            if cid == child_id and handle is not None:
                return self, handle
            if slot.spec.supervises is not None:
                found = slot.spec.supervises.find(child_id)
                if found is not None:
                    return found
        return None

    def _mark_stopped(self) -> None:
        """This tree's supervisor is down for good (final stop, or a crashed root): nothing in the
        subtree will run again, so its handles stop buffering."""
        for slot in self._slots():
            with slot.lock:
                if slot.ref is None and slot.state is not SlotState.STOPPED:
                    _set_state(slot, SlotState.STOPPED)
            if slot.spec.supervises is not None:
                slot.spec.supervises._mark_stopped()

    def notify(self, message: Any) -> None:
        """Tell whichever instance of this supervisor runs now (buffered while it restarts)."""
        owner = self.owner
        if owner is not None:
            owner.tell(message)

    def _owner(self) -> ChildHandle | _RootHandle:
        if self.owner is None:
            raise ChildUnavailable(f"supervisor {self.name} has not started")
        return self.owner


class _RootHandle:
    """The root supervisor never restarts (its escalation ends the process): its raw ref is stable."""

    def __init__(self, ref: pykka.ActorRef[Any]) -> None:
        self.ref = ref
        self.id = "root"

    def tell(self, message: Any) -> bool:
        try:
            self.ref.tell(message)
            return True
        except pykka.ActorDeadError:
            return False

    def ask(self, message: Any, timeout: float | None = None) -> Any:
        try:
            return self.ref.ask(message, timeout=timeout)
        except pykka.ActorDeadError as exc:
            raise ChildUnavailable("root supervisor is down") from exc
        except pykka.Timeout as exc:
            raise AskTimeout(f"root supervisor did not answer within {timeout} s") from exc


# -- supervisor messages (internal) -------------------------------------------------------------------
@dataclass(frozen=True)
class _ChildCrashed:
    child_id: str
    generation: int
    error: str


@dataclass(frozen=True)
class _ChildExited:
    child_id: str
    generation: int


@dataclass(frozen=True)
class _RestartDue:
    child_id: str
    generation: int


@dataclass(frozen=True)
class _StartChild:
    child_id: str


@dataclass(frozen=True)
class _ResumeStart:
    """The instance that overran its stop has ended: its deferred successor may start."""

    child_id: str


@dataclass(frozen=True)
class _StopOverdue:
    """Re-check, stop_wait_seconds after the stop request, whether the old instance still runs."""

    child_id: str
    asked_at: float


@dataclass(frozen=True)
class _OperatorRestart:
    child_id: str


@dataclass(frozen=True)
class _OperatorRestartAll:
    pass


@dataclass(frozen=True)
class _TerminateChild:
    child_id: str


@dataclass(frozen=True)
class _Status:
    pass


class Supervisor(SupervisedActor):
    """Starts its children in order, restarts them by strategy, stops them in reverse order.

    Its bookkeeping (slots, handles) lives in a SupervisorHandle that survives its own restarts; on a
    restart it starts every child the handle still knows (a dynamic supervisor's children included).
    """

    def __init__(self, link: SupervisorLink | None, tree: SupervisorHandle, *,
                 strategy: Strategy = Strategy.ONE_FOR_ONE, max_restarts: int = 5,
                 max_seconds: float = 10.0, max_consecutive_crashes: int = 10, reset_after: float = 30.0,
                 shutdown_timeout: float = 4.0, stop_wait_seconds: float = 30.0,
                 scheduler: Scheduler | None = None,
                 on_escalate: Callable[[str], None] | None = None, seed: int | None = None) -> None:
        super().__init__(link)
        self.tree = tree
        self.name = tree.name
        self.strategy = strategy
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self.max_consecutive_crashes = max_consecutive_crashes
        self.reset_after = reset_after  # for children without a backoff (which brings its own)
        self.shutdown_timeout = shutdown_timeout
        self.stop_wait_seconds = max(stop_wait_seconds, shutdown_timeout)
        self.scheduler = scheduler or Scheduler.shared()
        self.on_escalate = on_escalate
        self._rng = random.Random(seed)
        self._restart_times: deque[float] = deque()
        self._escalated = False
        self.log = get_logger("mybot.supervision", actor=self.name)

    def _tell_self(self, message: Any) -> None:
        try:
            self.actor_ref.tell(message)
        except pykka.ActorDeadError:
            pass

    # -- lifecycle ----------------------------------------------------------------------------------------
    def started(self) -> None:
        for spec in self.tree.initial:
            self.tree.register(spec)
        for slot in self.tree._slots():
            if slot.done:
                continue
            restarted = slot.started_at > 0  # it ran under an earlier instance of this supervisor
            with slot.lock:
                slot.generation += 1
                if restarted:
                    slot.restarts += 1
            self._start_slot(slot, restarted=restarted)

    def stopping(self) -> None:
        # The root stops for good; a nested supervisor only when its parent says so (shutdown,
        # terminate). Any other stop is a restart: the children's slots wait for the next instance.
        final = self.link is None or self.link.final_stop
        self._stop_children([slot.spec.id for slot in self.tree._slots()], final=final)

    def release(self) -> None:
        # After a crash (stopping() does not run): children must not outlive their supervisor, or the
        # next instance would start twins of them.
        running = [slot.spec.id for slot in self.tree._slots() if slot.ref is not None]
        if running:
            self._stop_children(running)

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        super().on_failure(exception_type, exception_value, traceback)
        if self.link is None and not self._escalated and self.on_escalate is not None:
            # Nobody restarts the root: its crash ends the tree like an escalation (never silently).
            self._escalated = True
            self.on_escalate(f"root supervisor {self.name} crashed: {type(exception_value).__name__}: "
                             f"{exception_value}")

    def receive(self, message: Any) -> Any:
        if isinstance(message, _ChildCrashed):
            self._on_child_down(message.child_id, message.generation, message.error, crashed=True)
        elif isinstance(message, _ChildExited):
            self._on_child_down(message.child_id, message.generation, "", crashed=False)
        elif isinstance(message, _RestartDue):
            slot = self.tree.slots.get(message.child_id)
            if slot is not None and slot.generation == message.generation \
                    and slot.state is SlotState.RESTARTING:
                self._start_slot(slot, restarted=True)
        elif isinstance(message, _StartChild):
            slot = self.tree.slots.get(message.child_id)
            if slot is not None and slot.state is SlotState.STARTING and slot.ref is None:
                self._start_slot(slot)
        elif isinstance(message, _ResumeStart):
            slot = self.tree.slots.get(message.child_id)
            if slot is not None and slot.start_deferred and slot.ref is None \
                    and slot.state is SlotState.RESTARTING:
                self._start_slot(slot, restarted=True)
        elif isinstance(message, _StopOverdue):
            self._on_stop_overdue(message)
        elif isinstance(message, _OperatorRestart):
            return self._operator_restart(message.child_id)
        elif isinstance(message, _OperatorRestartAll):
            return self._operator_restart_all()
        elif isinstance(message, _TerminateChild):
            self._stop_children([message.child_id], final=True)
            self.tree.forget(message.child_id)
        elif isinstance(message, _Status):
            return self.status()
        else:
            return super().receive(message)
        return None

    def status(self) -> dict[str, Any]:
        children = []
        for handle in self.tree.children():
            status = handle.status()
            nested = handle.supervises
            if nested is not None and handle.alive:
                try:
                    status["supervisor"] = nested.status()
                except (ChildUnavailable, AskTimeout):
                    status["supervisor"] = None
            children.append(status)
        return {"id": self.name, "strategy": self.strategy.value, "escalated": self._escalated,
                "restarts_in_place": self.tree.restarts,
                "restart_intensity": f"{self.max_restarts} in {self.max_seconds}s",
                "max_consecutive_crashes": self.max_consecutive_crashes, "children": children}

    # -- internals (supervisor thread) ---------------------------------------------------------------
    def _start_slot(self, slot: _Slot, restarted: bool = False) -> None:
        if self._escalated:
            return  # this instance has given up: its parent (or the runtime) decides what runs next
        link = ChildLink(self, slot)
        incident = ""
        # Held across start(): a child crashing in on_start reports only once its slot points at it.
        with slot.lock:
            if slot.stopping is not None:  # the previous instance still runs: no twin
                slot.start_deferred = True
                asked_at = slot.stop_asked_at
            else:
                asked_at = None
                slot.start_deferred = False
                slot.started_at = time.monotonic()
                slot.reset_after = slot.spec.backoff.reset_after if slot.spec.backoff else self.reset_after
                try:
                    ref = slot.spec.start(link)
                except Exception as exc:  # the constructor failed: the same as a crash in on_start
                    _set_state(slot, SlotState.RESTARTING)
                    failure = f"{type(exc).__name__}: {exc}"
                    self.log.event("ACTOR_CRASHED", f"{slot.spec.id} failed to start: {failure}", level=40,
                                   phase="start", exc_info=exc, incident_id=_open_incident(slot, "ACTOR_CRASH"),
                                   **_child_fields(slot, self.name))
                    self._tell_self(_ChildCrashed(slot.spec.id, slot.generation, failure))
                    return
                # Buffered tells go first; the new ref is published only after them, so a sender's
                # later tell (lock-free fast path) cannot overtake them.
                pending, slot.buffer = slot.buffer, deque()
                redelivered = 0
                while pending:
                    try:
                        ref.tell(pending[0])
                    except pykka.ActorDeadError:
                        slot.buffer.extend(pending)  # it died already; its crash report takes them back
                        break
                    pending.popleft()
                    redelivered += 1
                slot.ref = ref
                slot.stopping_by_supervisor = False
                slot.final_stop = False
                _set_state(slot, SlotState.RUNNING)
                incident, slot.incident = slot.incident, ""
        if asked_at is not None:
            remaining = asked_at + self.stop_wait_seconds - time.monotonic()
            self.log.event("ACTOR_RESTART_DEFERRED", f"{slot.spec.id} starts once its previous instance has "
                           f"stopped (escalation in {max(0.0, remaining):.1f} s otherwise)", level=30,
                           **_child_fields(slot, self.name))
            self.scheduler.call_later(max(0.0, remaining), self._tell_self,
                                      _StopOverdue(slot.spec.id, asked_at))
            return
        event = "ACTOR_RESTARTED" if restarted else "ACTOR_STARTED"
        self.log.event(event, f"{slot.spec.id} {'restarted' if restarted else 'started'}",
                       generation=slot.generation, restarts=slot.restarts, redelivered=redelivered,
                       **_incident_field(incident), **_child_fields(slot, self.name, linked=restarted))

    def _on_child_down(self, child_id: str, generation: int, error: str, crashed: bool) -> None:
        slot = self.tree.slots.get(child_id)
        if slot is None or slot.generation != generation or self._escalated:
            return
        now = time.monotonic()
        if crashed:
            slot.last_failure, slot.last_failure_at = error, time.time()
            if now - slot.started_at >= slot.reset_after:
                slot.consecutive_crashes = 0  # the last run was a good one: a new series starts
            slot.consecutive_crashes += 1
            slot.crashes += 1
        restart = slot.spec.restart
        if not (restart is Restart.PERMANENT or (restart is Restart.TRANSIENT and crashed)):
            if self.tree.spec_for_key is not None:
                self.tree.forget(child_id)  # before STOPPED: whoever awaits STOPPED finds it gone
            with slot.lock:
                _set_state(slot, SlotState.STOPPED)
                slot.done = True
                discarded = len(slot.buffer)
                slot.buffer.clear()
                incident, slot.incident = slot.incident, ""
            self.log.event("ACTOR_STOPPED", f"{child_id} ended ({'crash' if crashed else 'normal'}); "
                           f"{restart.value}: not restarted", discarded=discarded,
                           **_incident_field(incident), **_child_fields(slot, self.name, linked=crashed))
            return
        if crashed and slot.consecutive_crashes >= self.max_consecutive_crashes:
            self._escalate(f"{child_id} crashed {slot.consecutive_crashes} times in a row, no run lasting "
                           f"{slot.reset_after:g}s (last: {error})")
            return
        self._restart_times.append(now)
        while self._restart_times and now - self._restart_times[0] > self.max_seconds:
            self._restart_times.popleft()
        if len(self._restart_times) > self.max_restarts:
            self._escalate(f"{child_id} exceeded {self.max_restarts} restarts in {self.max_seconds}s "
                           f"(last: {error or 'normal exit'})")
            return
        to_restart = [child_id]
        if self.strategy is Strategy.REST_FOR_ONE:
            with self.tree.lock:
                order = list(self.tree.order)
            later = order[order.index(child_id) + 1:]
            self._stop_children(later)
            to_restart += later
        for cid in to_restart:
            self._schedule_restart(self.tree.slots[cid], now)

    def _schedule_restart(self, slot: _Slot, now: float) -> None:
        with slot.lock:
            slot.generation += 1
            slot.restarts += 1
            _set_state(slot, SlotState.RESTARTING)
        backoff = slot.spec.backoff
        if backoff is None:
            self._start_slot(slot, restarted=True)
            return
        if now - slot.started_at > backoff.reset_after:
            slot.backoff_attempt = 0
        slot.backoff_attempt += 1
        delay = backoff.delay(slot.backoff_attempt, self._rng)
        self.log.event("ACTOR_RESTART_SCHEDULED", f"{slot.spec.id} restarts in {delay:.3f} s",
                       delay_seconds=round(delay, 3), attempt=slot.backoff_attempt,
                       **_incident_field(slot.incident), **_child_fields(slot, self.name))
        self.scheduler.call_later(delay, self._tell_self, _RestartDue(slot.spec.id, slot.generation))

    def _stop_children(self, child_ids: list[str], final: bool = False) -> None:
        """Stop in reverse order, each within the shutdown timeout (threads can't be killed: alert).

        Not final (rest_for_one, escalation, operator restart, a crash of this supervisor): the slots wait
        for a restart and their handles keep buffering tells. Final (shutdown, terminate): the slots are
        stopped for good. A child that overruns the timeout stays in `slot.stopping` until its thread ends:
        no successor starts before that (see the module docstring).
        """
        after = SlotState.STOPPED if final else SlotState.RESTARTING
        for cid in reversed(child_ids):
            slot = self.tree.slots.get(cid)
            if slot is None:
                continue
            with slot.lock:
                ref = slot.ref
                slot.stopping_by_supervisor = True
                slot.final_stop = final
                if ref is None:
                    if slot.state is not SlotState.STOPPED:
                        _set_state(slot, after)
                    if final and slot.spec.supervises is not None:
                        slot.spec.supervises._mark_stopped()
                    continue
                slot.stopping = ref
                slot.stop_asked_at = time.monotonic()
            in_time = True
            try:
                ref.stop(block=True, timeout=self.shutdown_timeout)
            except pykka.Timeout:
                in_time = False
            except pykka.ActorDeadError:
                pass
            with slot.lock:
                if slot.ref is ref:
                    slot.ref = None
                overdue = not in_time and slot.stopping is ref
                if not overdue and slot.stopping is ref:
                    slot.stopping = None  # its handlers are done; its thread only hands over its inbox
                _set_state(slot, after)
            if overdue:
                self.log.event("ACTOR_STOP_TIMEOUT", f"{cid} did not stop within {self.shutdown_timeout} s "
                               f"and still runs: no new instance starts until it ends", level=40,
                               **_child_fields(slot, self.name))

    def _on_stop_overdue(self, message: _StopOverdue) -> None:
        slot = self.tree.slots.get(message.child_id)
        if slot is None or self._escalated:
            return
        with slot.lock:
            still_running = slot.stopping is not None and slot.stop_asked_at == message.asked_at
        if not still_running:
            return
        reason = (f"{message.child_id} still runs {self.stop_wait_seconds:g} s after it was asked to stop; "
                  f"not starting a second instance")
        self.log.event("ACTOR_STOP_TIMEOUT", reason, level=50, escalating=True, **_child_fields(slot, self.name))
        self._escalate(reason)

    def _operator_restart(self, child_id: str) -> dict[str, Any]:
        slot = self.tree.slots[child_id]
        with slot.lock:
            incident = _open_incident(slot, "ACTOR_RESTART")
        self.log.event("ACTOR_RESTART_REQUESTED", f"operator restart of {child_id}", incident_id=incident,
                       **_child_fields(slot, self.name))
        self._stop_children([child_id])
        with slot.lock:
            slot.generation += 1
            slot.restarts += 1
            _set_state(slot, SlotState.RESTARTING)
        self._start_slot(slot, restarted=True)
        return self.tree.handles[child_id].status()

    def _operator_restart_all(self) -> dict[str, Any]:
        self.log.event("ACTOR_RESTART_REQUESTED", f"operator restart of {self.name}: every child", child=self.name)
        slots = [slot for slot in self.tree._slots() if not slot.done]
        self._stop_children([slot.spec.id for slot in slots])
        for slot in slots:
            with slot.lock:
                slot.generation += 1
                slot.restarts += 1
                _set_state(slot, SlotState.RESTARTING)
            self._start_slot(slot, restarted=True)
        self.tree.restarts += 1
        return {"id": self.name, "state": "running", "restarts": self.tree.restarts,
                "children": [handle.status() for handle in self.tree.children()]}

    def _escalate(self, reason: str) -> None:
        self._escalated = True
        self.log.event("SUPERVISOR_ESCALATED", f"{self.name}: {reason}", level=50, reason=reason)
        self._stop_children([slot.spec.id for slot in self.tree._slots()])
        if self.link is None:
            if self.on_escalate is not None:
                self.on_escalate(reason)
            return
        raise SupervisorEscalated(reason)


def supervisor_spec(tree: SupervisorHandle, *, restart: Restart = Restart.PERMANENT,
                    **kwargs: Any) -> ChildSpec:
    """A child spec that runs a (nested) supervisor addressed by `tree`."""
    return ChildSpec(id=tree.name, start=lambda link: Supervisor.start(link, tree, **kwargs),
                     restart=restart, supervises=tree)


def start_root(tree: SupervisorHandle, on_escalate: Callable[[str], None], **kwargs: Any) -> SupervisorHandle:
    """Start the root supervisor: its escalation ends the process (on_escalate decides how)."""
    ref = Supervisor.start(None, tree, on_escalate=on_escalate, **kwargs)
    tree.owner = _RootHandle(ref)
    tree.status()  # a barrier: answered once every supervisor in the tree has started its children
    return tree


def stop_root(tree: SupervisorHandle, timeout: float) -> bool:
    """Stop a root supervisor for good: every child in reverse start order, nested supervisors included.
    False if the tree did not stop within `timeout` (a child thread that cannot be interrupted)."""
    owner = tree.owner
    if not isinstance(owner, _RootHandle):
        raise TypeError(f"{tree.name} is not a started root supervisor")
    try:
        owner.ref.stop(block=True, timeout=timeout)
    except pykka.Timeout:
        return False
    tree._mark_stopped()  # already so after an orderly stop; not after a crash of the root itself
    return True
