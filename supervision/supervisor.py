"""Supervisors with OTP semantics on top of Pykka.

- Child specs: id, how to start it, restart type (permanent | transient | temporary), optional backoff.
- Strategies: one_for_one, rest_for_one. A dynamic supervisor adds per-key children on demand.
- Intensity: at most `max_restarts` within `max_seconds`; past it the supervisor stops its children and
  crashes itself, escalating to its parent. At the root, escalation calls `on_escalate` (the runtime shuts
  down in order and exits non-zero so supervisord restarts the process).
- Handles are stable: callers address a child by id or key; the raw ActorRef behind a handle changes on
  every restart. Every ask has a deadline and fails fast while the child is down; tells sent while it is
  down are buffered (bounded, drops counted) and delivered after the restart.
- The message that crashed a child is logged as a dead letter and not redelivered.

A supervisor is itself a SupervisedActor: crash reports reach it as tells, so its bookkeeping is
serialized by its mailbox like any other actor's state.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pykka

from supervision.actor import ChildUnavailable, SupervisedActor
from supervision.scheduler import Scheduler
from telemetry.logs import get_logger

__all__ = [
    "AskTimeout",
    "Backoff",
    "ChildHandle",
    "ChildLink",
    "ChildSpec",
    "ChildUnavailable",
    "Restart",
    "Strategy",
    "Supervisor",
    "SupervisorEscalated",
    "SupervisorHandle",
    "start_root",
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
    reset_after: float = 30.0  # a child that ran this long starts its backoff over

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


class SlotState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPED = "stopped"


@dataclass(slots=True)
class _Slot:
    spec: ChildSpec
    lock: threading.Lock = field(default_factory=threading.Lock)
    ref: pykka.ActorRef[Any] | None = None
    state: SlotState = SlotState.STARTING
    generation: int = 0
    restarts: int = 0
    backoff_attempt: int = 0
    started_at: float = 0.0
    last_failure: str = ""
    last_failure_at: float = 0.0
    buffer: deque[Any] = field(default_factory=deque)
    dropped: int = 0
    dead_letters: int = 0
    stopping_by_supervisor: bool = False
    done: bool = False  # ended and not to be restarted (a transient child that completed normally)


_RUNNING = SlotState.RUNNING


class ChildLink:
    """What a child actor holds to report to its supervisor. Called on the child's own thread."""

    def __init__(self, supervisor: Supervisor, slot: _Slot) -> None:
        self._supervisor = supervisor
        self._slot = slot
        self.child_id = slot.spec.id

    def crashed(self, ref: pykka.ActorRef[Any], exc: BaseException, phase: str, poison: Any,
                drain: Callable[[], list[Any]]) -> None:
        slot = self._slot
        with slot.lock:
            if slot.ref is not ref:
                return  # a stale instance; the slot has moved on
            slot.state = SlotState.RESTARTING
            slot.ref = None
            generation = slot.generation
            # Tells still queued for the dead instance go first, in order, to the restarted one.
            leftover = drain()
            slot.buffer.extendleft(reversed(leftover))
        error = f"{type(exc).__name__}: {exc}"
        # Pykka's own log line (event PYKKA) carries the traceback; this one tells the supervision story.
        log.event("ACTOR_CRASHED", f"{self.child_id} crashed in {phase}: {error}", level=40,
                  actor=self.child_id, phase=phase, generation=generation)
        if poison is not None:
            slot.dead_letters += 1
            log.event("DEAD_LETTER", f"message that crashed {self.child_id} is not redelivered", level=30,
                      actor=self.child_id, message_type=type(poison).__name__, detail=repr(poison)[:300])
        self._supervisor._tell_self(_ChildCrashed(self.child_id, generation, error))

    def exited(self, ref: pykka.ActorRef[Any]) -> None:
        slot = self._slot
        with slot.lock:
            if slot.ref is not ref:
                return
            slot.ref = None
            slot.state = SlotState.RESTARTING  # tells buffer from here; the supervisor decides what follows
            by_supervisor = slot.stopping_by_supervisor
            generation = slot.generation
        if not by_supervisor:
            self._supervisor._tell_self(_ChildExited(self.child_id, generation))

    def rescue(self, dead: pykka.ActorRef[Any], drain: Callable[[], list[Any]]) -> None:
        """Tells that reached a dead instance's inbox go on to its successor (or wait for it)."""
        _rescue(self._slot, dead, drain)


