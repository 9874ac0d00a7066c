"""The base class of every supervised actor.

Pykka has no supervision; this base class gives every actor the crash reporting OTP would:
- a tell-path exception (Pykka's `on_failure`) and an exception in `on_start` (for which Pykka calls
  neither `on_failure` nor `on_stop`) both report a crash to the actor's supervisor link;
- the message that crashed it is handed over as a dead letter, never redelivered;
- tells still queued in the dead actor's inbox are handed back to the link, which redelivers them to the
  restarted instance (commands and fills are never lost to a crash); queued asks fail at once.

Subclasses implement `started()`, `receive(message)` and `stopping()`; they never override the Pykka hooks.
"""

from __future__ import annotations

import queue
from typing import TYPE_CHECKING, Any

import pykka

from supervision.outbox import DrainOutbox
from telemetry.logs import EventLogger, get_logger

if TYPE_CHECKING:
    from supervision.supervisor import ChildLink

__all__ = ["ChildUnavailable", "SupervisedActor", "tell_quietly"]


class ChildUnavailable(Exception):
    """The addressed child is down (crashed, restarting, stopped): the call fails fast instead of hanging."""


def tell_quietly(ref: pykka.ActorRef[Any], message: Any) -> None:
    """A timer's tell to an actor that may have stopped meanwhile (its successor reschedules its own timers)."""
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        pass


class SupervisedActor(pykka.ThreadingActor):
    # A crash must stop only this actor (Pykka would stop every actor on a BaseException).
    use_daemon_thread = True

    def __init__(self, link: ChildLink | None = None) -> None:
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
        self.link.crashed(self.actor_ref, exc, phase, poison, self._drain_inbox)

    def _drain_inbox(self) -> list[Any]:
        from supervision.supervisor import _drain_tells

        return _drain_tells(self.actor_ref)

    def _actor_loop_teardown(self) -> None:
        # Pykka's teardown drops queued tells; a supervised actor hands them to its successor instead
        # (queued asks fail at once). A tell landing after this is rescued by its own sender.
        if self.link is not None:
            self.link.rescue(self.actor_ref, self._drain_inbox)
            return
        super()._actor_loop_teardown()
