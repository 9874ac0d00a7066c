"""A batching front for an actor that many actors tell (200 candle builders -> one persister).

Senders append to a shared queue; the target is told only when the queue goes from empty to non-empty
(a doorbell) and then takes everything queued in one go. One mailbox message per burst instead of one per
sender per batch: the target's mailbox and the GIL hand-offs stop growing with the number of senders.

No lock: `deque.append` / `popleft` are atomic in CPython. The flag can race only towards an extra
doorbell (the consumer lowers it before draining), never towards a message left behind. If the target
crashes mid-drain, what it had not handled goes back to the front of the queue and the doorbell rings
again (the handle buffers it until the restart): only the message that crashed it is lost, as for any tell.

The target is anything with a `tell` (a supervisor's child handle in practice): a Protocol, so this module
imports nothing else of the library.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["DrainOutbox", "Outbox", "TellTarget"]


class TellTarget(Protocol):
    """Where an outbox rings its doorbell: a stable address that buffers while the target restarts."""

    def tell(self, message: Any) -> bool: ...


@dataclass(frozen=True)
class DrainOutbox:
    outbox: Outbox


class Outbox:
    def __init__(self, target: TellTarget) -> None:
        self.target = target
        self._queue: deque[Any] = deque()
        self._rung = False

    def tell(self, message: Any) -> bool:
        self._queue.append(message)
        if not self._rung:
            self._rung = True
            self.target.tell(DrainOutbox(self))
        return True

    def drain(self) -> list[Any]:
        self._rung = False
        items: list[Any] = []
        pop = self._queue.popleft
        while True:
            try:
                items.append(pop())
            except IndexError:
                return items

    def put_back(self, unhandled: list[Any]) -> None:
        """The target failed mid-batch: these go first, and the target is told again."""
        self._queue.extendleft(reversed(unhandled))
        self._rung = True
        self.target.tell(DrainOutbox(self))

    def __len__(self) -> int:
        return len(self._queue)