def _rescue(slot: _Slot, dead: pykka.ActorRef[Any], drain: Callable[[], list[Any]]) -> None:
    with slot.lock:
        stranded = drain()
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


def _drain_tells(ref: pykka.ActorRef[Any]) -> list[Any]:
    """Take queued messages out of a dead actor's inbox: tells are returned, asks fail at once."""
    tells: list[Any] = []
    while True:
        try:
            envelope = ref.actor_inbox.get_nowait()  # type: ignore[attr-defined]
        except queue.Empty:
            return tells
        if isinstance(envelope.message, pykka.messages._ActorStop):
            if envelope.reply_to is not None:
                envelope.reply_to.set(None)
        elif envelope.reply_to is not None:
            error = ChildUnavailable("the actor stopped before answering")
            envelope.reply_to.set_exception(exc_info=(ChildUnavailable, error, None))
        else:
            tells.append(envelope.message)


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
                    _rescue(slot, ref, lambda: _drain_tells(ref))
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
            "last_failure": slot.last_failure or None,
            "last_failure_at": slot.last_failure_at or None,
            "mailbox_depth": depth,
            "buffered": len(slot.buffer),
            "dropped": slot.dropped,
            "dead_letters": slot.dead_letters,
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

    def terminate_child(self, child_id: str) -> None:
        self._owner().tell(_TerminateChild(child_id))

    def find(self, child_id: str) -> tuple[SupervisorHandle, ChildHandle] | None:
        """Search this subtree for a child id (the operator's restart endpoint addresses any actor)."""
        with self.lock:
            slots = [(cid, self.slots[cid]) for cid in self.order if cid in self.slots]
        for cid, slot in slots:
            if cid == child_id:
                return self, self.handles[cid]
            if slot.spec.supervises is not None:
                found = slot.spec.supervises.find(child_id)
                if found is not None:
                    return found
        return None

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
class _OperatorRestart:
    child_id: str


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

    def __init__(self, link: ChildLink | None, tree: SupervisorHandle, *,
                 strategy: Strategy = Strategy.ONE_FOR_ONE, max_restarts: int = 5,
                 max_seconds: float = 10.0, shutdown_timeout: float = 4.0,
                 scheduler: Scheduler | None = None,
                 on_escalate: Callable[[str], None] | None = None, seed: int | None = None) -> None:
        super().__init__(link)
        self.tree = tree
        self.name = tree.name
        self.strategy = strategy
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self.shutdown_timeout = shutdown_timeout
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
        with self.tree.lock:
            slots = [self.tree.slots[cid] for cid in self.tree.order]
        for slot in slots:
            if not slot.done:
                with slot.lock:
                    slot.generation += 1
                self._start_slot(slot, restarted=slot.restarts > 0 or slot.generation > 1)

    def stopping(self) -> None:
        self._stop_children(list(self.tree.order), final=True)

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
        elif isinstance(message, _OperatorRestart):
            return self._operator_restart(message.child_id)
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
            nested = handle._slot.spec.supervises
            if nested is not None and handle.alive:
                try:
                    status["supervisor"] = nested.status()
                except (ChildUnavailable, AskTimeout):
                    status["supervisor"] = None
            children.append(status)
        return {"id": self.name, "strategy": self.strategy.value, "escalated": self._escalated,
                "restart_intensity": f"{self.max_restarts} in {self.max_seconds}s", "children": children}

    # -- internals (supervisor thread) ---------------------------------------------------------------
    def _start_slot(self, slot: _Slot, restarted: bool = False) -> None:
        link = ChildLink(self, slot)
        # Held across start(): a child crashing in on_start reports only once its slot points at it.
        with slot.lock:
            try:
                ref = slot.spec.start(link)
            except Exception as exc:  # the constructor failed: the same as a crash in on_start
                slot.state = SlotState.RESTARTING
                failure = f"{type(exc).__name__}: {exc}"
                self.log.event("ACTOR_CRASHED", f"{slot.spec.id} failed to start: {failure}", level=40,
                               actor=slot.spec.id, phase="start", exc_info=exc)
                self._tell_self(_ChildCrashed(slot.spec.id, slot.generation, failure))
                return
            slot.ref = ref
            slot.state = SlotState.RUNNING
            slot.stopping_by_supervisor = False
            slot.started_at = time.monotonic()
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
        event = "ACTOR_RESTARTED" if restarted else "ACTOR_STARTED"
        self.log.event(event, f"{slot.spec.id} {'restarted' if restarted else 'started'}",
                       child=slot.spec.id, generation=slot.generation, restarts=slot.restarts,
                       redelivered=redelivered)

    def _on_child_down(self, child_id: str, generation: int, error: str, crashed: bool) -> None:
        slot = self.tree.slots.get(child_id)
        if slot is None or slot.generation != generation or self._escalated:
            return
        if crashed:
            slot.last_failure, slot.last_failure_at = error, time.time()
        restart = slot.spec.restart
        if not (restart is Restart.PERMANENT or (restart is Restart.TRANSIENT and crashed)):
            with slot.lock:
                slot.state = SlotState.STOPPED
                slot.done = True
                discarded = len(slot.buffer)
                slot.buffer.clear()
            self.log.event("ACTOR_STOPPED", f"{child_id} ended ({'crash' if crashed else 'normal'}); "
                           f"{restart.value}: not restarted", child=child_id, discarded=discarded)
            if self.tree.spec_for_key is not None:
                self.tree.forget(child_id)
            return
        now = time.monotonic()
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
            slot.state = SlotState.RESTARTING
        backoff = slot.spec.backoff
        if backoff is None:
            self._start_slot(slot, restarted=True)
            return
        if now - slot.started_at > backoff.reset_after:
            slot.backoff_attempt = 0
        slot.backoff_attempt += 1
        delay = backoff.delay(slot.backoff_attempt, self._rng)
        self.log.event("ACTOR_RESTART_SCHEDULED", f"{slot.spec.id} restarts in {delay:.3f} s",
                       child=slot.spec.id, delay_seconds=round(delay, 3), attempt=slot.backoff_attempt)
        self.scheduler.call_later(delay, self._tell_self, _RestartDue(slot.spec.id, slot.generation))

    def _stop_children(self, child_ids: list[str], final: bool = False) -> None:
        """Stop in reverse order, each within the shutdown timeout (threads can't be killed: alert).

        Not final (rest_for_one, escalation, operator restart): the slots wait for a restart and their
        handles keep buffering tells. Final (shutdown, terminate): the slots are stopped for good.
        """
        after = SlotState.STOPPED if final else SlotState.RESTARTING
        for cid in reversed(child_ids):
            slot = self.tree.slots.get(cid)
            if slot is None:
                continue
            with slot.lock:
                ref = slot.ref
                slot.stopping_by_supervisor = True
                if ref is None:
                    slot.state = after if slot.state is not SlotState.STOPPED else slot.state
                    continue
            try:
                ref.stop(block=True, timeout=self.shutdown_timeout)
            except pykka.Timeout:
                self.log.event("ACTOR_STOP_TIMEOUT", f"{cid} did not stop within "
                               f"{self.shutdown_timeout} s", level=40, child=cid)
            except pykka.ActorDeadError:
                pass
            with slot.lock:
                if slot.ref is ref:
                    slot.ref = None
                slot.state = after

    def _operator_restart(self, child_id: str) -> dict[str, Any]:
        slot = self.tree.slots[child_id]
        self.log.event("ACTOR_RESTART_REQUESTED", f"operator restart of {child_id}", child=child_id)
        self._stop_children([child_id])
        with slot.lock:
            slot.generation += 1
            slot.restarts += 1
            slot.state = SlotState.RESTARTING
        self._start_slot(slot, restarted=True)
        return self.tree.handles[child_id].status()

    def _escalate(self, reason: str) -> None:
        self._escalated = True
        self.log.event("SUPERVISOR_ESCALATED", f"{self.name}: {reason}", level=50, reason=reason)
        self._stop_children(list(self.tree.order))
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
