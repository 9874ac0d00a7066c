"""The base class of every supervised actor, and the link it reports to.

Pykka has no supervision; this base class gives every actor the crash reporting OTP would:
- a tell-path exception (Pykka's `on_failure`) and an exception in `on_start` (for which Pykka calls
  neither `on_failure` nor `on_stop`) both report a crash to the actor's supervisor link;
- the message that crashed it is handed over as a dead letter, never redelivered;
- tells still queued in the dead actor's inbox are handed back to the link, which redelivers them to the
  restarted instance (commands and fills are never lost to a crash); queued asks fail at once.

The link is a Protocol (`SupervisorLink`): this module knows nothing of the supervisor that implements it,
so the library's modules import each other in one direction only (scheduler, outbox < actor < supervisor).
The actor owns its inbox, so taking messages out of a dead one (`drain_inbox`) lives here too.

Subclasses implement `started()`, `receive(message)` and `stopping()`; they never override the Pykka hooks.
"""

from __future__ import annotations

import queue
from typing import Any, Protocol

import pykka

from supervision.outbox import DrainOutbox
from telemetry.logs import EventLogger, get_logger

__all__ = ["ChildUnavailable", "SupervisedActor", "SupervisorLink", "drain_inbox", "tell_quietly"]


class ChildUnavailable(Exception):
    """The addressed child is down (crashed, restarting, stopped): the call fails fast instead of hanging."""


class SupervisorLink(Protocol):
    """What a supervised actor reports to. Every call comes from the actor's own thread."""

    @property
    def child_id(self) -> str: ...

    @property
    def final_stop(self) -> bool:
        """True while the supervisor stops this child for good (shutdown, terminate), not to restart it."""
        ...

    def crashed(self, ref: pykka.ActorRef[Any], exc: BaseException, phase: str, poison: Any) -> None:
        """The instance crashed (resources already released); `poison` is the message that did it."""

    def exited(self, ref: pykka.ActorRef[Any]) -> None:
        """The instance stopped normally (after `stopping()` and `release()`)."""

    def ended(self, ref: pykka.ActorRef[Any]) -> None:
        """The instance's thread is about to end, crash or stop: tells still in its inbox are handed over."""


def tell_quietly(ref: pykka.ActorRef[Any], message: Any) -> None:
    """A timer's tell to an actor that may have stopped meanwhile (its successor reschedules its own timers)."""
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        pass


def drain_inbox(ref: pykka.ActorRef[Any]) -> list[Any]:
    """Take queued messages out of a dead actor's inbox: tells are returned, asks fail at once."""
    tells: list[Any] = []
    inbox = ref.actor_inbox
    while True:
        try:
            envelope = inbox.get_nowait()  # type: ignore[attr-defined]
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


class SupervisedActor(pykka.ThreadingActor):
    # A crash must stop only this actor (Pykka would stop every actor on a BaseException).
    use_daemon_thread = True

    def __init__(self, link: SupervisorLink | None = None) -> None:
        super().__init__()
        self.link = link
        self.log: EventLogger = get_logger(f"mybot.{type(self).__name__}",
                                           actor=link.child_id if link else type(self).__name__)
        self._current_message: Any = None

    @staticmethod
    def _create_actor_inbox() -> Any:
        # A C-level SimpleQueue: put() takes no Python-level lock, so many actors telling one busy actor
        # (200 candle builders -> the persister) don't convoy on a Condition under the GIL.
        return queue.SimpleQueue()

    # -- hooks for subclasses ------------------------------------------------------------------------
    def started(self) -> None:
        """Set-up on the actor's own thread; an exception here is a crash."""

    def receive(self, message: Any) -> Any:
        raise TypeError(f"{type(self).__name__} does not handle {type(message).__name__}")

    def stopping(self) -> None:
        """Clean-up on a normal stop (not after a crash)."""

    def release(self) -> None:
        """Let go of outside resources (threads, sockets) after a stop OR a crash; must not raise."""

    # -- Pykka hooks --------------------------------------------------------------------------------------
    def on_start(self) -> None:
        try:
            self.started()
        except Exception as exc:
            self._report_crash(exc, phase="on_start")
            raise

    def after_batch(self) -> None:
        """Called after each message, or after a whole outbox batch: flush what receive() accumulated."""

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, DrainOutbox):
            batch = message.outbox.drain()
            for index, item in enumerate(batch):
                self._current_message = item
                try:
                    self.receive(item)
                except Exception:
                    message.outbox.put_back(batch[index + 1:])  # only the crashing message is lost
                    raise
            self._current_message = None
            self.after_batch()
            return None
        self._current_message = message
        result = self.receive(message)
        self._current_message = None
        self.after_batch()
        return result

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self._report_crash(exception_value, phase="receive")

    def on_stop(self) -> None:
        try:
            self.stopping()
        finally:
            self._release()
            if self.link is not None:
                self.link.exited(self.actor_ref)

    def _release(self) -> None:
        try:
            self.release()
        except Exception as exc:  # a failing release must not hide the crash being reported
            self.log.event("ACTOR_RELEASE_FAILED", f"{type(exc).__name__}: {exc}", level=30)

    def _report_crash(self, exc: BaseException, phase: str) -> None:
        self._release()
        poison, self._current_message = self._current_message, None
        if self.link is None:
            self.log.event("ACTOR_CRASHED", f"{type(exc).__name__}: {exc}", level=40, phase=phase)
            return
        self.link.crashed(self.actor_ref, exc, phase, poison)

    def _actor_loop_teardown(self) -> None:
        # Pykka's teardown drops queued tells; a supervised actor hands them to its successor instead
        # (queued asks fail at once). A tell landing after this is rescued by its own sender.
        if self.link is not None:
            self.link.ended(self.actor_ref)
            return
        super()._actor_loop_teardown()
